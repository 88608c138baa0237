package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/trellismesh/trellis/internal/config"
)

// res returns a YAML document of kind in the default namespace. body is the
// spec's content, indented by two spaces; a leading newline is dropped. The
// document is 5 lines long before body, and its errors are reported on its
// first line.
func res(kind, name, body string) string {
	return "apiVersion: networking.istio.io/v1\nkind: " + kind + "\nmetadata:\n  name: " + name + "\nspec:\n" + strings.TrimPrefix(body, "\n")
}

// resNS is res in namespace ns.
func resNS(kind, ns, name, body string) string {
	return "apiVersion: networking.istio.io/v1\nkind: " + kind + "\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\nspec:\n" + strings.TrimPrefix(body, "\n")
}

// sec returns a security.istio.io/v1 document of kind in namespace ns.
func sec(kind, ns, name, body string) string {
	return "apiVersion: security.istio.io/v1\nkind: " + kind + "\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\nspec:\n" + strings.TrimPrefix(body, "\n")
}

// docs joins YAML documents into one multi-document stream.
func docs(d ...string) string { return strings.Join(d, "---\n") }

// Valid resources to build cases from.
var (
	seReviews = res("ServiceEntry", "reviews", `
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: grpc, protocol: GRPC}
`)
	drReviews = res("DestinationRule", "reviews", `
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`)
	vsReviews = res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
`)
)

func load(files map[string]string) (*config.Set, error) {
	m := make(map[string][]byte, len(files))
	for name, s := range files {
		m[name] = []byte(s)
	}
	return config.Load(m)
}

// errorTexts returns the text of every *config.Error in err, sorted (Load
// reports some problems in map order). It fails t if err holds anything
// that is not a *config.Error.
func errorTexts(t *testing.T, err error) []string {
	t.Helper()
	var out []string
	for _, e := range config.Errors(err) {
		out = append(out, e.Error())
	}
	if err != nil && strings.Join(out, "\n") != err.Error() {
		t.Errorf("error %q holds more than the *config.Error values %q", err, out)
	}
	slices.Sort(out)
	return out
}

// sorted returns a sorted copy of s.
func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

// specs returns the specs of set in Set order: ServiceEntries,
// WorkloadEntries, VirtualServices, DestinationRules, PeerAuthentications,
// AuthorizationPolicies, RequestAuthentications.
func specs(set *config.Set) []proto.Message {
	var out []proto.Message
	for _, r := range set.ServiceEntries {
		out = append(out, r.Spec)
	}
	for _, r := range set.WorkloadEntries {
		out = append(out, r.Spec)
	}
	for _, r := range set.VirtualServices {
		out = append(out, r.Spec)
	}
	for _, r := range set.DestinationRules {
		out = append(out, r.Spec)
	}
	for _, r := range set.PeerAuthentications {
		out = append(out, r.Spec)
	}
	for _, r := range set.AuthorizationPolicies {
		out = append(out, r.Spec)
	}
	for _, r := range set.RequestAuthentications {
		out = append(out, r.Spec)
	}
	return out
}

func exact(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: s}}
}

func prefix(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: s}}
}

func regex(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: s}}
}

func dest(host string) *networking.HTTPRouteDestination {
	return &networking.HTTPRouteDestination{Destination: &networking.Destination{Host: host}}
}

var (
	seReviewsSpec = &networking.ServiceEntry{
		Hosts:      []string{"reviews"},
		Location:   networking.ServiceEntry_MESH_INTERNAL,
		Resolution: networking.ServiceEntry_STATIC,
		Ports:      []*networking.ServicePort{{Number: 8080, Name: "grpc", Protocol: "GRPC"}},
	}
	drReviewsSpec = &networking.DestinationRule{
		Host: "reviews",
		Subsets: []*networking.Subset{
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2"}},
		},
	}
	vsReviewsSpec = &networking.VirtualService{
		Hosts: []string{"reviews"},
		Http:  []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{dest("reviews")}}},
	}
)

type validCase struct {
	name  string
	files map[string]string
	// want are the parsed specs, in the order of specs().
	want []proto.Message
}

// validCases together use every field of config.Supported; see
// TestSupportedFieldsCovered.
var validCases = []validCase{
	{
		name: "ServiceEntry with endpoints",
		files: map[string]string{"mesh.yaml": res("ServiceEntry", "reviews", `
  hosts: [reviews, Reviews.Example.COM]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 8080
    name: grpc
    protocol: GRPC
    targetPort: 9080
  - {number: 8081, name: http, protocol: http}
  - {number: 8082, protocol: HTTP2}
  endpoints:
  - address: 10.0.0.1
    ports: {grpc: 9090, http: 9091}
    labels: {version: v1, example.com/tier: gold}
    locality: us-east1/us-east1-b/rack1
    serviceAccount: reviews
  - address: "fd00::1"
  subjectAltNames: [spiffe://cluster.local/ns/default/sa/reviews]
`)},
		want: []proto.Message{&networking.ServiceEntry{
			Hosts:      []string{"reviews", "Reviews.Example.COM"},
			Location:   networking.ServiceEntry_MESH_INTERNAL,
			Resolution: networking.ServiceEntry_STATIC,
			Ports: []*networking.ServicePort{
				{Number: 8080, Name: "grpc", Protocol: "GRPC", TargetPort: 9080},
				{Number: 8081, Name: "http", Protocol: "http"},
				{Number: 8082, Protocol: "HTTP2"},
			},
			Endpoints: []*networking.WorkloadEntry{
				{
					Address:        "10.0.0.1",
					Ports:          map[string]uint32{"grpc": 9090, "http": 9091},
					Labels:         map[string]string{"version": "v1", "example.com/tier": "gold"},
					Locality:       "us-east1/us-east1-b/rack1",
					ServiceAccount: "reviews",
				},
				{Address: "fd00::1"},
			},
			SubjectAltNames: []string{"spiffe://cluster.local/ns/default/sa/reviews"},
		}},
	},
	{
		name: "ServiceEntry with workload selector in proto field names, and WorkloadEntry",
		files: map[string]string{"mesh.yaml": docs(
			res("ServiceEntry", "ratings", `
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: grpc, target_port: 19080}
  workload_selector:
    labels: {app: ratings}
`),
			res("WorkloadEntry", "ratings-vm", `
  address: 192.168.1.7
  ports: {grpc: 19080}
  labels: {app: ratings, version: v2}
  locality: europe-west1/europe-west1-c
  serviceAccount: ratings
`))},
		want: []proto.Message{
			&networking.ServiceEntry{
				Hosts:            []string{"ratings.default.svc.cluster.local"},
				Location:         networking.ServiceEntry_MESH_INTERNAL,
				Resolution:       networking.ServiceEntry_STATIC,
				Ports:            []*networking.ServicePort{{Number: 9080, Name: "grpc", TargetPort: 19080}},
				WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "ratings"}},
			},
			&networking.WorkloadEntry{
				Address:        "192.168.1.7",
				Ports:          map[string]uint32{"grpc": 19080},
				Labels:         map[string]string{"app": "ratings", "version": "v2"},
				Locality:       "europe-west1/europe-west1-c",
				ServiceAccount: "ratings",
			},
		},
	},
	{
		name: "ServiceEntry without location",
		files: map[string]string{"mesh.yaml": res("ServiceEntry", "reviews", `
  hosts: [reviews]
  resolution: STATIC
  ports: [{number: 8080}]
`)},
		want: []proto.Message{&networking.ServiceEntry{
			Hosts:      []string{"reviews"},
			Resolution: networking.ServiceEntry_STATIC,
			Ports:      []*networking.ServicePort{{Number: 8080}},
		}},
	},
	{
		name: "VirtualService with every match and a weighted split to subsets",
		files: map[string]string{"mesh.yaml": docs(drReviews, res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - name: canary
    match:
    - name: api
      port: 8080
      ignoreUriCase: true
      sourceLabels: {app: web}
      uri: {prefix: /api}
      headers:
        x-user: {exact: jason}
        x-group: {prefix: beta-}
        x-trace: {regex: "[0-9a-f]{32}"}
        x-debug: {}
    - uri: {exact: /health}
    - uri: {regex: "/v[12]/.*"}
    route:
    - destination: {host: reviews, subset: v2, port: {number: 8080}}
      weight: 20
    - destination: {host: reviews.default.svc.cluster.local, subset: v1}
      weight: 80
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 100
`))},
		want: []proto.Message{
			&networking.VirtualService{
				Hosts: []string{"reviews"},
				Http: []*networking.HTTPRoute{
					{
						Name: "canary",
						Match: []*networking.HTTPMatchRequest{
							{
								Name:          "api",
								Port:          8080,
								IgnoreUriCase: true,
								SourceLabels:  map[string]string{"app": "web"},
								Uri:           prefix("/api"),
								Headers: map[string]*networking.StringMatch{
									"x-user":  exact("jason"),
									"x-group": prefix("beta-"),
									"x-trace": regex("[0-9a-f]{32}"),
									"x-debug": {},
								},
							},
							{Uri: exact("/health")},
							{Uri: regex("/v[12]/.*")},
						},
						Route: []*networking.HTTPRouteDestination{
							{
								Destination: &networking.Destination{Host: "reviews", Subset: "v2", Port: &networking.PortSelector{Number: 8080}},
								Weight:      20,
							},
							{
								Destination: &networking.Destination{Host: "reviews.default.svc.cluster.local", Subset: "v1"},
								Weight:      80,
							},
						},
					},
					{Route: []*networking.HTTPRouteDestination{{
						Destination: &networking.Destination{Host: "reviews", Subset: "v1"},
						Weight:      100,
					}}},
				},
			},
			drReviewsSpec,
		},
	},
	{
		name: "VirtualService timeout, retries and faults",
		files: map[string]string{"mesh.yaml": res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - timeout: 2s
    retries: {attempts: 3, retryOn: "unavailable,deadline-exceeded", backoff: 50ms, perTryTimeout: 200ms}
    fault:
      delay: {fixedDelay: 100ms, percentage: {value: 12.5}}
      abort: {httpStatus: 503, percentage: {value: 50}}
    route: [{destination: {host: reviews}}]
  - fault:
      abort: {grpcStatus: UNAVAILABLE}
    route: [{destination: {host: reviews}}]
`)},
		want: []proto.Message{&networking.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networking.HTTPRoute{
				{
					Timeout: durationpb.New(2 * time.Second),
					Retries: &networking.HTTPRetry{Attempts: 3, RetryOn: "unavailable,deadline-exceeded", Backoff: durationpb.New(50 * time.Millisecond), PerTryTimeout: durationpb.New(200 * time.Millisecond)},
					Fault: &networking.HTTPFaultInjection{
						Delay: &networking.HTTPFaultInjection_Delay{
							HttpDelayType: &networking.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: durationpb.New(100 * time.Millisecond)},
							Percentage:    &networking.Percent{Value: 12.5},
						},
						Abort: &networking.HTTPFaultInjection_Abort{
							ErrorType:  &networking.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 503},
							Percentage: &networking.Percent{Value: 50},
						},
					},
					Route: []*networking.HTTPRouteDestination{dest("reviews")},
				},
				{
					Fault: &networking.HTTPFaultInjection{Abort: &networking.HTTPFaultInjection_Abort{
						ErrorType: &networking.HTTPFaultInjection_Abort_GrpcStatus{GrpcStatus: "UNAVAILABLE"},
					}},
					Route: []*networking.HTTPRouteDestination{dest("reviews")},
				},
			},
		}},
	},
	{
		name: "DestinationRule traffic policies at every level",
		files: map[string]string{"mesh.yaml": res("DestinationRule", "reviews", `
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {http: {http2MaxRequests: 100}}
    outlierDetection:
      consecutive5xxErrors: 5
      consecutiveGatewayErrors: 3
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
      minHealthPercent: 20
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}}
      connectionPool: {http: {http2MaxRequests: 10}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
      connectionPool: {http: {http2MaxRequests: 5}}
      outlierDetection: {consecutive5xxErrors: 2, interval: 10s, baseEjectionTime: 1m, maxEjectionPercent: 100, minHealthPercent: 0, consecutiveGatewayErrors: 1}
      portLevelSettings:
      - port: {number: 9090}
        loadBalancer: {consistentHash: {useSourceIp: true}}
        connectionPool: {http: {http2MaxRequests: 1}}
      - port: {number: 9091}
        outlierDetection: {consecutive5xxErrors: 1, consecutiveGatewayErrors: 1, interval: 1s, baseEjectionTime: 1s, maxEjectionPercent: 10, minHealthPercent: 10}
`)},
		want: []proto.Message{&networking.DestinationRule{
			Host: "reviews",
			TrafficPolicy: &networking.TrafficPolicy{
				LoadBalancer:   &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_LEAST_REQUEST}},
				ConnectionPool: &networking.ConnectionPoolSettings{Http: &networking.ConnectionPoolSettings_HTTPSettings{Http2MaxRequests: 100}},
				OutlierDetection: &networking.OutlierDetection{
					Consecutive_5XxErrors: wrapperspb.UInt32(5), ConsecutiveGatewayErrors: wrapperspb.UInt32(3),
					Interval: durationpb.New(time.Second), BaseEjectionTime: durationpb.New(30 * time.Second),
					MaxEjectionPercent: 50, MinHealthPercent: 20,
				},
				PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{{
					Port: &networking.PortSelector{Number: 9080},
					LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{ConsistentHash: &networking.LoadBalancerSettings_ConsistentHashLB{
						HashKey:       &networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: "x-user"},
						HashAlgorithm: &networking.LoadBalancerSettings_ConsistentHashLB_RingHash_{RingHash: &networking.LoadBalancerSettings_ConsistentHashLB_RingHash{MinimumRingSize: 2048}},
					}}},
					ConnectionPool: &networking.ConnectionPoolSettings{Http: &networking.ConnectionPoolSettings_HTTPSettings{Http2MaxRequests: 10}},
				}},
			},
			Subsets: []*networking.Subset{{
				Name:   "v1",
				Labels: map[string]string{"version": "v1"},
				TrafficPolicy: &networking.TrafficPolicy{
					LoadBalancer:   &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_RANDOM}},
					ConnectionPool: &networking.ConnectionPoolSettings{Http: &networking.ConnectionPoolSettings_HTTPSettings{Http2MaxRequests: 5}},
					OutlierDetection: &networking.OutlierDetection{
						Consecutive_5XxErrors: wrapperspb.UInt32(2), ConsecutiveGatewayErrors: wrapperspb.UInt32(1),
						Interval: durationpb.New(10 * time.Second), BaseEjectionTime: durationpb.New(time.Minute),
						MaxEjectionPercent: 100,
					},
					PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{
						{
							Port: &networking.PortSelector{Number: 9090},
							LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{ConsistentHash: &networking.LoadBalancerSettings_ConsistentHashLB{
								HashKey: &networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp{UseSourceIp: true},
							}}},
							ConnectionPool: &networking.ConnectionPoolSettings{Http: &networking.ConnectionPoolSettings_HTTPSettings{Http2MaxRequests: 1}},
						},
						{
							Port: &networking.PortSelector{Number: 9091},
							OutlierDetection: &networking.OutlierDetection{
								Consecutive_5XxErrors: wrapperspb.UInt32(1), ConsecutiveGatewayErrors: wrapperspb.UInt32(1),
								Interval: durationpb.New(time.Second), BaseEjectionTime: durationpb.New(time.Second),
								MaxEjectionPercent: 10, MinHealthPercent: 10,
							},
						},
					},
				},
			}},
		}},
	},
	{
		name: "regex of MaxRegexLength bytes",
		files: map[string]string{"mesh.yaml": res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - match: [{uri: {regex: `+strings.Repeat("a", config.MaxRegexLength)+`}}]
    route: [{destination: {host: reviews}}]
`)},
		want: []proto.Message{&networking.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networking.HTTPRoute{{
				Match: []*networking.HTTPMatchRequest{{Uri: regex(strings.Repeat("a", config.MaxRegexLength))}},
				Route: []*networking.HTTPRouteDestination{dest("reviews")},
			}},
		}},
	},
	{
		name: "subsets of a DestinationRule in another namespace",
		files: map[string]string{
			"dr.yaml": resNS("DestinationRule", "shop", "cart", `
  host: cart
  subsets: [{name: blue, labels: {color: blue}}]
`),
			"vs.yaml": res("VirtualService", "cart", `
  hosts: [cart.shop.svc.cluster.local]
  http:
  - route: [{destination: {host: cart.shop.svc.cluster.local, subset: blue}}]
`),
		},
		want: []proto.Message{
			&networking.VirtualService{
				Hosts: []string{"cart.shop.svc.cluster.local"},
				Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{
					Destination: &networking.Destination{Host: "cart.shop.svc.cluster.local", Subset: "blue"},
				}}}},
			},
			&networking.DestinationRule{
				Host:    "cart",
				Subsets: []*networking.Subset{{Name: "blue", Labels: map[string]string{"color": "blue"}}},
			},
		},
	},
	{
		name: "one name for resources of different kinds and namespaces",
		files: map[string]string{"mesh.yaml": docs(
			seReviews,
			vsReviews,
			drReviews,
			resNS("VirtualService", "other", "reviews", `
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
`),
		)},
		want: []proto.Message{seReviewsSpec, vsReviewsSpec, vsReviewsSpec, drReviewsSpec},
	},
	{
		name: "older API versions, status and Kubernetes bookkeeping",
		files: map[string]string{"mesh.yaml": `apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
  resourceVersion: "42"
  uid: 0d3f5f0e-8d0b-4bd4-9d3c-1d2a3b4c5d6e
  generation: 3
  creationTimestamp: "2024-01-01T00:00:00Z"
  managedFields: []
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
status:
  observedGeneration: 3
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews}
`},
		want: []proto.Message{vsReviewsSpec, &networking.DestinationRule{Host: "reviews"}},
	},
	{
		name: "JSON",
		files: map[string]string{"mesh.json": `{
  "apiVersion": "networking.istio.io/v1",
  "kind": "VirtualService",
  "metadata": {"name": "reviews"},
  "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
}
`},
		want: []proto.Message{vsReviewsSpec},
	},
	{
		name: "PeerAuthentication mesh-wide, namespace-wide and per workload with port-level modes",
		files: map[string]string{"security.yaml": docs(
			sec("PeerAuthentication", "istio-system", "default", "  mtls: {mode: STRICT}\n"),
			sec("PeerAuthentication", "default", "default", "  mtls: {}\n"),
			"apiVersion: security.istio.io/v1beta1\n"+strings.TrimPrefix(sec("PeerAuthentication", "default", "reviews", `
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    "8080": {mode: DISABLE}
    "9090": {mode: STRICT}
    "9091": {mode: UNSET}
`), "apiVersion: security.istio.io/v1\n"),
		)},
		want: []proto.Message{
			&security.PeerAuthentication{Mtls: &security.PeerAuthentication_MutualTLS{Mode: security.PeerAuthentication_MutualTLS_STRICT}},
			&security.PeerAuthentication{Mtls: &security.PeerAuthentication_MutualTLS{}},
			&security.PeerAuthentication{
				Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}},
				Mtls:     &security.PeerAuthentication_MutualTLS{Mode: security.PeerAuthentication_MutualTLS_PERMISSIVE},
				PortLevelMtls: map[uint32]*security.PeerAuthentication_MutualTLS{
					8080: {Mode: security.PeerAuthentication_MutualTLS_DISABLE},
					9090: {Mode: security.PeerAuthentication_MutualTLS_STRICT},
					9091: {},
				},
			},
		},
	},
	{
		name: "AuthorizationPolicy with every supported field",
		files: map[string]string{"authz.yaml": sec("AuthorizationPolicy", "default", "reviews", `
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/default/sa/web]
        notPrincipals: ["*/sa/bot"]
        requestPrincipals: ["https://issuer.example.com/*"]
        notRequestPrincipals: [https://issuer.example.com/guest]
        namespaces: [default]
        notNamespaces: [evil]
        serviceAccounts: [web]
        notServiceAccounts: [other/bot]
        ipBlocks: [10.0.0.0/8]
        notIpBlocks: [10.1.0.0/16]
        remoteIpBlocks: [192.168.0.0/16]
        notRemoteIpBlocks: [192.168.1.1]
    to:
    - operation:
        ports: ["8080"]
        notPorts: ["9090"]
        methods: [POST]
        notMethods: [GET]
        paths: [/admin/*]
        notPaths: [/admin/public]
    when:
    - key: request.headers[x-user]
      values: [admin]
      notValues: [guest]
`)},
		want: []proto.Message{&security.AuthorizationPolicy{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}},
			Action:   security.AuthorizationPolicy_DENY,
			Rules: []*security.Rule{{
				From: []*security.Rule_From{{Source: &security.Source{
					Principals:           []string{"cluster.local/ns/default/sa/web"},
					NotPrincipals:        []string{"*/sa/bot"},
					RequestPrincipals:    []string{"https://issuer.example.com/*"},
					NotRequestPrincipals: []string{"https://issuer.example.com/guest"},
					Namespaces:           []string{"default"},
					NotNamespaces:        []string{"evil"},
					ServiceAccounts:      []string{"web"},
					NotServiceAccounts:   []string{"other/bot"},
					IpBlocks:             []string{"10.0.0.0/8"},
					NotIpBlocks:          []string{"10.1.0.0/16"},
					RemoteIpBlocks:       []string{"192.168.0.0/16"},
					NotRemoteIpBlocks:    []string{"192.168.1.1"},
				}}},
				To: []*security.Rule_To{{Operation: &security.Operation{
					Ports: []string{"8080"}, NotPorts: []string{"9090"},
					Methods: []string{"POST"}, NotMethods: []string{"GET"},
					Paths: []string{"/admin/*"}, NotPaths: []string{"/admin/public"},
				}}},
				When: []*security.Condition{{Key: "request.headers[x-user]", Values: []string{"admin"}, NotValues: []string{"guest"}}},
			}},
		}},
	},
	{
		name: "RequestAuthentication with every supported field",
		files: map[string]string{"authn.yaml": sec("RequestAuthentication", "default", "jwt", `
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: https://issuer.example.com
    audiences: [reviews]
    jwksUri: https://issuer.example.com/jwks
    timeout: 2s
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [token]
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
  - issuer: local
    jwks: '{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}'
`)},
		want: []proto.Message{&security.RequestAuthentication{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}},
			JwtRules: []*security.JWTRule{
				{
					Issuer: "https://issuer.example.com", Audiences: []string{"reviews"},
					JwksUri: "https://issuer.example.com/jwks", Timeout: durationpb.New(2 * time.Second),
					FromHeaders:           []*security.JWTHeader{{Name: "x-jwt", Prefix: "Bearer "}},
					FromParams:            []string{"token"},
					OutputPayloadToHeader: "x-jwt-payload",
					ForwardOriginalToken:  true,
				},
				{Issuer: "local", Jwks: `{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`},
			},
		}},
	},
	{
		name: "DestinationRule tls modes at every level",
		files: map[string]string{"mesh.yaml": res("DestinationRule", "reviews", `
  host: reviews
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 9080}
      tls: {mode: DISABLE}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {tls: {mode: DISABLE}}
`)},
		want: []proto.Message{&networking.DestinationRule{
			Host: "reviews",
			TrafficPolicy: &networking.TrafficPolicy{
				Tls: &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_ISTIO_MUTUAL},
				PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{{
					Port: &networking.PortSelector{Number: 9080},
					Tls:  &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_DISABLE},
				}},
			},
			Subsets: []*networking.Subset{{
				Name: "v1", Labels: map[string]string{"version": "v1"},
				TrafficPolicy: &networking.TrafficPolicy{Tls: &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_DISABLE}},
			}},
		}},
	},
	{
		name:  "no resources",
		files: map[string]string{"empty.yaml": "", "comments.yaml": "# nothing here\n---\n\n---\n# nor here\n"},
	},
}

func TestLoadValid(t *testing.T) {
	for _, tc := range validCases {
		t.Run(tc.name, func(t *testing.T) {
			set, err := load(tc.files)
			if err != nil {
				t.Fatalf("Load(...) = %v, want no error", err)
			}
			if diff := cmp.Diff(specs(set), tc.want, protocmp.Transform()); diff != "" {
				t.Errorf("Load(...) specs mismatch (-got +want):\n%s", diff)
			}
			if got, want := set.Len(), len(tc.want); got != want {
				t.Errorf("Set.Len() = %d, want %d", got, want)
			}
			var files []string
			for name := range tc.files {
				files = append(files, name)
			}
			slices.Sort(files)
			if diff := cmp.Diff(set.Files, files); diff != "" {
				t.Errorf("Set.Files mismatch (-got +want):\n%s", diff)
			}
		})
	}
}

// populated adds to paths the schema path (proto names, no indexes or keys)
// of every field set in m.
func populated(m protoreflect.Message, prefix string, paths map[string]bool) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := string(fd.Name())
		if prefix != "" {
			p = prefix + "." + p
		}
		paths[p] = true
		switch {
		case fd.IsList():
			if fd.Message() != nil {
				for i := 0; i < v.List().Len(); i++ {
					populated(v.List().Get(i).Message(), p, paths)
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, x protoreflect.Value) bool {
					populated(x.Message(), p, paths)
					return true
				})
			}
		case fd.Message() != nil && !strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf."):
			populated(v.Message(), p, paths)
		}
		return true
	})
}

// policyBodies are traffic policies that together set every supported
// TrafficPolicy field (consistent hashing and outlier detection exclude each
// other, and so do the two hash keys).
var policyBodies = []string{
	`{loadBalancer: {simple: RANDOM, localityLbSetting: {enabled: true, failover: [{from: us-east, to: us-west}]}}, connectionPool: {http: {http2MaxRequests: 5, maxRequestsPerConnection: 100}}, outlierDetection: {consecutive5xxErrors: 2, consecutiveGatewayErrors: 1, interval: 1m, baseEjectionTime: 90s, maxEjectionPercent: 30, minHealthPercent: 10}}`,
	`{loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 4096}}}, tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/default/sa/a]}}`,
	`{loadBalancer: {consistentHash: {useSourceIp: true}, localityLbSetting: {distribute: [{from: "us-east/*", to: {"us-east/zone-a/*": 80, "us-west": 20}}]}}}`,
}

// trafficPolicyCases place each of policyBodies at each level a
// TrafficPolicy can appear, one DestinationRule per host.
func trafficPolicyCases() []string {
	var out []string
	for i, body := range policyBodies {
		port := "portLevelSettings: [{port: {number: 9080}, " + strings.TrimPrefix(body, "{")
		out = append(out,
			res("DestinationRule", fmt.Sprintf("a%d", i), fmt.Sprintf("  host: a%d\n  trafficPolicy: %s\n", i, body)),
			res("DestinationRule", fmt.Sprintf("b%d", i), fmt.Sprintf("  host: b%d\n  trafficPolicy: {%s]}\n", i, port)),
			res("DestinationRule", fmt.Sprintf("c%d", i), fmt.Sprintf("  host: c%d\n  subsets: [{name: s, labels: {k: v}, trafficPolicy: %s}]\n", i, body)),
			res("DestinationRule", fmt.Sprintf("d%d", i), fmt.Sprintf("  host: d%d\n  subsets: [{name: s, labels: {k: v}, trafficPolicy: {%s]}}]\n", i, port)),
		)
	}
	return out
}

// TestSupportedFieldsCovered fails when a field is added to the allowlist
// without a case in validCases that sets it (and so checks that it loads
// into the spec), or when a loaded spec sets a field that is not allowed.
func TestSupportedFieldsCovered(t *testing.T) {
	covered := map[string]map[string]bool{
		config.KindServiceEntry:          {},
		config.KindWorkloadEntry:         {},
		config.KindVirtualService:        {},
		config.KindDestinationRule:       {},
		config.KindPeerAuthentication:    {},
		config.KindAuthorizationPolicy:   {},
		config.KindRequestAuthentication: {},
	}
	cases := slices.Clone(validCases)
	cases = append(cases, validCase{name: "traffic policies at every level", files: map[string]string{"tp.yaml": docs(trafficPolicyCases()...)}})
	for _, tc := range cases {
		set, err := load(tc.files)
		if err != nil {
			t.Fatalf("%s: Load(...) = %v, want no error", tc.name, err)
		}
		for _, r := range set.ServiceEntries {
			populated(r.Spec.ProtoReflect(), "", covered[config.KindServiceEntry])
		}
		for _, r := range set.WorkloadEntries {
			populated(r.Spec.ProtoReflect(), "", covered[config.KindWorkloadEntry])
		}
		for _, r := range set.VirtualServices {
			populated(r.Spec.ProtoReflect(), "", covered[config.KindVirtualService])
		}
		for _, r := range set.DestinationRules {
			populated(r.Spec.ProtoReflect(), "", covered[config.KindDestinationRule])
		}
		for _, r := range set.PeerAuthentications {
			populated(r.Spec.ProtoReflect(), "", covered[config.KindPeerAuthentication])
		}
		for _, r := range set.AuthorizationPolicies {
			populated(r.Spec.ProtoReflect(), "", covered[config.KindAuthorizationPolicy])
		}
		for _, r := range set.RequestAuthentications {
			populated(r.Spec.ProtoReflect(), "", covered[config.KindRequestAuthentication])
		}
	}
	for kind, paths := range covered {
		var got []string
		for p := range paths {
			got = append(got, p)
		}
		slices.Sort(got)
		want := config.Supported(kind)
		if len(want) == 0 {
			t.Errorf("Supported(%q) is empty", kind)
		}
		if diff := cmp.Diff(got, want); diff != "" {
			t.Errorf("%s: fields set by validCases differ from Supported(%q) (-got +want):\n%s", kind, kind, diff)
		}
	}
}

func TestSupported(t *testing.T) {
	for _, kind := range []string{config.KindServiceEntry, config.KindWorkloadEntry, config.KindVirtualService, config.KindDestinationRule, config.KindPeerAuthentication, config.KindAuthorizationPolicy, config.KindRequestAuthentication} {
		got := config.Supported(kind)
		if !slices.IsSorted(got) {
			t.Errorf("Supported(%q) = %q, want sorted", kind, got)
		}
	}
	if got := config.Supported("Gateway"); got != nil {
		t.Errorf("Supported(%q) = %q, want nil", "Gateway", got)
	}
	// Supported returns a copy: changing it changes nothing.
	got := config.Supported(config.KindDestinationRule)
	got[0] = "traffic_policy.tunnel"
	if slices.Contains(config.Supported(config.KindDestinationRule), "traffic_policy.tunnel") {
		t.Errorf("Supported(%q) returns the allowlist itself, want a copy", config.KindDestinationRule)
	}
}

func TestLoadMeta(t *testing.T) {
	files := map[string]string{
		"a.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: shop
  labels: {app: reviews}
  annotations: {example.com/owner: "team-a"}
spec: {host: reviews}
`,
		"b.yaml": "\n# routes\n\n---\n" + vsReviews,
	}
	set, err := load(files)
	if err != nil {
		t.Fatalf("Load(...) = %v, want no error", err)
	}
	var got []config.Meta
	for _, r := range set.VirtualServices {
		got = append(got, r.Meta)
	}
	for _, r := range set.DestinationRules {
		got = append(got, r.Meta)
	}
	want := []config.Meta{
		{Kind: "VirtualService", Name: "reviews", Namespace: "default", File: "b.yaml", Line: 5},
		{
			Kind: "DestinationRule", Name: "reviews", Namespace: "shop",
			Labels:      map[string]string{"app": "reviews"},
			Annotations: map[string]string{"example.com/owner": "team-a"},
			File:        "a.yaml", Line: 1,
		},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Load(...) metadata mismatch (-got +want):\n%s", diff)
	}
	if got, want := got[1].String(), "DestinationRule shop/reviews"; got != want {
		t.Errorf("Meta.String() = %q, want %q", got, want)
	}
}

// rejections lists invalid configurations and every error each must give.
// Unless a case says otherwise it is one file, mesh.yaml.
var rejections = []struct {
	name  string
	yaml  string            // contents of mesh.yaml
	files map[string]string // instead of yaml
	want  []string
}{
	// Unknown fields.
	{
		name: "unknown field nested in spec",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - match: [{urii: {prefix: /}}]
    route: [{destination: {host: reviews}}]
`),
		want: []string{`mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].urii: unknown field`},
	},
	{
		name: "unknown field in a map value",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - match: [{headers: {x-user: {exat: jason}}}]
    route: [{destination: {host: reviews}}]
`),
		want: []string{`mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].headers["x-user"].exat: unknown field`},
	},
	{
		name: "unknown fields of several resources",
		yaml: docs(
			res("DestinationRule", "reviews", "  host: reviews\n  hots: reviews\n"),
			res("ServiceEntry", "reviews", "  hosts: [reviews]\n  endpoint: []\n  port: []\n"),
		),
		want: []string{
			`mesh.yaml:1: DestinationRule default/reviews: spec.hots: unknown field`,
			`mesh.yaml:9: ServiceEntry default/reviews: spec.endpoint: unknown field`,
			`mesh.yaml:9: ServiceEntry default/reviews: spec.port: unknown field`,
		},
	},
	{
		name: "unknown top-level key",
		yaml: vsReviews + "specs: {}\n",
		want: []string{`mesh.yaml:1: VirtualService default/reviews: specs: unknown field`},
	},
	{
		name: "unknown metadata field",
		yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  label: {app: reviews}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}\n",
		want: []string{`mesh.yaml:1: VirtualService default/reviews: metadata.label: unknown field`},
	},

	// Fields of the Istio types that Trellis does not implement.
	{
		name: "retries beyond what gRPC honours",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - retries: {attempts: 5, retryOn: "5xx,unavailable,retriable-headers,99", backoff: 0s, perTryTimeout: -1s}
    route: [{destination: {host: reviews}}]
`),
		want: []string{
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].retries.attempts: 5 is not between 0 and 4 (gRPC makes at most 5 attempts of a call)",
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].retries.backoff: must be positive, not 0s",
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].retries.perTryTimeout: must be positive, not -1s",
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].retries.retryOn: \"99\" is not supported (supported: unavailable, cancelled, deadline-exceeded, resource-exhausted, internal, connect-failure, refused-stream, 5xx, gateway-error, reset, retriable-4xx, retriable-status-codes, and HTTP status codes such as 503)",
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].retries.retryOn: \"retriable-headers\" is not supported (supported: unavailable, cancelled, deadline-exceeded, resource-exhausted, internal, connect-failure, refused-stream, 5xx, gateway-error, reset, retriable-4xx, retriable-status-codes, and HTTP status codes such as 503)",
		},
	},
	{
		name: "negative timeout and a bad duration",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - timeout: -1s
    retries: {attempts: 1, backoff: 5 sec}
    route: [{destination: {host: reviews}}]
`),
		want: []string{
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].retries.backoff: \"5 sec\" is not a duration such as \"1.5s\", \"100ms\" or \"1m\"",
		},
	},
	{
		name: "negative timeout",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - timeout: -1s
    route: [{destination: {host: reviews}}]
`),
		want: []string{
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].timeout: must not be negative, not -1s",
		},
	},
	{
		name: "empty fault",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - fault: {}
    route: [{destination: {host: reviews}}]
`),
		want: []string{
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].fault: needs a delay or an abort",
		},
	},
	{
		name: "bad fault values",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - fault:
      delay: {percentage: {value: 150}}
      abort: {grpcStatus: NOPE}
  - fault: {abort: {httpStatus: 700}}
    route: [{destination: {host: reviews}}]
  - fault: {abort: {percentage: {value: 10}}}
    route: [{destination: {host: reviews}}]
`),
		want: []string{
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].fault.abort.grpcStatus: \"NOPE\" is not a gRPC error code name such as UNAVAILABLE",
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].fault.delay.fixedDelay: required",
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].fault.delay.percentage.value: 150 is not between 0 and 100",
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].route: at least one destination is required",
			"mesh.yaml:1: VirtualService default/reviews: spec.http[1].fault.abort.httpStatus: 700 is not an HTTP status between 200 and 599",
			"mesh.yaml:1: VirtualService default/reviews: spec.http[2].fault.abort: httpStatus or grpcStatus is required",
		},
	},
	{
		name: "unsupported load balancers and conflicting policies",
		yaml: res("DestinationRule", "reviews", `
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: PASSTHROUGH}
    portLevelSettings:
    - port: {number: 80}
      loadBalancer: {consistentHash: {httpHeaderName: X-User, ringHash: {minimumRingSize: 9000000}}}
      outlierDetection: {maxEjectionPercent: 150, minHealthPercent: -1, interval: 0s}
    - port: {number: 80}
      loadBalancer: {consistentHash: {ringHash: {}}}
    - port: {}
      connectionPool: {http: {http2MaxRequests: -1, maxRequestsPerConnection: -1}}
    - port: {number: 81}
      loadBalancer: {consistentHash: {useSourceIp: true}}
      connectionPool: {http: {maxRequestsPerConnection: 10}}
`),
		want: []string{
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.simple: PASSTHROUGH is not supported (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM)",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[0].loadBalancer.consistentHash.httpHeaderName: \"X-User\" is not a valid lower-case header name",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[0].loadBalancer.consistentHash.ringHash.minimumRingSize: 9000000 is larger than 8388608",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[0].outlierDetection: cannot be combined with consistentHash load balancing",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[0].outlierDetection.interval: must be positive, not 0s",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[0].outlierDetection.maxEjectionPercent: 150 is not between 0 and 100",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[0].outlierDetection.minHealthPercent: -1 is not between 0 and 100",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[1].loadBalancer.consistentHash: httpHeaderName or useSourceIp is required",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[1].port.number: port 80 has settings twice",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[2].connectionPool.http.http2MaxRequests: must not be negative",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[2].connectionPool.http.maxRequestsPerConnection: must not be negative",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[3].connectionPool.http.maxRequestsPerConnection: cannot be combined with consistentHash load balancing",
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[2].port.number: must be between 1 and 65535",
		},
	},
	{
		name: "a subset policy with useSourceIp false",
		yaml: res("DestinationRule", "reviews", `
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: false}}, connectionPool: {http: {http1MaxPendingRequests: 1}}}
`),
		want: []string{
			"mesh.yaml:1: DestinationRule default/reviews: spec.subsets[0].trafficPolicy.connectionPool.http.http1MaxPendingRequests: field not supported by Trellis (see docs/SUPPORT.md)",
		},
	},
	{
		name: "useSourceIp false",
		yaml: res("DestinationRule", "reviews", `
  host: reviews
  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: false}}}
`),
		want: []string{
			"mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp: must be true when set",
		},
	},
	{
		name: "scalars of the wrong type name their field",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews, 5]
  http:
  - match: [{ignoreUriCase: "yes", port: 1.5}]
    route: [{destination: {host: reviews, port: {number: 99999999999}}, weight: 2147483648}]
`),
		want: []string{
			`mesh.yaml:1: VirtualService default/reviews: spec.hosts[1]: 5 must be a string`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].ignoreUriCase: "yes" must be true or false`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].port: 1.5 must be a non-negative whole number`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route[0].destination.port.number: 99999999999 must be a non-negative whole number`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route[0].weight: 2147483648 must be a whole number`,
		},
	},
	{
		name: "http mirror",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - mirror: {host: shadow}
    route: [{destination: {host: reviews}}]
`),
		want: []string{`mesh.yaml:1: VirtualService default/reviews: spec.http[0].mirror: field not supported by Trellis (see docs/SUPPORT.md)`},
	},
	{
		name: "a null redirect",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - retries: {attempts: 3, perTryTimeout: 1s}
    redirect: null
    route: [{destination: {host: reviews}}]
`),
		want: []string{
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].redirect: field not supported by Trellis (see docs/SUPPORT.md)`,
		},
	},
	{
		name: "route headers and match query parameters",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - match: [{queryParams: {v: {exact: "1"}}}]
    route:
    - destination: {host: reviews}
      headers: {request: {set: {x-a: b}}}
`),
		want: []string{
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].queryParams: field not supported by Trellis (see docs/SUPPORT.md)`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route[0].headers: field not supported by Trellis (see docs/SUPPORT.md)`,
		},
	},
	{
		name: "VirtualService exportTo, gateways and tcp",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  exportTo: ["."]
  gateways: [mesh]
  tcp: [{route: [{destination: {host: reviews}}]}]
  http: [{route: [{destination: {host: reviews}}]}]
`),
		want: []string{
			`mesh.yaml:1: VirtualService default/reviews: spec.exportTo: field not supported by Trellis (see docs/SUPPORT.md)`,
			`mesh.yaml:1: VirtualService default/reviews: spec.gateways: field not supported by Trellis (see docs/SUPPORT.md)`,
			`mesh.yaml:1: VirtualService default/reviews: spec.tcp: field not supported by Trellis (see docs/SUPPORT.md)`,
		},
	},
	{
		name: "DestinationRule trafficPolicy, on the rule and on a subset",
		yaml: res("DestinationRule", "reviews", `
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 10s}}
  subsets:
  - name: v1
    labels: {version: v1}
    traffic_policy: {tunnel: {protocol: CONNECT}}
`),
		want: []string{
			`mesh.yaml:1: DestinationRule default/reviews: spec.subsets[0].traffic_policy.tunnel: field not supported by Trellis (see docs/SUPPORT.md)`,
			`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.warmupDurationSecs: field not supported by Trellis (see docs/SUPPORT.md)`,
		},
	},
	{
		name: "ServiceEntry exportTo",
		yaml: seReviews + "  exportTo: [\"*\"]\n",
		want: []string{
			`mesh.yaml:1: ServiceEntry default/reviews: spec.exportTo: field not supported by Trellis (see docs/SUPPORT.md)`,
		},
	},
	{
		name: "ServiceEntry subjectAltNames that are not SPIFFE IDs",
		yaml: seReviews + "  subjectAltNames: [reviews.example.com, \"spiffe://cluster.local/ns/default/sa/a\", \"spiffe://Bad/x\"]\n  endpoints: [{address: 10.0.0.1, serviceAccount: Not_A_Name}]\n",
		want: []string{
			`mesh.yaml:1: ServiceEntry default/reviews: spec.endpoints[0].serviceAccount: "Not_A_Name" is not a valid service account name (a DNS-1123 subdomain)`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.subjectAltNames[0]: "reviews.example.com" is not a SPIFFE ID such as spiffe://cluster.local/ns/default/sa/reviews (mesh certificates carry only SPIFFE IDs)`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.subjectAltNames[2]: "spiffe://Bad/x" is not a SPIFFE ID such as spiffe://cluster.local/ns/default/sa/reviews (mesh certificates carry only SPIFFE IDs)`,
		},
	},
	{
		name: "WorkloadEntry network and weight",
		yaml: res("WorkloadEntry", "vm", `
  address: 10.0.0.1
  serviceAccount: reviews
  network: net1
  weight: 2
`),
		want: []string{
			`mesh.yaml:1: WorkloadEntry default/vm: spec.network: field not supported by Trellis (see docs/SUPPORT.md)`,
			`mesh.yaml:1: WorkloadEntry default/vm: spec.weight: field not supported by Trellis (see docs/SUPPORT.md)`,
		},
	},
	{
		name: "WorkloadEntry serviceAccount not a service account name",
		yaml: res("WorkloadEntry", "vm", "  address: 10.0.0.1\n  serviceAccount: \"a/b\"\n"),
		want: []string{`mesh.yaml:1: WorkloadEntry default/vm: spec.serviceAccount: "a/b" is not a valid service account name (a DNS-1123 subdomain)`},
	},
	{
		name: "ServiceEntry endpoint network",
		yaml: seReviews + "  endpoints: [{address: 10.0.0.1, network: net1}]\n",
		want: []string{`mesh.yaml:1: ServiceEntry default/reviews: spec.endpoints[0].network: field not supported by Trellis (see docs/SUPPORT.md)`},
	},

	// Values of the wrong shape.
	{
		name: "field types",
		yaml: res("VirtualService", "reviews", `
  hosts: reviews
  http:
  - match: [{uri: /x, headers: [x-user]}]
    route: {destination: {host: reviews}}
`),
		want: []string{
			`mesh.yaml:1: VirtualService default/reviews: spec.hosts: must be a list`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].headers: must be a mapping`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].uri: must be a mapping`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route: must be a list`,
		},
	},
	{
		name: "scalar of the wrong type",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}, weight: abc}]
`),
		want: []string{`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route[0].weight: "abc" must be a whole number`},
	},
	{
		name: "two kinds of string match",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - match: [{uri: {exact: /a, prefix: /b}}]
    route: [{destination: {host: reviews}}]
`),
		want: []string{`mesh.yaml:1: VirtualService default/reviews: spec: error parsing "prefix", oneof istio.networking.v1alpha3.StringMatch.match_type is already set`},
	},
	{
		name: "bad enum value",
		yaml: res("ServiceEntry", "reviews", `
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: FOO
  ports: [{number: 8080}]
`),
		want: []string{`mesh.yaml:1: ServiceEntry default/reviews: spec.resolution: "FOO" is not one of NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS`},
	},
	{
		name: "enum of the wrong type",
		yaml: res("ServiceEntry", "reviews", `
  hosts: [reviews]
  location: [MESH_INTERNAL]
  resolution: STATIC
  ports: [{number: 8080}]
`),
		want: []string{`mesh.yaml:1: ServiceEntry default/reviews: spec.location: must be one of MESH_EXTERNAL, MESH_INTERNAL`},
	},

	// ServiceEntry and WorkloadEntry validation.
	{
		name: "resolution DNS",
		yaml: res("ServiceEntry", "reviews", `
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: DNS
  ports: [{number: 8080}]
`),
		want: []string{`mesh.yaml:1: ServiceEntry default/reviews: spec.resolution: DNS is not supported: set resolution: STATIC (endpoints are listed, selected WorkloadEntries, or self-registered)`},
	},
	{
		name: "resolution missing",
		yaml: res("ServiceEntry", "reviews", `
  hosts: [reviews]
  location: MESH_INTERNAL
  ports: [{number: 8080}]
`),
		want: []string{`mesh.yaml:1: ServiceEntry default/reviews: spec.resolution: NONE is not supported: set resolution: STATIC (endpoints are listed, selected WorkloadEntries, or self-registered)`},
	},
	{
		name: "MESH_EXTERNAL",
		yaml: res("ServiceEntry", "reviews", `
  hosts: [reviews]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 8080}]
`),
		want: []string{`mesh.yaml:1: ServiceEntry default/reviews: spec.location: MESH_EXTERNAL is not supported: ServiceEntries describe services inside the mesh`},
	},
	{
		name: "no hosts and no ports",
		yaml: res("ServiceEntry", "reviews", `
  hosts: []
  location: MESH_INTERNAL
  resolution: STATIC
`),
		want: []string{
			`mesh.yaml:1: ServiceEntry default/reviews: spec.hosts: at least one host is required`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.ports: at least one port is required`,
		},
	},
	{
		name: "bad hosts",
		yaml: res("ServiceEntry", "reviews", `
  hosts: ["*.example.com", "", bad_host, "reviews."]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080}]
`),
		want: []string{
			`mesh.yaml:1: ServiceEntry default/reviews: spec.hosts[0]: wildcard hosts are not supported`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.hosts[1]: required`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.hosts[2]: "bad_host" is not a valid hostname`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.hosts[3]: "reviews." is not a valid hostname`,
		},
	},
	{
		name: "bad ports",
		yaml: res("ServiceEntry", "reviews", `
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 0}
  - {number: 70000}
  - {number: 8080, name: grpc, protocol: TCP, targetPort: 70000}
  - {number: 8080, name: grpc}
`),
		want: []string{
			`mesh.yaml:1: ServiceEntry default/reviews: spec.ports[0].number: must be between 1 and 65535`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.ports[1].number: must be between 1 and 65535`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.ports[2].protocol: protocol "TCP" is not supported (want GRPC, HTTP or HTTP2)`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.ports[2].targetPort: must be between 1 and 65535`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.ports[3].name: port name "grpc" is listed twice`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.ports[3].number: port 8080 is listed twice`,
		},
	},
	{
		name: "negative port",
		yaml: res("ServiceEntry", "reviews", `
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: -1}]
`),
		want: []string{`mesh.yaml:1: ServiceEntry default/reviews: spec.ports[0].number: -1 must be a non-negative whole number`},
	},
	{
		name: "bad endpoints",
		yaml: seReviews + `  endpoints:
  - address: reviews.example.com
    ports: {http: 8080, grpc: 0}
  - address: unix:///var/run/reviews.sock
    labels: {"bad key": v1, version: "not ok"}
    locality: a/b/c/d
  - ports: {grpc: 70000}
`,
		want: []string{
			`mesh.yaml:1: ServiceEntry default/reviews: spec.endpoints[0].address: "reviews.example.com" is not an IP address (DNS names and unix sockets are not supported)`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.endpoints[0].ports["grpc"]: must be between 1 and 65535`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.endpoints[0].ports["http"]: no port of the ServiceEntry is named "http"`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.endpoints[1].address: "unix:///var/run/reviews.sock" is not an IP address (DNS names and unix sockets are not supported)`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.endpoints[1].labels["bad key"]: "bad key" is not a valid label key`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.endpoints[1].labels["version"]: "not ok" is not a valid label value`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.endpoints[1].locality: "a/b/c/d" has more than region/zone/subzone`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.endpoints[2].address: required`,
			`mesh.yaml:1: ServiceEntry default/reviews: spec.endpoints[2].ports["grpc"]: must be between 1 and 65535`,
		},
	},
	{
		name: "workload selector",
		yaml: docs(
			seReviews+"  workloadSelector: {labels: {app: reviews}}\n  endpoints: [{address: 10.0.0.1}]\n",
			res("ServiceEntry", "ratings", `
  hosts: [ratings]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080}]
  workloadSelector: {}
`)),
		want: []string{
			`mesh.yaml:1: ServiceEntry default/reviews: spec.workloadSelector: cannot be set together with endpoints`,
			`mesh.yaml:14: ServiceEntry default/ratings: spec.workloadSelector.labels: at least one label is required`,
		},
	},
	{
		name: "bad WorkloadEntry",
		yaml: res("WorkloadEntry", "vm", `
  ports: {grpc: 0}
  labels: {"-app": reviews}
`),
		want: []string{
			`mesh.yaml:1: WorkloadEntry default/vm: spec.address: required`,
			`mesh.yaml:1: WorkloadEntry default/vm: spec.labels["-app"]: "-app" is not a valid label key`,
			`mesh.yaml:1: WorkloadEntry default/vm: spec.ports["grpc"]: must be between 1 and 65535`,
		},
	},
	{
		name: "WorkloadEntry address not an IP",
		yaml: res("WorkloadEntry", "vm", "  address: vm1.example.com\n"),
		want: []string{`mesh.yaml:1: WorkloadEntry default/vm: spec.address: "vm1.example.com" is not an IP address (DNS names and unix sockets are not supported)`},
	},

	// VirtualService validation.
	{
		name: "bad regexes",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - match:
    - uri: {regex: "a**"}
      headers: {x-user: {regex: "x{2,1}"}}
    - uri: {regex: `+strings.Repeat("a", config.MaxRegexLength+1)+`}
    route: [{destination: {host: reviews}}]
`),
		want: []string{
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].headers[\"x-user\"].regex: invalid regex: error parsing regexp: invalid repeat count: `{2,1}`",
			"mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].uri.regex: invalid regex: error parsing regexp: invalid nested repetition operator: `**`",
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[1].uri.regex: regex is 1025 bytes long, the limit is 1024`,
		},
	},
	{
		name: "bad matches",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - match:
    - uri: {}
      port: 70000
      headers: {X-User: {exact: jason}}
    route: [{destination: {host: reviews}}]
`),
		want: []string{
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].headers["X-User"]: "X-User" is not a valid lower-case header name`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].port: must be between 1 and 65535`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].match[0].uri: one of exact, prefix or regex is required`,
		},
	},
	{
		name: "weights that do not sum to 100",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews}, weight: 50}
    - {destination: {host: ratings}, weight: 50}
  - route:
    - {destination: {host: reviews}, weight: 60}
    - {destination: {host: ratings}, weight: 30}
  - route:
    - {destination: {host: reviews}}
    - {destination: {host: ratings}}
`),
		want: []string{
			`mesh.yaml:1: VirtualService default/reviews: spec.http[1].route: weights sum to 90, want 100`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[2].route: weights sum to 0, want 100`,
		},
	},
	{
		name: "negative weight",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews}, weight: -10}
    - {destination: {host: ratings}, weight: 110}
`),
		want: []string{`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route[0].weight: must not be negative`},
	},
	{
		name: "single destination with weight 50",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}, weight: 50}]
`),
		want: []string{`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route[0].weight: a single destination takes all traffic: weight must be 100 or unset, not 50`},
	},
	{
		name: "missing destination and destination host",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - route: [{destination: {subset: v1}}]
  - route: [{weight: 100}]
  - route: []
`),
		want: []string{
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route[0].destination.host: required`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[1].route[0].destination: required`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[2].route: at least one destination is required`,
		},
	},
	{
		name: "bad destinations",
		yaml: res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: "*.example.com", subset: V1, port: {number: 70000}}, weight: 50}
    - {destination: {host: reviews, port: {}}, weight: 50}
`),
		want: []string{
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route[0].destination.host: wildcard hosts are not supported`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route[0].destination.port.number: must be between 1 and 65535`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route[0].destination.subset: "V1" is not a valid subset name`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http[0].route[1].destination.port.number: must be between 1 and 65535`,
		},
	},
	{
		name: "no hosts and no routes",
		yaml: res("VirtualService", "reviews", "  hosts: []\n"),
		want: []string{
			`mesh.yaml:1: VirtualService default/reviews: spec.hosts: at least one host is required`,
			`mesh.yaml:1: VirtualService default/reviews: spec.http: at least one HTTP route is required`,
		},
	},
	{
		name: "wildcard host",
		yaml: res("VirtualService", "reviews", `
  hosts: ["*"]
  http: [{route: [{destination: {host: reviews}}]}]
`),
		want: []string{`mesh.yaml:1: VirtualService default/reviews: spec.hosts[0]: wildcard hosts are not supported`},
	},

	// DestinationRule validation.
	{
		name: "bad subsets",
		yaml: res("DestinationRule", "reviews", `
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v1, labels: {version: v1b}}
  - {name: v3}
  - {labels: {version: v4}}
  - {name: V5, labels: {version: v5}}
  - {name: v6, labels: {"bad key": v6}}
`),
		want: []string{
			`mesh.yaml:1: DestinationRule default/reviews: spec.subsets[1].name: subset "v1" is defined twice`,
			`mesh.yaml:1: DestinationRule default/reviews: spec.subsets[2].labels: a subset must select workloads by at least one label`,
			`mesh.yaml:1: DestinationRule default/reviews: spec.subsets[3].name: required`,
			`mesh.yaml:1: DestinationRule default/reviews: spec.subsets[4].name: "V5" is not a valid subset name`,
			`mesh.yaml:1: DestinationRule default/reviews: spec.subsets[5].labels["bad key"]: "bad key" is not a valid label key`,
		},
	},
	{
		name: "DestinationRule without host",
		yaml: res("DestinationRule", "reviews", "  subsets: [{name: v1, labels: {version: v1}}]\n"),
		want: []string{`mesh.yaml:1: DestinationRule default/reviews: spec.host: required`},
	},

	// Rules across resources.
	{
		name: "subset no DestinationRule defines",
		yaml: docs(drReviews, res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v3}, weight: 10}
  - route: [{destination: {host: ratings, subset: v1}}]
`)),
		want: []string{
			`mesh.yaml:11: VirtualService default/reviews: spec.http[0].route[1].destination.subset: subset "v3" of host reviews is not defined by any DestinationRule`,
			`mesh.yaml:11: VirtualService default/reviews: spec.http[1].route[0].destination.subset: subset "v1" of host ratings is not defined by any DestinationRule`,
		},
	},
	{
		name: "subset defined for the host in another namespace",
		files: map[string]string{
			"dr.yaml": resNS("DestinationRule", "shop", "reviews", "  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}]\n"),
			"vs.yaml": res("VirtualService", "reviews", "  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews, subset: v1}}]}]\n"),
		},
		want: []string{`vs.yaml:1: VirtualService default/reviews: spec.http[0].route[0].destination.subset: subset "v1" of host reviews is not defined by any DestinationRule`},
	},
	{
		name: "duplicate resources in two files",
		files: map[string]string{
			"a.yaml": docs(seReviews, vsReviews),
			"b.yaml": "# again\n" + vsReviews,
		},
		want: []string{`b.yaml:1: VirtualService default/reviews: duplicate resource: also defined at a.yaml:12`},
	},
	{
		name: "two DestinationRules for one host",
		files: map[string]string{
			"a.yaml": drReviews,
			"b.yaml": res("DestinationRule", "reviews-canary", "  host: Reviews.default.svc.cluster.local\n"),
		},
		want: []string{`b.yaml:1: DestinationRule default/reviews-canary: spec.host: host Reviews.default.svc.cluster.local already has DestinationRule default/reviews (a.yaml:1)`},
	},
	{
		name: "two VirtualServices for one host",
		yaml: docs(vsReviews, res("VirtualService", "reviews-canary", `
  hosts: [ratings, reviews.default.svc.cluster.local]
  http: [{route: [{destination: {host: reviews}}]}]
`)),
		want: []string{`mesh.yaml:11: VirtualService default/reviews-canary: spec.hosts[1]: host reviews.default.svc.cluster.local is already routed by VirtualService default/reviews (mesh.yaml:1)`},
	},

	// Documents that are not resources.
	{
		name: "unsupported kind",
		yaml: "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {}\n",
		want: []string{`mesh.yaml:1: kind: unsupported kind "Gateway" (supported: ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy, RequestAuthentication, Telemetry)`},
	},
	{
		name: "missing kind",
		yaml: "apiVersion: networking.istio.io/v1\nmetadata: {name: reviews}\nspec: {}\n",
		want: []string{`mesh.yaml:1: kind: required`},
	},
	{
		name: "wrong apiVersion",
		yaml: strings.Replace(vsReviews, "networking.istio.io/v1", "networking.istio.io/v2", 1),
		want: []string{`mesh.yaml:1: VirtualService default/reviews: apiVersion: "networking.istio.io/v2" is not an API version of VirtualService (want one of networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3)`},
	},
	{
		name: "missing apiVersion",
		yaml: strings.Replace(vsReviews, "apiVersion: networking.istio.io/v1\n", "", 1),
		want: []string{`mesh.yaml:1: VirtualService default/reviews: apiVersion: "" is not an API version of VirtualService (want one of networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3)`},
	},
	{
		name: "missing metadata.name",
		yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {namespace: shop}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}\n",
		want: []string{`mesh.yaml:1: VirtualService shop/?: metadata.name: required`},
	},
	{
		name: "missing metadata and spec",
		yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\n",
		want: []string{
			`mesh.yaml:1: VirtualService default/?: metadata: required, and must be a mapping`,
			`mesh.yaml:1: VirtualService default/?: spec: required, and must be a mapping`,
		},
	},
	{
		name: "bad metadata",
		yaml: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: Reviews
  namespace: Shop
  labels: {app: reviews, replicas: 3}
  annotations: [a]
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}
`,
		want: []string{
			`mesh.yaml:1: VirtualService Shop/Reviews: metadata.annotations: must be a mapping of strings`,
			`mesh.yaml:1: VirtualService Shop/Reviews: metadata.labels["replicas"]: must be a string`,
			`mesh.yaml:1: VirtualService Shop/Reviews: metadata.name: "Reviews" is not a valid name (lowercase letters, digits, '-' and '.')`,
			`mesh.yaml:1: VirtualService Shop/Reviews: metadata.namespace: "Shop" is not a valid namespace`,
		},
	},
	{
		name: "spec not a mapping",
		yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec: [host, reviews]\n",
		want: []string{`mesh.yaml:1: DestinationRule default/reviews: spec: required, and must be a mapping`},
	},
	{
		name: "document not a mapping",
		yaml: "- apiVersion: networking.istio.io/v1\n- kind: DestinationRule\n",
		want: []string{`mesh.yaml:1: a resource must be a YAML mapping: json: cannot unmarshal array into Go value of type map[string]interface {}`},
	},
	{
		name: "invalid YAML",
		yaml: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews\n",
		want: []string{`mesh.yaml:1: invalid YAML: yaml: line 3: did not find expected ',' or '}'`},
	},
	// Security resources and DestinationRule TLS.
	{
		name: "PeerAuthentication mode that is not a mode",
		yaml: sec("PeerAuthentication", "default", "a", "  mtls: {mode: OPTIONAL}\n"),
		want: []string{`mesh.yaml:1: PeerAuthentication default/a: spec.mtls.mode: "OPTIONAL" is not one of UNSET, DISABLE, PERMISSIVE, STRICT`},
	},
	{
		name: "PeerAuthentication unknown field",
		yaml: sec("PeerAuthentication", "default", "c", "  mtls: {mode: STRICT, strict: true}\n"),
		want: []string{`mesh.yaml:1: PeerAuthentication default/c: spec.mtls.strict: unknown field`},
	},
	{
		name: "PeerAuthentication port 0, port-level modes without selector, selector in the root namespace",
		yaml: docs(
			sec("PeerAuthentication", "default", "a", "  selector: {matchLabels: {app: a}}\n  portLevelMtls: {\"0\": {mode: STRICT}}\n"),
			sec("PeerAuthentication", "shop", "b", "  portLevelMtls: {\"8080\": {mode: STRICT}}\n"),
			sec("PeerAuthentication", "istio-system", "c", "  selector: {matchLabels: {app: c}}\n  mtls: {mode: STRICT}\n"),
		),
		want: []string{
			`mesh.yaml:1: PeerAuthentication default/a: spec.portLevelMtls["0"]: port must be between 1 and 65535`,
			`mesh.yaml:10: PeerAuthentication shop/b: spec.portLevelMtls: port-level mTLS needs a selector with labels: a namespace-wide or mesh-wide PeerAuthentication cannot set it`,
			`mesh.yaml:18: PeerAuthentication istio-system/c: spec.selector: a PeerAuthentication in the root namespace istio-system must not have a selector (it is the mesh-wide policy)`,
		},
	},
	{
		name: "two namespace-wide PeerAuthentications in one namespace, and two mesh-wide",
		yaml: docs(
			sec("PeerAuthentication", "default", "a", "  mtls: {mode: STRICT}\n"),
			sec("PeerAuthentication", "default", "b", "  mtls: {mode: PERMISSIVE}\n"),
			sec("PeerAuthentication", "istio-system", "c", "  mtls: {mode: STRICT}\n"),
			sec("PeerAuthentication", "istio-system", "d", "  selector: {matchLabels: {}}\n  mtls: {mode: DISABLE}\n"),
		),
		want: []string{
			`mesh.yaml:9: PeerAuthentication default/b: spec.selector: namespace default already has a PeerAuthentication without selector, PeerAuthentication default/a (mesh.yaml:1)`,
			`mesh.yaml:25: PeerAuthentication istio-system/d: spec.selector: the mesh (root namespace istio-system) already has a PeerAuthentication without selector, PeerAuthentication istio-system/c (mesh.yaml:17)`,
		},
	},
	{
		name: "security resource with a networking API version",
		yaml: "apiVersion: networking.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec: {mtls: {mode: STRICT}}\n",
		want: []string{`mesh.yaml:1: PeerAuthentication default/a: apiVersion: "networking.istio.io/v1" is not an API version of PeerAuthentication (want one of security.istio.io/v1, security.istio.io/v1beta1)`},
	},
	{
		name: "AuthorizationPolicy fields Trellis does not implement",
		yaml: sec("AuthorizationPolicy", "default", "a", `
  targetRef: {kind: Service, name: reviews}
  rules:
  - from: [{source: {trustDomains: [other.example]}}]
    to: [{operation: {hosts: [reviews.example.com]}}]
`),
		want: []string{
			`mesh.yaml:1: AuthorizationPolicy default/a: spec.rules[0].from[0].source.trustDomains: field not supported by Trellis (see docs/SUPPORT.md)`,
			`mesh.yaml:1: AuthorizationPolicy default/a: spec.rules[0].to[0].operation.hosts: field not supported by Trellis (see docs/SUPPORT.md)`,
			`mesh.yaml:1: AuthorizationPolicy default/a: spec.targetRef: field not supported by Trellis (see docs/SUPPORT.md)`,
		},
	},
	{
		name: "AuthorizationPolicy values the translation refuses",
		yaml: docs(
			sec("AuthorizationPolicy", "default", "custom", "  action: CUSTOM\n  rules: [{}]\n"),
			sec("AuthorizationPolicy", "default", "paths", "  rules: [{to: [{operation: {paths: [\"/a/../admin\"]}}]}]\n"),
			sec("AuthorizationPolicy", "default", "when", "  rules: [{when: [{key: request.host, values: [x]}]}]\n"),
		),
		want: []string{
			`mesh.yaml:1: AuthorizationPolicy default/custom: secpolicy: authorization policy "default/custom": action: CUSTOM not supported`,
			`mesh.yaml:10: AuthorizationPolicy default/paths: secpolicy: authorization policy "default/paths": rules[0].to[0].operation.paths[0]: "/a/../admin" is not in canonical form ("/admin") and would never match`,
			`mesh.yaml:18: AuthorizationPolicy default/when: secpolicy: authorization policy "default/when": rules[0].when[0].key: "request.host" not supported`,
		},
	},
	{
		name: "RequestAuthentication fields Trellis does not implement",
		yaml: sec("RequestAuthentication", "default", "a", "  jwtRules: [{issuer: x, jwksUri: \"https://x/jwks\", fromCookies: [session], spaceDelimitedClaims: [scope]}]\n"),
		want: []string{
			`mesh.yaml:1: RequestAuthentication default/a: spec.jwtRules[0].fromCookies: field not supported by Trellis (see docs/SUPPORT.md)`,
			`mesh.yaml:1: RequestAuthentication default/a: spec.jwtRules[0].spaceDelimitedClaims: field not supported by Trellis (see docs/SUPPORT.md)`,
		},
	},
	{
		name: "RequestAuthentication values the translation refuses",
		yaml: docs(
			sec("RequestAuthentication", "default", "b", "  jwtRules: [{issuer: x}]\n"),
			sec("RequestAuthentication", "default", "c", "  jwtRules: [{issuer: x, jwksUri: \"ftp://x/jwks\"}]\n"),
		),
		want: []string{
			`mesh.yaml:1: RequestAuthentication default/b: request authentication "default/b": jwtRules[0]: jwksUri or jwks is required (OIDC discovery is not supported)`,
			`mesh.yaml:9: RequestAuthentication default/c: request authentication "default/c": jwtRules[0].jwksUri: "ftp://x/jwks" is not an http(s) URL`,
		},
	},
	{
		name: "DestinationRule tls modes other than ISTIO_MUTUAL and DISABLE, tls fields, tls without mode",
		yaml: res("DestinationRule", "reviews", `
  host: reviews
  trafficPolicy:
    tls: {mode: SIMPLE}
    portLevelSettings:
    - port: {number: 9080}
      tls: {}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tls: {mode: ISTIO_MUTUAL, sni: reviews.example.com, subjectAltNames: [spiffe://x]}
      portLevelSettings:
      - port: {number: 9090}
        tls: {mode: MUTUAL, credentialName: secret}
`),
		want: []string{
			`mesh.yaml:1: DestinationRule default/reviews: spec.subsets[0].trafficPolicy.portLevelSettings[0].tls.credentialName: field not supported by Trellis (see docs/SUPPORT.md)`,
			`mesh.yaml:1: DestinationRule default/reviews: spec.subsets[0].trafficPolicy.tls.sni: field not supported by Trellis (see docs/SUPPORT.md)`,
			`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[0].tls.mode: required: ISTIO_MUTUAL or DISABLE`,
		},
	},
	{
		name: "DestinationRule subjectAltNames without ISTIO_MUTUAL, or not SPIFFE IDs",
		yaml: res("DestinationRule", "reviews", `
  host: reviews
  trafficPolicy:
    tls: {mode: DISABLE, subjectAltNames: ["spiffe://cluster.local/ns/default/sa/reviews"]}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tls: {mode: ISTIO_MUTUAL, subjectAltNames: ["spiffe://cluster.local/ns/default/sa/reviews", "*.example.com"]}
`),
		want: []string{
			`mesh.yaml:1: DestinationRule default/reviews: spec.subsets[0].trafficPolicy.tls.subjectAltNames[1]: "*.example.com" is not a SPIFFE ID such as spiffe://cluster.local/ns/default/sa/reviews (mesh certificates carry only SPIFFE IDs)`,
			`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.tls.subjectAltNames: applies only with mode ISTIO_MUTUAL`,
		},
	},
	{
		name: "DestinationRule tls mode SIMPLE and MUTUAL",
		yaml: res("DestinationRule", "reviews", `
  host: reviews
  trafficPolicy: {tls: {mode: SIMPLE}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9090}
        tls: {mode: MUTUAL}
`),
		want: []string{
			`mesh.yaml:1: DestinationRule default/reviews: spec.subsets[0].trafficPolicy.portLevelSettings[0].tls.mode: MUTUAL is not supported (supported: ISTIO_MUTUAL, DISABLE)`,
			`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.tls.mode: SIMPLE is not supported (supported: ISTIO_MUTUAL, DISABLE)`,
		},
	},
	{
		name: "key given twice",
		yaml: res("DestinationRule", "reviews", "  host: reviews\n  host: ratings\n"),
		want: []string{"mesh.yaml:1: invalid YAML: yaml: unmarshal errors:\n  line 7: key \"host\" already set in map"},
	},
	{
		name: "problems in several files",
		files: map[string]string{
			"b.yaml": "kind: Gateway\n",
			"a.yaml": "\n" + res("VirtualService", "reviews", "  hosts: [reviews]\n  http: [{mirror: {host: x}}]\n"),
			"c.yml":  ": :\n",
		},
		want: []string{
			`a.yaml:2: VirtualService default/reviews: spec.http[0].mirror: field not supported by Trellis (see docs/SUPPORT.md)`,
			`b.yaml:1: kind: unsupported kind "Gateway" (supported: ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy, RequestAuthentication, Telemetry)`,
			`c.yml:1: invalid YAML: yaml: did not find expected key`,
		},
	},
}

func TestLoadRejections(t *testing.T) {
	for _, tc := range rejections {
		t.Run(tc.name, func(t *testing.T) {
			files := tc.files
			if files == nil {
				files = map[string]string{"mesh.yaml": tc.yaml}
			}
			set, err := load(files)
			if err == nil {
				t.Fatalf("Load(...) = %d resources, nil, want errors %q", set.Len(), tc.want)
			}
			if set != nil {
				t.Errorf("Load(...) = %v, %v, want a nil Set", set, err)
			}
			if diff := cmp.Diff(errorTexts(t, err), sorted(tc.want)); diff != "" {
				t.Errorf("Load(...) errors mismatch (-got +want):\n%s", diff)
			}
		})
	}
}

// TestErrorFields checks that an error's fields, not only its text, locate
// the problem.
func TestErrorFields(t *testing.T) {
	_, err := load(map[string]string{"routes.yaml": "# header\n\n---\n" + res("VirtualService", "reviews", `
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
  - route:
    - {destination: {host: reviews}, weight: 60}
    - {destination: {host: ratings}, weight: 30}
`)})
	got := config.Errors(err)
	want := []*config.Error{{
		File:     "routes.yaml",
		Line:     4,
		Resource: "VirtualService default/reviews",
		Field:    "spec.http[1].route",
		Msg:      "weights sum to 90, want 100",
	}}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Errors(Load(...)) mismatch (-got +want):\n%s", diff)
	}
	if got, want := err.Error(), "routes.yaml:4: VirtualService default/reviews: spec.http[1].route: weights sum to 90, want 100"; got != want {
		t.Errorf("Load(...) = %q, want %q", got, want)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  *config.Error
		want string
	}{
		{&config.Error{File: "a.yaml", Line: 3, Resource: "VirtualService ns/vs", Field: "spec.hosts", Msg: "bad"}, "a.yaml:3: VirtualService ns/vs: spec.hosts: bad"},
		{&config.Error{File: "a.yaml", Line: 3, Resource: "VirtualService ns/vs", Msg: "bad"}, "a.yaml:3: VirtualService ns/vs: bad"},
		{&config.Error{File: "a.yaml", Line: 3, Field: "kind", Msg: "bad"}, "a.yaml:3: kind: bad"},
		{&config.Error{File: "a.yaml", Msg: "bad"}, "a.yaml: bad"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestLoadLines checks the line reported for documents of multi-document
// files: the first line of the document that is not blank.
func TestLoadLines(t *testing.T) {
	// bad is a document whose error is "<file>:<line>: VirtualService default/<name>: spec.hosts: at least one host is required".
	bad := func(name string) string {
		return res("VirtualService", name, "  http: [{route: [{destination: {host: reviews}}]}]\n")
	}
	msg := func(line, name string) string {
		return "mesh.yaml:" + line + ": VirtualService default/" + name + ": spec.hosts: at least one host is required"
	}
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"first document", bad("a"), []string{msg("1", "a")}},
		{"leading blank lines", "\n  \n\n" + bad("a"), []string{msg("4", "a")}},
		{"leading separator", "---\n" + bad("a"), []string{msg("2", "a")}},
		{"leading comment", "# routes for a\n" + bad("a"), []string{msg("1", "a")}},
		{
			"several documents",
			bad("a") + "---\n" + vsReviews + "---\n\n\n" + bad("b") + "---\n" + bad("c"),
			[]string{msg("1", "a"), msg("20", "b"), msg("27", "c")},
		},
		{
			"comment-only and empty documents",
			"# header\n# more\n---\n---\n\n---\n# nothing\n---\n" + bad("a") + "---\n# trailing\n",
			[]string{msg("9", "a")},
		},
		{
			"separators with trailing space and comments",
			bad("a") + "--- \n" + bad("b") + "--- # next\n" + bad("c") + "---\t# last\n" + bad("d"),
			[]string{msg("1", "a"), msg("8", "b"), msg("15", "c"), msg("22", "d")},
		},
		{
			"document end markers",
			bad("a") + "...\n" + bad("b") + "... # end\n---\n" + bad("c"),
			[]string{msg("1", "a"), msg("8", "b"), msg("16", "c")},
		},
		{
			"content on the separator line",
			bad("a") + "--- " + bad("b"),
			[]string{msg("1", "a"), msg("7", "b")},
		},
		{
			"CRLF line endings",
			strings.ReplaceAll(bad("a")+"---\n\n"+bad("b"), "\n", "\r\n"),
			[]string{msg("1", "a"), msg("9", "b")},
		},
		{
			"not separators",
			"kind: Gateway\nx: |\n  ---\n----: 1\n",
			[]string{`mesh.yaml:1: kind: unsupported kind "Gateway" (supported: ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy, RequestAuthentication, Telemetry)`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := load(map[string]string{"mesh.yaml": tt.yaml})
			if err == nil {
				t.Fatalf("Load(%q) = %d resources, nil, want errors %q", tt.yaml, set.Len(), tt.want)
			}
			if diff := cmp.Diff(errorTexts(t, err), sorted(tt.want)); diff != "" {
				t.Errorf("Load(%q) errors mismatch (-got +want):\n%s", tt.yaml, diff)
			}
		})
	}
}

// TestLoadLinesValid checks Meta.Line of resources in a multi-document file.
func TestLoadLinesValid(t *testing.T) {
	yaml := "# mesh\n\n---\n\n" + seReviews + "---\n# routes\n" + vsReviews + "--- # rules\n" + drReviews
	set, err := load(map[string]string{"mesh.yaml": yaml})
	if err != nil {
		t.Fatalf("Load(...) = %v, want no error", err)
	}
	got := []int{set.ServiceEntries[0].Line, set.VirtualServices[0].Line, set.DestinationRules[0].Line}
	want := []int{5, 16, 27}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Load(...) lines of ServiceEntry, VirtualService, DestinationRule mismatch (-got +want):\n%s", diff)
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("se.yaml", seReviews)
	write("dr.yml", drReviews)
	write("vs.json", `{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"},
 "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}}`)
	// Not read: a dotfile, other extensions, a directory.
	write(".hidden.yaml", "kind: Gateway\n")
	write("notes.txt", "kind: Gateway\n")
	write("vs.yaml~", "kind: Gateway\n")
	write("README.md", "# not config\n")
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub.yaml", "x.yaml"), []byte("kind: Gateway\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	set, err := config.LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir(%q) = %v, want no error", dir, err)
	}
	wantFiles := []string{filepath.Join(dir, "dr.yml"), filepath.Join(dir, "se.yaml"), filepath.Join(dir, "vs.json")}
	if diff := cmp.Diff(set.Files, wantFiles); diff != "" {
		t.Errorf("LoadDir(%q).Files mismatch (-got +want):\n%s", dir, diff)
	}
	if diff := cmp.Diff(specs(set), []proto.Message{
		seReviewsSpec,
		&networking.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{
				Destination: &networking.Destination{Host: "reviews", Subset: "v1"},
			}}}},
		},
		drReviewsSpec,
	}, protocmp.Transform()); diff != "" {
		t.Errorf("LoadDir(%q) specs mismatch (-got +want):\n%s", dir, diff)
	}

	// One bad file rejects the whole directory.
	write("bad.yaml", res("DestinationRule", "ratings", "  host: ratings\n  trafficPolicy: {tls: {mode: SIMPLE}}\n"))
	set, err = config.LoadDir(dir)
	if set != nil {
		t.Errorf("LoadDir(%q) = %d resources, want a nil Set", dir, set.Len())
	}
	want := []string{filepath.Join(dir, "bad.yaml") + ":1: DestinationRule default/ratings: spec.trafficPolicy.tls.mode: SIMPLE is not supported (supported: ISTIO_MUTUAL, DISABLE)"}
	if diff := cmp.Diff(errorTexts(t, err), want); diff != "" {
		t.Errorf("LoadDir(%q) errors mismatch (-got +want):\n%s", dir, diff)
	}
}

func TestLoadDirMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	set, err := config.LoadDir(dir)
	if err == nil || set != nil {
		t.Fatalf("LoadDir(%q) = %v, %v, want nil and an error", dir, set, err)
	}
	if errs := config.Errors(err); len(errs) != 0 {
		t.Errorf("Errors(LoadDir(%q)) = %v, want none: the problem is not in a resource", dir, errs)
	}
}

func TestLoadDirEmpty(t *testing.T) {
	dir := t.TempDir()
	set, err := config.LoadDir(dir)
	if err != nil || set == nil || set.Len() != 0 || len(set.Files) != 0 {
		t.Errorf("LoadDir(empty dir) = %v, %v, want an empty Set", set, err)
	}
}

func TestIsConfigFile(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"a.yaml", true},
		{"a.yml", true},
		{"a.json", true},
		{"a.b.yaml", true},
		{".a.yaml", false},
		{".yaml", false},
		{"a.yaml.bak", false},
		{"a.YAML", false},
		{"a.txt", false},
		{"yaml", false},
		{"..data", false},
	}
	for _, tt := range tests {
		if got := config.IsConfigFile(tt.name); got != tt.want {
			t.Errorf("IsConfigFile(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestCanonicalHost(t *testing.T) {
	tests := []struct {
		host, ns, want string
	}{
		{"reviews", "default", "reviews.default.svc.cluster.local"},
		{"Reviews", "shop", "reviews.shop.svc.cluster.local"},
		{"reviews.shop.svc.cluster.local", "default", "reviews.shop.svc.cluster.local"},
		{"reviews.shop", "default", "reviews.shop"},
		{"API.Example.com", "default", "api.example.com"},
	}
	for _, tt := range tests {
		if got := config.CanonicalHost(tt.host, tt.ns); got != tt.want {
			t.Errorf("CanonicalHost(%q, %q) = %q, want %q", tt.host, tt.ns, got, tt.want)
		}
	}
}

func TestLocalityLbSettingRejections(t *testing.T) {
	_, err := load(map[string]string{"mesh.yaml": res("DestinationRule", "reviews", `
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute: [{from: "us-east//x", to: {"a/b": 60, "": 10}}]
        failover: [{from: us-east/z, to: us-east}, {from: eu, to: eu}]
`)})
	want := []string{
		`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting: distribute and failover cannot both be set`,
		`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from: "us-east//x" is not a locality pattern such as "region/zone/*"`,
		`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: weights sum to 70, want 100`,
		`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to[""]: "" is not a locality pattern such as "region/zone/*"`,
		`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0].from: "us-east/z" is not a region`,
		`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[1]: a region cannot fail over to itself`,
	}
	if diff := cmp.Diff(sorted(errorTexts(t, err)), sorted(want)); diff != "" {
		t.Errorf("Load(...) errors (-got +want):\n%s", diff)
	}
}
