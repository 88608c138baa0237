// Package balancer is the home of Trellis's gRPC load-balancing policies.
// Each lives in a subpackage named for what it does, registers itself with
// grpc's balancer registry in init under an exported Name, and can be used
// on its own with plain grpc-go through a service config, or selected by
// the Trellis control plane through xDS custom LB (gRFC A52):
//
//   - balancer/random: picks a ready endpoint uniformly at random
//     (DestinationRule loadBalancer.simple RANDOM);
//   - balancer/outlier: consecutive-error outlier ejection around any child
//     policy (DestinationRule outlierDetection consecutive5xxErrors and
//     consecutiveGatewayErrors, which grpc-go's own outlier detection lacks);
//   - balancer/recycle: replaces a connection by a new one after it has
//     carried a number of calls, draining the old one (DestinationRule
//     connectionPool.http.maxRequestsPerConnection);
//   - balancer/ewma: latency-aware power of two choices over a peak EWMA of
//     latency weighted by outstanding RPCs, Finagle's and Linkerd's design
//     (DestinationRule annotation trellis.io/load-balancer: EWMA).
//
// mesh imports all four, so every mesh.Dial connection has them.
//
// balancer/pick is the HTTP client's endpoint picker: the same algorithms
// (round robin, least request, random, ring hash) as grpc-go applies to the
// same xDS, plus the outlier ejection (internal/outlier's state machine,
// the one balancer/outlier runs) and circuit breaking of the policies
// above, in one allocation-free Pick, and the peak EWMA policy ("ewma").
package balancer
