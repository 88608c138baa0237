// Package resolver holds the mesh's resolution of targets from the control
// plane's xDS resources, for the parts of the client path Trellis runs
// itself rather than grpc-go. Its subpackages are named for what they do:
//
//   - xdsroute: a target's routes (listener → route configuration → virtual
//     host → routes), matched against gRPC calls as grpc-go matches them and
//     against HTTP requests as Envoy does; the gRPC retry engine and the
//     HTTP client take each call's route from it.
//   - xdscluster: a cluster and its endpoints (CDS, EDS), read as grpc-go
//     reads them: load-balancing policy, circuit breakers, outlier
//     detection, mutual TLS with exact SPIFFE IDs; the HTTP client's
//     pickers are built from it.
package resolver
