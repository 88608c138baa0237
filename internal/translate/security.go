package translate

//lint:file-ignore SA1019 grpc-go reads match_subject_alt_names, not its typed successor, and other readers the deprecated root provider field.

import (
	"fmt"
	"net"
	"slices"
	"strconv"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3rbacfilterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	v3routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3tlspb "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/registry"
	"github.com/trellismesh/trellis/internal/secpolicy"
	"github.com/trellismesh/trellis/internal/xdsbootstrap"
)

// Names on server listeners.
const (
	// MTLSChain and PlaintextChain name the filter chains of a server
	// listener.
	MTLSChain      = "mtls"
	PlaintextChain = "plaintext"

	// TLSTransportSocket is the name of the TLS transport socket, on server
	// filter chains and on clusters.
	TLSTransportSocket = "envoy.transport_sockets.tls"

	JWTAuthnFilterName = "envoy.filters.http.jwt_authn"
	RBACFilterName     = "envoy.filters.http.rbac"
	RouterFilterName   = "envoy.filters.http.router"
)

// NoIdentitySAN is the path, under spiffe://<trust-domain>, of the one
// subject alternative name a cluster in ISTIO_MUTUAL mode accepts when none
// of its endpoints registered an identity. No certificate carries it, so
// such a client fails closed instead of trusting any certificate of the CA.
const NoIdentitySAN = "/trellis/no-known-identity"

// ServerListenerName returns the name of the server listener of a workload
// listening on address:port, gRPC's
// "grpc/server?xds.resource.listening_address=<ip>:<port>".
func ServerListenerName(address string, port uint32) string {
	return fmt.Sprintf(xdsbootstrap.ServerListenerTemplate, net.JoinHostPort(address, strconv.FormatUint(uint64(port), 10)))
}

// selectorSelects applies secpolicy's selection rules (root namespace
// policies apply in every namespace, others in their own; matchLabels must
// all match) to any security resource's selector.
func selectorSelects(sel *typev1beta1.WorkloadSelector, policyName, policyNamespace, workloadNamespace string, labels map[string]string) bool {
	p := secpolicy.NamedAuthorizationPolicy{Name: policyName, Namespace: policyNamespace, Spec: &security.AuthorizationPolicy{Selector: sel}}
	return secpolicy.Selects(p, config.RootNamespace, workloadNamespace, labels)
}

// peerMode returns the PeerAuthentication mode of a workload's port, with
// Istio's precedence: a policy selecting the workload in its namespace, then
// the namespace's policy without selector, then the mesh-wide policy (root
// namespace, no selector); UNSET inherits from the level below, a
// port-level mode of the workload policy overrides, and with no policy at
// all the mode is PERMISSIVE. The result is never UNSET.
func (b *builder) peerMode(ns string, labels map[string]string, port uint32) security.PeerAuthentication_MutualTLS_Mode {
	var mesh, namespace, workload *config.PeerAuthentication
	for _, pa := range b.set.PeerAuthentications {
		sel := pa.Spec.GetSelector().GetMatchLabels()
		switch {
		case config.IsWorkloadPolicy(sel):
			if pa.Namespace == ns && selects(sel, labels) {
				// Istio takes the oldest of several; files have no age,
				// so the first by name, for a stable answer.
				if workload == nil || pa.Name < workload.Name {
					workload = pa
				}
			}
		case pa.Namespace == ns:
			namespace = pa
		case pa.Namespace == config.RootNamespace:
			mesh = pa
		}
	}
	mode := security.PeerAuthentication_MutualTLS_PERMISSIVE
	for _, pa := range []*config.PeerAuthentication{mesh, namespace, workload} {
		if pa == nil {
			continue
		}
		if m := pa.Spec.GetMtls().GetMode(); m != security.PeerAuthentication_MutualTLS_UNSET {
			mode = m
		}
	}
	if workload != nil {
		if m := workload.Spec.GetPortLevelMtls()[port].GetMode(); m != security.PeerAuthentication_MutualTLS_UNSET {
			mode = m
		}
	}
	return mode
}

// addServerListeners adds the server listener of every registered
// endpoint. Endpoints sharing an address and port but not a policy get a
// listener that denies every request: which policy is meant is unknown.
func (b *builder) addServerListeners(registered []registry.Endpoint) {
	for _, r := range registered {
		name := ServerListenerName(r.Address, r.Port)
		ns := r.Namespace
		if ns == "" {
			ns = config.DefaultNamespace
		}
		mode := b.peerMode(ns, r.Labels, r.Port)
		filters, err := b.httpFilters(ns, r.Labels)
		if err != nil {
			b.warn("registered endpoint %s: security policy cannot be translated; its server listener denies every request: %v", r.Key(), err)
			filters = denyAll()
		} else {
			filters = b.serverRateLimit(r, filters)
		}
		l := serverListener(name, r.Address, r.Port, mode, filters)
		if prev, ok := b.res.ServerListeners[name]; ok && !proto.Equal(prev, l) {
			b.warn("registered endpoint %s: another endpoint on %s:%d has a different security policy; the listener denies every request", r.Key(), r.Address, r.Port)
			l = serverListener(name, r.Address, r.Port, mode, denyAll())
		}
		b.res.ServerListeners[name] = l
	}
}

// httpFilters returns the HTTP filters of a workload's server listener:
// jwt_authn (if a RequestAuthentication selects it), one RBAC filter per
// action of the AuthorizationPolicies selecting it, and the router.
func (b *builder) httpFilters(ns string, labels map[string]string) ([]*v3hcmpb.HttpFilter, error) {
	var filters []*v3hcmpb.HttpFilter
	var ras []secpolicy.NamedRequestAuthentication
	for _, ra := range b.set.RequestAuthentications {
		if selectorSelects(ra.Spec.GetSelector(), ra.Name, ra.Namespace, ns, labels) {
			ras = append(ras, secpolicy.NamedRequestAuthentication{Name: ra.Name, Namespace: ra.Namespace, Spec: ra.Spec})
		}
	}
	jwt, err := secpolicy.RequestAuthentications(ras)
	if err != nil {
		return nil, err
	}
	if jwt != nil {
		filters = append(filters, &v3hcmpb.HttpFilter{
			Name:       JWTAuthnFilterName,
			ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(jwt)},
			// Standard gRPC servers have no JWT filter; they skip it.
			IsOptional: true,
		})
	}
	var aps []secpolicy.NamedAuthorizationPolicy
	for _, ap := range b.set.AuthorizationPolicies {
		named := secpolicy.NamedAuthorizationPolicy{Name: ap.Name, Namespace: ap.Namespace, Spec: ap.Spec, DryRun: ap.DryRun()}
		if secpolicy.Selects(named, config.RootNamespace, ns, labels) {
			aps = append(aps, named)
		}
	}
	rbacs, err := secpolicy.AuthorizationFilters(aps, b.trustDomain)
	if err != nil {
		return nil, err
	}
	for _, cfg := range rbacs {
		filters = append(filters, rbacFilter(cfg))
	}
	return append(filters, routerFilter()), nil
}

// rbacFilter is the RBAC HTTP filter of one config (its rules, and the
// shadow rules of dry-run policies), named by its action:
// "envoy.filters.http.rbac/deny", ".../allow" or ".../audit".
func rbacFilter(cfg *v3rbacfilterpb.RBAC) *v3hcmpb.HttpFilter {
	action := cfg.GetRules().GetAction()
	if cfg.GetRules() == nil {
		action = cfg.GetShadowRules().GetAction()
	}
	suffix := map[v3rbacpb.RBAC_Action]string{v3rbacpb.RBAC_DENY: "deny", v3rbacpb.RBAC_ALLOW: "allow", v3rbacpb.RBAC_LOG: "audit"}[action]
	return &v3hcmpb.HttpFilter{
		Name:       RBACFilterName + "/" + suffix,
		ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)},
	}
}

func routerFilter() *v3hcmpb.HttpFilter {
	return &v3hcmpb.HttpFilter{
		Name:       RouterFilterName,
		ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(&v3routerpb.Router{})},
	}
}

// denyAll is the filter list of a listener whose policy is unknown: an ALLOW
// RBAC config without policies, which allows nothing.
func denyAll() []*v3hcmpb.HttpFilter {
	return []*v3hcmpb.HttpFilter{
		rbacFilter(&v3rbacfilterpb.RBAC{Rules: &v3rbacpb.RBAC{Action: v3rbacpb.RBAC_ALLOW}}),
		routerFilter(),
	}
}

// certProvider names a certificate of the Trellis certificate provider
// instance that every mesh bootstrap declares.
func certProvider(name string) *v3tlspb.CertificateProviderPluginInstance {
	return &v3tlspb.CertificateProviderPluginInstance{InstanceName: xdsbootstrap.CertProviderInstance, CertificateName: name}
}

// legacyCertProvider is certProvider in the deprecated form of the combined
// validation context. grpc-go reads the root provider from
// default_validation_context.ca_certificate_provider_instance when
// tls_certificate_provider_instance is set, and only falls back to this
// field when the new ones are absent; both are sent so that readers of
// either form find the root.
func legacyCertProvider(name string) *v3tlspb.CommonTlsContext_CertificateProviderInstance {
	return &v3tlspb.CommonTlsContext_CertificateProviderInstance{InstanceName: xdsbootstrap.CertProviderInstance, CertificateName: name}
}

// serverListener builds a server listener for mode with the given HTTP
// filters on each filter chain.
func serverListener(name, address string, port uint32, mode security.PeerAuthentication_MutualTLS_Mode, filters []*v3hcmpb.HttpFilter) *v3listenerpb.Listener {
	chain := func(chainName string) *v3listenerpb.FilterChain {
		hcm := &v3hcmpb.HttpConnectionManager{
			StatPrefix: "inbound",
			CodecType:  v3hcmpb.HttpConnectionManager_AUTO,
			RouteSpecifier: &v3hcmpb.HttpConnectionManager_RouteConfig{RouteConfig: &v3routepb.RouteConfiguration{
				Name: "inbound",
				VirtualHosts: []*v3routepb.VirtualHost{{
					Name:    "inbound",
					Domains: []string{"*"},
					Routes: []*v3routepb.Route{{
						Match:  &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"}},
						Action: &v3routepb.Route_NonForwardingAction{NonForwardingAction: &v3routepb.NonForwardingAction{}},
					}},
				}},
			}},
			HttpFilters: filters,
		}
		return &v3listenerpb.FilterChain{
			Name: chainName,
			Filters: []*v3listenerpb.Filter{{
				Name:       "envoy.filters.network.http_connection_manager",
				ConfigType: &v3listenerpb.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
			}},
		}
	}
	var chains []*v3listenerpb.FilterChain
	if mode != security.PeerAuthentication_MutualTLS_DISABLE {
		c := chain(MTLSChain)
		c.TransportSocket = &v3corepb.TransportSocket{
			Name: TLSTransportSocket,
			ConfigType: &v3corepb.TransportSocket_TypedConfig{TypedConfig: mustAny(&v3tlspb.DownstreamTlsContext{
				RequireClientCertificate: wrapperspb.Bool(true),
				CommonTlsContext: &v3tlspb.CommonTlsContext{
					TlsCertificateProviderInstance: certProvider(xdsbootstrap.IdentityCertName),
					ValidationContextType: &v3tlspb.CommonTlsContext_CombinedValidationContext{
						CombinedValidationContext: &v3tlspb.CommonTlsContext_CombinedCertificateValidationContext{
							DefaultValidationContext:                     &v3tlspb.CertificateValidationContext{CaCertificateProviderInstance: certProvider(xdsbootstrap.RootCertName)},
							ValidationContextCertificateProviderInstance: legacyCertProvider(xdsbootstrap.RootCertName),
						},
					},
				},
			})},
		}
		if mode == security.PeerAuthentication_MutualTLS_PERMISSIVE {
			c.FilterChainMatch = &v3listenerpb.FilterChainMatch{TransportProtocol: "tls"}
		}
		chains = append(chains, c)
	}
	if mode != security.PeerAuthentication_MutualTLS_STRICT {
		c := chain(PlaintextChain)
		if mode == security.PeerAuthentication_MutualTLS_PERMISSIVE {
			c.FilterChainMatch = &v3listenerpb.FilterChainMatch{TransportProtocol: "raw_buffer"}
		}
		chains = append(chains, c)
	}
	return &v3listenerpb.Listener{
		Name: name,
		Address: &v3corepb.Address{Address: &v3corepb.Address_SocketAddress{SocketAddress: &v3corepb.SocketAddress{
			Address:       address,
			PortSpecifier: &v3corepb.SocketAddress_PortValue{PortValue: port},
		}}},
		FilterChains: chains,
	}
}

// clientTLS sets the transport socket of a cluster whose endpoints are
// members: mTLS when the DestinationRule asks for ISTIO_MUTUAL, or, with no
// tls setting, when every endpoint proved an identity at registration and
// none serves plaintext only (Istio's auto mTLS); plaintext otherwise. The
// server must present one of the endpoints' identities.
func (b *builder) clientTLS(c *v3clusterpb.Cluster, tls *networking.ClientTLSSettings, members []endpoint) {
	var ids []string
	auto := len(members) > 0
	for _, ep := range members {
		if ep.identity != "" {
			ids = append(ids, ep.identity)
		}
		auto = auto && ep.identity != "" && ep.mode != security.PeerAuthentication_MutualTLS_DISABLE
	}
	switch {
	case tls == nil && !auto:
		return
	case tls != nil && tls.Mode != networking.ClientTLSSettings_ISTIO_MUTUAL:
		return // DISABLE: the loader lets no other mode through
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) == 0 {
		ids = []string{"spiffe://" + b.trustDomain + NoIdentitySAN}
	}
	var sans []*v3matcherpb.StringMatcher
	for _, id := range ids {
		sans = append(sans, &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: id}})
	}
	c.TransportSocket = &v3corepb.TransportSocket{
		Name: TLSTransportSocket,
		ConfigType: &v3corepb.TransportSocket_TypedConfig{TypedConfig: mustAny(&v3tlspb.UpstreamTlsContext{
			CommonTlsContext: &v3tlspb.CommonTlsContext{
				TlsCertificateProviderInstance: certProvider(xdsbootstrap.IdentityCertName),
				ValidationContextType: &v3tlspb.CommonTlsContext_CombinedValidationContext{
					CombinedValidationContext: &v3tlspb.CommonTlsContext_CombinedCertificateValidationContext{
						DefaultValidationContext: &v3tlspb.CertificateValidationContext{
							CaCertificateProviderInstance: certProvider(xdsbootstrap.RootCertName),
							MatchSubjectAltNames:          sans,
						},
						ValidationContextCertificateProviderInstance: legacyCertProvider(xdsbootstrap.RootCertName),
					},
				},
			},
		})},
	}
}
