// Package authz will hold the server-side authorization engine (Istio
// AuthorizationPolicy on mTLS identities and JWT claims) shared by gRPC and
// HTTP servers.
//
// Status: not implemented yet; the package holds no code. Until it does,
// mesh servers do not authorize requests.
package authz
