package translate

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	v3xdstypepb "github.com/cncf/xds/go/xds/type/v3"
	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3faultpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3ringhashpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	v3wrrlocalitypb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellismesh/trellis/internal/registry"
)

const reviews = "reviews.default.svc.cluster.local"

func buildReviews(t *testing.T, yaml string) *Resources {
	t.Helper()
	return Build(load(t, yaml), []registry.Endpoint{
		reg("reviews", "", "127.0.0.1", 1001, 9080, map[string]string{"version": "v1"}),
		reg("reviews", "", "127.0.0.1", 1002, 9090, map[string]string{"version": "v1"}),
	}, Options{})
}

func routesOf(t *testing.T, res *Resources, port string) []*v3routepb.Route {
	t.Helper()
	rc, ok := res.Routes[reviews+":"+port]
	if !ok {
		t.Fatalf("no route configuration %s:%s", reviews, port)
	}
	return rc.GetVirtualHosts()[0].GetRoutes()
}

func TestRouteTimeoutRetriesAndFault(t *testing.T) {
	res := buildReviews(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    timeout: 1.5s
    retries: {attempts: 3, retryOn: "deadline-exceeded,connect-failure,internal", backoff: 10ms, perTryTimeout: 300ms}
    fault:
      delay: {fixedDelay: 200ms, percentage: {value: 12.5}}
      abort: {grpcStatus: RESOURCE_EXHAUSTED}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /b}}]
    retries: {attempts: 0}
    fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
    route: [{destination: {host: reviews}}]
  - retries: {attempts: 1, retryOn: connect-failure}
    route: [{destination: {host: reviews}}]
`)
	routes := routesOf(t, res, "9080")
	a := routes[0].GetRoute()
	if got := a.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration(); got != 1500*time.Millisecond {
		t.Errorf("route /a max stream duration = %v, want 1.5s", got)
	}
	wantRetry := &v3routepb.RetryPolicy{
		RetryOn:       "deadline-exceeded,connect-failure,internal",
		NumRetries:    wrapperspb.UInt32(3),
		RetryBackOff:  &v3routepb.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(10 * time.Millisecond)},
		PerTryTimeout: durationpb.New(300 * time.Millisecond),
	}
	if diff := cmp.Diff(a.GetRetryPolicy(), wantRetry, protocmp.Transform()); diff != "" {
		t.Errorf("route /a retry policy (-got +want):\n%s", diff)
	}
	fault := &v3faultpb.HTTPFault{}
	if err := routes[0].GetTypedPerFilterConfig()[FaultFilterName].UnmarshalTo(fault); err != nil {
		t.Fatalf("route /a fault config: %v", err)
	}
	if got := fault.GetDelay().GetPercentage(); got.GetNumerator() != 125000 || got.GetDenominator() != v3typepb.FractionalPercent_MILLION {
		t.Errorf("delay percentage = %v, want 125000 per million", got)
	}
	if got := fault.GetAbort(); got.GetGrpcStatus() != 8 || got.GetPercentage().GetNumerator() != 1000000 {
		t.Errorf("abort = %v, want gRPC code 8 for every call", got)
	}
	b := routes[1]
	if b.GetRoute().GetRetryPolicy() != nil || b.GetRoute().GetMaxStreamDuration() != nil {
		t.Errorf("route /b = %v, want no retries (attempts 0) and no timeout", b.GetRoute())
	}
	if err := b.GetTypedPerFilterConfig()[FaultFilterName].UnmarshalTo(fault); err != nil || fault.GetAbort().GetHttpStatus() != 503 || fault.GetAbort().GetPercentage().GetNumerator() != 500000 {
		t.Errorf("route /b fault = %v (%v), want HTTP 503 at 50%%", fault, err)
	}
	// connect-failure is kept for the HTTP client; grpc-go finds no gRPC
	// code in it (its transparent retry covers connect failures).
	if rp := routes[2].GetRoute().GetRetryPolicy(); rp.GetRetryOn() != "connect-failure" {
		t.Errorf("connect-failure only: retry policy = %v, want retry_on connect-failure", rp)
	}
	// The fault filter sits before the router in listeners of this port.
	hcm := &v3hcmpb.HttpConnectionManager{}
	if err := res.Listeners["reviews:9080"].GetApiListener().GetApiListener().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range hcm.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	if diff := cmp.Diff(names, []string{FaultFilterName, "envoy.filters.http.router"}); diff != "" {
		t.Errorf("filters of reviews:9080 (-got +want):\n%s", diff)
	}
}

func TestNoFaultNoFaultFilter(t *testing.T) {
	res := buildReviews(t, "")
	hcm := &v3hcmpb.HttpConnectionManager{}
	if err := res.Listeners["reviews:9080"].GetApiListener().GetApiListener().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	if n := len(hcm.GetHttpFilters()); n != 1 {
		t.Errorf("listener has %d filters, want only the router", n)
	}
}

// lbPolicies describes a cluster's load balancing policy list: each entry is
// the policy name, then for wrr_locality each child's name after a slash, a
// TypedStruct's type URL and JSON in brackets.
func lbPolicies(t *testing.T, c *v3clusterpb.Cluster) []string {
	t.Helper()
	var out []string
	for _, p := range c.GetLoadBalancingPolicy().GetPolicies() {
		tc := p.GetTypedExtensionConfig()
		desc := tc.GetName()
		if w := (&v3wrrlocalitypb.WrrLocality{}); tc.GetTypedConfig().MessageIs(w) {
			if err := tc.GetTypedConfig().UnmarshalTo(w); err != nil {
				t.Fatal(err)
			}
			for _, cp := range w.GetEndpointPickingPolicy().GetPolicies() {
				child := cp.GetTypedExtensionConfig()
				desc += "/" + child.GetName()
				if ts := (&v3xdstypepb.TypedStruct{}); child.GetTypedConfig().MessageIs(ts) {
					child.GetTypedConfig().UnmarshalTo(ts)
					js, _ := json.Marshal(ts.GetValue().AsMap()) // protojson spaces at random
					desc += "[" + ts.GetTypeUrl() + " " + string(js) + "]"
				}
			}
		}
		out = append(out, desc)
	}
	return out
}

func TestTrafficPolicyLevels(t *testing.T) {
	res := buildReviews(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {http: {http2MaxRequests: 100}}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 64}}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
      outlierDetection: {consecutiveGatewayErrors: 2, interval: 1s}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {http: {http2MaxRequests: 7}}
      portLevelSettings:
      - port: {number: 9090}
        loadBalancer: {consistentHash: {useSourceIp: true}}
`)
	const wrr = "envoy.load_balancing_policies.wrr_locality"
	for _, tc := range []struct {
		cluster     string
		policies    []string
		maxRequests uint32
		ringMin     uint64
	}{
		{ClusterName(reviews, 9080, ""), []string{wrr + "/envoy.load_balancing_policies.least_request"}, 100, 0},
		{ClusterName(reviews, 9090, ""), []string{"envoy.load_balancing_policies.ring_hash"}, 100, 64},
		{ClusterName(reviews, 9080, "v1"), []string{
			wrr + `/trellis_outlier[type.googleapis.com/trellis_outlier {"baseEjectionTime":"30s","childPolicy":[{"trellis_random":{}}],"consecutiveErrors":5,"consecutiveGatewayErrors":2,"interval":"1s","maxEjectionPercent":10,"minHealthPercent":0}]` +
				"/envoy.load_balancing_policies.random/envoy.load_balancing_policies.round_robin",
		}, 100, 0},
		{ClusterName(reviews, 9080, "v2"), []string{wrr + "/envoy.load_balancing_policies.least_request"}, 7, 0},
		{ClusterName(reviews, 9090, "v2"), []string{"envoy.load_balancing_policies.ring_hash"}, 7, 1024},
	} {
		c := res.Clusters[tc.cluster]
		if diff := cmp.Diff(lbPolicies(t, c), tc.policies); diff != "" {
			t.Errorf("%s policies (-got +want):\n%s", tc.cluster, diff)
		}
		if got := c.GetCircuitBreakers().GetThresholds()[0].GetMaxRequests().GetValue(); got != tc.maxRequests {
			t.Errorf("%s max requests = %d, want %d", tc.cluster, got, tc.maxRequests)
		}
		if tc.ringMin != 0 {
			rh := &v3ringhashpb.RingHash{}
			c.GetLoadBalancingPolicy().GetPolicies()[0].GetTypedExtensionConfig().GetTypedConfig().UnmarshalTo(rh)
			if got := rh.GetMinimumRingSize().GetValue(); got != tc.ringMin && !(tc.ringMin == 1024 && rh.GetMinimumRingSize() == nil) {
				t.Errorf("%s minimum ring size = %d, want %d", tc.cluster, got, tc.ringMin)
			}
		}
	}
	// Routes to port 9090 hash on the header; the default route goes to
	// the service-wide cluster, whose policy hashes on x-user.
	hp := routesOf(t, res, "9090")[0].GetRoute().GetHashPolicy()
	if len(hp) != 1 || hp[0].GetHeader().GetHeaderName() != "x-user" {
		t.Errorf("port 9090 hash policy = %v, want header x-user", hp)
	}
	if hp := routesOf(t, res, "9080")[0].GetRoute().GetHashPolicy(); hp != nil {
		t.Errorf("port 9080 hash policy = %v, want none", hp)
	}
}

func TestRandomFallsBackForOtherClients(t *testing.T) {
	res := buildReviews(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
`)
	got := lbPolicies(t, res.Clusters[ClusterName(reviews, 9080, "")])
	want := []string{
		"envoy.load_balancing_policies.wrr_locality" +
			"/trellis_random[type.googleapis.com/trellis_random {}]" +
			"/envoy.load_balancing_policies.random" +
			"/envoy.load_balancing_policies.round_robin",
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("RANDOM policies (-got +want):\n%s", diff)
	}
}

func TestSourceHashOnSubsetRoute(t *testing.T) {
	res := buildReviews(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]
`)
	hp := routesOf(t, res, "9080")[0].GetRoute().GetHashPolicy()
	want := []*v3routepb.RouteAction_HashPolicy{{PolicySpecifier: &v3routepb.RouteAction_HashPolicy_FilterState_{
		FilterState: &v3routepb.RouteAction_HashPolicy_FilterState{Key: "io.grpc.channel_id"}}}}
	if diff := cmp.Diff(hp, want, protocmp.Transform()); diff != "" {
		t.Errorf("hash policy (-got +want):\n%s", diff)
	}
	if c := res.Clusters[ClusterName(reviews, 9080, "v1")]; c.GetLbPolicy() != v3clusterpb.Cluster_RING_HASH {
		t.Errorf("v1 cluster lb policy = %v, want RING_HASH", c.GetLbPolicy())
	}
	// The resources still satisfy grpc-go's validation of their types.
	for name, c := range res.Clusters {
		if err := c.Validate(); err != nil && !strings.Contains(err.Error(), "no") {
			t.Errorf("cluster %s: %v", name, err)
		}
		if _, err := proto.Marshal(c); err != nil {
			t.Errorf("cluster %s: %v", name, err)
		}
	}
}

func TestTrellisPoliciesNest(t *testing.T) {
	res := buildReviews(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {http: {maxRequestsPerConnection: 50}}
    outlierDetection: {consecutive5xxErrors: 2}
    portLevelSettings:
    - port: {number: 9090}
      outlierDetection: {consecutive5xxErrors: 7}
      connectionPool: {http: {http2MaxRequests: 9}}
`)
	const wrr = "envoy.load_balancing_policies.wrr_locality"
	got := lbPolicies(t, res.Clusters[ClusterName(reviews, 9080, "")])
	want := []string{wrr +
		`/trellis_outlier[type.googleapis.com/trellis_outlier {"baseEjectionTime":"30s","childPolicy":[{"trellis_recycle":{"childPolicy":[{"least_request_experimental":{"choiceCount":2}}],"maxRequestsPerConnection":50}}],"consecutiveErrors":2,"interval":"10s","maxEjectionPercent":10,"minHealthPercent":0}]` +
		"/envoy.load_balancing_policies.least_request"}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("policies (-got +want):\n%s", diff)
	}
	// The port-level connection pool replaces the rule's whole: no
	// recycling on port 9090, only its circuit breaker.
	got = lbPolicies(t, res.Clusters[ClusterName(reviews, 9090, "")])
	want = []string{wrr +
		`/trellis_outlier[type.googleapis.com/trellis_outlier {"baseEjectionTime":"30s","childPolicy":[{"least_request_experimental":{"choiceCount":2}}],"consecutiveErrors":7,"interval":"10s","maxEjectionPercent":10,"minHealthPercent":0}]` +
		"/envoy.load_balancing_policies.least_request"}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("port 9090 policies (-got +want):\n%s", diff)
	}
}
