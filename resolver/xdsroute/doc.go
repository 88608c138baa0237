// Package xdsroute follows a mesh target's routes from the control plane and
// matches calls against them, as grpc-go's xDS resolver does (gRFC A28):
// the listener named by the target leads to a route configuration, the
// virtual host is chosen by the target's authority, and the first route
// whose path, header and runtime-fraction matchers accept the call wins.
//
// The mesh uses it where it acts on routes itself: the gRPC retry engine
// (per-try timeouts, which grpc-go does not implement) reads each call's
// route retry policy and rate limit from a Table, and the HTTP client
// routes every request with one (LookupHTTP, matching as Envoy does). A
// Table converts each route once, when its configuration arrives, so a
// lookup costs only the matching:
//
//	tbl := xdsroute.Watch(client, "reviews:9080", func(r *v3routepb.Route) string {
//		return r.GetRoute().GetCluster()
//	})
//	defer tbl.Close()
//	_, cluster, ok := tbl.Lookup(ctx, "/reviews.Reviews/Get", md)
//
// Path and header matchers are compiled by package internal/matcher, with
// Envoy's semantics, as the authorization engine (package authz) compiles
// its own. Matchers the package cannot evaluate, or that Envoy would refuse,
// make their route never match.
package xdsroute
