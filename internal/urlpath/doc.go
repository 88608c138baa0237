// Package urlpath canonicalises request paths, the one form in which
// authorization policies (package authz) and HTTP routes match them, and
// rejects the encodings used to slip past a path rule:
//
//	p, err := urlpath.Canonical("//api/./v1/../%61dmin?x=1") // "/api/admin"
//	_, err = urlpath.Canonical("/%2Fadmin")                // ErrInvalid: deny
//
// Paths are case-sensitive, as in Istio: "/ADMIN" is not "/admin".
// Canonical is a pure function, safe for concurrent use.
package urlpath
