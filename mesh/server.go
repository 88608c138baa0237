package mesh

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/grpcstop"
	"github.com/trellismesh/trellis/internal/register"
	"github.com/trellismesh/trellis/internal/registrationpb"
)

// ErrServerClosed is returned by Server.Serve after Shutdown or Close.
var ErrServerClosed = errors.New("mesh: server closed")

// Server is a gRPC server that joins the mesh: when it serves, it registers
// its endpoint with the control plane under the service named by
// WithService, and it deregisters before it stops. It is a
// grpc.ServiceRegistrar; register services on it before Serve. It is safe for
// concurrent use.
//
// Traffic is plaintext: mutual TLS and authorization are not implemented
// yet.
type Server struct {
	opts *options
	grpc *grpc.Server

	mu     sync.Mutex
	regs   []*register.Client
	closed bool
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// NewServer returns a Server. It does no I/O. Without WithService the server
// serves but does not register.
func NewServer(opts ...Option) (*Server, error) {
	o := newOptions(opts)
	if o.service != "" {
		if err := config.ValidateName(o.service); err != nil {
			return nil, fmt.Errorf("mesh: service: %w", err)
		}
	}
	if err := config.ValidateName(o.namespace); err != nil {
		return nil, fmt.Errorf("mesh: namespace: %w", err)
	}
	if err := config.ValidateLabels(o.endpointLabels()); err != nil {
		return nil, fmt.Errorf("mesh: labels: %w", err)
	}
	if o.advertiseAddr != "" {
		if _, err := netip.ParseAddr(o.advertiseAddr); err != nil {
			return nil, fmt.Errorf("mesh: advertise address %q is not an IP address", o.advertiseAddr)
		}
	}
	return &Server{opts: o, grpc: grpc.NewServer(o.serverOptions...)}, nil
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
	if s.opts.service != "" {
		reg, err := s.startRegistration(lis.Addr())
		if err != nil {
			s.mu.Unlock()
			return err
		}
		s.regs = append(s.regs, reg)
	}
	s.mu.Unlock()
	err := s.grpc.Serve(lis)
	if err == nil || errors.Is(err, grpc.ErrServerStopped) {
		return ErrServerClosed
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrServerClosed
	}
	return err
}

func (s *Server) startRegistration(addr net.Addr) (*register.Client, error) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("mesh: cannot register a %s listener; serve on TCP", addr.Network())
	}
	ip := s.opts.advertiseAddr
	if ip == "" {
		ip = advertisedIP(tcp.IP)
	}
	cp, _, err := s.opts.controlPlane()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(cp, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("mesh: control plane %s: %w", cp, err)
	}
	ep := &registrationpb.Endpoint{
		Service:     s.opts.service,
		Namespace:   s.opts.namespace,
		Address:     ip,
		Port:        uint32(tcp.Port),
		ServicePort: s.opts.servicePort,
		Labels:      s.opts.endpointLabels(),
		Locality:    s.opts.locality,
	}
	s.opts.logger.Info("registering with the control plane", "controlPlane", cp, "service", ep.Service, "address", ip, "port", ep.Port)
	return register.Start(conn, ep, s.opts.logger), nil
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
	regs := s.markClosed()
	for _, r := range regs {
		r.Stop(ctx)
	}
	return grpcstop.Graceful(ctx, s.grpc)
}

// Close deregisters without waiting for the control plane and stops the
// server at once, cancelling pending RPCs. It is idempotent.
func (s *Server) Close() error {
	regs := s.markClosed()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, r := range regs {
		r.Stop(ctx)
	}
	s.grpc.Stop()
	return nil
}

func (s *Server) markClosed() []*register.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	regs := s.regs
	s.regs = nil
	return regs
}
