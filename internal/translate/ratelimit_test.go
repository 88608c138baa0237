package translate

import (
	"fmt"
	"slices"
	"testing"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3ratelimitpb "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	v3localratelimitpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3exprpb "github.com/envoyproxy/go-control-plane/envoy/extensions/rate_limit_descriptors/expr/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellismesh/trellis/internal/ratelimit"
	"github.com/trellismesh/trellis/internal/registry"
)

const rateLimitYAML = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  annotations:
    trellis.io/rate-limit: '{"requestsPerSecond": 100, "burst": 20}'
    trellis.io/server-rate-limit: '{"requestsPerSecond": 50, "perCaller": %s}'
spec:
  host: reviews
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  annotations:
    trellis.io/route-rate-limit: '{"writes": {"requestsPerSecond": 5, "burst": 1}}'
spec:
  hosts: [reviews]
  http:
  - name: writes
    match: [{uri: {prefix: /w}}, {uri: {prefix: /W}}]
    route: [{destination: {host: reviews}}]
  - name: reads
    route: [{destination: {host: reviews}}]
`

// validated unwraps an Any and checks the message against the Envoy protos'
// own validation rules.
func validated[M interface {
	proto.Message
	Validate() error
}](t *testing.T, a *anypb.Any, m M) M {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("UnmarshalTo(%T) = %v", m, err)
	}
	if err := m.Validate(); err != nil {
		t.Errorf("%T.Validate() = %v", m, err)
	}
	return m
}

func clientLimit(rps, burst uint32) *v3localratelimitpb.LocalRateLimit {
	all := func(key string) *v3corepb.RuntimeFractionalPercent {
		return &v3corepb.RuntimeFractionalPercent{DefaultValue: &v3typepb.FractionalPercent{Numerator: 100}, RuntimeKey: key}
	}
	return &v3localratelimitpb.LocalRateLimit{
		StatPrefix:                     "trellis_client_rate_limit",
		TokenBucket:                    &v3typepb.TokenBucket{MaxTokens: burst, TokensPerFill: wrapperspb.UInt32(rps), FillInterval: durationpb.New(time.Second)},
		FilterEnabled:                  all("trellis_client_rate_limit_enabled"),
		FilterEnforced:                 all("trellis_client_rate_limit_enforced"),
		RateLimitedAsResourceExhausted: true,
	}
}

// perFilterLimit returns the limit of a per-filter config map, nil if none.
func perFilterLimit(t *testing.T, m map[string]*anypb.Any) *v3localratelimitpb.LocalRateLimit {
	t.Helper()
	a := m[ratelimit.FilterName]
	if a == nil {
		return nil
	}
	fc := validated(t, a, &v3routepb.FilterConfig{})
	if !fc.IsOptional {
		t.Errorf("per-filter config is not optional; grpc-go would reject the route configuration")
	}
	return validated(t, fc.Config, &v3localratelimitpb.LocalRateLimit{})
}

func limitFilters(t *testing.T, hcmAny *anypb.Any) (names []string, limit *v3hcmpb.HttpFilter) {
	t.Helper()
	// The API listener's HttpConnectionManager has no stat_prefix (grpc-go
	// needs none), so only its filters are validated, by the callers.
	hcm := new(v3hcmpb.HttpConnectionManager)
	if err := hcmAny.UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	for _, f := range hcm.HttpFilters {
		names = append(names, f.Name)
		if f.Name == ratelimit.FilterName {
			limit = f
			if !f.IsOptional {
				t.Errorf("filter %s is not optional", f.Name)
			}
		}
	}
	return names, limit
}

func TestClientRateLimits(t *testing.T) {
	res := Build(load(t, sprintf(rateLimitYAML, "false")), []registry.Endpoint{reg("reviews", "", "127.0.0.1", 1001, 9080, nil)}, Options{})
	rc := res.Routes[reviews+":9080"]
	vh := rc.GetVirtualHosts()[0]
	if diff := cmp.Diff(perFilterLimit(t, vh.TypedPerFilterConfig), clientLimit(100, 20), protocmp.Transform()); diff != "" {
		t.Errorf("virtual host limit (-got +want):\n%s", diff)
	}
	var got []string
	for _, r := range vh.Routes {
		l := perFilterLimit(t, r.TypedPerFilterConfig)
		if l == nil {
			got = append(got, r.Name+": none")
			continue
		}
		if diff := cmp.Diff(l, clientLimit(5, 1), protocmp.Transform()); diff != "" {
			t.Errorf("route %s limit (-got +want):\n%s", r.Name, diff)
		}
		got = append(got, r.Name+": limited")
	}
	if diff := cmp.Diff(got, []string{"writes: limited", "writes: limited", "reads: none"}); diff != "" {
		t.Errorf("route limits (-got +want):\n%s", diff)
	}
	for _, name := range []string{"reviews:9080", "reviews", reviews + ":9080"} {
		l := res.Listeners[name]
		names, f := limitFilters(t, l.GetApiListener().GetApiListener())
		if diff := cmp.Diff(names, []string{ratelimit.FilterName, RouterFilterName}); diff != "" {
			t.Errorf("listener %s filters (-got +want):\n%s", name, diff)
			continue
		}
		// The listener's own config has no bucket: it limits nothing by
		// itself.
		want := &v3localratelimitpb.LocalRateLimit{StatPrefix: "trellis_client_rate_limit"}
		if diff := cmp.Diff(validated(t, f.GetTypedConfig(), &v3localratelimitpb.LocalRateLimit{}), want, protocmp.Transform()); diff != "" {
			t.Errorf("listener %s filter config (-got +want):\n%s", name, diff)
		}
	}
	if err := rc.Validate(); err != nil {
		t.Errorf("route configuration: Validate() = %v", err)
	}
}

func TestNoRateLimitNoFilter(t *testing.T) {
	res := buildReviews(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews}
`)
	for name, l := range res.Listeners {
		if names, _ := limitFilters(t, l.GetApiListener().GetApiListener()); slices.Contains(names, ratelimit.FilterName) {
			t.Errorf("listener %s has filters %v, want no %s without a limit", name, names, ratelimit.FilterName)
		}
	}
	for name, rc := range res.Routes {
		for _, vh := range rc.VirtualHosts {
			if vh.TypedPerFilterConfig != nil {
				t.Errorf("route configuration %s: virtual host has per-filter configs %v, want none", name, vh.TypedPerFilterConfig)
			}
		}
	}
	for name, l := range res.ServerListeners {
		if names, _ := limitFilters(t, l.FilterChains[0].Filters[0].GetTypedConfig()); slices.Contains(names, ratelimit.FilterName) {
			t.Errorf("server listener %s has filters %v, want no %s without a limit", name, names, ratelimit.FilterName)
		}
	}
}

func TestServerRateLimits(t *testing.T) {
	total := clientLimit(50, 50)
	total.StatPrefix = "trellis_server_rate_limit"
	total.FilterEnabled.RuntimeKey = "trellis_server_rate_limit_enabled"
	total.FilterEnforced.RuntimeKey = "trellis_server_rate_limit_enforced"
	perCaller := proto.Clone(total).(*v3localratelimitpb.LocalRateLimit)
	perCaller.Descriptors = []*v3ratelimitpb.LocalRateLimitDescriptor{{
		Entries:     []*v3ratelimitpb.RateLimitDescriptor_Entry{{Key: "trellis.caller"}},
		TokenBucket: total.TokenBucket,
	}}
	perCaller.RateLimits = []*v3routepb.RateLimit{{Actions: []*v3routepb.RateLimit_Action{{
		ActionSpecifier: &v3routepb.RateLimit_Action_Extension{Extension: &v3corepb.TypedExtensionConfig{
			Name: "envoy.rate_limit_descriptors.expr",
			TypedConfig: anyOf(t, &v3exprpb.Descriptor{
				DescriptorKey: "trellis.caller",
				ExprSpecifier: &v3exprpb.Descriptor_Text{Text: "connection.uri_san_peer_certificate"},
				SkipIfError:   true,
			}),
		}},
	}}}}
	perCaller.MaxDynamicDescriptors = wrapperspb.UInt32(1024)
	perCaller.AlwaysConsumeDefaultTokenBucket = wrapperspb.Bool(false)
	tests := []struct {
		perCaller string
		want      *v3localratelimitpb.LocalRateLimit
	}{{"false", total}, {"true", perCaller}}
	for _, tt := range tests {
		t.Run("perCaller="+tt.perCaller, func(t *testing.T) {
			res := Build(load(t, sprintf(rateLimitYAML, tt.perCaller)), []registry.Endpoint{
				reg("reviews", "", "10.0.0.1", 1001, 9080, nil),
				reg("ratings", "", "10.0.0.2", 1001, 9080, nil),
			}, Options{})
			for addr, want := range map[string]*v3localratelimitpb.LocalRateLimit{"10.0.0.1": tt.want, "10.0.0.2": nil} {
				l := res.ServerListeners[ServerListenerName(addr, 1001)]
				if err := l.Validate(); err != nil {
					t.Errorf("server listener %s: Validate() = %v", addr, err)
				}
				for _, fc := range l.GetFilterChains() {
					names, f := limitFilters(t, fc.Filters[0].GetTypedConfig())
					wantNames := []string{RouterFilterName}
					if want != nil {
						wantNames = []string{ratelimit.FilterName, RouterFilterName}
					}
					if diff := cmp.Diff(names, wantNames); diff != "" {
						t.Errorf("server listener %s chain %s filters (-got +want):\n%s", addr, fc.Name, diff)
						continue
					}
					if want == nil {
						continue
					}
					got := validated(t, f.GetTypedConfig(), &v3localratelimitpb.LocalRateLimit{})
					if diff := cmp.Diff(got, want, protocmp.Transform()); diff != "" {
						t.Errorf("server listener %s chain %s limit (-got +want):\n%s", addr, fc.Name, diff)
					}
				}
			}
		})
	}
}

// The server limit goes after authentication and authorization: calls they
// refuse take no token.
func TestServerRateLimitAfterAuthorization(t *testing.T) {
	yaml := sprintf(rateLimitYAML, "true") + `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-intruder, namespace: default}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [other]}}]}]
`
	res := Build(load(t, yaml), []registry.Endpoint{reg("reviews", "", "10.0.0.1", 1001, 9080, nil)}, Options{})
	l := res.ServerListeners[ServerListenerName("10.0.0.1", 1001)]
	names, _ := limitFilters(t, l.GetFilterChains()[0].Filters[0].GetTypedConfig())
	if diff := cmp.Diff(names, []string{RBACFilterName + "/deny", ratelimit.FilterName, RouterFilterName}); diff != "" {
		t.Errorf("server filters (-got +want):\n%s", diff)
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
