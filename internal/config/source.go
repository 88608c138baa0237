package config

import "context"

// A Source delivers the mesh configuration from where it is kept other than
// a local directory: etcd, Kubernetes. The control plane applies each Set it
// delivers as a whole, and keeps the last good Set when the source reports
// an error instead.
type Source interface {
	// String describes the source for logs and the admin page
	// ("etcd://127.0.0.1:2379/trellis", "kubernetes").
	String() string
	// Run calls update with every configuration the source reads — a
	// complete, validated Set, or the error that kept the newest version
	// out — until ctx is done, and then returns nil. The first call comes
	// as soon as the initial state has been read. update is never called
	// concurrently.
	Run(ctx context.Context, update func(*Set, error)) error
}
