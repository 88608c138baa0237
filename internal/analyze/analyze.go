// Package analyze finds problems in a valid configuration set that are not
// errors but probably mistakes, as istioctl analyze does: routes that can
// never match, hosts and selectors that refer to nothing defined, subsets
// that select none of a service's static endpoints.
package analyze

import (
	"fmt"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellismesh/trellis/internal/config"
)

// Severities of findings.
const (
	// Warning marks a probable mistake.
	Warning = "warning"
	// Info marks something worth knowing that is often intended, such as a
	// host that only self-registration defines.
	Info = "info"
)

// Finding is one probable mistake, located like a config.Error.
type Finding struct {
	Severity string `json:"severity"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	Resource string `json:"resource"`
	Field    string `json:"field,omitempty"`
	Message  string `json:"message"`
}

func (f Finding) String() string {
	return (&config.Error{File: f.File, Line: f.Line, Resource: f.Resource, Field: f.Field, Msg: f.Message}).Error()
}

func finding(m config.Meta, field, format string, args ...any) Finding {
	return Finding{Severity: Warning, File: m.File, Line: m.Line, Resource: m.String(), Field: field, Message: fmt.Sprintf(format, args...)}
}

// Set analyzes a valid set. Hosts that only workloads' self-registration
// defines are reported as such, since the set alone cannot tell whether
// they will exist.
func Set(set *config.Set) []Finding {
	var out []Finding
	defined := map[string]bool{}               // canonical hosts of ServiceEntries
	static := map[string][]map[string]string{} // canonical host -> labels of static endpoints
	for _, se := range set.ServiceEntries {
		var labels []map[string]string
		for _, ep := range se.Spec.Endpoints {
			labels = append(labels, ep.Labels)
		}
		if sel := se.Spec.WorkloadSelector; sel != nil {
			n := 0
			for _, we := range set.WorkloadEntries {
				if we.Namespace == se.Namespace && selects(sel.Labels, we.Spec.Labels) {
					labels = append(labels, we.Spec.Labels)
					n++
				}
			}
			if n == 0 {
				out = append(out, finding(se.Meta, "spec.workloadSelector", "selects no WorkloadEntry in namespace %s; the service has endpoints only if workloads register", se.Namespace))
			}
		}
		for _, h := range se.Spec.Hosts {
			host := config.CanonicalHost(h, se.Namespace)
			defined[host] = true
			static[host] = append(static[host], labels...)
		}
	}
	undefined := func(m config.Meta, field, host string) {
		if !defined[config.CanonicalHost(host, m.Namespace)] {
			f := finding(m, field, "host %s is defined by no ServiceEntry; it exists only while workloads register under that name", host)
			f.Severity = Info
			out = append(out, f)
		}
	}
	for _, dr := range set.DestinationRules {
		host := config.CanonicalHost(dr.Spec.Host, dr.Namespace)
		undefined(dr.Meta, "spec.host", dr.Spec.Host)
		eps := static[host]
		if len(eps) == 0 {
			continue
		}
		for i, s := range dr.Spec.Subsets {
			if !slices.ContainsFunc(eps, func(l map[string]string) bool { return selects(s.Labels, l) }) {
				out = append(out, finding(dr.Meta, fmt.Sprintf("spec.subsets[%d].labels", i), "subset %s selects none of the %d static endpoints of %s", s.Name, len(eps), dr.Spec.Host))
			}
		}
	}
	for _, vs := range set.VirtualServices {
		for i, h := range vs.Spec.Hosts {
			undefined(vs.Meta, fmt.Sprintf("spec.hosts[%d]", i), h)
		}
		for i, r := range vs.Spec.Http {
			for j, d := range r.Route {
				if d.Destination != nil && !slices.Contains(vs.Spec.Hosts, d.Destination.Host) {
					undefined(vs.Meta, fmt.Sprintf("spec.http[%d].route[%d].destination.host", i, j), d.Destination.Host)
				}
			}
			if catchAll(r.Match) && i < len(vs.Spec.Http)-1 {
				out = append(out, finding(vs.Meta, fmt.Sprintf("spec.http[%d]", i), "matches every request, so the %d route(s) after it never match", len(vs.Spec.Http)-1-i))
			}
		}
	}
	out = append(out, securityFindings(set)...)
	slices.SortStableFunc(out, func(a, b Finding) int {
		return strings.Compare(fmt.Sprintf("%s:%09d:%s", a.File, a.Line, a.Field), fmt.Sprintf("%s:%09d:%s", b.File, b.Line, b.Field))
	})
	return out
}

// catchAll reports whether an HTTPRoute with these matches matches every
// request: no match at all, or one that sets nothing but a name.
func catchAll(matches []*networking.HTTPMatchRequest) bool {
	if len(matches) == 0 {
		return true
	}
	for _, m := range matches {
		if m.Uri == nil && len(m.Headers) == 0 && m.Port == 0 && len(m.SourceLabels) == 0 {
			return true
		}
	}
	return false
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
