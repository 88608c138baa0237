// Package telemetry will hold OpenTelemetry metrics, traces and access logs
// for mesh clients and servers.
//
// Status: not implemented yet; the package holds no code. Until it does, the
// control plane exports Prometheus metrics; the library records nothing.
package telemetry
