package xdsserver

import (
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/registry"
)

// ConfigDump is the JSON document served at /debug/config_dump.
type ConfigDump struct {
	Config        ConfigStatus   `json:"config"`
	Security      SecurityStatus `json:"security"`
	Registrations []Registration `json:"registrations"`
	// Endpoints lists, for every cluster ("outbound|port|subset|host"), the
	// addresses ("ip:port") its EDS resource holds.
	Endpoints map[string][]string `json:"endpoints"`
	Warnings  []string            `json:"warnings,omitempty"`
	Clients   []ClientStatus      `json:"clients"`
	// Resources holds the xDS resources served, by type ("LDS", "RDS",
	// "CDS", "EDS"), each a JSON object of name to resource (protojson).
	Resources map[string]json.RawMessage `json:"resources"`
}

// Registration is an endpoint a workload registered.
type Registration struct {
	Service     string            `json:"service"`
	Namespace   string            `json:"namespace"`
	Address     string            `json:"address"`
	Port        uint32            `json:"port"`
	ServicePort uint32            `json:"servicePort,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Locality    string            `json:"locality,omitempty"`
	// Identity is the SPIFFE ID the workload proved with its client
	// certificate when it registered; empty if it presented none.
	Identity string `json:"identity,omitempty"`
}

func registrationOf(e registry.Endpoint) Registration {
	return Registration{Service: e.Service, Namespace: e.Namespace, Address: e.Address, Port: e.Port,
		ServicePort: e.ServicePort, Labels: e.Labels, Locality: e.Locality, Identity: e.Identity}
}

// SecurityStatus says whom the control plane believes.
type SecurityStatus struct {
	// InsecureRegistration is true if registrations without a credential
	// are accepted (WithInsecureRegistration): an open mesh.
	InsecureRegistration bool `json:"insecureRegistration"`
	// CA is true if the Server runs the mesh CA, so workloads can prove
	// identities on the secure port.
	CA bool `json:"ca"`
	// Limits are the registration limits in force.
	Limits RegistrationLimits `json:"registrationLimits"`
}

// ConfigStatus describes the configuration in force and the last load.
type ConfigStatus struct {
	Dir string `json:"dir,omitempty"`
	// Source names the configuration source other than a directory
	// (etcd, Kubernetes), if any.
	Source    string    `json:"source,omitempty"`
	Files     []string  `json:"files,omitempty"`
	Resources int       `json:"resources"`
	LoadedAt  time.Time `json:"loadedAt,omitzero"`
	// LastAttempt is the time of the last load, successful or rejected.
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	Valid       bool      `json:"lastLoadValid"`
	LastErrors  []string  `json:"lastErrors,omitempty"`
	Build       uint64    `json:"build"`
}

// AdminHandler returns the admin endpoints: /healthz, /readyz, /metrics
// (Prometheus text format), and the JSON debug endpoints /debug/config_dump
// (configuration in force, last load errors, registrations, clients, xDS
// resources; ?client=NODE: that client's status and the resources as it
// gets them — routes for its labels, endpoints for its locality),
// /debug/clients (connected xDS clients and their ACK/NACK state),
// /debug/registry (registered endpoints) and /debug/ca (the CA and the
// certificates it issued), /debug/graph (the service graph from the
// clients' load reports, see Graph) and the live page /dashboard. Every
// path answers GET (and HEAD) only; none changes anything, and none sends
// CORS headers, so a page of another origin can neither read it nor have
// anything to forge.
//
// Who may read it:
//
//   - With WithAdminToken, the /debug/ endpoints and the dashboard require
//     the token, as a bearer token or as the session cookie that
//     /dashboard?token= sets; /metrics too with WithMetricsBehindToken.
//     The token is then all that protects the endpoint: serve it where
//     the token can travel safely (TLS, or a network you trust).
//   - Without a token, /debug/, /dashboard and /metrics answer only local
//     requests, others get 403: the Host (or an absolute-form target's
//     authority) must be loopback — "localhost", 127.0.0.0/8 or [::1],
//     with or without a port — which keeps out browser pages that reach
//     127.0.0.1 under their own name (DNS rebinding); and a request served
//     by net/http's Server must have come on a connection accepted on a
//     loopback address or a Unix socket (a remote client can claim
//     any Host). So without a token, listen on loopback: a non-loopback
//     listener serves only health, and Prometheus cannot scrape it.
//   - /healthz and /readyz answer anyone: they say only whether the
//     server is up and ready, and Kubernetes probes address them to the
//     pod IP.
//
// Any local process can read a tokenless admin endpoint, and any holder
// of the token a tokened one: the token is the boundary between local
// users.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		ready := s.built != nil && !s.closed && !s.awaiting
		s.mu.Unlock()
		if !ready {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	metrics := promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
	if s.opts.adminToken == "" || s.opts.metricsBehindToken {
		mux.HandleFunc("GET /metrics", s.guard(metrics.ServeHTTP))
	} else {
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) { // open to Prometheus beside a token
			noStore(w)
			metrics.ServeHTTP(w, r)
		})
	}
	mux.HandleFunc("GET /debug/ca", s.guard(s.serveCA))
	mux.HandleFunc("GET /debug/clients", s.guard(s.serveClients))
	mux.HandleFunc("GET /debug/registry", s.guard(s.serveRegistry))
	mux.HandleFunc("GET /debug/config_dump", s.guard(func(w http.ResponseWriter, r *http.Request) {
		d := s.ConfigDump()
		if client := r.URL.Query().Get("client"); client != "" {
			// One client's view: its status, and the resources as it gets
			// them (routes for its labels, endpoints for its locality).
			node := s.clients.node(client)
			if node == nil {
				http.Error(w, "no connected client "+client, http.StatusNotFound)
				return
			}
			d.Resources = s.resourcesFor(node)
			d.Clients = slices.DeleteFunc(d.Clients, func(c ClientStatus) bool { return c.Node != client })
		}
		writeJSON(w, d)
	}))
	s.handleDashboard(mux) // /debug/graph, /dashboard
	return mux
}

// ConfigDump returns what the Server serves and why: the configuration in
// force and the errors of the last load, registrations, the status of every
// connected client and the xDS resources.
func (s *Server) ConfigDump() *ConfigDump {
	s.mu.Lock()
	d := &ConfigDump{
		Config: ConfigStatus{
			Dir:         s.opts.configDir,
			Source:      s.configSourceName(),
			LoadedAt:    s.cfgLoaded,
			LastAttempt: s.attempted,
			Valid:       s.cfgErr == nil,
			Build:       s.version,
		},
		Security: SecurityStatus{
			InsecureRegistration: s.opts.insecureRegistration,
			CA:                   s.ca != nil,
			Limits:               s.opts.regLimits.withDefaults(),
		},
		Resources: map[string]json.RawMessage{},
	}
	if s.cfg != nil {
		d.Config.Files = s.cfg.Files
		d.Config.Resources = s.cfg.Len()
	}
	if s.cfgErr != nil {
		errs := config.Errors(s.cfgErr)
		for _, e := range errs {
			d.Config.LastErrors = append(d.Config.LastErrors, e.Error())
		}
		if len(errs) == 0 {
			d.Config.LastErrors = []string{s.cfgErr.Error()}
		}
	}
	if s.built != nil {
		d.Warnings = s.built.Warnings
	}
	s.mu.Unlock()
	for _, e := range s.reg.Endpoints() {
		d.Registrations = append(d.Registrations, registrationOf(e))
	}
	d.Endpoints = map[string][]string{}
	for name, r := range s.caches[resource.EndpointType].GetResources() {
		cla := r.(*v3endpointpb.ClusterLoadAssignment)
		addrs := []string{}
		for _, loc := range cla.GetEndpoints() {
			for _, lb := range loc.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				addrs = append(addrs, net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)))
			}
		}
		d.Endpoints[name] = addrs
	}
	d.Clients = s.clients.snapshot()
	d.Resources = s.resourcesFor(nil)
	return d
}

// resourcesFor returns the xDS resources as the client with node sees them
// (routes by its labels, endpoints by its locality), or the base
// resources if node is nil; protojson by type and name.
func (s *Server) resourcesFor(node *v3corepb.Node) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for _, t := range typeURLs {
		res := s.caches[t].GetResources()
		if node != nil {
			switch t {
			case resource.RouteType:
				res = s.rds.cacheFor(node).GetResources()
			case resource.EndpointType:
				res = s.eds.cacheFor(node).GetResources()
			}
		}
		m := map[string]json.RawMessage{}
		for _, name := range slices.Sorted(maps.Keys(res)) {
			b, err := protojson.Marshal(res[name].(proto.Message))
			if err != nil {
				continue
			}
			m[name] = b
		}
		b, _ := json.Marshal(m)
		out[shortType(t)] = b
	}
	return out
}
