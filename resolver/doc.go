// Package resolver will hold the HTTP client's service resolution (service →
// routes → clusters → endpoints) from the control plane's xDS resources.
//
// Status: not implemented yet; the package holds no code. Until it does,
// mesh.Dial resolves through grpc-go's own xDS resolver.
package resolver
