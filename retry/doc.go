// Package retry will hold the mesh's own retry engine for gRPC and HTTP
// clients: attempts with per-try timeouts and retry budgets.
//
// Status: the package holds no code yet. Today gRPC calls are retried by
// grpc-go's own retry, which the control plane configures from
// VirtualService retries (attempts, retryOn, backoff; see docs/SUPPORT.md);
// per-try timeouts and retry budgets need this engine and are not
// implemented.
package retry
