package config

import (
	"maps"
	"slices"
	"strconv"

	"github.com/trellismesh/trellis/internal/secpolicy"
)

// IsWorkloadPolicy reports whether a security policy's selector picks
// workloads by label (a workload policy) rather than applying to its whole
// namespace, or to the whole mesh in RootNamespace. A selector with no labels
// selects nothing in particular: the policy is namespace-wide.
func IsWorkloadPolicy(matchLabels map[string]string) bool { return len(matchLabels) > 0 }

func validatePeerAuthentication(pa *PeerAuthentication) []error {
	p := &problems{meta: pa.Meta}
	s := pa.Spec
	p.labels("spec.selector.matchLabels", s.GetSelector().GetMatchLabels())
	if pa.Namespace == RootNamespace && IsWorkloadPolicy(s.GetSelector().GetMatchLabels()) {
		// Istio documents both that such a policy is ignored and that it
		// selects in every namespace; neither is worth guessing.
		p.add("spec.selector", "a PeerAuthentication in the root namespace %s must not have a selector (it is the mesh-wide policy)", RootNamespace)
	}
	if len(s.PortLevelMtls) > 0 && !IsWorkloadPolicy(s.GetSelector().GetMatchLabels()) {
		p.add("spec.portLevelMtls", "port-level mTLS needs a selector with labels: a namespace-wide or mesh-wide PeerAuthentication cannot set it")
	}
	for _, port := range slices.Sorted(maps.Keys(s.PortLevelMtls)) {
		f := "spec.portLevelMtls[" + quote(strconv.FormatUint(uint64(port), 10)) + "]"
		if port == 0 || port > 65535 {
			p.add(f, "port must be between 1 and 65535")
		}
		if s.PortLevelMtls[port] == nil {
			p.add(f, "must be a mapping with a mode")
		}
	}
	return p.errs
}

// validateAuthorizationPolicy runs the translation that the control plane
// runs for each workload on the policy alone, so that whatever it cannot
// translate is refused at load instead of failing (closed) later.
func validateAuthorizationPolicy(ap *AuthorizationPolicy) []error {
	p := &problems{meta: ap.Meta}
	p.labels("spec.selector.matchLabels", ap.Spec.GetSelector().GetMatchLabels())
	named := secpolicy.NamedAuthorizationPolicy{Name: ap.Name, Namespace: ap.Namespace, Spec: ap.Spec, DryRun: ap.DryRun()}
	if _, err := secpolicy.AuthorizationFilters([]secpolicy.NamedAuthorizationPolicy{named}, ""); err != nil {
		p.add("", "%v", err)
	}
	return p.errs
}

// validateRequestAuthentication is validateAuthorizationPolicy for a
// RequestAuthentication.
func validateRequestAuthentication(ra *RequestAuthentication) []error {
	p := &problems{meta: ra.Meta}
	p.labels("spec.selector.matchLabels", ra.Spec.GetSelector().GetMatchLabels())
	named := secpolicy.NamedRequestAuthentication{Name: ra.Name, Namespace: ra.Namespace, Spec: ra.Spec}
	if _, err := secpolicy.RequestAuthentications([]secpolicy.NamedRequestAuthentication{named}); err != nil {
		p.add("", "%v", err)
	}
	return p.errs
}

// validatePeerAuthenticationSet checks that each namespace has at most one
// PeerAuthentication without a selector (Istio would pick the oldest; a
// file-based configuration has no age to go by).
func validatePeerAuthenticationSet(pas []*PeerAuthentication) []error {
	var errs []error
	wide := map[string]*PeerAuthentication{}
	for _, pa := range pas {
		if IsWorkloadPolicy(pa.Spec.GetSelector().GetMatchLabels()) {
			continue
		}
		if first, ok := wide[pa.Namespace]; ok {
			scope := "namespace " + pa.Namespace
			if pa.Namespace == RootNamespace {
				scope = "the mesh (root namespace " + RootNamespace + ")"
			}
			p := &problems{meta: pa.Meta}
			p.add("spec.selector", "%s already has a PeerAuthentication without selector, %s (%s:%d)", scope, first.Meta, first.File, first.Line)
			errs = append(errs, p.errs...)
			continue
		}
		wide[pa.Namespace] = pa
	}
	return errs
}
