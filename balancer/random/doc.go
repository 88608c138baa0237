// Package random implements the trellis_random load-balancing policy for
// gRPC: every RPC goes to an endpoint chosen uniformly at random among the
// READY ones, as Istio's DestinationRule loadBalancer.simple RANDOM does.
//
// The policy is built the way grpc-go builds round_robin: an
// endpointsharding balancer keeps one pick_first child per endpoint (so an
// endpoint with several addresses fails over between them), and the picker
// chooses among the children that are READY. When none is READY, the picker
// of the aggregate state is used, so RPCs wait while endpoints connect and
// fail fast when all of them are in TRANSIENT_FAILURE. The pick_first children
// honour health signals (client-side health checks, outlier ejection), so an
// endpoint that is unhealthy is not picked.
//
// Importing the package registers the policy under [Name]. Its configuration
// is an empty JSON object; unknown fields are rejected. Select it with a
// service config:
//
//	import _ "github.com/trellismesh/trellis/balancer/random"
//
//	cc, err := grpc.NewClient(target,
//		grpc.WithTransportCredentials(creds),
//		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"trellis_random":{}}]}`),
//	)
//
// or from xDS (gRFC A52), with a Cluster's load_balancing_policy holding an
// xds.type.v3.TypedStruct whose type_url is
// "type.googleapis.com/trellis_random" and whose value is empty.
package random
