// Package recycle implements the trellis_recycle load-balancing policy for
// gRPC: a connection that has carried MaxRequestsPerConnection RPCs is
// replaced by a fresh connection to the same address, and drained. It is
// Istio's DestinationRule connectionPool.http.maxRequestsPerConnection
// (Envoy's max_requests_per_connection), which grpc-go does not have: it
// spreads long-lived clients over the replicas behind an L4 load balancer or
// a Kubernetes Service address, and bounds the life of a connection.
//
// The policy wraps a child policy (round_robin, least_request_experimental,
// trellis_random, ...) that balances over the endpoints as usual; recycling
// is invisible to it.
//
// # How recycling works
//
// The policy wraps the balancer.ClientConn of its child, so each SubConn the
// child creates is a wrapper around a real SubConn, and wraps the child's
// pickers, so each pick is counted on the real SubConn it returns. An RPC
// counts once it is picked onto a connection, whatever its outcome.
//
// When a connection reaches MaxRequestsPerConnection picks, the policy
// creates a replacement SubConn with the same addresses and options and
// connects it, make-before-break: picks keep going to the old connection
// meanwhile, and the child keeps seeing the endpoint READY, never the
// replacement's CONNECTING. Once the replacement is READY (and, with
// client-side health checking, reported healthy), the wrapper switches to
// it atomically, sends the parent a new picker generation, and shuts the old
// SubConn down. A connection thus carries MaxRequestsPerConnection RPCs plus
// those picked while its replacement connected: none on a quiet channel, a
// few under load.
//
// grpc-go drains a SubConn that is shut down: SubConn.Shutdown removes its
// addrConn with errConnDrain, and addrConn.tearDown closes the transport
// with GracefulClose, which refuses new streams (grpc retries those
// transparently on another connection) and closes the TCP connection when
// the last RPC in flight ends. In-flight RPCs, streams included, finish on
// the old connection.
//
// If the replacement fails to connect or is unhealthy, it is shut down and
// the old connection stays in use; the policy tries again after a backoff of
// 1s, doubling up to 30s, with jitter. If the old connection itself is lost,
// the replacement is abandoned and the child sees the loss, as without the
// policy; a reconnection is a new connection, counted from zero.
//
// The child's state and health listeners follow the current connection:
// the state and health updates it gets are those of the connection picks
// go to.
//
// # Usage
//
// Importing the package registers the policy under [Name]. Select it with a
// service config:
//
//	import _ "github.com/trellismesh/trellis/balancer/recycle"
//
//	cc, err := grpc.NewClient(target,
//		grpc.WithTransportCredentials(creds),
//		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"trellis_recycle":{
//			"maxRequestsPerConnection":1000,
//			"childPolicy":[{"round_robin":{}}]
//		}}]}`),
//	)
//
// or from xDS (gRFC A52), with a Cluster's load_balancing_policy holding an
// xds.type.v3.TypedStruct whose type_url is
// "type.googleapis.com/trellis_recycle" and whose value is the same JSON
// object. See [Config].
//
// # Limitations
//
// Producers the child builds with SubConn.GetOrBuildProducer (ORCA
// out-of-band load reports, as weighted_round_robin uses) live on the
// connection current when they were built, and end with it. The policy
// counts picks, not RPCs that reach the server: an RPC grpc retries
// transparently is counted on each connection it was picked onto.
package recycle
