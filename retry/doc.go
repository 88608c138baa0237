// Package retry will hold retry policies and retry budgets for gRPC and HTTP
// clients.
//
// Status: not implemented yet; the package holds no code. Until it does,
// nothing is retried by the mesh.
package retry
