package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
)

// PeerID returns the SPIFFE ID of the peer of a call a mesh Server is
// handling, or of a request an HTTPServer is handling (from the
// request's context), authenticated by mutual TLS; ok is false for a
// plaintext peer.
func PeerID(ctx context.Context) (id spiffeid.ID, ok bool) {
	if id, ok := ctx.Value(httpPeerKey{}).(spiffeid.ID); ok {
		return id, true
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
func (o *options) watchPolicy(ip string, port int) (*policyWatch, error) {
	addr, _, err := o.controlPlane()
	if err != nil {
		return nil, err
	}
	shared, err := o.acquireXDSClient(addr)
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
	var rbacs []*v3rbacpb.RBAC
	for _, f := range hcm.GetHttpFilters() {
		tc := f.GetTypedConfig()
		switch {
		case tc.MessageIs(&v3rbachttppb.RBAC{}):
			r := new(v3rbachttppb.RBAC)
			if err := tc.UnmarshalTo(r); err != nil {
				return nil, fmt.Errorf("http filter %q: %w", f.GetName(), err)
			}
			if r.GetShadowRules() != nil || r.GetMatcher() != nil || r.GetShadowMatcher() != nil {
				return nil, fmt.Errorf("http filter %q: only rules are supported", f.GetName())
			}
			if r.GetRules() != nil {
				rbacs = append(rbacs, r.GetRules())
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
// concurrent use.
type policySet struct {
	mu     sync.Mutex
	list   []*policyWatch
	byAddr map[string]*policyWatch // by local "ip:port"
}

func (ps *policySet) add(local string, w *policyWatch) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.byAddr == nil {
		ps.byAddr = map[string]*policyWatch{}
	}
	ps.list = append(ps.list, w)
	ps.byAddr[local] = w
}

// forLocal returns the watch of the port at local (the first port's if
// local is not one of them; nil if the server follows no policy).
func (ps *policySet) forLocal(local net.Addr) *policyWatch {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if local != nil {
		if w := ps.byAddr[local.String()]; w != nil {
			return w
		}
	}
	if len(ps.list) > 0 {
		return ps.list[0]
	}
	return nil
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
	select {
	case <-w.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return w.current.Load(), nil
}

func (ps *policySet) closeAll() {
	ps.mu.Lock()
	ws := ps.list
	ps.list, ps.byAddr = nil, nil
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
	host    string              // :authority
	headers map[string][]string // lowercase names
	query   url.Values          // HTTP only
	peer    net.Addr
	local   net.Addr
	id      spiffeid.ID // the peer's SPIFFE ID, if mutual TLS
	mutual  bool
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
// errUnauthenticated or errNotServing for a refused call.
func (p *serverPolicy) check(ctx context.Context, log *slog.Logger, c call) (verdict, error) {
	var v verdict
	if p.notFound {
		return v, errNotServing
	}
	if p.mode == modeStrict && !c.mutual {
		log.Info("mesh: refused a call without mutual TLS (STRICT)", "path", c.path, "peer", c.peer)
		return v, errUnauthenticated
	}
	req := &authz.Request{Method: c.method, Path: c.path, Host: c.host, Headers: c.headers}
	if c.mutual {
		req.Principal = c.id.String()
	}
	if c.peer != nil {
		if ap, err := netip.ParseAddrPort(c.peer.String()); err == nil {
			req.SourceIP = ap.Addr().Unmap()
		}
	}
	if c.local != nil {
		if ap, err := netip.ParseAddrPort(c.local.String()); err == nil {
			req.DestinationPort = int(ap.Port())
		}
	}
	if p.jwt != nil {
		res, err := p.jwt.Verify(ctx, c.headers, c.query)
		if err != nil {
			log.Info("mesh: refused a call with an invalid token", "path", c.path, "peer", c.peer, "error", err)
			return v, errUnauthenticated
		}
		req.RequestPrincipal, req.Claims = res.Principal, res.Claims
		v.strip, v.payloadHeader, v.payload = res.StripHeaders, res.PayloadHeader, res.Payload
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
	} else if c.path == "" || c.path[0] != '/' {
		return v, errDenied // a malformed :path never reaches a handler
	}
	if p.limit != nil && !p.limit.allow(log, c) {
		return v, errLimited
	}
	return v, nil
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
	md, _ := metadata.FromIncomingContext(ctx)
	c := call{method: "POST", path: fullMethod, headers: md, peer: remote, local: local}
	if hosts := md.Get(":authority"); len(hosts) > 0 {
		c.host = hosts[0]
	}
	c.id, c.mutual = mtls.PeerIDFromContext(ctx)
	v, err := p.check(ctx, s.opts.logger, c)
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
