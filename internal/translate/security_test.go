package translate

//lint:file-ignore SA1019 the shapes under test use the deprecated fields grpc-go reads.

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3jwtauthnpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	v3rbacfilterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	v3routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3tlspb "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	security "istio.io/api/security/v1beta1"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/registry"
)

// pa returns a PeerAuthentication document.
func pa(ns, name, body string) string {
	return fmt.Sprintf("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: %s, namespace: %s}\nspec:\n%s", name, ns, body)
}

// chains summarises a server listener's filter chains as "name/match".
func chains(t *testing.T, l *v3listenerpb.Listener) []string {
	t.Helper()
	if l == nil {
		t.Fatal("no server listener")
	}
	var out []string
	for _, fc := range l.GetFilterChains() {
		out = append(out, fc.GetName()+"/"+fc.GetFilterChainMatch().GetTransportProtocol())
		if (fc.GetTransportSocket() != nil) != (fc.GetName() == MTLSChain) {
			t.Errorf("filter chain %q has transport socket %v", fc.GetName(), fc.GetTransportSocket())
		}
	}
	return out
}

var (
	permissive = []string{"mtls/tls", "plaintext/raw_buffer"}
	strict     = []string{"mtls/"}
	disable    = []string{"plaintext/"}
)

// TestPeerAuthenticationPrecedence guards against the wrong policy deciding
// whether a workload accepts plaintext: workload policy over namespace
// policy over mesh policy, port-level modes for the listening port, UNSET
// inheriting, and PERMISSIVE when nothing is configured.
func TestPeerAuthenticationPrecedence(t *testing.T) {
	reviews := map[string]string{"app": "reviews"}
	tests := []struct {
		name   string
		yaml   []string
		ns     string
		labels map[string]string
		port   uint32
		want   []string
	}{
		{name: "no policy", want: permissive},
		{name: "mesh STRICT", yaml: []string{pa("istio-system", "mesh", "  mtls: {mode: STRICT}\n")}, want: strict},
		{name: "mesh UNSET is PERMISSIVE", yaml: []string{pa("istio-system", "mesh", "  mtls: {}\n")}, want: permissive},
		{name: "namespace over mesh", yaml: []string{
			pa("istio-system", "mesh", "  mtls: {mode: STRICT}\n"),
			pa("default", "ns-wide", "  mtls: {mode: DISABLE}\n"),
		}, want: disable},
		{name: "namespace UNSET inherits mesh", yaml: []string{
			pa("istio-system", "mesh", "  mtls: {mode: STRICT}\n"),
			pa("default", "ns-wide", "  mtls: {mode: UNSET}\n"),
		}, want: strict},
		{name: "another namespace's policy does not apply", yaml: []string{
			pa("shop", "ns-wide", "  mtls: {mode: STRICT}\n"),
			pa("shop", "workload", "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: DISABLE}\n"),
		}, labels: reviews, want: permissive},
		{name: "workload over namespace and mesh", yaml: []string{
			pa("istio-system", "mesh", "  mtls: {mode: DISABLE}\n"),
			pa("default", "ns-wide", "  mtls: {mode: PERMISSIVE}\n"),
			pa("default", "workload", "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: STRICT}\n"),
		}, labels: reviews, want: strict},
		{name: "workload policy not selecting", yaml: []string{
			pa("default", "ns-wide", "  mtls: {mode: STRICT}\n"),
			pa("default", "workload", "  selector: {matchLabels: {app: ratings}}\n  mtls: {mode: DISABLE}\n"),
		}, labels: reviews, want: strict},
		{name: "workload without mtls inherits namespace", yaml: []string{
			pa("default", "ns-wide", "  mtls: {mode: DISABLE}\n"),
			pa("default", "workload", "  selector: {matchLabels: {app: reviews}}\n"),
		}, labels: reviews, want: disable},
		{name: "port-level mode for the listening port", yaml: []string{
			pa("default", "workload", "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: PERMISSIVE}\n  portLevelMtls: {\"7001\": {mode: STRICT}}\n"),
		}, labels: reviews, port: 7001, want: strict},
		{name: "port-level mode for another port", yaml: []string{
			pa("default", "workload", "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: DISABLE}\n  portLevelMtls: {\"7001\": {mode: STRICT}}\n"),
		}, labels: reviews, port: 7002, want: disable},
		{name: "port-level UNSET inherits the workload, which inherits the mesh", yaml: []string{
			pa("istio-system", "mesh", "  mtls: {mode: STRICT}\n"),
			pa("default", "workload", "  selector: {matchLabels: {app: reviews}}\n  portLevelMtls: {\"7001\": {mode: UNSET}}\n"),
		}, labels: reviews, port: 7001, want: strict},
		{name: "workload in the root namespace gets the mesh mode", yaml: []string{
			pa("istio-system", "mesh", "  mtls: {mode: STRICT}\n"),
		}, ns: "istio-system", want: strict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var set *config.Set
			if len(tc.yaml) > 0 {
				set = load(t, docs(tc.yaml...))
			}
			port, ns := tc.port, tc.ns
			if port == 0 {
				port = 7000
			}
			if ns == "" {
				ns = "default"
			}
			res := Build(set, []registry.Endpoint{reg("reviews", ns, "10.0.0.1", port, 9080, tc.labels)}, Options{})
			name := ServerListenerName("10.0.0.1", port)
			if diff := cmp.Diff(chains(t, res.ServerListeners[name]), tc.want); diff != "" {
				t.Errorf("Build(...).ServerListeners[%q] chains (-got +want):\n%s", name, diff)
			}
		})
	}
}

func docs(d ...string) string { return strings.Join(d, "---\n") }

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestServerListenerShape pins the exact server listener of a PERMISSIVE
// workload without policies, and checks every mode's listener against the
// Envoy protos' own validation, so that Envoy-based and grpc-go servers
// accept it.
func TestServerListenerShape(t *testing.T) {
	res := Build(nil, []registry.Endpoint{reg("reviews", "", "10.0.0.1", 7000, 9080, nil)}, Options{})
	name := "grpc/server?xds.resource.listening_address=10.0.0.1:7000"
	got := res.ServerListeners[name]
	provider := func(cert string) *v3tlspb.CertificateProviderPluginInstance {
		return &v3tlspb.CertificateProviderPluginInstance{InstanceName: "trellis", CertificateName: cert}
	}
	hcm := anyOf(t, &v3hcmpb.HttpConnectionManager{
		StatPrefix: "inbound",
		CodecType:  v3hcmpb.HttpConnectionManager_AUTO,
		RouteSpecifier: &v3hcmpb.HttpConnectionManager_RouteConfig{RouteConfig: &v3routepb.RouteConfiguration{
			Name: "inbound",
			VirtualHosts: []*v3routepb.VirtualHost{{Name: "inbound", Domains: []string{"*"}, Routes: []*v3routepb.Route{{
				Match:  &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"}},
				Action: &v3routepb.Route_NonForwardingAction{NonForwardingAction: &v3routepb.NonForwardingAction{}},
			}}}},
		}},
		HttpFilters: []*v3hcmpb.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &v3routerpb.Router{})}}},
	})
	network := []*v3listenerpb.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &v3listenerpb.Filter_TypedConfig{TypedConfig: hcm}}}
	want := &v3listenerpb.Listener{
		Name: name,
		Address: &v3corepb.Address{Address: &v3corepb.Address_SocketAddress{SocketAddress: &v3corepb.SocketAddress{
			Address: "10.0.0.1", PortSpecifier: &v3corepb.SocketAddress_PortValue{PortValue: 7000},
		}}},
		FilterChains: []*v3listenerpb.FilterChain{
			{
				Name:             "mtls",
				FilterChainMatch: &v3listenerpb.FilterChainMatch{TransportProtocol: "tls"},
				Filters:          network,
				TransportSocket: &v3corepb.TransportSocket{
					Name: "envoy.transport_sockets.tls",
					ConfigType: &v3corepb.TransportSocket_TypedConfig{TypedConfig: anyOf(t, &v3tlspb.DownstreamTlsContext{
						RequireClientCertificate: wrapperspb.Bool(true),
						CommonTlsContext: &v3tlspb.CommonTlsContext{
							TlsCertificateProviderInstance: provider("default"),
							ValidationContextType: &v3tlspb.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &v3tlspb.CommonTlsContext_CombinedCertificateValidationContext{
								DefaultValidationContext:                     &v3tlspb.CertificateValidationContext{CaCertificateProviderInstance: provider("ROOTCA")},
								ValidationContextCertificateProviderInstance: &v3tlspb.CommonTlsContext_CertificateProviderInstance{InstanceName: "trellis", CertificateName: "ROOTCA"},
							}},
						},
					})},
				},
			},
			{Name: "plaintext", FilterChainMatch: &v3listenerpb.FilterChainMatch{TransportProtocol: "raw_buffer"}, Filters: network},
		},
	}
	if diff := cmp.Diff(got, want, protocmp.Transform()); diff != "" {
		t.Errorf("Build(...).ServerListeners[%q] (-got +want):\n%s", name, diff)
	}

	set := load(t, docs(
		pa("default", "strict", "  selector: {matchLabels: {m: strict}}\n  mtls: {mode: STRICT}\n"),
		pa("default", "plain", "  selector: {matchLabels: {m: plain}}\n  mtls: {mode: DISABLE}\n"),
		`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web}
spec:
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/web]}}], to: [{operation: {paths: [/reviews.Reviews/*]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  jwtRules: [{issuer: https://issuer.example.com, jwksUri: https://issuer.example.com/jwks}]
`))
	res = Build(set, []registry.Endpoint{
		reg("a", "", "10.0.0.1", 7001, 0, map[string]string{"m": "strict"}),
		reg("b", "", "10.0.0.1", 7002, 0, map[string]string{"m": "plain"}),
		reg("c", "", "10.0.0.1", 7003, 0, nil),
	}, Options{})
	for name, l := range res.ServerListeners {
		if err := l.ValidateAll(); err != nil {
			t.Errorf("listener %q ValidateAll() = %v", name, err)
		}
		for _, fc := range l.GetFilterChains() {
			h := &v3hcmpb.HttpConnectionManager{}
			if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
				t.Fatalf("listener %q chain %q: %v", name, fc.GetName(), err)
			}
			if err := h.ValidateAll(); err != nil {
				t.Errorf("listener %q chain %q HttpConnectionManager.ValidateAll() = %v", name, fc.GetName(), err)
			}
			for _, f := range h.GetHttpFilters() {
				m, err := f.GetTypedConfig().UnmarshalNew()
				if err != nil {
					t.Fatalf("filter %q: %v", f.GetName(), err)
				}
				if err := m.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
					t.Errorf("listener %q filter %q ValidateAll() = %v", name, f.GetName(), err)
				}
			}
			if ts := fc.GetTransportSocket(); ts != nil {
				d := &v3tlspb.DownstreamTlsContext{}
				if err := ts.GetTypedConfig().UnmarshalTo(d); err != nil {
					t.Fatal(err)
				}
				validateTLS(t, name, d.GetCommonTlsContext())
			}
		}
	}
}

// validateTLS runs the Envoy protos' validation on the parts of a TLS
// context that grpc-go reads. (Envoy's rules want an SDS secret config in
// every combined validation context, which proxyless clients do not use:
// like Istio's proxyless configuration, Trellis sends certificate provider
// instances instead, so the context as a whole is not validated.)
func validateTLS(t *testing.T, resource string, common *v3tlspb.CommonTlsContext) {
	t.Helper()
	for _, m := range []interface{ ValidateAll() error }{
		common.GetTlsCertificateProviderInstance(),
		common.GetCombinedValidationContext().GetDefaultValidationContext(),
		common.GetCombinedValidationContext().GetValidationContextCertificateProviderInstance(),
	} {
		if err := m.ValidateAll(); err != nil {
			t.Errorf("%s: %T.ValidateAll() = %v", resource, m, err)
		}
	}
}

// filterNames lists the HTTP filters of a server listener's first chain,
// failing t if the chains disagree.
func filterNames(t *testing.T, l *v3listenerpb.Listener) []string {
	t.Helper()
	var first []string
	for i, fc := range l.GetFilterChains() {
		h := &v3hcmpb.HttpConnectionManager{}
		if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range h.GetHttpFilters() {
			names = append(names, f.GetName())
			if f.GetName() == JWTAuthnFilterName && !f.GetIsOptional() {
				t.Errorf("jwt_authn filter is not optional: standard gRPC servers would NACK the listener")
			}
		}
		if i == 0 {
			first = names
		} else if !slices.Equal(names, first) {
			t.Errorf("chain %q filters %v differ from %v", fc.GetName(), names, first)
		}
	}
	return first
}

// rbacPolicies returns, per RBAC filter name, the sorted policy names.
func rbacPolicies(t *testing.T, l *v3listenerpb.Listener) map[string][]string {
	t.Helper()
	h := &v3hcmpb.HttpConnectionManager{}
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, f := range h.GetHttpFilters() {
		if !strings.HasPrefix(f.GetName(), RBACFilterName) {
			continue
		}
		r := &v3rbacfilterpb.RBAC{}
		if err := f.GetTypedConfig().UnmarshalTo(r); err != nil {
			t.Fatal(err)
		}
		out[f.GetName()] = slices.Sorted(maps.Keys(r.GetRules().GetPolicies()))
		if out[f.GetName()] == nil {
			out[f.GetName()] = []string{}
		}
	}
	return out
}

const securityPolicies = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-allow, namespace: istio-system}
spec:
  rules: [{from: [{source: {namespaces: [default, shop]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin/*]}}]}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: shop}
spec:
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules: [{issuer: https://issuer.example.com, jwksUri: https://issuer.example.com/jwks}]
`

// TestSecurityPolicySelection guards against policies reaching workloads
// they do not select, or missing ones they do: selectors, namespaces, and
// mesh-wide policies from the root namespace.
func TestSecurityPolicySelection(t *testing.T) {
	set := load(t, securityPolicies)
	reviews := map[string]string{"app": "reviews"}
	res := Build(set, []registry.Endpoint{
		reg("reviews", "default", "10.0.0.1", 7001, 0, reviews),
		reg("ratings", "default", "10.0.0.2", 7002, 0, map[string]string{"app": "ratings"}),
		reg("reviews", "shop", "10.0.0.3", 7003, 0, reviews),
	}, Options{})
	tests := []struct {
		addr        string
		port        uint32
		wantFilters []string
		wantRBAC    map[string][]string
	}{
		{"10.0.0.1", 7001,
			[]string{"envoy.filters.http.jwt_authn", "envoy.filters.http.rbac/deny", "envoy.filters.http.rbac/allow", "envoy.filters.http.router"},
			map[string][]string{"envoy.filters.http.rbac/deny": {"default/deny-admin[0]"}, "envoy.filters.http.rbac/allow": {"istio-system/mesh-allow[0]"}}},
		{"10.0.0.2", 7002,
			[]string{"envoy.filters.http.rbac/allow", "envoy.filters.http.router"},
			map[string][]string{"envoy.filters.http.rbac/allow": {"istio-system/mesh-allow[0]"}}},
		{"10.0.0.3", 7003,
			[]string{"envoy.filters.http.rbac/allow", "envoy.filters.http.rbac/audit", "envoy.filters.http.router"},
			map[string][]string{"envoy.filters.http.rbac/allow": {"istio-system/mesh-allow[0]"}, "envoy.filters.http.rbac/audit": {"shop/audit[0]"}}},
	}
	for _, tc := range tests {
		name := ServerListenerName(tc.addr, tc.port)
		l := res.ServerListeners[name]
		if diff := cmp.Diff(filterNames(t, l), tc.wantFilters); diff != "" {
			t.Errorf("Build(...).ServerListeners[%q] filters (-got +want):\n%s", name, diff)
		}
		if diff := cmp.Diff(rbacPolicies(t, l), tc.wantRBAC); diff != "" {
			t.Errorf("Build(...).ServerListeners[%q] RBAC policies (-got +want):\n%s", name, diff)
		}
	}
	// The jwt_authn filter carries secpolicy's translation.
	h := &v3hcmpb.HttpConnectionManager{}
	l := res.ServerListeners[ServerListenerName("10.0.0.1", 7001)]
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	jwt := &v3jwtauthnpb.JwtAuthentication{}
	if err := h.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(jwt); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(jwt.GetProviders())); !slices.Equal(got, []string{"default/jwt/0"}) {
		t.Errorf("jwt_authn providers = %v, want [default/jwt/0]", got)
	}
}

// TestUntranslatablePolicyFailsClosed guards against a policy that cannot
// be translated (the loader refuses it, but a Set can still hold it) or an
// ambiguous one yielding a listener without its RBAC: such a workload's
// listener denies every request, and a warning says why.
func TestUntranslatablePolicyFailsClosed(t *testing.T) {
	meta := func(kind, name string) config.Meta {
		return config.Meta{Kind: kind, Name: name, Namespace: "default", File: "mesh.yaml", Line: 1}
	}
	tests := []struct {
		name string
		set  *config.Set
		eps  []registry.Endpoint
	}{
		{"CUSTOM action", &config.Set{AuthorizationPolicies: []*config.AuthorizationPolicy{{
			Meta: meta(config.KindAuthorizationPolicy, "custom"),
			Spec: &security.AuthorizationPolicy{Action: security.AuthorizationPolicy_CUSTOM, Rules: []*security.Rule{{}}},
		}}}, []registry.Endpoint{reg("reviews", "", "10.0.0.1", 7001, 0, nil)}},
		{"DENY policy with an unsupported field", &config.Set{AuthorizationPolicies: []*config.AuthorizationPolicy{{
			Meta: meta(config.KindAuthorizationPolicy, "deny"),
			Spec: &security.AuthorizationPolicy{Action: security.AuthorizationPolicy_DENY, Rules: []*security.Rule{{
				To: []*security.Rule_To{{Operation: &security.Operation{Hosts: []string{"admin.example.com"}}}},
			}}},
		}}}, []registry.Endpoint{reg("reviews", "", "10.0.0.1", 7001, 0, nil)}},
		{"RequestAuthentication without keys", &config.Set{RequestAuthentications: []*config.RequestAuthentication{{
			Meta: meta(config.KindRequestAuthentication, "jwt"),
			Spec: &security.RequestAuthentication{JwtRules: []*security.JWTRule{{Issuer: "x"}}},
		}}}, []registry.Endpoint{reg("reviews", "", "10.0.0.1", 7001, 0, nil)}},
		{"two workloads on one address with different policies", load(t, securityPolicies), []registry.Endpoint{
			reg("reviews", "default", "10.0.0.1", 7001, 0, map[string]string{"app": "reviews"}),
			reg("ratings", "default", "10.0.0.1", 7001, 0, nil),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Build(tc.set, tc.eps, Options{})
			name := ServerListenerName("10.0.0.1", 7001)
			l, ok := res.ServerListeners[name]
			if !ok {
				t.Fatalf("Build(...) has no listener %q; a missing listener must not be the answer either", name)
			}
			if diff := cmp.Diff(filterNames(t, l), []string{"envoy.filters.http.rbac/allow", "envoy.filters.http.router"}); diff != "" {
				t.Errorf("Build(...).ServerListeners[%q] filters (-got +want):\n%s", name, diff)
			}
			h := &v3hcmpb.HttpConnectionManager{}
			if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
				t.Fatal(err)
			}
			r := &v3rbacfilterpb.RBAC{}
			if err := h.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(r); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(r.GetRules(), &v3rbacpb.RBAC{Action: v3rbacpb.RBAC_ALLOW}, protocmp.Transform()); diff != "" {
				t.Errorf("fail-closed RBAC (-got +want):\n%s", diff)
			}
			if len(res.Warnings) == 0 {
				t.Errorf("Build(...).Warnings is empty, want the reason the listener denies everything")
			}
		})
	}
}

// clusterTLS summarises a cluster's transport socket: nil for plaintext,
// else the exact SANs the server must present. It fails t if the socket
// is not the mesh mTLS shape.
func clusterTLS(t *testing.T, c *v3clusterpb.Cluster) []string {
	t.Helper()
	ts := c.GetTransportSocket()
	if ts == nil {
		return nil
	}
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Errorf("cluster %s transport socket %q", c.GetName(), ts.GetName())
	}
	u := &v3tlspb.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
		t.Fatal(err)
	}
	common := u.GetCommonTlsContext()
	validateTLS(t, c.GetName(), common)
	combined := common.GetCombinedValidationContext()
	if id := common.GetTlsCertificateProviderInstance(); id.GetInstanceName() != "trellis" || id.GetCertificateName() != "default" {
		t.Errorf("cluster %s identity provider = %v, want trellis/default", c.GetName(), id)
	}
	if root := combined.GetValidationContextCertificateProviderInstance(); root.GetInstanceName() != "trellis" || root.GetCertificateName() != "ROOTCA" {
		t.Errorf("cluster %s root provider = %v, want trellis/ROOTCA", c.GetName(), root)
	}
	if root := combined.GetDefaultValidationContext().GetCaCertificateProviderInstance(); root.GetInstanceName() != "trellis" || root.GetCertificateName() != "ROOTCA" {
		t.Errorf("cluster %s ca_certificate_provider_instance = %v, want trellis/ROOTCA (grpc-go reads it)", c.GetName(), root)
	}
	sans := []string{}
	for _, m := range combined.GetDefaultValidationContext().GetMatchSubjectAltNames() {
		if m.GetExact() == "" {
			t.Errorf("cluster %s SAN matcher %v is not exact", c.GetName(), m)
		}
		sans = append(sans, m.GetExact())
	}
	return sans
}

// endpointTLS summarises the per-endpoint TLS metadata of a cluster's
// endpoints: "ip:port MODE [identity]", or "ip:port" without metadata.
func endpointTLS(t *testing.T, cla *v3endpointpb.ClusterLoadAssignment) []string {
	t.Helper()
	var out []string
	for _, loc := range cla.GetEndpoints() {
		for _, lb := range loc.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			e := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
			md := lb.GetMetadata().GetFilterMetadata()
			if len(md) > 1 || (len(md) == 1 && md[EndpointTLSMetadata] == nil) {
				t.Errorf("endpoint %s metadata = %v, want only %s", e, md, EndpointTLSMetadata)
			}
			if m := md[EndpointTLSMetadata]; m != nil {
				e += " " + m.GetFields()["mode"].GetStringValue()
				if id := m.GetFields()["identity"].GetStringValue(); id != "" {
					e += " " + id
				}
			}
			out = append(out, e)
		}
	}
	return out
}

// upstreamWant is what a test expects of a cluster's client TLS: the SANs
// of its transport socket (nil: plaintext) and its endpoints as
// endpointTLS summarises them.
type upstreamWant struct {
	SANs      []string
	Endpoints []string
}

// TestClusterMTLS guards client mTLS: ISTIO_MUTUAL always, to every
// endpoint, with the exact, sorted, de-duplicated identities of the
// cluster's endpoints (or one no certificate has, never none); DISABLE
// never; and without a setting (automatic mTLS), per endpoint: an endpoint
// without identity, or in DISABLE mode, gets plaintext without turning
// mTLS off for the others.
func TestClusterMTLS(t *testing.T) {
	id := func(sa string) string { return "spiffe://cluster.local/ns/default/sa/" + sa }
	withID := func(port uint32, version, identity string) registry.Endpoint {
		e := reg("reviews", "", "10.0.0.1", port, 9080, map[string]string{"version": version})
		e.Identity = identity
		return e
	}
	dr := func(body string) string {
		return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n" + body
	}
	mtls := func(port, sa string) string { return "10.0.0.1:" + port + " ISTIO_MUTUAL " + id(sa) }
	subsets := "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"
	host := "reviews.default.svc.cluster.local"
	all, v1, v2 := ClusterName(host, 9080, ""), ClusterName(host, 9080, "v1"), ClusterName(host, 9080, "v2")
	tests := []struct {
		name string
		yaml string
		eps  []registry.Endpoint
		td   string
		want map[string]upstreamWant
	}{
		{"ISTIO_MUTUAL with identities, sorted and de-duplicated",
			dr("  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"),
			[]registry.Endpoint{withID(7001, "v1", id("b")), withID(7002, "v1", id("a")), withID(7003, "v1", id("b"))}, "",
			map[string]upstreamWant{all: {[]string{id("a"), id("b")}, []string{mtls("7001", "b"), mtls("7002", "a"), mtls("7003", "b")}}}},
		{"ISTIO_MUTUAL without identities fails closed",
			dr("  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"),
			[]registry.Endpoint{withID(7001, "v1", "")}, "example.org",
			map[string]upstreamWant{all: {[]string{"spiffe://example.org/trellis/no-known-identity"}, []string{"10.0.0.1:7001 ISTIO_MUTUAL"}}}},
		{"ISTIO_MUTUAL never falls back to plaintext for an endpoint without identity",
			dr("  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"),
			[]registry.Endpoint{withID(7001, "v1", id("a")), withID(7002, "v2", "")}, "",
			map[string]upstreamWant{all: {[]string{id("a")}, []string{mtls("7001", "a"), "10.0.0.1:7002 ISTIO_MUTUAL"}}}},
		{"ISTIO_MUTUAL without endpoints fails closed",
			dr("  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n" + subsets),
			[]registry.Endpoint{withID(7001, "v1", id("a"))}, "",
			map[string]upstreamWant{
				all: {[]string{id("a")}, []string{mtls("7001", "a")}},
				v1:  {[]string{id("a")}, []string{mtls("7001", "a")}},
				v2:  {[]string{"spiffe://cluster.local/trellis/no-known-identity"}, nil},
			}},
		{"DISABLE with identities",
			dr("  trafficPolicy: {tls: {mode: DISABLE}}\n"),
			[]registry.Endpoint{withID(7001, "v1", id("a"))}, "",
			map[string]upstreamWant{all: {nil, []string{"10.0.0.1:7001"}}}},
		{"auto: every endpoint has an identity",
			"",
			[]registry.Endpoint{withID(7001, "v1", id("a")), withID(7002, "v2", id("b"))}, "",
			map[string]upstreamWant{all: {[]string{id("a"), id("b")}, []string{mtls("7001", "a"), mtls("7002", "b")}}}},
		{"auto: no endpoint has an identity",
			"",
			[]registry.Endpoint{withID(7001, "v1", ""), withID(7002, "v2", "")}, "",
			map[string]upstreamWant{all: {nil, []string{"10.0.0.1:7001", "10.0.0.1:7002"}}}},
		{"auto: one endpoint without identity does not turn mTLS off for the others",
			"",
			[]registry.Endpoint{withID(7001, "v1", id("a")), withID(7002, "v2", ""), withID(7003, "v2", id("c"))}, "",
			map[string]upstreamWant{all: {[]string{id("a"), id("c")}, []string{mtls("7001", "a"), "10.0.0.1:7002 DISABLE", mtls("7003", "c")}}}},
		{"auto: per subset",
			dr(subsets),
			[]registry.Endpoint{withID(7001, "v1", id("a")), withID(7002, "v2", "")}, "",
			map[string]upstreamWant{
				all: {[]string{id("a")}, []string{mtls("7001", "a"), "10.0.0.1:7002 DISABLE"}},
				v1:  {[]string{id("a")}, []string{mtls("7001", "a")}},
				v2:  {nil, []string{"10.0.0.1:7002"}},
			}},
		{"auto: an endpoint in DISABLE mode gets plaintext",
			pa("default", "workload", "  selector: {matchLabels: {version: v2}}\n  mtls: {mode: DISABLE}\n") + "---\n" + dr(subsets),
			[]registry.Endpoint{withID(7001, "v1", id("a")), withID(7002, "v2", id("b"))}, "",
			map[string]upstreamWant{
				all: {[]string{id("a")}, []string{mtls("7001", "a"), "10.0.0.1:7002 DISABLE"}},
				v1:  {[]string{id("a")}, []string{mtls("7001", "a")}},
				v2:  {nil, []string{"10.0.0.1:7002"}},
			}},
		{"subset and port-level settings override the rule",
			dr("  trafficPolicy: {tls: {mode: DISABLE}}\n  subsets:\n  - {name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n  - {name: v2, labels: {version: v2}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, portLevelSettings: [{port: {number: 9080}, tls: {mode: DISABLE}}]}}\n"),
			[]registry.Endpoint{withID(7001, "v1", id("a")), withID(7002, "v2", id("b"))}, "",
			map[string]upstreamWant{
				all: {nil, []string{"10.0.0.1:7001", "10.0.0.1:7002"}},
				v1:  {[]string{id("a")}, []string{mtls("7001", "a")}},
				v2:  {nil, []string{"10.0.0.1:7002"}},
			}},
		{"subjectAltNames pin the SANs at every level",
			dr("  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL, subjectAltNames: [\"" + id("pinned") + "\"]}\n" +
				"  subsets:\n  - {name: v1, labels: {version: v1}}\n" +
				"  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      portLevelSettings: [{port: {number: 9080}, tls: {mode: ISTIO_MUTUAL, subjectAltNames: [\"" + id("z") + "\", \"" + id("y") + "\", \"" + id("z") + "\"]}}]\n"),
			[]registry.Endpoint{withID(7001, "v1", id("a")), withID(7002, "v2", id("b"))}, "",
			map[string]upstreamWant{
				all: {[]string{id("pinned")}, []string{mtls("7001", "a"), mtls("7002", "b")}},
				v1:  {[]string{id("pinned")}, []string{mtls("7001", "a")}},
				v2:  {[]string{id("y"), id("z")}, []string{mtls("7002", "b")}},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var set *config.Set
			if tc.yaml != "" {
				set = load(t, tc.yaml)
			}
			res := Build(set, tc.eps, Options{TrustDomain: tc.td})
			got := map[string]upstreamWant{}
			for name := range tc.want {
				c, ok := res.Clusters[name]
				if !ok {
					t.Fatalf("no cluster %s", name)
				}
				got[name] = upstreamWant{clusterTLS(t, c), endpointTLS(t, res.Endpoints[name])}
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("Build(...) cluster SANs (nil for plaintext) and endpoint TLS (-got +want):\n%s", diff)
			}
		})
	}
}

// TestConfigEndpointIdentity guards the identities of endpoints from
// configuration: a WorkloadEntry's (or ServiceEntry endpoint's)
// serviceAccount is its SPIFFE ID in the trust domain, so such endpoints
// get automatic mTLS verified against exactly that identity; a
// ServiceEntry's subjectAltNames replace the endpoints' identities as the
// SAN list, and a DestinationRule's replace the ServiceEntry's.
func TestConfigEndpointIdentity(t *testing.T) {
	se := func(extra string) string {
		return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: apps}
spec:
  hosts: [echo]
  resolution: STATIC
  ports: [{number: 50051, name: grpc}]
  workloadSelector: {labels: {app: echo}}
` + extra + `---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm1, namespace: apps}
spec: {address: 10.0.0.1, ports: {grpc: 7001}, labels: {app: echo}, serviceAccount: echo}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm2, namespace: apps}
spec: {address: 10.0.0.2, ports: {grpc: 7002}, labels: {app: echo}}
`
	}
	inline := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: apps}
spec:
  hosts: [echo]
  resolution: STATIC
  ports: [{number: 50051, name: grpc}]
  endpoints: [{address: 10.0.0.1, ports: {grpc: 7001}, serviceAccount: echo}]
`
	dr := `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: apps}
spec:
  host: echo
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: ["spiffe://example.org/ns/apps/sa/pinned"]}}
`
	echo := "spiffe://example.org/ns/apps/sa/echo"
	tests := []struct {
		name string
		yaml string
		want upstreamWant
	}{
		{"WorkloadEntry serviceAccount", se(""),
			upstreamWant{[]string{echo}, []string{"10.0.0.1:7001 ISTIO_MUTUAL " + echo, "10.0.0.2:7002 DISABLE"}}},
		{"ServiceEntry endpoint serviceAccount", inline,
			upstreamWant{[]string{echo}, []string{"10.0.0.1:7001 ISTIO_MUTUAL " + echo}}},
		{"ServiceEntry subjectAltNames", se("  subjectAltNames: [\"spiffe://example.org/ns/apps/sa/b\", \"spiffe://example.org/ns/apps/sa/a\"]\n"),
			upstreamWant{[]string{"spiffe://example.org/ns/apps/sa/a", "spiffe://example.org/ns/apps/sa/b"}, []string{"10.0.0.1:7001 ISTIO_MUTUAL " + echo, "10.0.0.2:7002 DISABLE"}}},
		{"DestinationRule subjectAltNames over the ServiceEntry's", se("  subjectAltNames: [\"spiffe://example.org/ns/apps/sa/a\"]\n") + dr,
			upstreamWant{[]string{"spiffe://example.org/ns/apps/sa/pinned"}, []string{"10.0.0.1:7001 ISTIO_MUTUAL " + echo, "10.0.0.2:7002 ISTIO_MUTUAL"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Build(load(t, tc.yaml), nil, Options{TrustDomain: "example.org"})
			name := ClusterName("echo.apps.svc.cluster.local", 50051, "")
			got := upstreamWant{clusterTLS(t, res.Clusters[name]), endpointTLS(t, res.Endpoints[name])}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("Build(...) cluster %s SANs and endpoint TLS (-got +want):\n%s", name, diff)
			}
		})
	}
}

// wildcardChains summarises a listener's filter chains as
// "name transport_protocol prefix,..." and checks each has a transport
// socket exactly when it is an mTLS chain.
func wildcardChains(t *testing.T, l *v3listenerpb.Listener) []string {
	t.Helper()
	var out []string
	for _, fc := range l.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		var prefixes []string
		for _, r := range m.GetPrefixRanges() {
			prefixes = append(prefixes, fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
		}
		out = append(out, fmt.Sprintf("%s %s %s", fc.GetName(), m.GetTransportProtocol(), strings.Join(prefixes, ",")))
		if (fc.GetTransportSocket() != nil) != (fc.GetName() == MTLSChain || strings.HasPrefix(fc.GetName(), MTLSChain+"/")) {
			t.Errorf("filter chain %q has transport socket %v", fc.GetName(), fc.GetTransportSocket())
		}
	}
	return out
}

// TestConfigEndpointServerListeners guards against a WorkloadEntry (or
// ServiceEntry) endpoint that a standard gRPC xDS server runs never
// serving, or serving under the wrong policy: each gets its IP:PORT
// listener with its own PeerAuthentication and AuthorizationPolicy, and
// its port gets the wildcard listeners grpc-go asks for when it listens
// on 0.0.0.0 or [::], whose filter chains are matched by destination IP,
// one set per endpoint IP of the port. An IP whose endpoints disagree on
// the policy, an endpoint at the wildcard address itself, or one IP written
// two ways, denies every request; a port only registered endpoints use gets
// no wildcard listener.
// PERMISSIVE is served as mTLS only to an endpoint with an identity, since
// grpc-go's xDS server keeps only a PERMISSIVE listener's plaintext chain
// while the mesh's clients dial such an endpoint over mTLS.
func TestConfigEndpointServerListeners(t *testing.T) {
	set := load(t, docs(
		pa("default", "strict", "  selector: {matchLabels: {m: strict}}\n  mtls: {mode: STRICT}\n"),
		pa("default", "plain", "  selector: {matchLabels: {m: plain}}\n  mtls: {mode: DISABLE}\n"),
		`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web}
spec:
  selector: {matchLabels: {m: strict}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/web]}}], to: [{operation: {paths: [/echo.Echo/*]}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo]
  resolution: STATIC
  ports: [{number: 50051, name: grpc}]
  workloadSelector: {labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: odd}
spec:
  hosts: [odd]
  resolution: STATIC
  ports: [{number: 7002, name: grpc}]
  endpoints: [{address: 0.0.0.0}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: twice}
spec:
  hosts: [twice]
  resolution: STATIC
  ports: [{number: 7003, name: grpc}]
  endpoints: [{address: "::ffff:10.0.0.8"}]
`,
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm1}\nspec: {address: 10.0.0.1, ports: {grpc: 7001}, labels: {app: echo, m: strict}, serviceAccount: echo}\n",
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm2}\nspec: {address: 10.0.0.2, ports: {grpc: 7001}, labels: {app: echo}}\n",
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm3}\nspec: {address: \"fd00::3\", ports: {grpc: 7001}, labels: {app: echo, m: plain}}\n",
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm4}\nspec: {address: 10.0.0.4, ports: {grpc: 7001}, labels: {app: echo, m: strict}}\n",
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm5}\nspec: {address: 10.0.0.5, ports: {grpc: 7001}, labels: {app: echo}, serviceAccount: echo}\n",
	))
	res := Build(set, []registry.Endpoint{
		reg("other", "", "10.0.0.4", 7001, 0, map[string]string{"m": "plain"}), // disagrees with vm4
		reg("solo", "", "10.0.0.9", 7100, 0, nil),
		reg("twice", "", "10.0.0.8", 7003, 0, nil), // the same IP as the ServiceEntry's, written otherwise
	}, Options{})
	wildcard := []string{
		"mtls/10.0.0.1  10.0.0.1/32",
		"mtls/10.0.0.2 tls 10.0.0.2/32", "plaintext/10.0.0.2 raw_buffer 10.0.0.2/32",
		"plaintext/10.0.0.4  10.0.0.4/32",
		"mtls/10.0.0.5  10.0.0.5/32",
		"plaintext/fd00::3  fd00::3/128",
	}
	for _, tc := range []struct {
		address string
		port    uint32
		chains  []string
		filters []string // of the first chain
	}{
		{"10.0.0.1", 7001, []string{"mtls  "}, []string{"envoy.filters.http.rbac/allow", "envoy.filters.http.router"}},
		{"10.0.0.2", 7001, []string{"mtls tls ", "plaintext raw_buffer "}, []string{"envoy.filters.http.router"}},
		{"fd00::3", 7001, []string{"plaintext  "}, []string{"envoy.filters.http.router"}},
		{"10.0.0.4", 7001, []string{"plaintext  "}, []string{"envoy.filters.http.rbac/allow", "envoy.filters.http.router"}},
		{"10.0.0.5", 7001, []string{"mtls  "}, []string{"envoy.filters.http.router"}},
		{"0.0.0.0", 7001, wildcard, []string{"envoy.filters.http.rbac/allow", "envoy.filters.http.router"}},
		{"::", 7001, wildcard, []string{"envoy.filters.http.rbac/allow", "envoy.filters.http.router"}},
		{"10.0.0.9", 7100, []string{"mtls tls ", "plaintext raw_buffer "}, []string{"envoy.filters.http.router"}},
		{"0.0.0.0", 7002, []string{"mtls  "}, []string{"envoy.filters.http.rbac/allow", "envoy.filters.http.router"}},
		{"::", 7002, []string{"mtls  "}, []string{"envoy.filters.http.rbac/allow", "envoy.filters.http.router"}},
	} {
		name := ServerListenerName(tc.address, tc.port)
		l, ok := res.ServerListeners[name]
		if !ok {
			t.Errorf("Build(...) has no server listener %q", name)
			continue
		}
		if sa := l.GetAddress().GetSocketAddress(); sa.GetAddress() != tc.address || sa.GetPortValue() != tc.port {
			t.Errorf("listener %q address = %v, want %s port %d (grpc-go serves only a listener whose address is its own)", name, sa, tc.address, tc.port)
		}
		if diff := cmp.Diff(wildcardChains(t, l), tc.chains); diff != "" {
			t.Errorf("listener %q filter chains (-got +want):\n%s", name, diff)
		}
		first := l.GetFilterChains()[0]
		h := &v3hcmpb.HttpConnectionManager{}
		if err := first.GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range h.GetHttpFilters() {
			names = append(names, f.GetName())
		}
		if diff := cmp.Diff(names, tc.filters); diff != "" {
			t.Errorf("listener %q chain %q HTTP filters (-got +want):\n%s", name, first.GetName(), diff)
		}
		if err := l.ValidateAll(); err != nil {
			t.Errorf("listener %q ValidateAll() = %v", name, err)
		}
	}
	// The ambiguous IP and the endpoint at the wildcard address deny
	// everything: an ALLOW without policies.
	for _, name := range []string{ServerListenerName("10.0.0.4", 7001), ServerListenerName("0.0.0.0", 7002), ServerListenerName("::", 7002), ServerListenerName("0.0.0.0", 7003), ServerListenerName("::", 7003)} {
		if got := rbacPolicies(t, res.ServerListeners[name]); !cmp.Equal(got, map[string][]string{"envoy.filters.http.rbac/allow": {}}) {
			t.Errorf("listener %q RBAC policies = %v, want an ALLOW with none (deny all)", name, got)
		}
	}
	wl := res.ServerListeners[ServerListenerName("0.0.0.0", 7001)]
	for i, want := range map[int]map[string][]string{
		0: {"envoy.filters.http.rbac/allow": {"default/allow-web[0]"}},
		3: {"envoy.filters.http.rbac/allow": {}},
	} {
		one := &v3listenerpb.Listener{FilterChains: wl.GetFilterChains()[i : i+1]}
		if got := rbacPolicies(t, one); !cmp.Equal(got, want) {
			t.Errorf("wildcard chain %q RBAC policies = %v, want %v", wl.GetFilterChains()[i].GetName(), got, want)
		}
	}
	for _, name := range []string{ServerListenerName("0.0.0.0", 7100), ServerListenerName("::", 7100)} {
		if _, ok := res.ServerListeners[name]; ok {
			t.Errorf("Build(...) has %q, want no wildcard listener for a port only registered endpoints use", name)
		}
	}
	if len(res.Warnings) < 3 {
		t.Errorf("Build(...).Warnings = %q, want the ambiguous IP, the endpoint at the wildcard address and the IP written two ways", res.Warnings)
	}
}

// TestStandardServerCannotSkipJWT guards against a server other than
// Trellis's (grpc-go's xDS server, which has no JWT filter) serving
// requests with invalid tokens that a RequestAuthentication refuses: on
// the listeners of endpoints from configuration the jwt_authn filter is
// required, so such a server rejects the listener and does not serve;
// registered (Trellis) servers keep it optional, as they enforce it.
func TestStandardServerCannotSkipJWT(t *testing.T) {
	set := load(t, `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  selector: {matchLabels: {app: echo}}
  jwtRules: [{issuer: https://issuer.example.com, jwksUri: https://issuer.example.com/jwks}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo]
  resolution: STATIC
  ports: [{number: 50051, name: grpc}]
  endpoints: [{address: 10.0.0.1, ports: {grpc: 7001}, labels: {app: echo}}]
`)
	res := Build(set, []registry.Endpoint{reg("echo", "", "10.0.0.2", 7001, 50051, map[string]string{"app": "echo"})}, Options{})
	for _, tc := range []struct {
		address  string
		optional bool
	}{{"10.0.0.1", false}, {"0.0.0.0", false}, {"::", false}, {"10.0.0.2", true}} {
		name := ServerListenerName(tc.address, 7001)
		l := res.ServerListeners[name]
		if l == nil {
			t.Fatalf("Build(...) has no listener %q", name)
		}
		for _, fc := range l.GetFilterChains() {
			h := &v3hcmpb.HttpConnectionManager{}
			if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, f := range h.GetHttpFilters() {
				if f.GetName() == JWTAuthnFilterName {
					found = true
					if f.GetIsOptional() != tc.optional {
						t.Errorf("listener %q chain %q: jwt_authn is_optional = %v, want %v", name, fc.GetName(), f.GetIsOptional(), tc.optional)
					}
				}
			}
			if !found {
				t.Errorf("listener %q chain %q has no jwt_authn filter", name, fc.GetName())
			}
		}
	}
}

// TestDryRunPolicyIsShadowRules guards against a dry-run policy being
// enforced: an AuthorizationPolicy annotated istio.io/dry-run: "true"
// travels in the shadow_rules of its action's RBAC filter (with Istio's
// stat prefix), never in its rules, and a dry-run ALLOW alone yields a
// filter with no rules, which enforces nothing.
func TestDryRunPolicyIsShadowRules(t *testing.T) {
	set := load(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, annotations: {istio.io/dry-run: "true"}}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug, annotations: {istio.io/dry-run: "false"}}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/debug]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-reviews, annotations: {istio.io/dry-run: "true"}}
spec:
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/reviews]}}]}]
`)
	res := Build(set, []registry.Endpoint{reg("ratings", "default", "10.0.0.1", 7001, 0, nil)}, Options{})
	l := res.ServerListeners[ServerListenerName("10.0.0.1", 7001)]
	if diff := cmp.Diff(filterNames(t, l), []string{"envoy.filters.http.rbac/deny", "envoy.filters.http.rbac/allow", "envoy.filters.http.router"}); diff != "" {
		t.Fatalf("filters (-got +want):\n%s", diff)
	}
	h := &v3hcmpb.HttpConnectionManager{}
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	type shape struct {
		Rules, Shadow []string
		Prefix        string
	}
	got := map[string]shape{}
	for _, f := range h.GetHttpFilters()[:2] {
		r := &v3rbacfilterpb.RBAC{}
		if err := f.GetTypedConfig().UnmarshalTo(r); err != nil {
			t.Fatal(err)
		}
		if r.GetMatcher() != nil || r.GetShadowMatcher() != nil {
			t.Errorf("%s: matcher or shadow_matcher set", f.GetName())
		}
		s := shape{Prefix: r.GetShadowRulesStatPrefix()}
		if r.GetRules() != nil {
			s.Rules = append([]string{r.GetRules().GetAction().String()}, slices.Sorted(maps.Keys(r.GetRules().GetPolicies()))...)
		}
		if r.GetShadowRules() != nil {
			s.Shadow = append([]string{r.GetShadowRules().GetAction().String()}, slices.Sorted(maps.Keys(r.GetShadowRules().GetPolicies()))...)
		}
		got[f.GetName()] = s
	}
	want := map[string]shape{
		"envoy.filters.http.rbac/deny":  {Rules: []string{"DENY", "default/deny-debug[0]"}, Shadow: []string{"DENY", "default/deny-admin[0]"}, Prefix: "istio_dry_run_deny_"},
		"envoy.filters.http.rbac/allow": {Shadow: []string{"ALLOW", "default/allow-reviews[0]"}, Prefix: "istio_dry_run_allow_"},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("RBAC filters (-got +want):\n%s", diff)
	}
}
