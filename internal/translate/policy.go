package translate

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	v3xdstypepb "github.com/cncf/xds/go/xds/type/v3"
	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3faultcommonpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	v3faultpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	v3leastrequestpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	v3randompb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	v3ringhashpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	v3roundrobinpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	v3wrrlocalitypb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/outlier"
)

// Names of the Trellis LB policies (balancer/random, balancer/outlier,
// balancer/recycle),
// selected through xDS custom LB (gRFC A52) with a TypedStruct. Clients that
// lack them skip to the next policy in the list.
const (
	RandomPolicy  = "trellis_random"
	OutlierPolicy = "trellis_outlier"
	RecyclePolicy = "trellis_recycle"
	EWMAPolicy    = "trellis_ewma"
)

// FaultFilterName is the name of the HTTP fault filter in listeners, and the
// key of its per-route configuration.
const FaultFilterName = "envoy.filters.http.fault"

// Istio's default retry policy, applied to routes that set none: two
// retries on a failed connection, a refused stream, gRPC UNAVAILABLE or
// CANCELLED, and HTTP 503 (istiod's DefaultPolicy). grpc-go reads the gRPC
// conditions; the HTTP client the others.
var defaultRetry = &networking.HTTPRetry{Attempts: 2, RetryOn: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,503"}

// policy is the effective traffic policy of one cluster.
type policy struct {
	lb      *networking.LoadBalancerSettings
	pool    *networking.ConnectionPoolSettings
	outlier *networking.OutlierDetection
	tls     *networking.ClientTLSSettings
	ewma    bool // the rule's trellis.io/load-balancer annotation is EWMA
}

// override replaces the settings that o sets.
func (p policy) override(lb *networking.LoadBalancerSettings, pool *networking.ConnectionPoolSettings, od *networking.OutlierDetection, tls *networking.ClientTLSSettings) policy {
	if tls != nil {
		p.tls = tls
	}
	if lb != nil {
		p.lb = lb
	}
	if pool != nil {
		p.pool = pool
	}
	if od != nil {
		p.outlier = od
	}
	return p
}

func (p policy) apply(tp *networking.TrafficPolicy, port uint32) policy {
	if tp == nil {
		return p
	}
	p = p.override(tp.LoadBalancer, tp.ConnectionPool, tp.OutlierDetection, tp.Tls)
	for _, pl := range tp.PortLevelSettings {
		if pl.GetPort().GetNumber() == port {
			p = p.override(pl.LoadBalancer, pl.ConnectionPool, pl.OutlierDetection, pl.Tls)
		}
	}
	return p
}

// policyFor returns the effective policy of a host's port and subset, as
// Istio merges it: the rule's policy, its port-level settings, then the
// subset's policy and its port-level settings.
func (b *builder) policyFor(host string, port uint32, subset string) policy {
	dr, ok := b.rules[host]
	if !ok {
		return policy{}
	}
	p := policy{ewma: dr.Annotations[config.LoadBalancerAnnotation] == config.LoadBalancerEWMA}.apply(dr.Spec.TrafficPolicy, port)
	if subset != "" {
		for _, s := range dr.Spec.Subsets {
			if s.Name == subset {
				p = p.apply(s.TrafficPolicy, port)
			}
		}
	}
	return p
}

// applyPolicy sets the load balancing, circuit breaking and outlier
// detection of a cluster.
func applyPolicy(c *v3clusterpb.Cluster, p policy) {
	c.LbPolicy = v3clusterpb.Cluster_ROUND_ROBIN
	if n := p.pool.GetHttp().GetHttp2MaxRequests(); n > 0 {
		c.CircuitBreakers = &v3clusterpb.CircuitBreakers{Thresholds: []*v3clusterpb.CircuitBreakers_Thresholds{{
			Priority:    v3corepb.RoutingPriority_DEFAULT,
			MaxRequests: wrapperspb.UInt32(uint32(n)),
		}}}
	}
	if ch := p.lb.GetConsistentHash(); ch != nil {
		// Ring hash picks across localities itself, so it is the whole
		// policy rather than the child of wrr_locality.
		rh := &v3ringhashpb.RingHash{HashFunction: v3ringhashpb.RingHash_XX_HASH}
		if n := ch.GetRingHash().GetMinimumRingSize(); n > 0 {
			rh.MinimumRingSize = wrapperspb.UInt64(n)
		}
		c.LbPolicy = v3clusterpb.Cluster_RING_HASH
		c.LoadBalancingPolicy = policies(typed("envoy.load_balancing_policies.ring_hash", rh))
		return
	}
	// child is the picking policy any xDS client knows; trellis is the
	// gRPC JSON config of the Trellis policies wrapped around the picking
	// policy (outlier ejection outside, connection recycling inside it),
	// preferred by clients that have them.
	child := typed("envoy.load_balancing_policies.round_robin", &v3roundrobinpb.RoundRobin{})
	trellis := map[string]any{"round_robin": map[string]any{}}
	var extra []*v3clusterpb.LoadBalancingPolicy_Policy // preferred by other clients
	useTrellis := false
	switch p.lb.GetSimple() {
	//lint:ignore SA1019 LEAST_CONN is the old name of LEAST_REQUEST, still written by users.
	case networking.LoadBalancerSettings_LEAST_REQUEST, networking.LoadBalancerSettings_LEAST_CONN:
		child = typed("envoy.load_balancing_policies.least_request", &v3leastrequestpb.LeastRequest{ChoiceCount: wrapperspb.UInt32(2)})
		trellis = map[string]any{"least_request_experimental": map[string]any{"choiceCount": 2}}
	case networking.LoadBalancerSettings_RANDOM:
		trellis = map[string]any{RandomPolicy: map[string]any{}}
		extra = append(extra, typed("envoy.load_balancing_policies.random", &v3randompb.Random{}))
		useTrellis = true
	}
	if p.ewma {
		// Peak EWMA (balancer/ewma); clients without it get least request,
		// the nearest standard policy.
		child = typed("envoy.load_balancing_policies.least_request", &v3leastrequestpb.LeastRequest{ChoiceCount: wrapperspb.UInt32(2)})
		trellis = map[string]any{EWMAPolicy: map[string]any{}}
		extra = nil
		useTrellis = true
	}
	if n := p.pool.GetHttp().GetMaxRequestsPerConnection(); n > 0 {
		trellis = map[string]any{RecyclePolicy: map[string]any{"maxRequestsPerConnection": n, "childPolicy": []any{trellis}}}
		useTrellis = true
	}
	if od := p.outlier; od != nil {
		trellis = map[string]any{OutlierPolicy: outlierConfig(od).PolicyJSON([]any{trellis})}
		useTrellis = true
	}
	var list []*v3clusterpb.LoadBalancingPolicy_Policy
	if useTrellis {
		for name, cfg := range trellis { // exactly one
			list = append(list, typedStruct(name, cfg))
		}
	}
	// One wrr_locality whose child list is tried in order: grpc-go skips
	// child policies it does not know (Envoy's random, or a Trellis policy
	// on a client without it), but fails the whole cluster if wrr_locality
	// itself ends up with none, so the plain policy always comes last.
	list = append(append(list, extra...), child)
	c.LoadBalancingPolicy = policies(wrrLocality(list...))
}

// outlierConfig is the outlier ejection of a DestinationRule's
// outlierDetection: what it sets, and Istio's defaults (which are
// outlier.Defaults) for the rest. A maxEjectionPercent of 0 is unset in
// Istio's API, so it means the default 10.
func outlierConfig(od *networking.OutlierDetection) outlier.Config {
	cfg := outlier.Defaults()
	if v := od.GetConsecutive_5XxErrors(); v != nil {
		cfg.ConsecutiveErrors = v.GetValue()
	}
	if v := od.GetConsecutiveGatewayErrors(); v != nil {
		cfg.ConsecutiveGatewayErrors = v.GetValue()
	}
	if d := od.GetInterval(); d != nil {
		cfg.Interval = d.AsDuration()
	}
	if d := od.GetBaseEjectionTime(); d != nil {
		cfg.BaseEjectionTime = d.AsDuration()
	}
	if n := od.GetMaxEjectionPercent(); n > 0 {
		cfg.MaxEjectionPercent = uint32(n)
	}
	if n := od.GetMinHealthPercent(); n > 0 {
		cfg.MinHealthPercent = uint32(n)
	}
	return cfg
}

func policies(ps ...*v3clusterpb.LoadBalancingPolicy_Policy) *v3clusterpb.LoadBalancingPolicy {
	return &v3clusterpb.LoadBalancingPolicy{Policies: ps}
}

func typed(name string, m proto.Message) *v3clusterpb.LoadBalancingPolicy_Policy {
	return &v3clusterpb.LoadBalancingPolicy_Policy{TypedExtensionConfig: &v3corepb.TypedExtensionConfig{Name: name, TypedConfig: mustAny(m)}}
}

// typedStruct selects a gRPC LB policy by name with a JSON config (gRFC A52):
// cfg is anything that marshals to a JSON object.
func typedStruct(name string, cfg any) *v3clusterpb.LoadBalancingPolicy_Policy {
	// Round-trip through JSON so that numbers and nested values take the
	// forms structpb accepts.
	raw, err := json.Marshal(cfg)
	if err != nil {
		panic(fmt.Sprintf("translate: %s config: %v", name, err))
	}
	s := &structpb.Struct{}
	if err := s.UnmarshalJSON(raw); err != nil {
		panic(fmt.Sprintf("translate: %s config: %v", name, err))
	}
	return typed(name, &v3xdstypepb.TypedStruct{TypeUrl: "type.googleapis.com/" + name, Value: s})
}

func wrrLocality(children ...*v3clusterpb.LoadBalancingPolicy_Policy) *v3clusterpb.LoadBalancingPolicy_Policy {
	return typed("envoy.load_balancing_policies.wrr_locality", &v3wrrlocalitypb.WrrLocality{
		EndpointPickingPolicy: policies(children...),
	})
}

// hashPolicy returns the route hash policy for a cluster policy with
// consistent hashing, or nil.
func hashPolicy(p policy) []*v3routepb.RouteAction_HashPolicy {
	ch := p.lb.GetConsistentHash()
	switch {
	case ch == nil:
		return nil
	case ch.GetHttpHeaderName() != "":
		return []*v3routepb.RouteAction_HashPolicy{{PolicySpecifier: &v3routepb.RouteAction_HashPolicy_Header_{
			Header: &v3routepb.RouteAction_HashPolicy_Header{HeaderName: ch.GetHttpHeaderName()}}}}
	default: // useSourceIp: one client connection is one source
		return []*v3routepb.RouteAction_HashPolicy{{PolicySpecifier: &v3routepb.RouteAction_HashPolicy_FilterState_{
			FilterState: &v3routepb.RouteAction_HashPolicy_FilterState{Key: "io.grpc.channel_id"}}}}
	}
}

// routeBehaviour sets a route's timeout and retry policy and returns its
// fault filter configuration, if any.
func routeBehaviour(action *v3routepb.RouteAction, hr *networking.HTTPRoute) *v3faultpb.HTTPFault {
	if t := hr.GetTimeout(); t != nil && t.AsDuration() > 0 {
		action.MaxStreamDuration = &v3routepb.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(t.AsDuration())}
	}
	rt := hr.GetRetries()
	if rt == nil {
		rt = defaultRetry
	}
	if rt.Attempts > 0 {
		// Conditions go to retry_on as Envoy names them (grpc-go reads the
		// gRPC ones and ignores the rest; the HTTP client reads the HTTP
		// ones); status codes go to retriable_status_codes. connect-failure
		// and refused-stream are kept for HTTP; for gRPC, transparent retry
		// covers them.
		var on []string
		var codes []uint32
		for _, c := range strings.Split(cmpOr(rt.RetryOn, defaultRetry.RetryOn), ",") {
			c = strings.TrimSpace(c)
			if n, err := strconv.Atoi(c); err == nil {
				codes = append(codes, uint32(n))
				continue
			}
			if c != "" && !slices.Contains(on, c) {
				on = append(on, c)
			}
		}
		if len(codes) > 0 && !slices.Contains(on, "retriable-status-codes") {
			on = append(on, "retriable-status-codes")
		}
		// per_try_timeout is standard xDS that grpc-go ignores; the mesh's
		// own retry engine (package retry) honours it.
		if len(on) > 0 || rt.GetPerTryTimeout() != nil {
			action.RetryPolicy = &v3routepb.RetryPolicy{
				RetryOn:              strings.Join(on, ","),
				NumRetries:           wrapperspb.UInt32(uint32(rt.Attempts)),
				RetriableStatusCodes: codes,
			}
			if b := rt.GetBackoff(); b != nil {
				action.RetryPolicy.RetryBackOff = &v3routepb.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(b.AsDuration())}
			}
			if t := rt.GetPerTryTimeout(); t != nil {
				action.RetryPolicy.PerTryTimeout = durationpb.New(t.AsDuration())
			}
		}
	}
	ft := hr.GetFault()
	if ft == nil {
		return nil
	}
	f := &v3faultpb.HTTPFault{}
	if d := ft.GetDelay(); d != nil {
		f.Delay = &v3faultcommonpb.FaultDelay{
			FaultDelaySecifier: &v3faultcommonpb.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d.GetFixedDelay().AsDuration())},
			Percentage:         fraction(d.GetPercentage()),
		}
	}
	if a := ft.GetAbort(); a != nil {
		f.Abort = &v3faultpb.FaultAbort{Percentage: fraction(a.GetPercentage())}
		if code, ok := config.GRPCCodes[a.GetGrpcStatus()]; ok {
			f.Abort.ErrorType = &v3faultpb.FaultAbort_GrpcStatus{GrpcStatus: code}
		} else {
			f.Abort.ErrorType = &v3faultpb.FaultAbort_HttpStatus{HttpStatus: uint32(a.GetHttpStatus())}
		}
	}
	return f
}

// fraction converts an Istio percentage (unset: all) to parts per million.
func fraction(p *networking.Percent) *v3typepb.FractionalPercent {
	v := 100.0
	if p != nil {
		v = p.Value
	}
	return &v3typepb.FractionalPercent{Numerator: uint32(v*10000 + 0.5), Denominator: v3typepb.FractionalPercent_MILLION}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
