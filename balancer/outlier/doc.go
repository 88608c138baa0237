// Package outlier implements the trellis_outlier load-balancing policy for
// gRPC: consecutive-error outlier ejection in front of a child policy, what
// Envoy and Istio call consecutive_5xx (consecutive5xxErrors) and
// consecutive_gateway_failure (consecutiveGatewayErrors). grpc-go's own
// outlier detection (gRFC A50) has only the success-rate and
// failure-percentage algorithms.
//
// Every RPC's result is attributed to the endpoint it went to. An endpoint
// that fails ConsecutiveErrors RPCs in a row with a code Envoy maps to an
// HTTP 5xx (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
// UNAVAILABLE, DATA_LOSS), or ConsecutiveGatewayErrors in a row with
// UNAVAILABLE or DEADLINE_EXCEEDED, is ejected at once: the next RPC no
// longer goes to it. Any other result resets the counts; an RPC the client
// cancelled does not count. Every Interval, endpoints whose ejection time
// (BaseEjectionTime × the number of ejections in a row, capped at
// max(BaseEjectionTime, 300s)) has passed come back. MaxEjectionPercent
// bounds how many endpoints are out at once, and MinHealthPercent suspends
// ejection when too few endpoints are left. See [Config]. The counting and
// ejection are the state machine the mesh's HTTP client (balancer/pick)
// runs too, so both protocols eject the same endpoints for the same
// results.
//
// # How ejection works
//
// The policy wraps the balancer.ClientConn of its child, so each SubConn the
// child creates is wrapped and mapped to the endpoint of its address, and
// wraps the child's pickers, so each RPC's Done callback reports its result
// for the SubConn picked.
//
// An ejected endpoint is taken out of the child's picks the way grpc-go's
// outlier_detection_experimental policy does it: the child's health
// listeners on the endpoint's SubConns are told TRANSIENT_FAILURE while it
// is ejected, and the real health state again when it comes back. The
// policies built on endpointsharding over pick_first (round_robin,
// least_request_experimental, weighted_round_robin, trellis_random) then
// leave the endpoint out of their pickers while its connection stays up, so
// nothing reconnects on unejection. The health update is delivered
// synchronously, from the Done callback of the RPC that crossed the
// threshold, so the very next RPC avoids the endpoint.
//
// Child policies that do not listen to health updates are covered as well,
// less precisely: when the child's picker returns an ejected endpoint, the
// pick is dropped (its Done called with an empty DoneInfo, as grpc-go does
// for picks it abandons) and the child is asked again, up to three picks in
// all; the last one is used even if ejected, so Pick never blocks or fails
// because of ejection. With pick_first as the child, ejection has no effect,
// as there is nothing else to pick.
//
// When every endpoint is ejected (MaxEjectionPercent 100, MinHealthPercent
// 0) the child is in TRANSIENT_FAILURE and RPCs fail until an endpoint comes
// back, as Envoy behaves with its panic threshold disabled.
//
// # Usage
//
// Importing the package registers the policy under [Name]. Select it with a
// service config:
//
//	import _ "github.com/trellismesh/trellis/balancer/outlier"
//
//	cc, err := grpc.NewClient(target,
//		grpc.WithTransportCredentials(creds),
//		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"trellis_outlier":{
//			"childPolicy":[{"round_robin":{}}],
//			"consecutiveErrors":5,
//			"interval":"10s",
//			"baseEjectionTime":"30s",
//			"maxEjectionPercent":50
//		}}]}`),
//	)
//
// or from xDS (gRFC A52), with a Cluster's load_balancing_policy holding an
// xds.type.v3.TypedStruct whose type_url is
// "type.googleapis.com/trellis_outlier" and whose value is the same JSON
// object. Placed under wrr_locality, the policy runs once per locality, so
// MaxEjectionPercent and MinHealthPercent count the endpoints of one
// locality, not of the whole cluster as in Envoy.
package outlier
