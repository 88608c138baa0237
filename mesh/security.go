package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3jwtauthnpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	v3localratelimitpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	v3rbachttppb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/authz"
	"github.com/trellismesh/trellis/authz/jwt"
	"github.com/trellismesh/trellis/internal/mtls"
	"github.com/trellismesh/trellis/internal/xdsbootstrap"
	"github.com/trellismesh/trellis/internal/xdsclient"
	"github.com/trellismesh/trellis/telemetry"
)

// PeerID returns the SPIFFE ID of the peer of a call a mesh Server is
// handling, or of a request an HTTPServer is handling (from the
// request's context), authenticated by mutual TLS; ok is false for a
// plaintext peer.
func PeerID(ctx context.Context) (id spiffeid.ID, ok bool) {
	if p, ok := ctx.Value(httpAdmittedKey{}).(*peerCert); ok && p.ok {
		return p.id, true
	}
	return mtls.PeerIDFromContext(ctx)
}

// mtlsMode is a server port's PeerAuthentication mode.
type mtlsMode int

const (
	modePermissive mtlsMode = iota
	modeStrict
	modeDisable
)

func (m mtlsMode) String() string {
	return [...]string{"PERMISSIVE", "STRICT", "DISABLE"}[m]
}

// serverPolicy is what the control plane's listener for a server's port
// says: the mTLS mode, the authorization policies and the JWT rules.
type serverPolicy struct {
	mode     mtlsMode
	authz    *authz.Engine // nil: no policy
	shadow   *authz.Shadow // nil: no dry-run policy
	jwtCfg   *v3jwtauthnpb.JwtAuthentication
	jwt      *jwt.Verifier // nil: no RequestAuthentication
	limit    *serverLimit  // nil: no rate limit
	notFound bool          // the control plane has no listener for the port: not serving
}

// policyWatch follows the server listener of one registered port.
type policyWatch struct {
	opts   *options
	name   string
	shared *sharedXDSClient
	cancel func()

	ready     chan struct{}
	readyOnce sync.Once
	current   atomic.Pointer[serverPolicy]

	mu     sync.Mutex // serialises updates
	closed bool
}

// watchPolicy starts following the listener the control plane makes for
// the endpoint ip:port.
func (o *options) watchPolicy(link controlPlaneLink, ip string, port int) (*policyWatch, error) {
	shared, err := o.acquireXDSClient(link)
	if err != nil {
		return nil, err
	}
	w := &policyWatch{
		opts:   o,
		name:   fmt.Sprintf(xdsbootstrap.ServerListenerTemplate, net.JoinHostPort(ip, fmt.Sprint(port))),
		shared: shared,
		ready:  make(chan struct{}),
	}
	w.cancel = shared.client.Watch(resourcev3.ListenerType, w.name, xdsclient.WatcherFuncs{
		UpdateFunc:   w.update,
		NotFoundFunc: w.notFound,
		ErrorFunc: func(err error) {
			o.logger.Warn("mesh: server policy update rejected; keeping the last good one", "listener", w.name, "error", err)
		},
	})
	return w, nil
}

func (w *policyWatch) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	releaseXDSClient(w.shared)
	if p := w.current.Load(); p != nil && p.jwt != nil {
		p.jwt.Close()
	}
	w.readyOnce.Do(func() { close(w.ready) })
}

func (w *policyWatch) set(p *serverPolicy) {
	old := w.current.Swap(p)
	if old != nil && old.jwt != nil && old.jwt != p.jwt {
		old.jwt.Close()
	}
	w.readyOnce.Do(func() { close(w.ready) })
}

func (w *policyWatch) notFound() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.opts.logger.Warn("mesh: the control plane has no policy for this server; refusing calls", "listener", w.name)
	w.set(&serverPolicy{notFound: true})
}

func (w *policyWatch) update(m proto.Message) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	p, err := compilePolicy(m.(*v3listenerpb.Listener), w.current.Load(), w.opts)
	if err != nil {
		if w.current.Load() == nil {
			// No good policy yet: refuse calls rather than serve without one.
			p = &serverPolicy{notFound: true}
		} else {
			w.opts.logger.Error("mesh: server policy unusable; keeping the last good one", "listener", w.name, "error", err)
			return
		}
		w.opts.logger.Error("mesh: server policy unusable; refusing calls", "listener", w.name, "error", err)
	}
	w.opts.logger.Info("mesh: server policy", "listener", w.name, "mtls", p.mode.String(), "authz", p.authz != nil, "jwt", p.jwt != nil)
	w.set(p)
}

// compilePolicy reads a server listener: its filter chains give the mode
// (an mTLS chain only: STRICT; a plaintext chain only: DISABLE; both:
// PERMISSIVE) and its HTTP filters the RBAC and jwt_authn configurations.
func compilePolicy(l *v3listenerpb.Listener, old *serverPolicy, o *options) (*serverPolicy, error) {
	var tlsChain, plainChain bool
	var hcm *v3hcmpb.HttpConnectionManager
	for _, fc := range l.GetFilterChains() {
		if fc.GetTransportSocket() != nil {
			tlsChain = true
		} else {
			plainChain = true
		}
		for _, f := range fc.GetFilters() {
			h := new(v3hcmpb.HttpConnectionManager)
			if f.GetTypedConfig().MessageIs(h) {
				if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
					return nil, fmt.Errorf("filter chain %q: %w", fc.GetName(), err)
				}
				if hcm != nil && !proto.Equal(hcm, h) {
					return nil, errors.New("filter chains with different HTTP filters are not supported")
				}
				hcm = h
			}
		}
	}
	p := &serverPolicy{mode: modePermissive}
	switch {
	case tlsChain && !plainChain:
		p.mode = modeStrict
	case plainChain && !tlsChain:
		p.mode = modeDisable
	case !tlsChain && !plainChain:
		return nil, errors.New("no filter chain")
	}
	var rbacs, shadows []*v3rbacpb.RBAC
	for _, f := range hcm.GetHttpFilters() {
		tc := f.GetTypedConfig()
		switch {
		case tc.MessageIs(&v3rbachttppb.RBAC{}):
			r := new(v3rbachttppb.RBAC)
			if err := tc.UnmarshalTo(r); err != nil {
				return nil, fmt.Errorf("http filter %q: %w", f.GetName(), err)
			}
			if r.GetMatcher() != nil || r.GetShadowMatcher() != nil {
				return nil, fmt.Errorf("http filter %q: only rules and shadow_rules are supported", f.GetName())
			}
			if r.GetRules() != nil {
				rbacs = append(rbacs, r.GetRules())
			}
			if r.GetShadowRules() != nil {
				// Dry-run policies: evaluated and reported, never enforced.
				shadows = append(shadows, r.GetShadowRules())
			}
		case tc.MessageIs(&v3jwtauthnpb.JwtAuthentication{}):
			j := new(v3jwtauthnpb.JwtAuthentication)
			if err := tc.UnmarshalTo(j); err != nil {
				return nil, fmt.Errorf("http filter %q: %w", f.GetName(), err)
			}
			p.jwtCfg = j
		case tc.MessageIs(&v3localratelimitpb.LocalRateLimit{}):
			l := new(v3localratelimitpb.LocalRateLimit)
			if err := tc.UnmarshalTo(l); err != nil {
				return nil, fmt.Errorf("http filter %q: %w", f.GetName(), err)
			}
			var err error
			if p.limit, err = compileServerLimit(l, old.rateLimit()); err != nil {
				return nil, fmt.Errorf("http filter %q: %w", f.GetName(), err)
			}
		case strings.HasSuffix(tc.GetTypeUrl(), ".Router"):
		default:
			if !f.GetIsOptional() {
				return nil, fmt.Errorf("http filter %q (%s) is not supported", f.GetName(), tc.GetTypeUrl())
			}
		}
	}
	if len(rbacs) > 0 {
		e, err := authz.New(rbacs, authz.WithLogger(o.logger))
		if err != nil {
			return nil, err
		}
		p.authz = e
	}
	if len(shadows) > 0 {
		sh, err := authz.NewShadow(shadows, authz.WithLogger(o.logger))
		if err != nil {
			return nil, err
		}
		p.shadow = sh
	}
	if p.jwtCfg != nil {
		if old != nil && old.jwt != nil && proto.Equal(old.jwtCfg, p.jwtCfg) {
			p.jwt = old.jwt // same rules: keep the verifier and its cached keys
		} else {
			v, err := jwt.New(p.jwtCfg, jwt.WithLogger(o.logger))
			if err != nil {
				return nil, err
			}
			p.jwt = v
		}
	}
	return p, nil
}

// policySet holds the policies of a server's ports. It is safe for
// concurrent use: calls read an immutable snapshot, without a lock.
type policySet struct {
	mu   sync.Mutex // serialises changes
	snap atomic.Pointer[policySnapshot]
}

// policySnapshot is the ports of a policySet at one time. It is never
// modified once published.
type policySnapshot struct {
	list   []*policyWatch
	byAddr map[string]*policyWatch         // by local "ip:port"
	byIP   map[netip.AddrPort]*policyWatch // the same, parsed (IPv4 unmapped)
}

func (ps *policySet) add(local string, w *policyWatch) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	next := &policySnapshot{byAddr: map[string]*policyWatch{}, byIP: map[netip.AddrPort]*policyWatch{}}
	if old := ps.snap.Load(); old != nil {
		next.list = append(next.list, old.list...)
		maps.Copy(next.byAddr, old.byAddr)
		maps.Copy(next.byIP, old.byIP)
	}
	next.list = append(next.list, w)
	next.byAddr[local] = w
	if ap, err := netip.ParseAddrPort(local); err == nil {
		next.byIP[unmapPort(ap)] = w
	}
	ps.snap.Store(next)
}

// unmapPort returns ap with an IPv4-mapped address unmapped, as
// net.TCPAddr.String writes it.
func unmapPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// forLocal returns the watch of the port at local (the first port's if
// local is not one of them; nil if the server follows no policy).
func (ps *policySet) forLocal(local net.Addr) *policyWatch {
	snap := ps.snap.Load()
	if snap == nil || len(snap.list) == 0 {
		return nil
	}
	if len(snap.list) > 1 && local != nil {
		if tcp, ok := local.(*net.TCPAddr); ok && tcp != nil {
			if w := snap.byIP[unmapPort(tcp.AddrPort())]; w != nil {
				return w
			}
		} else if w := snap.byAddr[local.String()]; w != nil {
			return w
		}
	}
	return snap.list[0]
}

// current returns the known policy of the port at local, or nil.
func (ps *policySet) current(local net.Addr) *serverPolicy {
	if w := ps.forLocal(local); w != nil {
		return w.current.Load()
	}
	return nil
}

// wait returns the policy of the port at local, waiting for the control
// plane's first word within ctx. A nil policy means the server follows no
// policy (it does not register).
func (ps *policySet) wait(ctx context.Context, local net.Addr) (*serverPolicy, error) {
	w := ps.forLocal(local)
	if w == nil {
		return nil, nil
	}
	if err := w.waitReady(ctx); err != nil {
		return nil, err
	}
	return w.current.Load(), nil
}

// waitReady waits for the watch's first policy within ctx. Once it has
// one it returns at once, without touching ctx (whose Done channel may be
// made on demand).
func (w *policyWatch) waitReady(ctx context.Context) error {
	select {
	case <-w.ready:
		return nil
	default:
	}
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (ps *policySet) closeAll() {
	ps.mu.Lock()
	var ws []*policyWatch
	if old := ps.snap.Swap(nil); old != nil {
		ws = old.list
	}
	ps.mu.Unlock()
	for _, w := range ws {
		w.close()
	}
}

// Why a call is refused. Callers learn only the kind (a gRPC code, an HTTP
// status); the reason goes to the server's log.
var (
	errDenied          = errors.New("permission denied")
	errUnauthenticated = errors.New("unauthenticated")
	errNotServing      = errors.New("not serving")
)

// call is what a policy check needs of one request, gRPC or HTTP.
type call struct {
	method  string              // HTTP method; POST for gRPC
	path    string              // the raw :path (request-target)
	host    string              // :authority; set only if the policy reads the request
	headers map[string][]string // lowercase names; set only if the policy reads the request
	query   url.Values          // HTTP only; set only if the policy reads the request
	peer    net.Addr            // the peer's address, for logs (gRPC)
	remote  string              // the peer's address, for logs (HTTP)
	// sourceIP is the peer's IP (IPv4 unmapped), invalid if unknown;
	// destPort the local port, 0 if unknown.
	sourceIP netip.Addr
	destPort int
	id       spiffeid.ID // the peer's SPIFFE ID, if mutual TLS
	mutual   bool
	grpc     bool // a gRPC call (else HTTP)
}

// peerForLog is the peer's address as the server's log shows it.
func (c *call) peerForLog() any {
	if c.peer == nil && c.remote != "" {
		if a, err := net.ResolveTCPAddr("tcp", c.remote); err == nil {
			return a
		}
	}
	return c.peer
}

// addrPortOf returns a's IP (IPv4 unmapped) and port; ok is false if a
// has no IP address and port.
func addrPortOf(a net.Addr) (ip netip.Addr, port int, ok bool) {
	switch a := a.(type) {
	case nil:
		return netip.Addr{}, 0, false
	case *net.TCPAddr:
		if a == nil {
			return netip.Addr{}, 0, false
		}
		ap := a.AddrPort()
		if !ap.Addr().IsValid() {
			return netip.Addr{}, 0, false
		}
		return ap.Addr().Unmap(), int(ap.Port()), true
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Addr{}, 0, false
		}
		return ap.Addr().Unmap(), int(ap.Port()), true
	}
}

// readsRequest reports whether the policy looks at a call's headers, host
// or query (JWT rules, authorization policies, dry-run ones included);
// without them a check needs only the connection's facts and the path.
func (p *serverPolicy) readsRequest() bool {
	return p != nil && (p.jwt != nil || p.authz != nil || p.shadow != nil)
}

// verdict is the outcome of an admitted call: the headers the handler must
// not see (a consumed token, spoofable payload headers) and the JWT payload
// header to set, if any.
type verdict struct {
	strip                  []string
	payloadHeader, payload string
}

// check applies the port's policy to a call: mTLS mode, JWT
// authentication, then authorization. It returns errDenied,
// errUnauthenticated or errNotServing for a refused call. The call's
// headers, host and query must be set if p.readsRequest(). Dry-run
// policies are evaluated for every call that reaches authorization; what
// they would decide is logged and counted by tel, and decides nothing.
func (p *serverPolicy) check(ctx context.Context, log *slog.Logger, tel *telemetry.Telemetry, c *call) (verdict, error) {
	var v verdict
	if p.notFound {
		return v, errNotServing
	}
	if p.mode == modeStrict && !c.mutual {
		log.Info("mesh: refused a call without mutual TLS (STRICT)", "path", c.path, "peer", c.peerForLog())
		return v, errUnauthenticated
	}
	if p.readsRequest() {
		req := &authz.Request{Method: c.method, Path: c.path, Host: c.host, Headers: c.headers, SourceIP: c.sourceIP, DestinationPort: c.destPort}
		if c.mutual {
			req.Principal = c.id.String()
		}
		if p.jwt != nil {
			res, err := p.jwt.Verify(ctx, c.headers, c.query)
			if err != nil {
				log.Info("mesh: refused a call with an invalid token", "path", c.path, "peer", c.peerForLog(), "error", err)
				return v, errUnauthenticated
			}
			req.RequestPrincipal, req.Claims = res.Principal, res.Claims
			v.strip, v.payloadHeader, v.payload = res.StripHeaders, res.PayloadHeader, res.Payload
		}
		if p.shadow != nil {
			dryRun(ctx, log, tel, c, req, p.shadow.Evaluate(req))
		}
		if p.authz != nil {
			d := p.authz.Authorize(req)
			if len(d.Audit) > 0 {
				log.Info("mesh: audited call", "path", c.path, "principal", req.Principal, "requestPrincipal", req.RequestPrincipal, "policies", d.Audit, "allowed", d.Allowed)
			}
			if !d.Allowed {
				log.Info("mesh: denied a call", "path", c.path, "principal", req.Principal, "requestPrincipal", req.RequestPrincipal, "policy", d.Policy, "reason", d.Reason)
				return v, errDenied
			}
		}
	}
	if p.authz == nil && (c.path == "" || c.path[0] != '/') {
		return v, errDenied // a malformed :path never reaches a handler
	}
	if p.limit != nil && !p.limit.allow(log, c) {
		return v, errLimited
	}
	return v, nil
}

// dryRun logs and counts the would-be decisions of dry-run policies on a
// call: at level Info those a policy made and those that would refuse the
// call, at Debug the others (a dry-run DENY that matched nothing).
func dryRun(ctx context.Context, log *slog.Logger, tel *telemetry.Telemetry, c *call, req *authz.Request, ds []authz.ShadowDecision) {
	protocol := "http"
	if c.grpc {
		protocol = "grpc"
	}
	report := func(action, policy, decision, reason string) {
		level := slog.LevelInfo
		if policy == "" && decision != telemetry.DryRunDeny {
			level = slog.LevelDebug
		}
		if log.Enabled(ctx, level) {
			log.Log(ctx, level, "mesh: dry-run policy decision (not enforced)", "action", action, "policy", policy, "decision", decision,
				"path", c.path, "principal", req.Principal, "requestPrincipal", req.RequestPrincipal, "reason", reason)
		}
		tel.DryRunDecision(ctx, protocol, action, policy, decision)
	}
	for _, d := range ds {
		switch d.Action {
		case v3rbacpb.RBAC_LOG:
			for _, name := range d.Audit {
				report("AUDIT", name, telemetry.DryRunAudit, "matched AUDIT policy")
			}
		default:
			decision := telemetry.DryRunDeny
			if d.Allowed {
				decision = telemetry.DryRunAllow
			}
			report(d.Action.String(), d.Policy, decision, d.Reason)
		}
	}
}

// grpcStatus maps a refusal to what a gRPC caller sees.
func grpcStatus(err error) error {
	switch err {
	case errDenied:
		return status.Error(codes.PermissionDenied, "permission denied")
	case errUnauthenticated:
		return status.Error(codes.Unauthenticated, "unauthenticated")
	case errNotServing:
		return status.Error(codes.Unavailable, "not serving")
	case errLimited:
		return status.Error(codes.ResourceExhausted, "rate limited")
	}
	return status.FromContextError(err).Err()
}

// admit applies the server's policy to a gRPC call and returns the context
// the handler gets (without the headers the policy consumed).
func (s *Server) admit(ctx context.Context, fullMethod string) (context.Context, error) {
	pr, _ := peer.FromContext(ctx)
	var local, remote net.Addr
	if pr != nil {
		local, remote = pr.LocalAddr, pr.Addr
	}
	p, err := s.policies.wait(ctx, local)
	if err != nil {
		return ctx, grpcStatus(err)
	}
	if p == nil {
		return ctx, nil
	}
	c := call{method: "POST", path: fullMethod, peer: remote, grpc: true}
	if ip, _, ok := addrPortOf(remote); ok {
		c.sourceIP = ip
	}
	if _, port, ok := addrPortOf(local); ok {
		c.destPort = port
	}
	var md metadata.MD
	if p.readsRequest() { // only then are the headers read: no copy otherwise
		md, _ = metadata.FromIncomingContext(ctx)
		c.headers = md
		if hosts := md.Get(":authority"); len(hosts) > 0 {
			c.host = hosts[0]
		}
	}
	if pr != nil {
		c.id, c.mutual = peerIDOf(pr.AuthInfo)
	}
	v, err := p.check(ctx, s.opts.logger, s.tel, &c)
	if err != nil {
		return ctx, grpcStatus(err)
	}
	if len(v.strip) > 0 || v.payloadHeader != "" {
		md = md.Copy()
		for _, h := range v.strip {
			delete(md, strings.ToLower(h))
		}
		if v.payloadHeader != "" {
			md.Set(v.payloadHeader, v.payload)
		}
		ctx = metadata.NewIncomingContext(ctx, md)
	}
	return ctx, nil
}

// peerIDOf returns the SPIFFE ID of a gRPC peer from its connection's
// AuthInfo, as mtls.PeerIDFromContext does; the ID of each peer
// certificate is parsed once (see peerIDs).
func peerIDOf(ai credentials.AuthInfo) (spiffeid.ID, bool) {
	info, ok := ai.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, false
	}
	return peerIDs.of(info.State.PeerCertificates[0])
}

func (s *Server) unaryPolicy(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := s.admit(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) streamPolicy(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := s.admit(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &contextStream{ServerStream: ss, ctx: ctx})
}

type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *contextStream) Context() context.Context { return c.ctx }

// serverCreds are a Server's transport credentials: the mTLS mode of the
// port's policy decides each handshake. Until the policy is known, and for
// PERMISSIVE, TLS and plaintext are both accepted (the call-level check
// refuses plaintext under STRICT); without an identity the server cannot
// speak TLS and accepts plaintext only.
type serverCreds struct {
	s *Server
}

var _ credentials.TransportCredentials = (*serverCreds)(nil)

func (c *serverCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	strict, permissive := c.s.tlsCreds()
	if strict == nil {
		return raw, mtls.PlaintextInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
	}
	mode := modePermissive
	if p := c.s.policies.current(raw.LocalAddr()); p != nil {
		mode = p.mode
	}
	switch mode {
	case modeStrict:
		return strict.ServerHandshake(raw)
	case modeDisable:
		return raw, mtls.PlaintextInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
	default:
		return permissive.ServerHandshake(raw)
	}
}

func (c *serverCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, mtls.ErrServerOnly
}

func (c *serverCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "trellis-mtls"}
}

func (c *serverCreds) Clone() credentials.TransportCredentials { return &serverCreds{s: c.s} }

func (c *serverCreds) OverrideServerName(string) error { return nil }

// tlsCreds returns the server's mTLS credentials, or nils without an
// identity.
func (s *Server) tlsCreds() (strict, permissive *mtls.Credentials) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.strict, s.permissive
}
