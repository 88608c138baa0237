// Package translate turns the mesh's configuration (Istio resources) and its
// registered endpoints into the xDS resources that grpc-go's xDS client and
// Trellis's own clients consume.
//
// Naming, which clients depend on:
//   - A service is known by its canonical host (config.CanonicalHost):
//     "reviews.default.svc.cluster.local" for a registered service "reviews" in
//     namespace "default" or a ServiceEntry host "reviews" there.
//   - Listeners (API listeners, one per dialable name) are named by the target
//     authority a client dials: "<host>:<port>" for the canonical host, for
//     "<name>.<namespace>" and, for the namespace that owns the short name, for
//     "<name>"; plus the same names without ":<port>" when the service has a
//     single port. The short name belongs to namespace "default" if the
//     service exists there, else to the alphabetically first namespace.
//   - Route configurations are named "<canonical host>:<port>".
//   - Clusters, and their EDS resources, follow Istio:
//     "outbound|<port>|<subset>|<canonical host>".
//   - Every registered endpoint, ServiceEntry endpoint and selected
//     WorkloadEntry has a server listener named by gRPC's template,
//     "grpc/server?xds.resource.listening_address=<ip>:<port>", carrying
//     its PeerAuthentication mode (mTLS and plaintext filter chains) and
//     the AuthorizationPolicy (RBAC) and RequestAuthentication (jwt_authn)
//     filters that select it; see ServerListenerName. The ports of
//     endpoints from configuration also get "0.0.0.0:<port>" and
//     "[::]:<port>", for standard gRPC servers listening on every address:
//     each endpoint IP's chains, matched by destination IP.
//   - In a cluster with mTLS, each EDS endpoint says how to reach it under
//     EndpointTLSMetadata.
package translate

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3faultpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	v3routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/registry"
)

// Resources are the xDS resources of the mesh, by name. Resources returned by
// Build are not modified afterwards.
type Resources struct {
	// Listeners are the API listeners clients dial.
	Listeners map[string]*v3listenerpb.Listener
	// ServerListeners are the listeners of servers (registered, or
	// endpoints from configuration), by ServerListenerName. They are
	// served over LDS beside Listeners.
	ServerListeners map[string]*v3listenerpb.Listener
	Routes          map[string]*v3routepb.RouteConfiguration
	Clusters        map[string]*v3clusterpb.Cluster
	Endpoints       map[string]*v3endpointpb.ClusterLoadAssignment
	// Locality holds, for clusters whose DestinationRule sets a
	// localityLbSetting, that setting: their endpoints are served to each
	// client through Localize.
	Locality map[string]*networking.LocalityLoadBalancerSetting
	// RouteConditions holds, for route configurations with VirtualService
	// sourceLabels matches, the labels each route (by index in the only
	// virtual host) requires of the client, nil for none. Clients read the
	// configuration through ViewRoutes.
	RouteConditions map[string][]map[string]string
	// Warnings are problems that did not stop the build: registrations that
	// fit no port of their service, ambiguous short names.
	Warnings []string
}

// ClusterName returns the name of the cluster of a service port and subset.
func ClusterName(host string, port uint32, subset string) string {
	return "outbound|" + strconv.FormatUint(uint64(port), 10) + "|" + subset + "|" + host
}

// servicePort is one port of a service.
type servicePort struct {
	number     uint32
	name       string
	targetPort uint32
}

// endpoint is one workload of a service, with its port per service port.
type endpoint struct {
	address   string
	ports     map[uint32]uint32 // service port -> workload port
	namespace string            // the workload's, which selects its PeerAuthentication
	labels    map[string]string
	locality  string
	// identity is the SPIFFE ID the workload presents: proved at
	// registration, or its WorkloadEntry's serviceAccount; "" if unknown.
	identity string
}

type service struct {
	host      string // canonical
	namespace string
	name      string // short name, if the host is "<name>.<namespace>.svc.cluster.local"
	ports     []servicePort
	endpoints []endpoint
	// sans are the ServiceEntry's subjectAltNames: when set, the identities
	// clients accept from the service's endpoints over mTLS.
	sans []string
}

func (s *service) port(n uint32) (servicePort, bool) {
	for _, p := range s.ports {
		if p.number == n {
			return p, true
		}
	}
	return servicePort{}, false
}

type builder struct {
	set         *config.Set
	trustDomain string
	services    map[string]*service // by canonical host
	subsets     map[string]map[string]map[string]string
	rules       map[string]*config.DestinationRule // by canonical host
	seHosts     map[string]bool                    // canonical hosts a ServiceEntry defines
	// configServers are the ServiceEntry endpoints and selected
	// WorkloadEntries, which get server listeners as registered endpoints do.
	configServers []serverEndpoint
	// conditions are the sourceLabels of routes that have them.
	conditions map[*v3routepb.Route]map[string]string
	res        *Resources
}

// ServiceRef names a service port known from registrations that may have no
// endpoints left.
type ServiceRef struct {
	Service   string
	Namespace string
	Port      uint32
}

// DefaultTrustDomain is the trust domain of Options with none: Istio's
// default.
const DefaultTrustDomain = "cluster.local"

// Options are the inputs of Build beyond configuration and registrations.
// The zero value is valid.
type Options struct {
	// Known lists service ports that stay defined (listeners, routes,
	// clusters with empty EDS) even with no endpoint registered, so that
	// clients fail fast with UNAVAILABLE instead of waiting for a listener
	// that does not exist.
	Known []ServiceRef
	// TrustDomain is the mesh's SPIFFE trust domain, used by authorization
	// policies and client mTLS. If empty, DefaultTrustDomain.
	TrustDomain string
}

// Build translates a valid configuration set and the registered endpoints.
// set may be nil (no configuration).
func Build(set *config.Set, registered []registry.Endpoint, opts Options) *Resources {
	if set == nil {
		set = &config.Set{}
	}
	b := &builder{
		set:         set,
		trustDomain: cmp.Or(opts.TrustDomain, DefaultTrustDomain),
		services:    map[string]*service{},
		subsets:     map[string]map[string]map[string]string{},
		rules:       map[string]*config.DestinationRule{},
		seHosts:     map[string]bool{},

		conditions: map[*v3routepb.Route]map[string]string{},
		res: &Resources{
			Listeners:       map[string]*v3listenerpb.Listener{},
			ServerListeners: map[string]*v3listenerpb.Listener{},
			Routes:          map[string]*v3routepb.RouteConfiguration{},
			Clusters:        map[string]*v3clusterpb.Cluster{},
			Endpoints:       map[string]*v3endpointpb.ClusterLoadAssignment{},
			Locality:        map[string]*networking.LocalityLoadBalancerSetting{},

			RouteConditions: map[string][]map[string]string{},
		},
	}
	b.addServiceEntries()
	b.addRegistered(registered)
	b.addKnown(opts.Known)
	b.addServerListeners(registered)
	for _, dr := range set.DestinationRules {
		host := config.CanonicalHost(dr.Spec.Host, dr.Namespace)
		b.rules[host] = dr
		b.subsets[host] = map[string]map[string]string{}
		for _, s := range dr.Spec.Subsets {
			b.subsets[host][s.Name] = s.Labels
		}
	}
	b.addListenersAndRoutes()
	return b.res
}

func (b *builder) warn(format string, args ...any) {
	b.res.Warnings = append(b.res.Warnings, fmt.Sprintf(format, args...))
}

func shortName(host, ns string) string {
	suffix := "." + ns + "." + config.ClusterDomain
	if name, ok := strings.CutSuffix(host, suffix); ok && !strings.Contains(name, ".") {
		return name
	}
	return ""
}

func (b *builder) service(host, ns string) *service {
	s, ok := b.services[host]
	if !ok {
		s = &service{host: host, namespace: ns, name: shortName(host, ns)}
		b.services[host] = s
	}
	return s
}

func (b *builder) addServiceEntries() {
	for _, se := range b.set.ServiceEntries {
		workloads := serviceEntryWorkloads(b.set, se)
		for _, h := range se.Spec.Hosts {
			host := config.CanonicalHost(h, se.Namespace)
			b.seHosts[host] = true
			s := b.service(host, se.Namespace)
			s.sans = append(s.sans, se.Spec.SubjectAltNames...)
			for _, p := range se.Spec.Ports {
				if _, dup := s.port(p.Number); !dup {
					s.ports = append(s.ports, servicePort{number: p.Number, name: p.Name, targetPort: p.TargetPort})
				}
			}
			for _, w := range workloads {
				ep := endpoint{
					address:   w.spec.Address,
					ports:     map[uint32]uint32{},
					namespace: se.Namespace,
					labels:    w.spec.Labels,
					locality:  w.spec.Locality,
					identity:  b.serviceAccountID(se.Namespace, w.spec.ServiceAccount),
				}
				for _, p := range se.Spec.Ports {
					target := cmp.Or(w.spec.Ports[p.Name], p.TargetPort, p.Number)
					ep.ports[p.Number] = target
					b.configServers = append(b.configServers, serverEndpoint{
						what: w.what, namespace: se.Namespace, host: host, labels: w.spec.Labels,
						address: w.spec.Address, port: target, config: true, identity: ep.identity,
					})
				}
				s.endpoints = append(s.endpoints, ep)
			}
		}
	}
}

// serviceAccountID is the SPIFFE ID of a service account of namespace ns,
// as Istio names it; "" for no service account.
func (b *builder) serviceAccountID(ns, sa string) string {
	return WorkloadIdentity(b.trustDomain, ns, sa)
}

func (b *builder) addRegistered(registered []registry.Endpoint) {
	for _, r := range registered {
		ns := cmp.Or(r.Namespace, config.DefaultNamespace)
		host := config.CanonicalHost(r.Service, ns)
		fromConfig := b.seHosts[host]
		s := b.service(host, ns)
		sp := cmp.Or(r.ServicePort, r.Port)
		if _, ok := s.port(sp); !ok {
			switch {
			case !fromConfig:
				s.ports = append(s.ports, servicePort{number: sp})
			case r.ServicePort == 0 && len(s.ports) == 1:
				sp = s.ports[0].number // join the ServiceEntry's only port
			default:
				b.warn("registered endpoint %s: service %s has no port %d", r.Key(), host, sp)
				continue
			}
		}
		s.endpoints = append(s.endpoints, endpoint{
			address:   r.Address,
			ports:     map[uint32]uint32{sp: r.Port},
			namespace: ns,
			labels:    r.Labels,
			locality:  r.Locality,
			identity:  r.Identity,
		})
	}
}

func (b *builder) addKnown(known []ServiceRef) {
	for _, k := range known {
		ns := cmp.Or(k.Namespace, config.DefaultNamespace)
		host := config.CanonicalHost(k.Service, ns)
		if b.seHosts[host] {
			continue // a ServiceEntry defines the service and its ports
		}
		s := b.service(host, ns)
		if _, has := s.port(k.Port); !has {
			s.ports = append(s.ports, servicePort{number: k.Port})
		}
	}
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// shortOwners decides which namespace owns each short name.
func (b *builder) shortOwners() map[string]string {
	byName := map[string][]string{}
	for _, s := range b.services {
		if s.name != "" {
			byName[s.name] = append(byName[s.name], s.namespace)
		}
	}
	owners := map[string]string{}
	for name, nss := range byName {
		slices.Sort(nss)
		owner := nss[0]
		if slices.Contains(nss, config.DefaultNamespace) {
			owner = config.DefaultNamespace
		}
		if len(nss) > 1 {
			b.warn("short name %q is ambiguous across namespaces %v: it means %s.%s", name, nss, name, owner)
		}
		owners[name] = owner
	}
	return owners
}

func (b *builder) addListenersAndRoutes() {
	owners := b.shortOwners()
	vsByHost := map[string]*config.VirtualService{}
	for _, vs := range b.set.VirtualServices {
		for _, h := range vs.Spec.Hosts {
			vsByHost[config.CanonicalHost(h, vs.Namespace)] = vs
		}
	}
	for _, host := range slices.Sorted(maps.Keys(b.services)) {
		s := b.services[host]
		names := []string{s.host}
		if s.name != "" {
			names = append(names, s.name+"."+s.namespace)
			if owners[s.name] == s.namespace {
				names = append(names, s.name)
			}
		}
		for _, p := range s.ports {
			// Every port and subset of a known service has a cluster, so
			// that routes to them and direct dials resolve.
			b.addCluster(s, p.number, "")
			for _, subset := range slices.Sorted(maps.Keys(b.subsets[s.host])) {
				b.addCluster(s, p.number, subset)
			}
			routeName := s.host + ":" + strconv.FormatUint(uint64(p.number), 10)
			var domains []string
			for _, n := range names {
				domains = append(domains, n+":"+strconv.FormatUint(uint64(p.number), 10))
				if len(s.ports) == 1 {
					domains = append(domains, n)
				}
			}
			var routes []*v3routepb.Route
			if vs, ok := vsByHost[s.host]; ok {
				routes = b.virtualServiceRoutes(vs, s, p.number)
			} else {
				// Without a VirtualService, one route to the whole service,
				// with Istio's default retries.
				def := &networking.HTTPRoute{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: s.host}}}}
				action := b.routeAction(s.namespace, def, p.number)
				routeBehaviour(action.Route, def)
				routes = []*v3routepb.Route{{
					Match:  &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"}},
					Action: action,
				}}
			}
			faults, conditional := false, false
			var conds []map[string]string
			for _, r := range routes {
				faults = faults || r.TypedPerFilterConfig[FaultFilterName] != nil
				c := b.conditions[r]
				conds = append(conds, c)
				conditional = conditional || c != nil
			}
			if conditional {
				b.res.RouteConditions[routeName] = conds
			}
			vh := &v3routepb.VirtualHost{Name: routeName, Domains: domains, Routes: routes}
			limited := b.clientRateLimits(s.host, vsByHost[s.host], vh)
			for _, d := range domains {
				b.res.Listeners[d] = apiListener(d, routeName, faults)
				if limited {
					b.res.Listeners[d] = withLocalRateLimitFilter(b.res.Listeners[d])
				}
			}
			b.res.Routes[routeName] = &v3routepb.RouteConfiguration{
				Name:         routeName,
				VirtualHosts: []*v3routepb.VirtualHost{vh},
			}
		}
	}
}

func clusterAction(name string) *v3routepb.Route_Route {
	return &v3routepb.Route_Route{Route: &v3routepb.RouteAction{
		ClusterSpecifier: &v3routepb.RouteAction_Cluster{Cluster: name},
	}}
}

// virtualServiceRoutes translates the HTTP routes of vs that apply to port of
// service s, in order. An HTTPRoute with several matches becomes one route
// per match (any of them selects it), as Istio does.
func (b *builder) virtualServiceRoutes(vs *config.VirtualService, s *service, port uint32) []*v3routepb.Route {
	var routes []*v3routepb.Route
	for i, hr := range vs.Spec.Http {
		action := b.routeAction(vs.Namespace, hr, port)
		var perFilter map[string]*anypb.Any
		if f := routeBehaviour(action.Route, hr); f != nil {
			perFilter = map[string]*anypb.Any{FaultFilterName: mustAny(f)}
		}
		name := cmp.Or(hr.Name, vs.Namespace+"/"+vs.Name+"#"+strconv.Itoa(i))
		matches := hr.Match
		if len(matches) == 0 {
			matches = []*networking.HTTPMatchRequest{{}}
		}
		for _, m := range matches {
			if m.Port != 0 && m.Port != port {
				continue
			}
			r := &v3routepb.Route{Name: name, Match: routeMatch(m), Action: action, TypedPerFilterConfig: perFilter}
			if len(m.SourceLabels) > 0 {
				b.conditions[r] = m.SourceLabels
			}
			routes = append(routes, r)
		}
	}
	return routes
}

// routeAction returns the action of an HTTP route written in namespace ns:
// its destinations, and the hash policy of the first destination that
// balances by consistent hashing. The caller adds timeouts, retries and
// faults with routeBehaviour.
func (b *builder) routeAction(ns string, hr *networking.HTTPRoute, port uint32) *v3routepb.Route_Route {
	type dest struct {
		cluster string
		weight  uint32
	}
	var dests []dest
	var hash []*v3routepb.RouteAction_HashPolicy
	for _, d := range hr.Route {
		host := config.CanonicalHost(d.Destination.Host, ns)
		p := d.Destination.GetPort().GetNumber()
		if p == 0 {
			p = port
			if s, ok := b.services[host]; ok && len(s.ports) == 1 {
				p = s.ports[0].number
			}
		}
		name := ClusterName(host, p, d.Destination.Subset)
		if _, ok := b.res.Clusters[name]; !ok {
			s, known := b.services[host]
			if !known {
				b.warn("a route in namespace %s goes to %s, which has no endpoints yet", ns, host)
				s = &service{host: host, namespace: ns}
			}
			b.addCluster(s, p, d.Destination.Subset)
		}
		if hash == nil {
			hash = hashPolicy(b.policyFor(host, p, d.Destination.Subset))
		}
		w := uint32(d.Weight)
		if len(hr.Route) == 1 {
			w = 100
		}
		if w > 0 {
			dests = append(dests, dest{name, w})
		}
	}
	if len(dests) == 1 {
		a := clusterAction(dests[0].cluster)
		a.Route.HashPolicy = hash
		return a
	}
	wc := &v3routepb.WeightedCluster{}
	for _, d := range dests {
		wc.Clusters = append(wc.Clusters, &v3routepb.WeightedCluster_ClusterWeight{
			Name:   d.cluster,
			Weight: wrapperspb.UInt32(d.weight),
		})
	}
	a := &v3routepb.Route_Route{Route: &v3routepb.RouteAction{
		ClusterSpecifier: &v3routepb.RouteAction_WeightedClusters{WeightedClusters: wc},
		HashPolicy:       hash,
	}}
	return a
}

func routeMatch(m *networking.HTTPMatchRequest) *v3routepb.RouteMatch {
	rm := &v3routepb.RouteMatch{}
	switch u := m.GetUri().GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		rm.PathSpecifier = &v3routepb.RouteMatch_Path{Path: u.Exact}
	case *networking.StringMatch_Prefix:
		rm.PathSpecifier = &v3routepb.RouteMatch_Prefix{Prefix: u.Prefix}
	case *networking.StringMatch_Regex:
		rm.PathSpecifier = &v3routepb.RouteMatch_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: u.Regex}}
	default:
		rm.PathSpecifier = &v3routepb.RouteMatch_Prefix{Prefix: "/"}
	}
	if m.IgnoreUriCase {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}
	for _, name := range slices.Sorted(maps.Keys(m.Headers)) {
		hm := &v3routepb.HeaderMatcher{Name: name}
		switch v := m.Headers[name].GetMatchType().(type) {
		case *networking.StringMatch_Exact:
			hm.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_StringMatch{StringMatch: &v3matcherpb.StringMatcher{
				MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: v.Exact}}}
		case *networking.StringMatch_Prefix:
			hm.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_StringMatch{StringMatch: &v3matcherpb.StringMatcher{
				MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: v.Prefix}}}
		case *networking.StringMatch_Regex:
			hm.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_StringMatch{StringMatch: &v3matcherpb.StringMatcher{
				MatchPattern: &v3matcherpb.StringMatcher_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: v.Regex}}}}
		default:
			hm.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true}
		}
		rm.Headers = append(rm.Headers, hm)
	}
	return rm
}

func (b *builder) addCluster(s *service, port uint32, subset string) {
	name := ClusterName(s.host, port, subset)
	if _, ok := b.res.Clusters[name]; ok {
		return
	}
	b.res.Clusters[name] = &v3clusterpb.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &v3clusterpb.Cluster_Type{Type: v3clusterpb.Cluster_EDS},
		EdsClusterConfig: &v3clusterpb.Cluster_EdsClusterConfig{
			EdsConfig:   &v3corepb.ConfigSource{ConfigSourceSpecifier: &v3corepb.ConfigSource_Ads{Ads: &v3corepb.AggregatedConfigSource{}}},
			ServiceName: name,
		},
	}
	pol := b.policyFor(s.host, port, subset)
	applyPolicy(b.res.Clusters[name], pol)
	reportLoad(b.res.Clusters[name])
	if ls := pol.lb.GetLocalityLbSetting(); ls != nil && (ls.Enabled == nil || ls.Enabled.Value) {
		b.res.Locality[name] = ls
	}
	var selector map[string]string
	if subset != "" {
		selector = b.subsets[s.host][subset]
	}
	var members []member
	for _, ep := range s.endpoints {
		target, ok := ep.ports[port]
		if !ok || (subset != "" && !selects(selector, ep.labels)) {
			continue
		}
		takes := ep.identity != "" && b.peerMode(ep.namespace, ep.labels, target) != security.PeerAuthentication_MutualTLS_DISABLE
		members = append(members, member{endpoint: ep, target: target, takesMTLS: takes})
	}
	tls := b.clusterTLS(s, pol.tls, members)
	byLocality := map[string][]*v3endpointpb.LbEndpoint{}
	for _, m := range members {
		byLocality[m.locality] = append(byLocality[m.locality], &v3endpointpb.LbEndpoint{
			HostIdentifier: &v3endpointpb.LbEndpoint_Endpoint{Endpoint: &v3endpointpb.Endpoint{
				Address: &v3corepb.Address{Address: &v3corepb.Address_SocketAddress{SocketAddress: &v3corepb.SocketAddress{
					Address:       m.address,
					PortSpecifier: &v3corepb.SocketAddress_PortValue{PortValue: m.target},
				}}},
			}},
			HealthStatus: v3corepb.HealthStatus_HEALTHY,
			Metadata:     tls.endpointMetadata(m),
		})
	}
	cla := &v3endpointpb.ClusterLoadAssignment{ClusterName: name}
	for _, loc := range slices.Sorted(maps.Keys(byLocality)) {
		lbs := byLocality[loc]
		slices.SortFunc(lbs, func(a, b *v3endpointpb.LbEndpoint) int {
			sa, sb := a.GetEndpoint().GetAddress().GetSocketAddress(), b.GetEndpoint().GetAddress().GetSocketAddress()
			return cmp.Or(strings.Compare(sa.GetAddress(), sb.GetAddress()), cmp.Compare(sa.GetPortValue(), sb.GetPortValue()))
		})
		parts := strings.SplitN(loc, "/", 3)
		parts = append(parts, "", "", "")
		cla.Endpoints = append(cla.Endpoints, &v3endpointpb.LocalityLbEndpoints{
			Locality:    &v3corepb.Locality{Region: parts[0], Zone: parts[1], SubZone: parts[2]},
			LbEndpoints: lbs,
			// Weight each locality by its endpoints so that traffic spreads
			// evenly over endpoints, not over localities.
			LoadBalancingWeight: wrapperspb.UInt32(uint32(len(lbs))),
		})
	}
	b.res.Endpoints[name] = cla
	if tls != nil {
		b.res.Clusters[name].TransportSocket = upstreamTLS(tls.sans)
	}
}

// apiListener returns the API listener of a dialable name. The fault filter
// is present only where a route injects faults, so that other calls pay
// nothing for it.
func apiListener(name, routeName string, faults bool) *v3listenerpb.Listener {
	hcm := &v3hcmpb.HttpConnectionManager{
		RouteSpecifier: &v3hcmpb.HttpConnectionManager_Rds{Rds: &v3hcmpb.Rds{
			ConfigSource:    &v3corepb.ConfigSource{ConfigSourceSpecifier: &v3corepb.ConfigSource_Ads{Ads: &v3corepb.AggregatedConfigSource{}}},
			RouteConfigName: routeName,
		}},
	}
	if faults {
		hcm.HttpFilters = append(hcm.HttpFilters, &v3hcmpb.HttpFilter{
			Name:       FaultFilterName,
			ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(&v3faultpb.HTTPFault{})},
		})
	}
	hcm.HttpFilters = append(hcm.HttpFilters, &v3hcmpb.HttpFilter{
		Name:       "envoy.filters.http.router",
		ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(&v3routerpb.Router{})},
	})
	return &v3listenerpb.Listener{
		Name:        name,
		ApiListener: &v3listenerpb.ApiListener{ApiListener: mustAny(hcm)},
	}
}

// mustAny wraps m in an Any, marshalled deterministically (map entries,
// such as RBAC policies, in key order), so that the same configuration
// gives the same bytes on every build: resources are compared with
// proto.Equal, which compares an Any's bytes, to decide what changed and
// whether two endpoints' listeners agree.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true})
	if err != nil {
		panic(fmt.Sprintf("translate: marshal %T: %v", m, err))
	}
	return a
}

// ViewRoutes returns a route configuration as a client with the given
// labels sees it: routes whose sourceLabels the client does not carry are
// left out. conds is the configuration's entry in Resources.RouteConditions;
// with none, rc itself is returned. rc is not modified.
func ViewRoutes(rc *v3routepb.RouteConfiguration, conds []map[string]string, labels map[string]string) *v3routepb.RouteConfiguration {
	if conds == nil || len(rc.GetVirtualHosts()) != 1 {
		return rc
	}
	out := proto.Clone(rc).(*v3routepb.RouteConfiguration)
	vh := out.VirtualHosts[0]
	kept := vh.Routes[:0]
	for i, r := range vh.Routes {
		if i < len(conds) && !selects(conds[i], labels) {
			continue
		}
		kept = append(kept, r)
	}
	vh.Routes = kept
	return out
}
