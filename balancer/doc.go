// Package balancer will hold load-balancing policies (latency-aware EWMA,
// least request, ring hash) for gRPC, registered with grpc's balancer
// registry and selected through xDS custom LB, and the same pickers for the
// HTTP client.
//
// Status: not implemented yet; the package holds no code. Until it does,
// grpc-go's xDS round robin, configured by the control plane, balances every
// mesh.Dial connection.
package balancer
