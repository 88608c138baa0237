// Package ewma implements the trellis_ewma load-balancing policy for gRPC:
// latency-aware balancing by power of two choices over a peak-sensitive
// exponentially weighted moving average of each endpoint's latency,
// weighted by its outstanding RPCs — the design of Finagle's and Linkerd's
// peak EWMA balancers. A slow or overloaded endpoint gets a small share of
// the RPCs, and its share comes back as it recovers.
//
// For every RPC the picker samples two distinct READY endpoints at random
// and sends the RPC to the one of least cost, where
//
//	cost = latency estimate × (outstanding RPCs + 1)
//
// The latency of an RPC runs from Pick to the end of the call. The estimate
// of an endpoint:
//
//   - is peak-sensitive: a latency above the current estimate replaces it
//     at once; a lower one moves it towards itself by 1 - exp(-Δt/τ), Δt the
//     time since the last update and τ the Decay (default 10s);
//   - decays towards zero while the endpoint gets no responses, so an
//     endpoint that was avoided is tried again;
//   - warms up: a new endpoint starts from DefaultRTT, by default the mean
//     estimate of the endpoints that have responded (10ms if none has), so
//     it neither floods nor starves; its first response replaces that value;
//   - accrues failures: an RPC that fails with a code Envoy maps to 5xx
//     (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
//     DATA_LOSS) counts as a latency of at least FailurePenalty (default
//     1s); a CANCELLED RPC is not counted; other codes are answers, counted
//     by their latency.
//
// The policy is built the way grpc-go builds round_robin and least_request:
// an endpointsharding balancer keeps one pick_first child per endpoint, and
// the picker chooses among the READY ones; when none is READY, the picker of
// the aggregate state is used. Estimates are kept for as long as an
// endpoint is in the resolver state. Pick never blocks and takes no lock.
//
// Importing the package registers the policy under [Name]. Its JSON
// configuration has three optional fields, Go duration strings:
//
//	import _ "github.com/trellismesh/trellis/balancer/ewma"
//
//	cc, err := grpc.NewClient(target,
//		grpc.WithTransportCredentials(creds),
//		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"trellis_ewma":{"decay":"10s"}}]}`),
//	)
//
// From xDS (gRFC A52), a Cluster's load_balancing_policy holds an
// xds.type.v3.TypedStruct whose type_url is "type.googleapis.com/trellis_ewma"
// and whose value is that JSON object; the Trellis control plane emits it
// for a DestinationRule annotated trellis.io/load-balancer: EWMA, inside
// wrr_locality and, when configured, trellis_outlier. The HTTP client of
// package mesh runs the same algorithm (balancer/pick, policy "ewma").
package ewma
