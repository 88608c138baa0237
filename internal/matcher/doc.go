// Package matcher compiles Envoy's matchers once, for authorization (package
// authz) and routing (package resolver/xdsroute) alike: StringMatcher,
// the route HeaderMatcher, the RBAC PathMatcher and the route path
// specifiers. It follows Envoy's semantics (and Envoy's validation rules), so
// that a request cannot take a route on one reading of a matcher and pass
// authorization on another:
//
//	h, err := matcher.CompileHeader(&v3routepb.HeaderMatcher{Name: "x-tenant", ...})
//	if err != nil {
//		// errors.Is(err, matcher.ErrUnsupported) or matcher.ErrInvalid
//	}
//	ok := h.Match(headers[h.Name()]) // a repeated header is its values joined with ","
//
// Compiled matchers are immutable, safe for concurrent use, and do not
// allocate when they match. Where a request's pseudo-headers (":method",
// ":authority", ":path") come from is the caller's business.
package matcher
