package mesh

import (
	"net/http"
	"testing"
	"time"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3faultcommonpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	v3faultpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestHTTPRouteOf(t *testing.T) {
	fault, err := anypb.New(&v3faultpb.HTTPFault{
		Delay: &v3faultcommonpb.FaultDelay{
			FaultDelaySecifier: &v3faultcommonpb.FaultDelay_FixedDelay{FixedDelay: durationpb.New(150 * time.Millisecond)},
			Percentage:         &v3typepb.FractionalPercent{Numerator: 25, Denominator: v3typepb.FractionalPercent_HUNDRED},
		},
		Abort: &v3faultpb.FaultAbort{
			ErrorType:  &v3faultpb.FaultAbort_GrpcStatus{GrpcStatus: 14},
			Percentage: &v3typepb.FractionalPercent{Numerator: 500000, Denominator: v3typepb.FractionalPercent_MILLION},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	route := &v3routepb.Route{
		Action: &v3routepb.Route_Route{Route: &v3routepb.RouteAction{
			ClusterSpecifier: &v3routepb.RouteAction_WeightedClusters{WeightedClusters: &v3routepb.WeightedCluster{Clusters: []*v3routepb.WeightedCluster_ClusterWeight{
				{Name: "a", Weight: wrapperspb.UInt32(80)}, {Name: "b", Weight: wrapperspb.UInt32(20)},
			}}},
			MaxStreamDuration: &v3routepb.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(2 * time.Second)},
			RetryPolicy: &v3routepb.RetryPolicy{
				RetryOn: "5xx, Connect-Failure,retriable-status-codes", NumRetries: wrapperspb.UInt32(3),
				RetriableStatusCodes: []uint32{418}, PerTryTimeout: durationpb.New(100 * time.Millisecond),
			},
			HashPolicy: []*v3routepb.RouteAction_HashPolicy{{PolicySpecifier: &v3routepb.RouteAction_HashPolicy_Header_{
				Header: &v3routepb.RouteAction_HashPolicy_Header{HeaderName: "X-User"}}}},
		}},
		TypedPerFilterConfig: map[string]*anypb.Any{"envoy.filters.http.fault": fault},
	}
	got := httpRouteOf(route)
	want := &httpRoute{
		clusters:   []weightedCluster{{"a", 80}, {"b", 20}},
		total:      100,
		timeout:    2 * time.Second,
		retry:      httpRetry{attempts: 4, on: map[string]bool{"5xx": true, "connect-failure": true, "retriable-status-codes": true}, codes: []int{418}, perTry: 100 * time.Millisecond},
		fault:      &httpFault{delay: 150 * time.Millisecond, delayPPM: 250000, abort: 503, abortPPM: 500000},
		hashHeader: "x-user",
	}
	if diff := cmp.Diff(got, want, cmp.AllowUnexported(httpRoute{}, weightedCluster{}, httpRetry{}, httpFault{})); diff != "" {
		t.Errorf("httpRouteOf() (-got +want):\n%s", diff)
	}
}

func TestHTTPRetryRetriable(t *testing.T) {
	resp := func(code int) *http.Response { return &http.Response{StatusCode: code} }
	p := func(on ...string) *httpRetry {
		r := &httpRetry{attempts: 3, on: map[string]bool{}, codes: []int{418}}
		for _, c := range on {
			r.on[c] = true
		}
		return r
	}
	tests := []struct {
		name    string
		policy  *httpRetry
		resp    *http.Response
		outcome outcome
		want    bool
	}{
		{"5xx retries 500", p("5xx"), resp(500), outcomeStatus, true},
		{"5xx does not retry 404", p("5xx"), resp(404), outcomeStatus, false},
		{"gateway-error retries 503", p("gateway-error"), resp(503), outcomeStatus, true},
		{"gateway-error does not retry 500", p("gateway-error"), resp(500), outcomeStatus, false},
		{"retriable-4xx retries 409", p("retriable-4xx"), resp(409), outcomeStatus, true},
		{"status code list", p("retriable-status-codes"), resp(418), outcomeStatus, true},
		{"status code not listed", p("retriable-status-codes"), resp(419), outcomeStatus, false},
		{"connect-failure", p("connect-failure"), nil, outcomeConnect, true},
		{"reset", p("reset"), nil, outcomeReset, true},
		{"reset not configured", p("connect-failure"), nil, outcomeReset, false},
		{"per-try timeout always", p(), nil, outcomeTimeout, true},
		{"overload never", p("5xx", "gateway-error"), nil, outcomeOverload, false},
		{"one attempt never", &httpRetry{attempts: 1, on: map[string]bool{"5xx": true}}, resp(500), outcomeStatus, false},
	}
	for _, tc := range tests {
		if got := tc.policy.retriable(tc.resp, tc.outcome); got != tc.want {
			t.Errorf("%s: retriable() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestExternal(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:8080": true, "[::1]:80": true, "localhost:8080": true, "localhost": true, "10.0.0.1": true,
		"reviews:9080": false, "reviews": false, "reviews.default.svc.cluster.local:9080": false,
	} {
		if got := external(host); got != want {
			t.Errorf("external(%q) = %v, want %v", host, got, want)
		}
	}
}
