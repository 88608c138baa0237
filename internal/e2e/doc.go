// Package e2e holds Trellis's end-to-end tests: the real control plane,
// real gRPC servers and clients on loopback, configured by real YAML files.
package e2e
