package ratelimit

// Names of the Envoy local_ratelimit encoding that the control plane's
// translator writes and the mesh's clients and servers read (see
// internal/translate/ratelimit.go for how limits travel).
const (
	// FilterName is the name of Envoy's local_ratelimit HTTP filter, and
	// the key of its per-filter configs on virtual hosts and routes.
	FilterName = "envoy.filters.http.local_ratelimit"

	// CallerDescriptorKey is the descriptor entry of per-caller server
	// limits; CallerExpression is the CEL expression that fills it.
	CallerDescriptorKey = "trellis.caller"
	CallerExpression    = "connection.uri_san_peer_certificate"
	// ExprDescriptorExtension names Envoy's CEL rate-limit descriptor.
	ExprDescriptorExtension = "envoy.rate_limit_descriptors.expr"
	// MaxCallers is the number of callers a per-caller limit tracks
	// (max_dynamic_descriptors); beyond it the least recently seen caller
	// is forgotten.
	MaxCallers = 1024
)
