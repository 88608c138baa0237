package xdscluster

//lint:file-ignore SA1019 match_subject_alt_names is what the Trellis control plane writes.

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	v3xdstypepb "github.com/cncf/xds/go/xds/type/v3"
	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3leastrequestpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	v3randompb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	v3ringhashpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	v3roundrobinpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	v3wrrlocalitypb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	v3tlspb "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func typed(t *testing.T, m proto.Message) *v3clusterpb.LoadBalancingPolicy_Policy {
	return &v3clusterpb.LoadBalancingPolicy_Policy{TypedExtensionConfig: &v3corepb.TypedExtensionConfig{Name: "p", TypedConfig: mustAny(t, m)}}
}

// typedStructPolicy is a gRPC policy by name with a JSON config, as the
// control plane writes the Trellis policies.
func typedStructPolicy(t *testing.T, name, js string) *v3clusterpb.LoadBalancingPolicy_Policy {
	t.Helper()
	s := &structpb.Struct{}
	if err := s.UnmarshalJSON([]byte(js)); err != nil {
		t.Fatal(err)
	}
	return typed(t, &v3xdstypepb.TypedStruct{TypeUrl: "type.googleapis.com/" + name, Value: s})
}

func wrr(t *testing.T, ps ...*v3clusterpb.LoadBalancingPolicy_Policy) *v3clusterpb.LoadBalancingPolicy {
	return &v3clusterpb.LoadBalancingPolicy{Policies: []*v3clusterpb.LoadBalancingPolicy_Policy{
		typed(t, &v3wrrlocalitypb.WrrLocality{EndpointPickingPolicy: &v3clusterpb.LoadBalancingPolicy{Policies: ps}}),
	}}
}

func edsCluster(mod func(*v3clusterpb.Cluster)) *v3clusterpb.Cluster {
	c := &v3clusterpb.Cluster{
		Name:                 "c",
		ClusterDiscoveryType: &v3clusterpb.Cluster_Type{Type: v3clusterpb.Cluster_EDS},
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func tlsSocket(t *testing.T, vc *v3tlspb.CertificateValidationContext) *v3corepb.TransportSocket {
	ctx := &v3tlspb.CommonTlsContext{}
	if vc != nil {
		ctx.ValidationContextType = &v3tlspb.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &v3tlspb.CommonTlsContext_CombinedCertificateValidationContext{DefaultValidationContext: vc},
		}
	}
	return &v3corepb.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &v3corepb.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &v3tlspb.UpstreamTlsContext{CommonTlsContext: ctx})},
	}
}

func exact(s string) *v3matcherpb.StringMatcher {
	return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: s}}
}

func TestParseCluster(t *testing.T) {
	rr := LBConfig{Policy: RoundRobin}
	const trellisOutlier = `{"childPolicy": [{"trellis_recycle": {"maxRequestsPerConnection": 100, "childPolicy": [{"least_request_experimental": {"choiceCount": 3}}]}}],
		"consecutiveErrors": 3, "consecutiveGatewayErrors": 2, "interval": "1s", "baseEjectionTime": "15s", "maxEjectionPercent": 50, "minHealthPercent": 20}`
	for _, tc := range []struct {
		name    string
		c       *v3clusterpb.Cluster
		want    *cluster
		wantErr string // a substring of the error
	}{{
		name: "eds without policy",
		c:    edsCluster(nil),
		want: &cluster{eds: "c", lb: rr},
	}, {
		name: "eds service name",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.EdsClusterConfig = &v3clusterpb.Cluster_EdsClusterConfig{ServiceName: "svc"}
		}),
		want: &cluster{eds: "svc", lb: rr},
	}, {
		name: "legacy least request",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LbPolicy = v3clusterpb.Cluster_LEAST_REQUEST
			c.LbConfig = &v3clusterpb.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &v3clusterpb.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(20)}}
		}),
		want: &cluster{eds: "c", lb: LBConfig{Policy: LeastRequest, ChoiceCount: 10}},
	}, {
		name: "legacy ring hash",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LbPolicy = v3clusterpb.Cluster_RING_HASH
			c.LbConfig = &v3clusterpb.Cluster_RingHashLbConfig_{RingHashLbConfig: &v3clusterpb.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(2048)}}
		}),
		want: &cluster{eds: "c", lb: LBConfig{Policy: RingHash, MinRingSize: 2048}},
	}, {
		name:    "legacy random is not grpc-go's",
		c:       edsCluster(func(c *v3clusterpb.Cluster) { c.LbPolicy = v3clusterpb.Cluster_RANDOM }),
		wantErr: "lb_policy RANDOM is not supported",
	}, {
		name: "trellis policies first",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = wrr(t, typedStructPolicy(t, "trellis_outlier", trellisOutlier),
				typed(t, &v3leastrequestpb.LeastRequest{ChoiceCount: wrapperspb.UInt32(2)}))
		}),
		want: &cluster{eds: "c", lb: LBConfig{Policy: LeastRequest, ChoiceCount: 3, MaxRequestsPerConnection: 100},
			outlier: &OutlierConfig{ConsecutiveErrors: 3, ConsecutiveGatewayErrors: 2, Interval: time.Second, BaseEjectionTime: 15 * time.Second, MaxEjectionPercent: 50, MinHealthPercent: 20}},
	}, {
		name: "outlier defaults",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = wrr(t, typedStructPolicy(t, "trellis_outlier", `{"childPolicy": [{"trellis_random": {}}]}`))
		}),
		want: &cluster{eds: "c", lb: LBConfig{Policy: Random},
			outlier: &OutlierConfig{ConsecutiveErrors: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 10}},
	}, {
		name: "ewma defaults",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = wrr(t, typedStructPolicy(t, "trellis_ewma", `{}`), typed(t, &v3leastrequestpb.LeastRequest{}))
		}),
		want: &cluster{eds: "c", lb: LBConfig{Policy: EWMA}},
	}, {
		name: "ewma with parameters, under outlier and recycle",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = wrr(t, typedStructPolicy(t, "trellis_outlier", `{"childPolicy": [{"trellis_recycle": {"maxRequestsPerConnection": 9,
				"childPolicy": [{"trellis_ewma": {"decay": "5s", "defaultRTT": "20ms", "failurePenalty": "2s"}}]}}]}`))
		}),
		want: &cluster{eds: "c", lb: LBConfig{Policy: EWMA, MaxRequestsPerConnection: 9, Decay: 5 * time.Second, DefaultRTT: 20 * time.Millisecond, FailurePenalty: 2 * time.Second},
			outlier: &OutlierConfig{ConsecutiveErrors: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 10}},
	}, {
		name: "ewma with a bad decay",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = wrr(t, typedStructPolicy(t, "trellis_ewma", `{"decay": "-1s"}`), typed(t, &v3roundrobinpb.RoundRobin{}))
		}),
		wantErr: `trellis_ewma: decay is "-1s", must be a positive duration`,
	}, {
		name: "ewma with an unknown field",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = wrr(t, typedStructPolicy(t, "trellis_ewma", `{"tau": "1s"}`), typed(t, &v3roundrobinpb.RoundRobin{}))
		}),
		wantErr: `unknown field "tau"`,
	}, {
		name: "unknown policies skipped",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = wrr(t, typedStructPolicy(t, "someone_elses", `{"x": 1}`),
				typed(t, &v3randompb.Random{}), typed(t, &v3roundrobinpb.RoundRobin{}))
		}),
		want: &cluster{eds: "c", lb: LBConfig{Policy: Random}},
	}, {
		name: "unknown child of a trellis policy skipped",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = wrr(t, typedStructPolicy(t, "trellis_recycle", `{"maxRequestsPerConnection": 7, "childPolicy": [{"fancy": {}}, {"round_robin": {}}]}`))
		}),
		want: &cluster{eds: "c", lb: LBConfig{Policy: RoundRobin, MaxRequestsPerConnection: 7}},
	}, {
		name: "ring hash",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LbPolicy = v3clusterpb.Cluster_RING_HASH
			c.LoadBalancingPolicy = &v3clusterpb.LoadBalancingPolicy{Policies: []*v3clusterpb.LoadBalancingPolicy_Policy{
				typed(t, &v3ringhashpb.RingHash{HashFunction: v3ringhashpb.RingHash_XX_HASH, MinimumRingSize: wrapperspb.UInt64(4096)}),
			}}
		}),
		want: &cluster{eds: "c", lb: LBConfig{Policy: RingHash, MinRingSize: 4096}},
	}, {
		name: "ring hash with murmur",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = &v3clusterpb.LoadBalancingPolicy{Policies: []*v3clusterpb.LoadBalancingPolicy_Policy{
				typed(t, &v3ringhashpb.RingHash{HashFunction: v3ringhashpb.RingHash_MURMUR_HASH_2}),
			}}
		}),
		wantErr: "hash function MURMUR_HASH_2 is not supported",
	}, {
		name: "no policy understood",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = wrr(t, typedStructPolicy(t, "someone_elses", `{}`))
		}),
		wantErr: `none of the policies ["p"] is supported`,
	}, {
		name: "invalid trellis config",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = wrr(t, typedStructPolicy(t, "trellis_outlier", `{"childPolicy": [{"round_robin": {}}], "maxEjectionPercent": 150}`),
				typed(t, &v3roundrobinpb.RoundRobin{}))
		}),
		wantErr: "maxEjectionPercent is 150",
	}, {
		name: "least request choice count 1",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.LoadBalancingPolicy = wrr(t, typedStructPolicy(t, "least_request_experimental", `{"choiceCount": 1}`))
		}),
		wantErr: "choiceCount is 1",
	}, {
		name: "circuit breaker",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.CircuitBreakers = &v3clusterpb.CircuitBreakers{Thresholds: []*v3clusterpb.CircuitBreakers_Thresholds{
				{Priority: v3corepb.RoutingPriority_HIGH, MaxRequests: wrapperspb.UInt32(5)},
				{Priority: v3corepb.RoutingPriority_DEFAULT, MaxRequests: wrapperspb.UInt32(100)},
			}}
		}),
		want: &cluster{eds: "c", lb: rr, maxRequests: 100},
	}, {
		name: "circuit breaker of another priority",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.CircuitBreakers = &v3clusterpb.CircuitBreakers{Thresholds: []*v3clusterpb.CircuitBreakers_Thresholds{
				{Priority: v3corepb.RoutingPriority_HIGH, MaxRequests: wrapperspb.UInt32(5)},
			}}
		}),
		want: &cluster{eds: "c", lb: rr},
	}, {
		name: "tls with exact SANs",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.TransportSocket = tlsSocket(t, &v3tlspb.CertificateValidationContext{
				MatchSubjectAltNames: []*v3matcherpb.StringMatcher{exact("spiffe://td/ns/default/sa/a"), exact("spiffe://td/ns/default/sa/b")},
			})
		}),
		want: &cluster{eds: "c", lb: rr, tls: &TLSConfig{SANs: []string{"spiffe://td/ns/default/sa/a", "spiffe://td/ns/default/sa/b"}}},
	}, {
		name: "tls with a prefix SAN",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.TransportSocket = tlsSocket(t, &v3tlspb.CertificateValidationContext{
				MatchSubjectAltNames: []*v3matcherpb.StringMatcher{{MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: "spiffe://td/"}}},
			})
		}),
		wantErr: "only case-sensitive exact matchers",
	}, {
		name: "tls with a case-insensitive SAN",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			m := exact("spiffe://td/a")
			m.IgnoreCase = true
			c.TransportSocket = tlsSocket(t, &v3tlspb.CertificateValidationContext{MatchSubjectAltNames: []*v3matcherpb.StringMatcher{m}})
		}),
		wantErr: "only case-sensitive exact matchers",
	}, {
		name:    "tls without validation",
		c:       edsCluster(func(c *v3clusterpb.Cluster) { c.TransportSocket = tlsSocket(t, nil) }),
		wantErr: "no validation context",
	}, {
		name: "another transport socket",
		c: edsCluster(func(c *v3clusterpb.Cluster) {
			c.TransportSocket = &v3corepb.TransportSocket{Name: "raw", ConfigType: &v3corepb.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &v3randompb.Random{})}}
		}),
		wantErr: "is not supported",
	}, {
		name: "static",
		c: &v3clusterpb.Cluster{
			Name:                 "s",
			ClusterDiscoveryType: &v3clusterpb.Cluster_Type{Type: v3clusterpb.Cluster_STATIC},
			LoadAssignment: &v3endpointpb.ClusterLoadAssignment{Endpoints: []*v3endpointpb.LocalityLbEndpoints{{
				LoadBalancingWeight: wrapperspb.UInt32(1),
				LbEndpoints:         []*v3endpointpb.LbEndpoint{lbEndpoint("10.0.0.1", 80, v3corepb.HealthStatus_UNKNOWN, 0)},
			}}},
		},
		want: &cluster{lb: rr, static: []Endpoint{{Address: "10.0.0.1:80", Weight: 1, Locality: "//", LocalityWeight: 1}}},
	}, {
		name:    "logical dns",
		c:       &v3clusterpb.Cluster{Name: "d", ClusterDiscoveryType: &v3clusterpb.Cluster_Type{Type: v3clusterpb.Cluster_LOGICAL_DNS}},
		wantErr: "discovery type LOGICAL_DNS is not supported",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCluster(tc.c)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseCluster() = %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseCluster() = %v, want no error", err)
			}
			if diff := cmp.Diff(got, tc.want, cmp.AllowUnexported(cluster{})); diff != "" {
				t.Errorf("parseCluster() (-got +want):\n%s", diff)
			}
		})
	}
}

func lbEndpoint(addr string, port uint32, health v3corepb.HealthStatus, weight uint32) *v3endpointpb.LbEndpoint {
	e := &v3endpointpb.LbEndpoint{
		HostIdentifier: &v3endpointpb.LbEndpoint_Endpoint{Endpoint: &v3endpointpb.Endpoint{
			Address: &v3corepb.Address{Address: &v3corepb.Address_SocketAddress{SocketAddress: &v3corepb.SocketAddress{
				Address: addr, PortSpecifier: &v3corepb.SocketAddress_PortValue{PortValue: port},
			}}},
		}},
		HealthStatus: health,
	}
	if weight > 0 {
		e.LoadBalancingWeight = wrapperspb.UInt32(weight)
	}
	return e
}

func TestParseEndpoints(t *testing.T) {
	cla := &v3endpointpb.ClusterLoadAssignment{Endpoints: []*v3endpointpb.LocalityLbEndpoints{{
		Locality:            &v3corepb.Locality{Region: "r", Zone: "z1"},
		LoadBalancingWeight: wrapperspb.UInt32(3),
		LbEndpoints: []*v3endpointpb.LbEndpoint{
			lbEndpoint("10.0.0.1", 80, v3corepb.HealthStatus_HEALTHY, 0),
			lbEndpoint("10.0.0.2", 80, v3corepb.HealthStatus_UNHEALTHY, 0),
			lbEndpoint("10.0.0.3", 80, v3corepb.HealthStatus_DRAINING, 0),
			lbEndpoint("10.0.0.4", 80, v3corepb.HealthStatus_UNKNOWN, 5),
		},
	}, {
		Locality:            &v3corepb.Locality{Region: "r", Zone: "z2", SubZone: "s"},
		LoadBalancingWeight: wrapperspb.UInt32(1),
		Priority:            1,
		LbEndpoints:         []*v3endpointpb.LbEndpoint{lbEndpoint("::1", 8080, v3corepb.HealthStatus_HEALTHY, 0)},
	}, {
		Locality:    &v3corepb.Locality{Region: "r", Zone: "noweight"},
		LbEndpoints: []*v3endpointpb.LbEndpoint{lbEndpoint("10.0.0.9", 80, v3corepb.HealthStatus_HEALTHY, 0)},
	}}}
	want := []Endpoint{
		{Address: "10.0.0.1:80", Weight: 1, Locality: "r/z1/", LocalityWeight: 3},
		{Address: "10.0.0.4:80", Weight: 5, Locality: "r/z1/", LocalityWeight: 3},
		{Address: "[::1]:8080", Weight: 1, Locality: "r/z2/s", LocalityWeight: 1, Priority: 1},
	}
	if diff := cmp.Diff(parseEndpoints(cla), want); diff != "" {
		t.Errorf("parseEndpoints() (-got +want):\n%s", diff)
	}
}

// TestEndpointTLSFailsClosed: an endpoint is plaintext only when its
// metadata says mode DISABLE; no metadata, another namespace, an unknown
// or misspelt mode, or a mode that is not a string is TLS. Its identity is
// read when named.
func TestEndpointTLSFailsClosed(t *testing.T) {
	with := func(addr string, ns string, fields map[string]any) *v3endpointpb.LbEndpoint {
		e := lbEndpoint(addr, 80, v3corepb.HealthStatus_HEALTHY, 0)
		s, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		e.Metadata = &v3corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{ns: s}}
		return e
	}
	id := "spiffe://cluster.local/ns/default/sa/a"
	cla := &v3endpointpb.ClusterLoadAssignment{Endpoints: []*v3endpointpb.LocalityLbEndpoints{{
		LoadBalancingWeight: wrapperspb.UInt32(1),
		LbEndpoints: []*v3endpointpb.LbEndpoint{
			lbEndpoint("10.0.0.1", 80, v3corepb.HealthStatus_HEALTHY, 0),
			with("10.0.0.2", EndpointTLSMetadata, map[string]any{"mode": "ISTIO_MUTUAL", "identity": id}),
			with("10.0.0.3", EndpointTLSMetadata, map[string]any{"mode": "DISABLE"}),
			with("10.0.0.4", "envoy.transport_socket_match", map[string]any{"mode": "DISABLE"}),
			with("10.0.0.5", EndpointTLSMetadata, map[string]any{"mode": "disable"}),
			with("10.0.0.6", EndpointTLSMetadata, map[string]any{"mode": true}),
			with("10.0.0.7", EndpointTLSMetadata, map[string]any{"identity": id}),
		},
	}}}
	want := map[string]string{
		"10.0.0.1:80": "tls ", "10.0.0.2:80": "tls " + id, "10.0.0.3:80": "plaintext ",
		"10.0.0.4:80": "tls ", "10.0.0.5:80": "tls ", "10.0.0.6:80": "tls ", "10.0.0.7:80": "tls " + id,
	}
	got := map[string]string{}
	for _, e := range parseEndpoints(cla) {
		mode := "tls "
		if e.Plaintext {
			mode = "plaintext "
		}
		got[e.Address] = mode + e.Identity
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("parseEndpoints() TLS per endpoint (-got +want):\n%s", diff)
	}
}

// TestJSONNumbers: configs from xDS Structs carry numbers as doubles.
func TestJSONNumbers(t *testing.T) {
	var cfg map[string]any
	if err := json.Unmarshal([]byte(`{"childPolicy": [{"round_robin": {}}], "consecutiveErrors": 2.5}`), &cfg); err != nil {
		t.Fatal(err)
	}
	c := edsCluster(func(c *v3clusterpb.Cluster) {
		s, err := structpb.NewStruct(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.LoadBalancingPolicy = wrr(t, typed(t, &v3xdstypepb.TypedStruct{TypeUrl: "type.googleapis.com/trellis_outlier", Value: s}))
	})
	if _, err := parseCluster(c); err == nil || !strings.Contains(err.Error(), "consecutiveErrors is 2.5") {
		t.Errorf("parseCluster(consecutiveErrors 2.5) = %v, want a whole-number error", err)
	}
}
