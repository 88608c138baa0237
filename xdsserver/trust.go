package xdsserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/ratelimit"
	"github.com/trellismesh/trellis/internal/registry"
	"github.com/trellismesh/trellis/internal/translate"
)

// WithInsecureRegistration opens the mesh: registrations that carry no
// credential — over the plaintext port, or over TLS without a client
// certificate — are accepted as anonymous. Anyone who can reach the
// control plane can then add endpoints to any service that no identity is
// bound to, and create new services; use it only for development meshes
// and meshes without identities. An anonymous endpoint still belongs to
// the workload that registered it (see the registration API), and it may
// never join a service that is bound to identities or has identified
// endpoints. The Server logs a warning at start and reports the setting
// on /debug/config_dump and as trellis_insecure_registration on /metrics.
//
// Without it, only workloads that present an SVID of the mesh CA on the
// secure port (ServeSecure) may register, each only for the services its
// identity may serve: those the configuration binds to it (ServiceEntry
// subjectAltNames, WorkloadEntry serviceAccount, the service accounts of
// Kubernetes endpoints), or, for a service bound to none, the service
// named as its service account, in its namespace. docs/SECURITY.md has
// the whole trust model.
func WithInsecureRegistration() Option {
	return optionFunc(func(o *options) { o.insecureRegistration = true })
}

// RegistrationLimits bound what registrations may cost the control plane.
// The zero value of each field means its default.
type RegistrationLimits struct {
	// PerPeer is the most endpoints one peer may hold registered through
	// this replica at once: a peer is an identity, or for anonymous
	// registrations a source IP address. If zero,
	// DefaultRegistrationsPerPeer.
	PerPeer int `json:"perPeer"`
	// Total is the most registered endpoints the mesh holds (every
	// replica's, with a shared store). If zero, DefaultMaxRegistrations.
	Total int `json:"total"`
	// Rate and Burst limit the registration streams a peer may open: Burst
	// at once, then Rate a second. If zero, DefaultRegistrationRate and
	// DefaultRegistrationBurst.
	Rate  float64 `json:"rate"`
	Burst int     `json:"burst"`
}

// Defaults of RegistrationLimits.
const (
	DefaultRegistrationsPerPeer = 256
	DefaultMaxRegistrations     = 10000
	DefaultRegistrationRate     = 50
	DefaultRegistrationBurst    = 200
)

// WithRegistrationLimits sets the limits on registrations. Registrations
// beyond them fail with RESOURCE_EXHAUSTED, and the workload tries again
// after its backoff.
func WithRegistrationLimits(l RegistrationLimits) Option {
	return optionFunc(func(o *options) { o.regLimits = l })
}

func (l RegistrationLimits) withDefaults() RegistrationLimits {
	if l.PerPeer <= 0 {
		l.PerPeer = DefaultRegistrationsPerPeer
	}
	if l.Total <= 0 {
		l.Total = DefaultMaxRegistrations
	}
	if l.Rate <= 0 {
		l.Rate = DefaultRegistrationRate
	}
	if l.Burst <= 0 {
		l.Burst = DefaultRegistrationBurst
	}
	return l
}

// Bounds of one registration.
const (
	// maxRegistrationSize is the largest registration message accepted, in
	// bytes; an endpoint is a few hundred.
	maxRegistrationSize = 16 << 10
	// maxLabels is the most labels an endpoint may carry.
	maxLabels = 64
	// maxLocalityPart is the longest region, zone or subzone accepted.
	maxLocalityPart = 128
	// Owner secrets are between these sizes, in bytes.
	minOwnerSecret, maxOwnerSecret = 16, 64
)

// updateLimit bounds how often one registration stream may change its
// endpoint: every change is a rebuild of the mesh's resources.
var updateLimit = ratelimit.Limit{Rate: 1, Burst: 10}

// A registrant is who asks to register, as the control plane has
// authenticated it.
type registrant struct {
	id    spiffeid.ID // zero for an anonymous registrant
	peer  string      // the key its limits are kept under
	owner string      // what owns its endpoints (registry.Endpoint.Owner)
}

func (r registrant) String() string {
	if r.id.IsZero() {
		return "anonymous " + r.peer
	}
	return r.id.String()
}

// Errors of registration admission, mapped to status codes by
// registrationStatus.
var (
	errNoCredential = errors.New("registration needs a workload certificate: register over the secure port with an SVID of the mesh CA (or open the mesh with WithInsecureRegistration)")
	errBadOwner     = fmt.Errorf("owner secret must be %d to %d bytes", minOwnerSecret, maxOwnerSecret)
)

// denied is a registration the trust rules refuse; limited one over a
// limit. Their messages go to the registrant: they say what about its own
// request was refused, never who else holds what.
type (
	denied  struct{ msg string }
	limited struct{ msg string }
)

func (e denied) Error() string  { return e.msg }
func (e limited) Error() string { return e.msg }

func deny(format string, args ...any) error  { return denied{fmt.Sprintf(format, args...)} }
func limit(format string, args ...any) error { return limited{fmt.Sprintf(format, args...)} }

// registrationStatus is the result label a refusal err is counted under,
// and the status the registrant gets.
func registrationStatus(err error) (result string, st error) {
	var d denied
	var l limited
	switch {
	case errors.Is(err, errNoCredential), errors.Is(err, errBadCertificate):
		return "unauthenticated", status.Error(codes.Unauthenticated, err.Error())
	case errors.As(err, &d):
		return "denied", status.Error(codes.PermissionDenied, "registration refused: "+d.msg)
	case errors.As(err, &l):
		return "limited", status.Error(codes.ResourceExhausted, "registration refused: "+l.msg)
	}
	return "rejected", status.Error(codes.InvalidArgument, err.Error())
}

// errBadCertificate: the registrant presented a certificate that does not
// verify. The reason goes to the log only.
var errBadCertificate = errors.New("unauthenticated")

// registrant authenticates the caller of a registration stream.
func (s *Server) registrant(ctx context.Context, secret []byte) (registrant, error) {
	id, err := s.peerIdentity(ctx)
	if err != nil {
		s.log.Warn("registration refused: client certificate does not verify", "error", err)
		return registrant{}, errBadCertificate
	}
	if !id.IsZero() {
		if identityNamespace(id) == "" {
			return registrant{}, deny("%s is not a workload identity (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)", id)
		}
		return registrant{id: id, peer: id.String(), owner: id.String()}, nil
	}
	if !s.opts.insecureRegistration {
		return registrant{}, errNoCredential
	}
	r := registrant{peer: "ip:" + peerHost(ctx)}
	switch n := len(secret); {
	case n == 0:
		// Nothing to prove ownership with later: the endpoint belongs to
		// this stream alone, and can be taken back only once it has left.
		var b [16]byte
		rand.Read(b[:])
		r.owner = "stream:" + hex.EncodeToString(b[:])
	case n < minOwnerSecret || n > maxOwnerSecret:
		return registrant{}, errBadOwner
	default:
		sum := sha256.Sum256(secret)
		r.owner = "anonymous:" + hex.EncodeToString(sum[:16])
	}
	return r, nil
}

// peerHost is the IP address of the caller in ctx, or "unknown".
func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// ownerOf returns who owns a registered endpoint. Entries written before
// owners were recorded are owned by their identity, or by nobody that can
// prove it (they can be taken once they have left).
func ownerOf(ep registry.Endpoint) string {
	if ep.Owner != "" {
		return ep.Owner
	}
	if ep.Identity != "" {
		return ep.Identity
	}
	return "unknown"
}

// trustView is what admission decides against: the configuration's
// workloads and service bindings, and the endpoints of the sources.
type trustView struct {
	bindings  map[string][]string // canonical host → identities bound to it
	workloads []translate.ConfigWorkload
	external  []registry.Endpoint
}

// trustView returns the current view. The bindings and workloads of a
// configuration are computed once per configuration (see applyConfig).
func (s *Server) trustView() trustView {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := trustView{bindings: s.bindings, workloads: s.workloads}
	for _, list := range s.external {
		v.external = append(v.external, list...)
	}
	return v
}

// indexConfig computes what admission needs of a configuration. The
// caller holds s.mu.
func (s *Server) indexConfig(set *config.Set) {
	s.bindings = translate.ServiceIdentities(set, s.trustDomain())
	s.workloads = translate.ConfigWorkloads(set, s.trustDomain())
}

// identities returns the identities bound to host: by the configuration,
// and those of the sources' endpoints of the host (Kubernetes Pods with
// their service accounts).
func (v trustView) identities(host string) []string {
	ids := slices.Clone(v.bindings[host])
	for _, ep := range v.external {
		if ep.Identity != "" && config.CanonicalHost(ep.Service, ep.Namespace) == host {
			ids = append(ids, ep.Identity)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// mayServe decides whether r may register an endpoint of ep's service.
func (s *Server) mayServe(r registrant, ep registry.Endpoint, v trustView, registered []registry.Endpoint) error {
	host := config.CanonicalHost(ep.Service, ep.Namespace)
	bound := v.identities(host)
	if r.id.IsZero() {
		if len(bound) > 0 {
			return deny("service %s is bound to identities: register with one of them over the secure port", host)
		}
		for _, e := range registered {
			if e.Identity != "" && e.Service == ep.Service && e.Namespace == ep.Namespace {
				return deny("service %s has identified endpoints: register with an identity over the secure port", host)
			}
		}
		return nil
	}
	if ns := identityNamespace(r.id); ns != ep.Namespace {
		return deny("identity %s may not register in namespace %s", r.id, ep.Namespace)
	}
	if len(bound) > 0 {
		if !slices.Contains(bound, r.id.String()) {
			return deny("identity %s is not bound to service %s (ServiceEntry subjectAltNames, WorkloadEntry serviceAccount)", r.id, host)
		}
		return nil
	}
	if sa := serviceAccountOf(r.id); sa != ep.Service {
		return deny("identity %s may serve only the service named as its service account, %q, unless the configuration binds it to %s (ServiceEntry subjectAltNames, WorkloadEntry serviceAccount)", r.id, sa, host)
	}
	return nil
}

// conflict decides whether ep, registered by r, would take what belongs
// to someone else: a registered endpoint with the same key, or the address
// and port of another service's endpoint.
func conflict(r registrant, ep registry.Endpoint, v trustView, registered []registry.Endpoint) error {
	host := config.CanonicalHost(ep.Service, ep.Namespace)
	for _, e := range registered {
		sameAddr := e.Address == ep.Address && e.Port == ep.Port
		if !sameAddr || ownerOf(e) == r.owner {
			continue
		}
		if e.Key() == ep.Key() {
			return deny("endpoint %s is registered by another workload", ep.Key())
		}
		return deny("address %s:%d is registered for another service", ep.Address, ep.Port)
	}
	who := ""
	if !r.id.IsZero() {
		who = r.id.String()
	}
	// A configured or discovered endpoint at the address: the registrant
	// may stand for it only as the same workload (the same identity), or,
	// for an endpoint without identity, as the same service.
	taken := func(epHost, identity string) bool {
		if identity != "" {
			return identity != who
		}
		return epHost != host
	}
	for _, w := range v.workloads {
		if w.Address == ep.Address && slices.Contains(w.Ports, ep.Port) && taken(w.Host, w.Identity) {
			return deny("address %s:%d belongs to a configured endpoint of another workload", ep.Address, ep.Port)
		}
	}
	for _, e := range v.external {
		if e.Address == ep.Address && e.Port == ep.Port && taken(config.CanonicalHost(e.Service, e.Namespace), e.Identity) {
			return deny("address %s:%d belongs to a discovered endpoint of another workload", ep.Address, ep.Port)
		}
	}
	return nil
}

// serviceAccountOf returns the service account of a workload SPIFFE ID.
func serviceAccountOf(id spiffeid.ID) string {
	_, sa, _ := strings.Cut(strings.TrimPrefix(id.Path(), "/ns/"), "/sa/")
	return sa
}

// admitRegistration decides a registration and, if it is admitted, adds it. Admission
// is serialised, so that two registrations cannot both pass the checks
// for the same key or address.
func (s *Server) admitRegistration(r registrant, ep registry.Endpoint) (registry.Lease, error) {
	v := s.trustView()
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	registered := s.reg.Endpoints()
	if err := s.mayServe(r, ep, v, registered); err != nil {
		return nil, err
	}
	if err := conflict(r, ep, v, registered); err != nil {
		return nil, err
	}
	lim := s.opts.regLimits.withDefaults()
	if s.peerRegs[r.peer] >= lim.PerPeer {
		return nil, limit("%s holds %d registrations, the most one peer may", r, lim.PerPeer)
	}
	exists := slices.ContainsFunc(registered, func(e registry.Endpoint) bool { return e.Key() == ep.Key() })
	if !exists && len(registered) >= lim.Total {
		return nil, limit("the mesh holds %d registrations, the most it may", lim.Total)
	}
	s.peerRegs[r.peer]++
	return s.reg.Add(ep), nil
}

// releaseRegistration forgets one registration of r's peer, once its stream has ended.
func (s *Server) releaseRegistration(r registrant) {
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	if s.peerRegs[r.peer]--; s.peerRegs[r.peer] <= 0 {
		delete(s.peerRegs, r.peer)
	}
}

// Methods of the secure port that only identified workloads may call.
const (
	adsMethodPrefix = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
	lrsMethodPrefix = "/envoy.service.load_stats.v3.LoadReportingService/"
)

// requireIdentity refuses xDS and load-report streams on the secure port
// from callers that present no SVID of the mesh CA, or one that does not
// verify: that port is for identified workloads (the plaintext port, when
// served, is for the others).
func (s *Server) requireIdentity(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, adsMethodPrefix) && !strings.HasPrefix(info.FullMethod, lrsMethodPrefix) {
		return h(srv, ss)
	}
	id, err := s.peerIdentity(ss.Context())
	if err != nil || id.IsZero() {
		s.metrics.unauthenticated.WithLabelValues(methodService(info.FullMethod)).Inc()
		s.log.Warn("secure port: stream refused without a verified workload certificate", "method", info.FullMethod, "peer", peerHost(ss.Context()), "error", err)
		return status.Error(codes.Unauthenticated, "unauthenticated")
	}
	return h(srv, ss)
}

// methodService is the short name of a method's service, for metrics.
func methodService(method string) string {
	switch {
	case strings.HasPrefix(method, adsMethodPrefix):
		return "xds"
	case strings.HasPrefix(method, lrsMethodPrefix):
		return "lrs"
	}
	return "other"
}
