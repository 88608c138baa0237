package mesh

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"

	"google.golang.org/grpc"

	"github.com/trellismesh/trellis/internal/grpcstop"
	"github.com/trellismesh/trellis/internal/mtls"
	"github.com/trellismesh/trellis/internal/naming"
	"github.com/trellismesh/trellis/internal/register"
	"github.com/trellismesh/trellis/internal/registrationpb"
	"github.com/trellismesh/trellis/internal/replicas"
	"github.com/trellismesh/trellis/telemetry"
)

// ErrServerClosed is returned by Server.Serve after Shutdown or Close.
var ErrServerClosed = errors.New("mesh: server closed")

// Server is a gRPC server that joins the mesh: when it serves, it registers
// its endpoint with the control plane under the service named by
// WithService, and it deregisters before it stops. It is a
// grpc.ServiceRegistrar; register services on it before Serve. It is safe for
// concurrent use.
//
// A registered Server follows the policy the control plane makes for its
// port from PeerAuthentication, RequestAuthentication and
// AuthorizationPolicy: STRICT refuses plaintext, PERMISSIVE serves mutual
// TLS and plaintext on the one port, DISABLE plaintext only; calls with an
// invalid token get UNAUTHENTICATED, calls the authorization policies deny
// get PERMISSION_DENIED (the reason is logged, not sent). Until the
// control plane has told the policy, calls wait for it. mTLS needs a
// workload identity (WithJoinToken and its kin); handlers read the
// caller's with PeerID.
type Server struct {
	opts *options
	grpc *grpc.Server
	tel  *telemetry.Telemetry // nil: off

	member
	strict     *mtls.Credentials // nil without an identity; guarded by mu
	permissive *mtls.Credentials
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// NewServer returns a Server. It does no I/O. Without WithService the server
// serves but does not register.
func NewServer(opts ...ServerOption) (*Server, error) {
	o := newOptions(opts, ServerOption.applyServer)
	if err := o.validateServer(); err != nil {
		return nil, err
	}
	s := &Server{opts: o}
	tel, err := o.newTelemetry()
	if err != nil {
		return nil, err
	}
	s.tel = tel
	sopts := []grpc.ServerOption{grpc.Creds(&serverCreds{s: s})}
	sopts = append(sopts, serverInterceptors(tel, s.unaryPolicy, s.streamPolicy)...)
	s.grpc = grpc.NewServer(append(sopts, o.serverOptions...)...)
	return s, nil
}

// validateServer checks the options of a Server or HTTPServer.
func (o *options) validateServer() error {
	if o.service != "" {
		if err := naming.ValidateName(o.service); err != nil {
			return fmt.Errorf("mesh: service: %w", err)
		}
	}
	if err := naming.ValidateName(o.namespace); err != nil {
		return fmt.Errorf("mesh: namespace: %w", err)
	}
	if err := naming.ValidateLabels(o.endpointLabels()); err != nil {
		return fmt.Errorf("mesh: labels: %w", err)
	}
	if o.advertiseAddr != "" {
		if _, err := netip.ParseAddr(o.advertiseAddr); err != nil {
			return fmt.Errorf("mesh: advertise address %q is not an IP address", o.advertiseAddr)
		}
	}
	return nil
}

func (o *options) endpointLabels() map[string]string {
	labels := maps.Clone(o.labels)
	if labels == nil {
		labels = map[string]string{}
	}
	if o.version != "" {
		labels["version"] = o.version
	}
	return labels
}

// RegisterService registers a service and its implementation; it implements
// grpc.ServiceRegistrar.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
}

// GRPCServer returns the underlying grpc.Server, for APIs that need one
// (health, reflection, channelz).
func (s *Server) GRPCServer() *grpc.Server { return s.grpc }

// Serve registers the server's endpoint for lis with the control plane (in
// the background, retrying until it succeeds) and serves gRPC on lis until
// Shutdown or Close, after which it returns ErrServerClosed.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		lis.Close()
		return ErrServerClosed
	}
	if s.id == nil {
		if s.id = s.opts.acquireIdentity(); s.id != nil {
			mopts := s.opts.mtlsOptions(s.tel)
			cfg := mtls.ServerConfig(s.id, nil, mopts...)
			s.strict = mtls.StrictCredentials(cfg, mopts...)
			s.permissive = mtls.PermissiveCredentials(cfg, mopts...)
		}
	}
	if s.opts.service != "" {
		reg, watch, err := s.opts.startRegistration(s.id, lis.Addr())
		if err != nil {
			s.mu.Unlock()
			return err
		}
		s.regs = append(s.regs, reg)
		s.policies.add(lis.Addr().String(), watch)
	}
	s.mu.Unlock()
	err := s.grpc.Serve(lis)
	if err == nil || errors.Is(err, grpc.ErrServerStopped) {
		return ErrServerClosed
	}
	if s.isClosed() {
		return ErrServerClosed
	}
	return err
}

// startRegistration registers the endpoint of a listener and starts
// following its policy, for a Server (whose mu the caller holds) or an
// HTTPServer with identity id (nil for none). A workload with an identity
// registers over the control plane's secure port with its certificate
// (see link), so the control plane knows who serves the endpoint and
// clients can verify it.
func (o *options) startRegistration(id *workloadIdentity, addr net.Addr) (*register.Client, *policyWatch, error) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return nil, nil, fmt.Errorf("mesh: cannot register a %s listener; serve on TCP", addr.Network())
	}
	ip := o.advertiseAddr
	if ip == "" {
		ip = advertisedIP(tcp.IP)
	}
	link, err := o.link(id)
	if err != nil {
		return nil, nil, err
	}
	// With several replicas, the registration stream re-opens on a live
	// one when its replica fails (package replicas).
	target, err := replicas.Target(link.addr)
	if err != nil {
		return nil, nil, fmt.Errorf("mesh: control plane: %w", err)
	}
	conn, err := grpc.NewClient(target, link.dialOptions()...)
	if err != nil {
		return nil, nil, fmt.Errorf("mesh: control plane %s: %w", link.addr, err)
	}
	watch, err := o.watchPolicy(link, ip, tcp.Port)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	ep := &registrationpb.Endpoint{
		Service:     o.service,
		Namespace:   o.namespace,
		Address:     ip,
		Port:        uint32(tcp.Port),
		ServicePort: o.servicePort,
		Labels:      o.endpointLabels(),
		Locality:    o.locality,
	}
	o.logger.Info("registering with the control plane", "controlPlane", link.addr, "service", ep.Service, "address", ip, "port", ep.Port)
	return register.Start(conn, ep, o.logger), watch, nil
}

// advertisedIP returns the IP to register for a listener bound to ip.
func advertisedIP(ip net.IP) string {
	if ip != nil && !ip.IsUnspecified() {
		return ip.String()
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}

// Shutdown deregisters the server's endpoints, so that clients stop picking
// it, then stops the server gracefully: it stops accepting connections and
// waits for pending RPCs. If ctx ends first, remaining RPCs are cancelled and
// ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.leave(ctx)
	err := grpcstop.Graceful(ctx, s.grpc)
	s.release()
	return err
}

// Close deregisters without waiting for the control plane and stops the
// server at once, cancelling pending RPCs. It is idempotent.
func (s *Server) Close() error {
	s.leaveNow()
	s.grpc.Stop()
	s.release()
	return nil
}
