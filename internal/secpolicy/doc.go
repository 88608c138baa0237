// Package secpolicy translates Istio security resources into the standard
// Envoy protos that travel on a server's listener.
//
// Authorization: the caller picks the AuthorizationPolicy resources that
// apply to a workload with [Selects], then translates them:
//
//	var applied []secpolicy.NamedAuthorizationPolicy
//	for _, p := range all {
//		if secpolicy.Selects(p, "istio-system", "default", map[string]string{"app": "reviews"}) {
//			applied = append(applied, p)
//		}
//	}
//	rbacs, err := secpolicy.AuthorizationPolicies(applied, "cluster.local")
//	if err != nil {
//		// A field Trellis does not implement, or a bad value: the error names
//		// the policy and the field. Keep the last good config.
//	}
//	// rbacs: at most one DENY, one ALLOW and one LOG config, one policy
//	// per rule, named "<namespace>/<name>[<rule index>]".
//
// Policies marked DryRun (Istio's istio.io/dry-run annotation) are never
// among those rules: [AuthorizationFilters] gives the RBAC filter configs
// of a server listener, with the dry-run policies in shadow_rules.
//
// Request authentication: [RequestAuthentications] turns RequestAuthentication
// resources into one Envoy jwt_authn config.
//
// Policy paths must be in the canonical form of [urlpath.Canonical], in
// which every request path is matched; paths are case-sensitive, as in
// Istio.
//
// Everything here is a pure function of its arguments, safe for concurrent
// use.
package secpolicy
