// Package config loads Istio resources (ServiceEntry, WorkloadEntry,
// VirtualService, DestinationRule; PeerAuthentication, AuthorizationPolicy,
// RequestAuthentication) from YAML into the istio.io/api types and
// validates them against what Trellis implements. AuthorizationPolicy and
// RequestAuthentication resources are translated (internal/secpolicy) one
// by one at load, so a policy the control plane could not enforce is
// refused here rather than discovered later. Security policies in
// RootNamespace apply mesh-wide.
//
// Loading is strict. A key that is not a field of the Istio type is an
// unknown field; a field of the Istio type that Trellis does not implement is
// an unsupported field. Both are rejected, never ignored: silently ignored
// traffic or security configuration is worse than an error. Every error is an
// *Error naming the file, the line of the document, the resource
// (kind namespace/name) and the field path inside it:
//
//	mesh/reviews.yaml:12: VirtualService default/reviews: spec.http[0].route: weights sum to 90, want 100
//
// A Set is either wholly valid or rejected as a whole; callers keep the last
// valid Set in force when a new one fails to load.
package config
