// Package resolver holds the mesh's resolution of targets from the control
// plane's xDS resources, for the parts of the client path Trellis runs
// itself rather than grpc-go. Its subpackages are named for what they do:
//
//   - xdsroute: a target's routes (listener → route configuration → virtual
//     host → routes), matched against calls as grpc-go matches them; the
//     gRPC retry engine takes each call's retry policy from it.
//
// Cluster and endpoint resolution for the HTTP client is not built yet.
package resolver
