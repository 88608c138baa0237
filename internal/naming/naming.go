// Package naming checks the names and labels of mesh workloads as
// Kubernetes does: service names and namespaces are DNS-1123 labels,
// hostnames DNS-1123 subdomains, label keys and values Kubernetes label
// syntax. The control plane's configuration loader, its registration
// service and the mesh library check with the same rules. It imports no
// Istio package.
package naming

import (
	"fmt"
	"regexp"
)

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelKey         = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelValue       = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
)

// IsDNS1123Label reports whether s is a DNS-1123 label: lowercase letters,
// digits and '-', at most 63, beginning and ending with a letter or digit.
func IsDNS1123Label(s string) bool { return len(s) <= 63 && dns1123Label.MatchString(s) }

// IsDNS1123Subdomain reports whether s is a DNS-1123 subdomain: DNS-1123
// labels joined by '.', at most 253.
func IsDNS1123Subdomain(s string) bool {
	return len(s) <= 253 && dns1123Subdomain.MatchString(s)
}

// IsLabelKey reports whether k is a Kubernetes label key: an optional
// DNS-1123 subdomain prefix and '/', then a name of letters, digits, '-',
// '_' and '.'.
func IsLabelKey(k string) bool { return len(k) <= 317 && labelKey.MatchString(k) }

// IsLabelValue reports whether v is a Kubernetes label value: empty, or at
// most 63 letters, digits, '-', '_' and '.', beginning and ending with a
// letter or digit.
func IsLabelValue(v string) bool { return len(v) <= 63 && labelValue.MatchString(v) }

// ValidateName reports whether s is a DNS-1123 label, as service names,
// namespaces and subset names must be.
func ValidateName(s string) error {
	if !IsDNS1123Label(s) {
		return fmt.Errorf("%q is not a valid name (lowercase letters, digits and '-', at most 63)", s)
	}
	return nil
}

// ValidateLabels checks label keys and values as Kubernetes does.
func ValidateLabels(labels map[string]string) error {
	for k, v := range labels {
		if !IsLabelKey(k) {
			return fmt.Errorf("%q is not a valid label key", k)
		}
		if !IsLabelValue(v) {
			return fmt.Errorf("label %q: %q is not a valid label value", k, v)
		}
	}
	return nil
}
