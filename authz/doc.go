// Package authz is the server-side authorization engine shared by the
// library's gRPC and HTTP servers. It evaluates Envoy RBAC configs (the
// standard protos the control plane translates Istio AuthorizationPolicy
// into) against the mTLS identity, the connection, the request and the
// verified JWT of each request, with Istio's semantics:
//
//  1. a request that matches any DENY policy is denied;
//  2. otherwise, if any ALLOW config exists, the request is allowed only if
//     it matches an ALLOW policy (an ALLOW config without policies allows
//     nothing);
//  3. otherwise it is allowed.
//
// LOG policies (Istio's AUDIT) never change the decision; the ones that
// matched are listed in [Decision.Audit]. Shadow rules (Envoy's
// shadow_rules, Istio's dry-run policies) are evaluated by a [Shadow],
// each config on its own, and only reported.
//
//	engine, err := authz.New(rbacs, authz.WithLogger(logger))
//	if err != nil {
//		// A matcher the engine does not implement, or a bad regex: the whole
//		// set is refused (errors.Is(err, authz.ErrUnsupported)).
//	}
//	d := engine.Authorize(&authz.Request{
//		Principal:       "spiffe://cluster.local/ns/default/sa/productpage",
//		SourceIP:        netip.MustParseAddr("10.0.0.7"),
//		DestinationPort: 9080,
//		Method:          "POST",
//		Path:            "/reviews.Reviews/Get", // raw; the engine canonicalises it
//		Headers:         map[string][]string{"x-team": {"blue"}},
//	})
//	if !d.Allowed {
//		logger.Info("denied", "policy", d.Policy, "reason", d.Reason)
//		// reply PermissionDenied / 403 "unauthorized": never d.Reason
//	}
//
// The request path is canonicalised with [urlpath.Canonical] ("//a",
// "/x/../a", "/%61" all become "/a"); a path with no canonical form
// ("%2F", backslash, NUL, no leading '/') is denied whatever the policies
// say, as is a request with NUL, CR or LF in a header value. String, header
// and path matchers are compiled as routes compile theirs, with Envoy's
// semantics: a repeated header is its values joined with ",", a missing one
// matches no value matcher (inverted or not) unless
// treat_missing_header_as_empty is set, ignore_case folds ASCII letters.
// Paths are case-sensitive.
//
// Supported permissions: any, and_rules, or_rules, not_rule, header (every
// specifier, range_match included; an upper-case name and ignore_case on a
// safe_regex are refused), url_path, destination_port,
// destination_port_range. Supported principals:
// any, and_ids, or_ids, not_id, authenticated, source_ip, direct_remote_ip,
// remote_ip (all three match the peer address: forwarding headers are never
// trusted), header, url_path, and metadata of filter "istio_authn" with the
// keys request.auth.principal, request.auth.audiences,
// request.auth.presenter and request.auth.claims. Anything else makes [New]
// fail.
package authz
