package translate

//lint:file-ignore SA1019 grpc-go reads match_subject_alt_names, not its typed successor, and other readers the deprecated root provider field.

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"

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
	"google.golang.org/protobuf/types/known/structpb"
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

// serverEndpoint is a workload listening at address:port whose server
// listener the control plane emits: a registered endpoint, a ServiceEntry
// endpoint or a WorkloadEntry a ServiceEntry selects.
type serverEndpoint struct {
	what      string // names it in warnings
	namespace string
	host      string // canonical host of its service, for its server rate limit
	labels    map[string]string
	address   string
	port      uint32
	// config marks endpoints from configuration, which a standard gRPC
	// xDS server may run: their ports get wildcard listeners too.
	config bool
	// identity is the endpoint's SPIFFE ID, if known.
	identity string
}

// wildcardAddresses are the addresses of the server listeners a standard
// gRPC xDS server asks for when it listens on every address: grpc-go names
// its listener by the net.Listener's address, "0.0.0.0:PORT" for
// "0.0.0.0:PORT", "[::]:PORT" for ":PORT".
var wildcardAddresses = []string{"0.0.0.0", "::"}

// addServerListeners adds the server listener of every registered endpoint
// and every endpoint from configuration (IP:PORT), and, for the ports of
// endpoints from configuration, the wildcard listeners (0.0.0.0:PORT,
// [::]:PORT) with each IP's filter chains matched by destination IP.
// Endpoints sharing an address and port but not a policy get a listener
// that denies every request: which policy is meant is unknown.
func (b *builder) addServerListeners(registered []registry.Endpoint) {
	eps := slices.Clone(b.configServers)
	for _, r := range registered {
		ns := cmp.Or(r.Namespace, config.DefaultNamespace)
		eps = append(eps, serverEndpoint{
			what: "registered endpoint " + r.Key(), namespace: ns, host: config.CanonicalHost(r.Service, ns),
			labels: r.Labels, address: r.Address, port: r.Port,
		})
	}
	wildcardPorts := map[uint32]bool{}
	for _, e := range eps {
		name := ServerListenerName(e.address, e.port)
		mode := b.peerMode(e.namespace, e.labels, e.port)
		if e.config && e.identity != "" && mode == security.PeerAuthentication_MutualTLS_PERMISSIVE {
			// A standard gRPC server cannot serve both on one port: grpc-go
			// drops the "tls" chain and would serve plaintext only, while
			// the mesh's clients dial an endpoint with an identity over
			// mTLS. Serve what they send.
			mode = security.PeerAuthentication_MutualTLS_STRICT
		}
		filters, err := b.httpFilters(e.namespace, e.labels)
		if err != nil {
			b.warn("%s: security policy cannot be translated; its server listener denies every request: %v", e.what, err)
			filters = denyAll()
		} else {
			filters = b.serverRateLimit(e.host, filters)
		}
		if e.config {
			requireJWT(filters)
		}
		l := serverListener(name, e.address, e.port, mode, filters)
		if prev, ok := b.res.ServerListeners[name]; ok && !proto.Equal(prev, l) {
			b.warn("%s: another endpoint on %s has a different security policy; the listener denies every request", e.what, net.JoinHostPort(e.address, strconv.FormatUint(uint64(e.port), 10)))
			l = serverListener(name, e.address, e.port, mode, denyAll())
		}
		b.res.ServerListeners[name] = l
		if e.config {
			wildcardPorts[e.port] = true
		}
	}
	b.addWildcardListeners(wildcardPorts)
}

// addWildcardListeners adds, for each port, the listeners 0.0.0.0:PORT and
// [::]:PORT: the filter chains of every IP:PORT listener of the port, each
// matched by its destination IP (grpc-go's xDS server matches
// prefix_ranges on a wildcard listener, and nothing else but source and
// transport_protocol "raw_buffer"). A connection to an IP the control
// plane does not know matches no chain and is closed. Only servers other
// than Trellis's ask for these listeners, so jwt_authn is required in all
// of their chains (see requireJWT). An endpoint registered or configured
// at the wildcard address itself, or one IP written two ways
// ("::ffff:10.0.0.1" and "10.0.0.1"), makes the policy of that port's
// wildcard listeners ambiguous: they deny every request.
func (b *builder) addWildcardListeners(ports map[uint32]bool) {
	byPort := map[uint32][]*v3listenerpb.Listener{}
	for _, name := range slices.Sorted(maps.Keys(b.res.ServerListeners)) {
		l := b.res.ServerListeners[name]
		sa := l.GetAddress().GetSocketAddress()
		if ports[sa.GetPortValue()] {
			byPort[sa.GetPortValue()] = append(byPort[sa.GetPortValue()], l)
		}
	}
	for _, port := range slices.Sorted(maps.Keys(ports)) {
		var chains []*v3listenerpb.FilterChain
		ambiguous := ""
		seen := map[netip.Addr]bool{}
		for _, l := range byPort[port] {
			addr := l.GetAddress().GetSocketAddress().GetAddress()
			ip, err := netip.ParseAddr(addr)
			if err != nil {
				continue // validated before translation; never here
			}
			ip = ip.Unmap().WithZone("")
			switch {
			case ip.IsUnspecified():
				ambiguous = "an endpoint is at the wildcard address " + addr
				continue
			case seen[ip]:
				ambiguous = "endpoints are at " + ip.String() + " under two spellings"
				continue
			}
			seen[ip] = true
			for _, fc := range l.GetFilterChains() {
				c := proto.Clone(fc).(*v3listenerpb.FilterChain)
				c.Name = fc.GetName() + "/" + ip.String()
				if c.FilterChainMatch == nil {
					c.FilterChainMatch = &v3listenerpb.FilterChainMatch{}
				}
				c.FilterChainMatch.PrefixRanges = []*v3corepb.CidrRange{{AddressPrefix: ip.String(), PrefixLen: wrapperspb.UInt32(uint32(ip.BitLen()))}}
				// Only servers other than Trellis's ask for wildcard
				// listeners, registered endpoints' IPs included.
				for _, f := range c.GetFilters() {
					h := &v3hcmpb.HttpConnectionManager{}
					if f.GetTypedConfig().UnmarshalTo(h) == nil {
						requireJWT(h.HttpFilters)
						f.ConfigType = &v3listenerpb.Filter_TypedConfig{TypedConfig: mustAny(h)}
					}
				}
				chains = append(chains, c)
			}
		}
		if ambiguous != "" {
			b.warn("port %d: %s, so the policy of its wildcard listeners is ambiguous; they deny every request", port, ambiguous)
		}
		for _, addr := range wildcardAddresses {
			name := ServerListenerName(addr, port)
			l := &v3listenerpb.Listener{
				Name: name,
				Address: &v3corepb.Address{Address: &v3corepb.Address_SocketAddress{SocketAddress: &v3corepb.SocketAddress{
					Address:       addr,
					PortSpecifier: &v3corepb.SocketAddress_PortValue{PortValue: port},
				}}},
				FilterChains: chains,
			}
			if ambiguous != "" {
				l = serverListener(name, addr, port, security.PeerAuthentication_MutualTLS_STRICT, denyAll())
			}
			b.res.ServerListeners[name] = l
		}
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
			// Trellis's servers enforce it; a standard gRPC server has no JWT
			// filter and skips it (registered endpoints are Trellis's; see
			// requireJWT for the others).
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

// requireJWT makes the jwt_authn filter among filters required. Endpoints
// from configuration are run by servers other than Trellis's, such as
// grpc-go's xDS server, which has no JWT filter: skipping an optional one,
// it would serve requests with invalid tokens that Istio refuses; with a
// required one it rejects the listener and does not serve (fail closed).
func requireJWT(filters []*v3hcmpb.HttpFilter) {
	for _, f := range filters {
		if f.GetName() == JWTAuthnFilterName {
			f.IsOptional = false
		}
	}
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

// EndpointTLSMetadata is the filter_metadata namespace that tells a client
// how to connect to one endpoint of a cluster with mTLS (a cluster with a
// TLS transport_socket). Its fields:
//
//   - "mode": "ISTIO_MUTUAL", mutual TLS; or "DISABLE", plaintext, written
//     only under automatic mTLS for an endpoint without identity or in
//     DISABLE PeerAuthentication mode;
//   - "identity": the exact SPIFFE ID the endpoint must present, when
//     known (its registration, or its WorkloadEntry's serviceAccount); it
//     must also be in the cluster's SAN list.
//
// This stands in for Istio's transport_socket_matches on
// envoy.transport_socket_match {tlsMode: istio}, which grpc-go rejects: a
// cluster with any transport_socket_matches is NACKed. Standard xDS
// clients ignore the metadata and dial every endpoint with the cluster's
// transport socket, so an endpoint without identity fails closed for them.
// resolver/xdscluster reads it for the mesh's HTTP client.
const EndpointTLSMetadata = "trellis.io/tls"

// member is an endpoint of one cluster, at its workload port.
type member struct {
	endpoint
	target uint32
	// takesMTLS: the endpoint has an identity and its PeerAuthentication
	// mode at target is not DISABLE.
	takesMTLS bool
}

// upstream is a cluster's client mTLS.
type upstream struct {
	sans []string
	// auto: no DestinationRule tls setting; endpoints that do not take
	// mTLS get plaintext.
	auto bool
}

// clusterTLS decides the client mTLS of a cluster with the given tls
// setting and members: nil for plaintext. With ISTIO_MUTUAL, every
// endpoint is dialled with mTLS; with no setting, if any endpoint takes
// mTLS (Istio's auto mTLS), those endpoints are and the others get
// plaintext; with DISABLE, none is. The SAN list is the rule's
// subjectAltNames, else the ServiceEntry's, else the identities of the
// members dialled with mTLS; sorted, de-duplicated, and never empty (a SAN no certificate
// carries stands for none).
func (b *builder) clusterTLS(s *service, tls *networking.ClientTLSSettings, members []member) *upstream {
	switch {
	case tls != nil && tls.Mode != networking.ClientTLSSettings_ISTIO_MUTUAL:
		return nil // DISABLE: the loader lets no other mode through
	case tls == nil && !slices.ContainsFunc(members, func(m member) bool { return m.takesMTLS }):
		return nil
	}
	var sans []string
	switch {
	case len(tls.GetSubjectAltNames()) > 0:
		sans = slices.Clone(tls.GetSubjectAltNames())
	case len(s.sans) > 0:
		sans = slices.Clone(s.sans)
	default:
		for _, m := range members {
			// Automatic mTLS dials only the endpoints that take it.
			if m.identity != "" && (tls != nil || m.takesMTLS) {
				sans = append(sans, m.identity)
			}
		}
	}
	slices.Sort(sans)
	sans = slices.Compact(sans)
	if len(sans) == 0 {
		sans = []string{"spiffe://" + b.trustDomain + NoIdentitySAN}
	}
	return &upstream{sans: sans, auto: tls == nil}
}

// endpointMetadata is the EDS metadata of a member of a cluster with
// mTLS u (nil: none), under EndpointTLSMetadata.
func (u *upstream) endpointMetadata(m member) *v3corepb.Metadata {
	if u == nil {
		return nil
	}
	fields := map[string]*structpb.Value{"mode": structpb.NewStringValue(networking.ClientTLSSettings_ISTIO_MUTUAL.String())}
	switch {
	case u.auto && !m.takesMTLS:
		fields["mode"] = structpb.NewStringValue(networking.ClientTLSSettings_DISABLE.String())
	case m.identity != "":
		fields["identity"] = structpb.NewStringValue(m.identity)
	}
	return &v3corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{EndpointTLSMetadata: {Fields: fields}}}
}

// upstreamTLS is the transport socket of a cluster with mTLS: the mesh
// certificate, and the server verified against the mesh roots and sans
// (exact SPIFFE IDs).
func upstreamTLS(sans []string) *v3corepb.TransportSocket {
	var matchers []*v3matcherpb.StringMatcher
	for _, id := range sans {
		matchers = append(matchers, &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: id}})
	}
	return &v3corepb.TransportSocket{
		Name: TLSTransportSocket,
		ConfigType: &v3corepb.TransportSocket_TypedConfig{TypedConfig: mustAny(&v3tlspb.UpstreamTlsContext{
			CommonTlsContext: &v3tlspb.CommonTlsContext{
				TlsCertificateProviderInstance: certProvider(xdsbootstrap.IdentityCertName),
				ValidationContextType: &v3tlspb.CommonTlsContext_CombinedValidationContext{
					CombinedValidationContext: &v3tlspb.CommonTlsContext_CombinedCertificateValidationContext{
						DefaultValidationContext: &v3tlspb.CertificateValidationContext{
							CaCertificateProviderInstance: certProvider(xdsbootstrap.RootCertName),
							MatchSubjectAltNames:          matchers,
						},
						ValidationContextCertificateProviderInstance: legacyCertProvider(xdsbootstrap.RootCertName),
					},
				},
			},
		})},
	}
}
