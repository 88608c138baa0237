package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/mtls"
	"github.com/trellismesh/trellis/telemetry"
)

// httpReadHeaderTimeout bounds how long an HTTPServer waits for a request's
// headers, so that slow clients cannot hold connections open.
var httpReadHeaderTimeout = 10 * time.Second

// Context keys of the HTTP server side.
type (
	httpListenerKey struct{} // the *meshListener a connection came from
	// httpAdmittedKey is set once a request has passed the policy: a
	// *peerCert, the client's SPIFFE ID when the server's own mutual
	// TLS verified it, else noPeer.
	httpAdmittedKey struct{}
)

// HTTPServer is a net/http server that joins the mesh, the HTTP
// counterpart of Server: when it serves, it registers its endpoint with the
// control plane under the service named by WithService (with the same
// options: WithServicePort, WithLabels, WithNamespace, ...), and it
// deregisters before it stops. It serves HTTP/1.1 and HTTP/2, over mutual
// TLS (HTTP/2 negotiated with ALPN) and in plaintext (HTTP/2 with prior
// knowledge, "h2c"). It is safe for concurrent use.
//
// A registered HTTPServer follows the policy the control plane makes for
// its port, exactly as a Server does: STRICT serves mutual TLS only,
// PERMISSIVE mutual TLS and plaintext on the one port, DISABLE plaintext
// only. The mode is read when a connection is accepted (one the mode does
// not allow is closed) and again for every request (a plaintext request
// under STRICT gets 401). A request with an invalid JWT gets 401 with
// "WWW-Authenticate: Bearer", one the authorization policies deny 403,
// one arriving on a port the control plane has no policy for 503; the
// reason is logged, not sent. Until the control plane has told the policy,
// requests wait for it, within their context. Authorization sees the raw
// request path, which it canonicalises itself (so "//admin", "/x/../admin"
// and "/%61dmin" are "/admin", and "/%2Fadmin" is refused); paths are
// case-sensitive, as in Istio.
//
// The handler never sees a client's X-Forwarded-Client-Cert header, nor a
// JWT it has consumed (unless RequestAuthentication forwards it) nor a
// spoofed JWT payload header; it reads the caller's SPIFFE ID with
// PeerID(r.Context()).
//
// Without WithService an HTTPServer registers nothing and follows no
// policy; with an identity (WithJoinToken and its kin) it then serves
// mutual TLS and plaintext on each port, and PeerID still works.
type HTTPServer struct {
	opts *options
	http *http.Server
	tel  *telemetry.Telemetry // nil: off

	member
	tls *tls.Config // nil without an identity; guarded by mu
}

// NewHTTPServer returns an HTTPServer serving h. It does no I/O. It takes
// the options of NewServer except WithServerOptions.
func NewHTTPServer(h http.Handler, opts ...HTTPServerOption) (*HTTPServer, error) {
	o := newOptions(opts, HTTPServerOption.applyHTTPServer)
	if err := o.validateServer(); err != nil {
		return nil, err
	}
	s := &HTTPServer{opts: o}
	tel, err := o.newTelemetry()
	if err != nil {
		return nil, err
	}
	s.tel = tel
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	s.http = &http.Server{
		Handler:           tel.Handler(&guard{h: tel.Admitted(h), opts: o}),
		Protocols:         &protocols,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(o.logger.Handler(), slog.LevelDebug),
		BaseContext: func(l net.Listener) context.Context {
			ctx := context.Background()
			if ml, ok := l.(*meshListener); ok {
				ctx = context.WithValue(ctx, httpListenerKey{}, ml)
			}
			return ctx
		},
	}
	return s, nil
}

// ListenAndServe listens on the TCP address addr and serves h in the mesh
// with an HTTPServer made with opts. It always returns a non-nil error.
func ListenAndServe(addr string, h http.Handler, opts ...HTTPServerOption) error {
	s, err := NewHTTPServer(h, opts...)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(lis)
}

// Serve registers the server's endpoint for lis with the control plane (in
// the background, retrying until it succeeds) and serves HTTP on lis until
// Shutdown or Close, after which it returns ErrServerClosed.
func (s *HTTPServer) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		lis.Close()
		return ErrServerClosed
	}
	if s.id == nil {
		if s.id = s.opts.acquireIdentity(); s.id != nil {
			cfg := mtls.ServerConfig(s.id, nil, s.opts.mtlsOptions(s.tel)...)
			cfg.NextProtos = []string{"h2", "http/1.1"}
			s.tls = cfg
		}
	}
	ml := &meshListener{Listener: lis, log: s.opts.logger, tel: s.tel}
	if s.tls != nil {
		ml.Listener = mtls.NewPermissiveListener(lis, s.tls, mtls.WithLogger(s.opts.logger))
		ml.canTLS = true
	}
	if s.opts.service != "" {
		reg, watch, err := s.opts.startRegistration(s.id, lis.Addr())
		if err != nil {
			s.mu.Unlock()
			ml.Close()
			return err
		}
		s.regs = append(s.regs, reg)
		s.policies.add(lis.Addr().String(), watch)
		ml.watch = watch
	}
	s.mu.Unlock()
	err := s.http.Serve(ml)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrServerClosed
	}
	if s.isClosed() {
		return ErrServerClosed
	}
	return err
}

// Shutdown deregisters the server's endpoints, so that clients stop picking
// it, then shuts the server down gracefully as http.Server.Shutdown does:
// it closes the listeners and idle connections and waits for active
// requests. If ctx ends first, it closes the remaining connections and
// returns ctx's error.
func (s *HTTPServer) Shutdown(ctx context.Context) error {
	s.leave(ctx)
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	s.release()
	return err
}

// Close deregisters without waiting for the control plane and closes the
// listeners and all connections at once. It is idempotent.
func (s *HTTPServer) Close() error {
	s.leaveNow()
	err := s.http.Close()
	s.release()
	return err
}

// release forgets the TLS configuration, stops following policies and
// releases the identity, once the server has stopped.
func (s *HTTPServer) release() {
	s.mu.Lock()
	s.tls = nil
	s.mu.Unlock()
	s.member.release()
}

// meshListener hands an HTTPServer the connections its port's mTLS mode
// allows: under STRICT only TLS, under DISABLE only plaintext, under
// PERMISSIVE (and until the policy is known) both. Connections it refuses
// are closed before any byte is answered.
type meshListener struct {
	net.Listener              // a PermissiveListener when canTLS
	canTLS       bool         // the server has an identity
	watch        *policyWatch // nil: no policy
	log          *slog.Logger
	tel          *telemetry.Telemetry // nil: off
}

func (l *meshListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		mode := modePermissive
		if l.watch != nil {
			if p := l.watch.current.Load(); p != nil {
				mode = p.mode
			}
		}
		_, isTLS := c.(*tls.Conn)
		if (mode == modeStrict && !isTLS) || (mode == modeDisable && isTLS) {
			l.log.Info("mesh: refused a connection", "mtls", mode.String(), "tls", isTLS, "peer", c.RemoteAddr().String())
			if !isTLS {
				l.tel.HandshakeFailed(mtls.FailureNotTLS)
			}
			c.Close()
			continue
		}
		return c, nil
	}
}

// Handler returns h guarded by the mesh's server policy.
//
// Served by an HTTPServer (or ListenAndServe), which guards its handler
// itself, Handler adds nothing: the request has already passed the policy
// of the server's port, and Handler's options are not used.
//
// A plain http.Server cannot register, speak the mesh's mutual TLS or know
// which port's policy applies, so Handler never pretends to: with
// WithService among its options it refuses every request with 503 Service
// Unavailable (and logs why, at level Error) rather than serve a service
// the mesh cannot see nor protect; use ListenAndServe or
// HTTPServer.Serve instead. Without WithService it follows no policy and
// only removes the X-Forwarded-Client-Cert header; PeerID reports no
// caller, since Handler cannot tell how the server verified a client
// certificate.
func Handler(h http.Handler, opts ...HandlerOption) http.Handler {
	return &guard{h: h, opts: newOptions(opts, HandlerOption.applyHandler), standalone: true}
}

// guard applies an HTTPServer's policy to each request.
type guard struct {
	h          http.Handler
	opts       *options
	standalone bool
	warnOnce   sync.Once
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.IndexByte(r.RequestURI, '#') >= 0 {
		// A fragment never belongs in a request target (RFC 9112 3.2),
		// and net/http leaves it in the path it gives the handler, which
		// the policy's canonicaliser would have matched without it:
		// "/public/x#/../../admin" is "/public/x" to the policy and
		// "/admin" to http.FileServer. Envoy refuses it too.
		g.opts.logger.Info("mesh: refused a request target with a fragment", "peer", r.RemoteAddr)
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	if ctx.Value(httpAdmittedKey{}) != nil {
		g.h.ServeHTTP(w, r)
		return
	}
	ml, _ := ctx.Value(httpListenerKey{}).(*meshListener)
	if ml == nil && g.standalone && g.opts.service != "" {
		g.warnOnce.Do(func() {
			g.opts.logger.Error("mesh: Handler with WithService is served outside an HTTPServer; refusing requests (use mesh.ListenAndServe or HTTPServer.Serve)", "service", g.opts.service)
		})
		refuse(w, errNotServing, false)
		return
	}
	log := g.opts.logger
	var p *serverPolicy
	if ml != nil && ml.watch != nil {
		if ml.watch.waitReady(ctx) != nil {
			refuse(w, errNotServing, false)
			return
		}
		if p = ml.watch.current.Load(); p == nil {
			refuse(w, errNotServing, false) // stopped before the first policy
			return
		}
	}
	var c call
	peerID := httpCall(&c, r, p.readsRequest())
	var v verdict
	if p != nil {
		var err error
		if v, err = p.check(ctx, log, ml.tel, &c); err != nil {
			jwtFailure := err == errUnauthenticated && (c.mutual || p.mode != modeStrict)
			if err == errUnauthenticated && !jwtFailure {
				w.Header().Set("Connection", "close")
			}
			refuse(w, err, jwtFailure)
			return
		}
	}
	admitted := noPeer
	if c.mutual && ml != nil && ml.canTLS {
		// Only the server's own mTLS listener verified the certificate.
		admitted = peerID
	}
	r2 := r.WithContext(context.WithValue(ctx, httpAdmittedKey{}, admitted))
	// The handler gets its own copy of the headers only if some must go or
	// change; otherwise it shares them, as a handler of http.Server does.
	_, xfcc := r.Header["X-Forwarded-Client-Cert"]
	if xfcc || len(v.strip) > 0 || v.payloadHeader != "" {
		r2.Header = r.Header.Clone()
		r2.Header.Del("X-Forwarded-Client-Cert")
		for _, name := range v.strip {
			r2.Header.Del(name)
		}
		if v.payloadHeader != "" {
			r2.Header.Set(v.payloadHeader, v.payload)
		}
	}
	g.h.ServeHTTP(w, r2)
}

// httpCall fills c with what the policy checks of a request: the
// connection's facts always, the headers, host and query if full. It
// returns the peer's identity when c.mutual.
func httpCall(c *call, r *http.Request, full bool) *peerCert {
	c.method = r.Method
	c.path = rawPath(r)
	c.remote = r.RemoteAddr
	if full {
		c.host = canonicalHost(r)
		c.headers = make(map[string][]string, len(r.Header))
		c.query = r.URL.Query()
		for name, vals := range r.Header {
			lower := strings.ToLower(name)
			c.headers[lower] = append(c.headers[lower], vals...)
		}
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if _, port, ok := addrPortOf(a); ok {
			c.destPort = port
		}
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		c.sourceIP = ap.Addr().Unmap()
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		if p := peerIDs.lookup(r.TLS.PeerCertificates[0]); p.ok {
			c.id, c.mutual = p.id, true
			return p
		}
	}
	return nil
}

// rawPath returns the request's path as the client sent it, before any
// decoding or cleaning, so that the policy's canonicaliser sees "%2F" and
// "..": the request-target in origin form (with its query, which the
// canonicaliser drops), else the escaped path of an absolute-form target.
func rawPath(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	if r.URL == nil {
		return ""
	}
	return r.URL.EscapedPath()
}

// canonicalHost returns the request's host in lower case, without the
// scheme's default port.
func canonicalHost(r *http.Request) string {
	host := strings.ToLower(r.Host)
	port := ":80"
	if r.TLS != nil {
		port = ":443"
	}
	return strings.TrimSuffix(host, port)
}

// refuse answers a refused request; the body says only what kind of
// refusal it is.
func refuse(w http.ResponseWriter, err error, jwtFailure bool) {
	switch err {
	case errDenied:
		http.Error(w, "RBAC: access denied", http.StatusForbidden)
	case errLimited:
		http.Error(w, "local_rate_limited", http.StatusTooManyRequests)
	case errUnauthenticated:
		if jwtFailure {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
		http.Error(w, "unauthenticated", http.StatusUnauthorized)
	default:
		http.Error(w, "not serving", http.StatusServiceUnavailable)
	}
}
