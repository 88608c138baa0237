package translate

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/registry"
)

func load(t *testing.T, yaml string) *config.Set {
	t.Helper()
	set, err := config.Load(map[string][]byte{"mesh.yaml": []byte(yaml)})
	if err != nil {
		t.Fatalf("config.Load() = %v", err)
	}
	return set
}

func reg(svc, ns, addr string, port, servicePort uint32, labels map[string]string) registry.Endpoint {
	return registry.Endpoint{Service: svc, Namespace: ns, Address: addr, Port: port, ServicePort: servicePort, Labels: labels}
}

// addrs lists "ip:port" of a ClusterLoadAssignment, with locality weights.
func addrs(cla *v3endpointpb.ClusterLoadAssignment) []string {
	var out []string
	for _, loc := range cla.GetEndpoints() {
		l := loc.GetLocality()
		for _, lb := range loc.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s/%s/%s %s:%d w%d", l.GetRegion(), l.GetZone(), l.GetSubZone(), sa.GetAddress(), sa.GetPortValue(), loc.GetLoadBalancingWeight().GetValue()))
		}
	}
	return out
}

// retried adds Istio's default retry policy to a route action.
func retried(a *v3routepb.Route_Route) *v3routepb.Route_Route {
	a.Route.RetryPolicy = &v3routepb.RetryPolicy{RetryOn: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", NumRetries: wrapperspb.UInt32(2), RetriableStatusCodes: []uint32{503}}
	return a
}

func TestRegisteredService(t *testing.T) {
	res := Build(nil, []registry.Endpoint{
		reg("greeter", "default", "127.0.0.1", 4001, 9080, map[string]string{"version": "v1"}),
		reg("greeter", "default", "127.0.0.1", 4002, 9080, map[string]string{"version": "v2"}),
	}, Options{})
	wantListeners := []string{
		"greeter", "greeter.default", "greeter.default.svc.cluster.local",
		"greeter.default.svc.cluster.local:9080", "greeter.default:9080", "greeter:9080",
	}
	if diff := cmp.Diff(slices.Sorted(maps.Keys(res.Listeners)), wantListeners); diff != "" {
		t.Errorf("listeners (-got +want):\n%s", diff)
	}
	host := "greeter.default.svc.cluster.local"
	rc := res.Routes[host+":9080"]
	want := &v3routepb.RouteConfiguration{
		Name: host + ":9080",
		VirtualHosts: []*v3routepb.VirtualHost{{
			Name:    host + ":9080",
			Domains: []string{host + ":9080", host, "greeter.default:9080", "greeter.default", "greeter:9080", "greeter"},
			Routes: []*v3routepb.Route{{
				Match:  &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"}},
				Action: retried(clusterAction("outbound|9080||" + host)),
			}},
		}},
	}
	if diff := cmp.Diff(rc, want, protocmp.Transform()); diff != "" {
		t.Errorf("route configuration (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(addrs(res.Endpoints["outbound|9080||"+host]), []string{"// 127.0.0.1:4001 w2", "// 127.0.0.1:4002 w2"}); diff != "" {
		t.Errorf("endpoints (-got +want):\n%s", diff)
	}
	for name, l := range res.Listeners {
		if l.GetName() != name || l.GetApiListener() == nil {
			t.Errorf("listener %q = %v, want an API listener of that name", name, l)
		}
	}
}

func TestServiceEntryPortsAndWorkloads(t *testing.T) {
	set := load(t, `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  resolution: STATIC
  ports:
  - {number: 9080, name: grpc, protocol: GRPC, targetPort: 7000}
  - {number: 9090, name: admin, protocol: HTTP}
  workloadSelector:
    labels: {app: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: r1, namespace: shop}
spec:
  address: 10.0.0.1
  labels: {app: reviews, version: v1}
  locality: eu/west-1a
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: r2, namespace: shop}
spec:
  address: 10.0.0.2
  ports: {grpc: 7100}
  labels: {app: reviews, version: v2}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other, namespace: shop}
spec:
  address: 10.0.0.3
  labels: {app: ratings}
`)
	res := Build(set, []registry.Endpoint{
		// Joins port 9080 explicitly.
		reg("reviews", "shop", "10.0.0.4", 7200, 9080, nil),
		// Has no matching port: warned about and left out.
		reg("reviews", "shop", "10.0.0.5", 5000, 0, nil),
	}, Options{})
	host := "reviews.shop.svc.cluster.local"
	if _, ok := res.Listeners["reviews.shop"]; ok {
		t.Errorf("a two-port service has a portless listener name")
	}
	for _, name := range []string{host + ":9080", "reviews.shop:9090", "reviews:9080"} {
		if _, ok := res.Listeners[name]; !ok {
			t.Errorf("no listener %q; have %v", name, slices.Sorted(maps.Keys(res.Listeners)))
		}
	}
	got := addrs(res.Endpoints["outbound|9080||"+host])
	want := []string{"// 10.0.0.2:7100 w2", "// 10.0.0.4:7200 w2", "eu/west-1a/ 10.0.0.1:7000 w1"}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("port 9080 endpoints (-got +want):\n%s", diff)
	}
	got = addrs(res.Endpoints["outbound|9090||"+host])
	want = []string{"// 10.0.0.2:9090 w1", "eu/west-1a/ 10.0.0.1:9090 w1"}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("port 9090 endpoints (-got +want):\n%s", diff)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "has no port 5000") {
		t.Errorf("warnings = %q, want one about port 5000", res.Warnings)
	}
}

func TestRegistrationJoinsSinglePortServiceEntry(t *testing.T) {
	set := load(t, `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 8080, name: http}]
`)
	res := Build(set, []registry.Endpoint{reg("ratings", "", "127.0.0.1", 41234, 0, nil)}, Options{})
	got := addrs(res.Endpoints["outbound|8080||ratings.default.svc.cluster.local"])
	if diff := cmp.Diff(got, []string{"// 127.0.0.1:41234 w1"}); diff != "" {
		t.Errorf("endpoints (-got +want):\n%s", diff)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings = %q, want none", res.Warnings)
	}
}

func TestShortNameOwnership(t *testing.T) {
	for _, tc := range []struct {
		namespaces []string
		owner      string
		warn       bool
	}{
		{[]string{"shop"}, "shop", false},
		{[]string{"shop", "default"}, "default", true},
		{[]string{"shop", "dev"}, "dev", true},
	} {
		var eps []registry.Endpoint
		for i, ns := range tc.namespaces {
			eps = append(eps, reg("cart", ns, "127.0.0.1", uint32(5000+i), 80, nil))
		}
		res := Build(nil, eps, Options{})
		l, ok := res.Listeners["cart:80"]
		if !ok {
			t.Errorf("namespaces %v: no listener cart:80", tc.namespaces)
			continue
		}
		routes := l.GetApiListener().String()
		if want := "cart." + tc.owner + ".svc.cluster.local:80"; !strings.Contains(routes, want) {
			t.Errorf("namespaces %v: cart:80 uses %s, want route %s", tc.namespaces, routes, want)
		}
		if got := len(res.Warnings) > 0; got != tc.warn {
			t.Errorf("namespaces %v: warnings %q, want warning %v", tc.namespaces, res.Warnings, tc.warn)
		}
	}
}

func TestVirtualServiceRoutes(t *testing.T) {
	set := load(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - name: by-method
    match:
    - uri: {exact: /greeter.Greeter/SayHello}
      ignoreUriCase: true
    - uri: {regex: "/admin/.*"}
      headers:
        x-debug: {}
        x-user: {prefix: "test-"}
    route:
    - destination: {host: greeter, subset: v2}
  - name: other-port-only
    match:
    - port: 9999
    route:
    - destination: {host: greeter, subset: v2}
  - route:
    - destination: {host: greeter, subset: v1}
      weight: 70
    - destination: {host: greeter, subset: v2}
      weight: 30
    - destination: {host: nowhere, port: {number: 1}}
      weight: 0
`)
	host := "greeter.default.svc.cluster.local"
	res := Build(set, []registry.Endpoint{
		reg("greeter", "default", "127.0.0.1", 4001, 9080, map[string]string{"version": "v1"}),
		reg("greeter", "default", "127.0.0.1", 4002, 9080, map[string]string{"version": "v2"}),
	}, Options{})
	v1, v2 := ClusterName(host, 9080, "v1"), ClusterName(host, 9080, "v2")
	strMatch := func(m *v3matcherpb.StringMatcher) *v3routepb.HeaderMatcher_StringMatch {
		return &v3routepb.HeaderMatcher_StringMatch{StringMatch: m}
	}
	want := []*v3routepb.Route{
		{
			Name:   "by-method",
			Match:  &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Path{Path: "/greeter.Greeter/SayHello"}, CaseSensitive: wrapperspb.Bool(false)},
			Action: retried(clusterAction(v2)),
		},
		{
			Name: "by-method",
			Match: &v3routepb.RouteMatch{
				PathSpecifier: &v3routepb.RouteMatch_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: "/admin/.*"}},
				Headers: []*v3routepb.HeaderMatcher{
					{Name: "x-debug", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true}},
					{Name: "x-user", HeaderMatchSpecifier: strMatch(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: "test-"}})},
				},
			},
			Action: retried(clusterAction(v2)),
		},
		{
			Name:  "default/greeter#2",
			Match: &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"}},
			Action: retried(&v3routepb.Route_Route{Route: &v3routepb.RouteAction{
				ClusterSpecifier: &v3routepb.RouteAction_WeightedClusters{WeightedClusters: &v3routepb.WeightedCluster{
					Clusters: []*v3routepb.WeightedCluster_ClusterWeight{
						{Name: v1, Weight: wrapperspb.UInt32(70)},
						{Name: v2, Weight: wrapperspb.UInt32(30)},
					},
				}},
			}}),
		},
	}
	got := res.Routes[host+":9080"].GetVirtualHosts()[0].GetRoutes()
	if diff := cmp.Diff(got, want, protocmp.Transform()); diff != "" {
		t.Errorf("routes (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(addrs(res.Endpoints[v1]), []string{"// 127.0.0.1:4001 w1"}); diff != "" {
		t.Errorf("v1 subset endpoints (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(addrs(res.Endpoints[v2]), []string{"// 127.0.0.1:4002 w1"}); diff != "" {
		t.Errorf("v2 subset endpoints (-got +want):\n%s", diff)
	}
	// A destination to an unknown host gets a cluster with no endpoints, so
	// that clients fail its RPCs as unavailable, and a warning.
	nowhere := ClusterName("nowhere.default.svc.cluster.local", 1, "")
	if _, ok := res.Clusters[nowhere]; !ok {
		t.Errorf("no cluster %s for the unknown destination", nowhere)
	}
	if len(res.Endpoints[nowhere].GetEndpoints()) != 0 {
		t.Errorf("unknown destination has endpoints %v", addrs(res.Endpoints[nowhere]))
	}
	if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "nowhere") }) {
		t.Errorf("warnings = %q, want one about the unknown host", res.Warnings)
	}
}

// TestEveryReferenceResolves checks the invariant clients depend on: every
// route a listener names exists, every cluster a route names exists, and
// every cluster has its EDS resource.
func TestEveryReferenceResolves(t *testing.T) {
	set := load(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: a
  subsets: [{name: s, labels: {k: v}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a]
  http:
  - route:
    - {destination: {host: a, subset: s}, weight: 50}
    - {destination: {host: b}, weight: 50}
`)
	res := Build(set, []registry.Endpoint{reg("a", "", "127.0.0.1", 1, 0, nil), reg("b", "", "127.0.0.1", 2, 0, nil)}, Options{})
	for name, l := range res.Listeners {
		s := l.GetApiListener().String()
		found := false
		for rn := range res.Routes {
			found = found || strings.Contains(s, `"`+rn+`"`)
		}
		if !found {
			t.Errorf("listener %s names no existing route configuration", name)
		}
	}
	for rn, rc := range res.Routes {
		for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
			names := []string{r.GetRoute().GetCluster()}
			for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
				names = append(names, wc.GetName())
			}
			for _, c := range names {
				if _, ok := res.Clusters[c]; c != "" && !ok {
					t.Errorf("route configuration %s names missing cluster %q", rn, c)
				}
			}
		}
	}
	for c := range res.Clusters {
		if _, ok := res.Endpoints[c]; !ok {
			t.Errorf("cluster %s has no EDS resource", c)
		}
	}
}

func TestKnownServicesStayDefined(t *testing.T) {
	set := load(t, `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings]
  resolution: STATIC
  ports: [{number: 8080, name: http}]
`)
	res := Build(set, nil, Options{Known: []ServiceRef{
		{Service: "greeter", Port: 9080},
		{Service: "ratings", Port: 7777}, // the ServiceEntry decides ratings' ports
	}})
	for _, name := range []string{"greeter:9080", "greeter", "ratings:8080"} {
		if _, ok := res.Listeners[name]; !ok {
			t.Errorf("no listener %q; have %v", name, slices.Sorted(maps.Keys(res.Listeners)))
		}
	}
	if _, ok := res.Listeners["ratings:7777"]; ok {
		t.Error("a known port was added to a ServiceEntry's service")
	}
	cla, ok := res.Endpoints["outbound|9080||greeter.default.svc.cluster.local"]
	if !ok || len(cla.GetEndpoints()) != 0 {
		t.Errorf("greeter EDS = %v, want an empty resource", cla)
	}
}

func TestRegisteredServiceWithTwoPorts(t *testing.T) {
	res := Build(nil, []registry.Endpoint{
		reg("reviews", "", "127.0.0.1", 1001, 9080, nil),
		reg("reviews", "", "127.0.0.1", 1002, 9090, nil),
	}, Options{})
	for _, port := range []uint32{9080, 9090} {
		if _, ok := res.Clusters[ClusterName("reviews.default.svc.cluster.local", port, "")]; !ok {
			t.Errorf("no cluster for port %d; warnings %q", port, res.Warnings)
		}
	}
	if _, ok := res.Listeners["reviews"]; ok {
		t.Error("a two-port service has the port-less listener name")
	}
}

func TestViewRoutes(t *testing.T) {
	set := load(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - name: canary
    match: [{sourceLabels: {app: web}}, {headers: {x-canary: {exact: "1"}}}]
    route: [{destination: {host: greeter}}]
  - name: rest
    route: [{destination: {host: greeter}}]
`)
	res := Build(set, []registry.Endpoint{reg("greeter", "", "127.0.0.1", 1, 9080, nil)}, Options{})
	name := "greeter.default.svc.cluster.local:9080"
	rc, conds := res.Routes[name], res.RouteConditions[name]
	names := func(labels map[string]string) []string {
		var out []string
		for _, r := range ViewRoutes(rc, conds, labels).GetVirtualHosts()[0].GetRoutes() {
			out = append(out, r.GetName())
		}
		return out
	}
	if diff := cmp.Diff(names(map[string]string{"app": "web", "v": "1"}), []string{"canary", "canary", "rest"}); diff != "" {
		t.Errorf("a web client's routes (-got +want):\n%s", diff)
	}
	// The header match of the same HTTPRoute has no source condition.
	if diff := cmp.Diff(names(nil), []string{"canary", "rest"}); diff != "" {
		t.Errorf("an unlabelled client's routes (-got +want):\n%s", diff)
	}
	if len(rc.GetVirtualHosts()[0].GetRoutes()) != 3 {
		t.Error("ViewRoutes modified its input")
	}
	if _, ok := res.RouteConditions["greeter.default.svc.cluster.local:9080"]; !ok {
		t.Error("no route conditions recorded")
	}
}
