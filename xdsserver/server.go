package xdsserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	v3discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	v3server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/fsnotify/fsnotify"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/ca"
	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/grpcstop"
	"github.com/trellismesh/trellis/internal/ratelimit"
	"github.com/trellismesh/trellis/internal/registrationpb"
	"github.com/trellismesh/trellis/internal/registry"
	"github.com/trellismesh/trellis/internal/translate"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("xdsserver: server closed")

// typeURLs are the resource types the Server serves, in the order changes are
// applied: what a resource refers to is added before the resource itself.
var typeURLs = []string{resource.EndpointType, resource.ClusterType, resource.RouteType, resource.ListenerType}

// Server is the Trellis control plane: it serves xDS (ADS, state of the world
// and delta) and the registration API on one gRPC port, and an admin
// http.Handler. It is safe for concurrent use.
type Server struct {
	opts    options
	log     *slog.Logger
	reg     registry.Store
	caches  map[string]*cache.LinearCache
	eds     *viewCache // EDS per client locality (localityLbSetting)
	rds     *viewCache // RDS per client labels (sourceLabels)
	xds     v3server.Server
	grpc    *grpc.Server
	metrics *metrics
	clients *clientTracker
	admit   grpc.StreamServerInterceptor // the admission limit on new xDS streams; nil if off
	loads   *loadStore                   // load reports (LRS), for /debug/graph

	ca        *ca.CA       // nil without WithDataDir or WithCAFiles
	caService *ca.Service  // the CA's certificate API
	servingID spiffeid.ID  // the control plane's identity on its secure port
	secure    *grpc.Server // the secure port's server, made by the first ServeSecure

	// Registration admission (trust.go).
	admitMu    sync.Mutex
	peerRegs   map[string]int             // live registrations through this replica, by peer; guarded by admitMu
	regLimiter *ratelimit.Limiter         // new registration streams, by peer
	bindings   map[string][]string        // identities bound to each host by the configuration; guarded by mu
	workloads  []translate.ConfigWorkload // endpoints the configuration defines; guarded by mu

	rebuildCh chan struct{}
	ctx       context.Context // cancelled by Close/Shutdown; ends background work
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	mu        sync.Mutex
	cfg       *config.Set // last good configuration; nil if none
	cfgErr    error       // error of the last load, nil if it succeeded
	cfgLoaded time.Time   // time of the last successful load
	built     *translate.Resources
	known     map[translate.ServiceRef]time.Time // registered service ports, kept for knownTTL after their endpoints leave
	knownExp  *time.Timer                        // rebuilds when the next known service port is due to be forgotten
	warmUntil time.Time                          // before it, never-populated EDS resources are withheld
	populated map[string]bool                    // EDS resources that have had an endpoint
	attempted time.Time                          // time of the last load, good or bad
	version   uint64                             // number of builds
	external  [][]registry.Endpoint              // the latest list of each endpoint source
	awaiting  bool                               // a config source has not delivered its first update yet
	closed    bool
	closeOnce sync.Once
}

// New returns a Server. With WithConfigDir it reads and validates the
// directory first and fails if it is invalid, since there is no earlier good
// configuration to keep; it then watches the directory until the Server is
// closed. With an etcd WithStore it first grants its etcd lease and reads
// the registrations, and fails if that is not done within 10 seconds. New
// does not listen on anything: call Serve.
func New(opts ...Option) (*Server, error) {
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.metricsBehindToken && o.adminToken == "" {
		return nil, errors.New("xdsserver: WithMetricsBehindToken needs WithAdminToken")
	}
	if o.debounce == 0 {
		o.debounce = rebuildDebounce
	}
	// Kubernetes first: with both, the configuration comes from Kubernetes
	// and registrations go to the store.
	if err := o.useKubernetes(); err != nil {
		return nil, err
	}
	if err := o.resolveStore(); err != nil {
		return nil, err
	}
	s := &Server{
		opts:      o,
		log:       o.logger,
		caches:    map[string]*cache.LinearCache{},
		known:     map[translate.ServiceRef]time.Time{},
		populated: map[string]bool{},
		metrics:   newMetrics(),
		rebuildCh: make(chan struct{}, 1),
		peerRegs:  map[string]int{},
		// One bucket per peer; beyond the keys kept, the least recently
		// used peers' buckets are forgotten (and start full again).
		regLimiter: ratelimit.New(ratelimit.WithMaxKeys(4096)),
	}
	if err := s.newCA(); err != nil {
		return nil, err
	}
	if o.insecureRegistration {
		s.metrics.insecure.Set(1)
		s.log.Warn("insecure registration: registrations without a credential are accepted, so anyone who reaches the control plane can add endpoints to services no identity is bound to (an open mesh, for development only)")
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.clients = newClientTracker(s.log, s.metrics, s.ctx.Done())
	s.clients.identify = func(ctx context.Context) string {
		id, err := s.peerIdentity(ctx)
		if err != nil || id.IsZero() {
			return ""
		}
		return id.String()
	}
	if o.openStore != nil {
		st, err := o.openStore(o.grace, s.triggerRebuild)
		if err != nil {
			s.cancel()
			return nil, err
		}
		s.reg = st
	} else {
		s.reg = registry.New(o.grace, s.triggerRebuild)
	}
	if o.configSource != nil && o.configDir != "" {
		s.cancel()
		s.reg.Close()
		return nil, errors.New("xdsserver: a configuration directory and another configuration source are exclusive")
	}
	s.external = make([][]registry.Endpoint, len(o.endpointSources))
	s.awaiting = o.configSource != nil
	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cache.Cache{},
	}
	for _, t := range typeURLs {
		c := cache.NewLinearCache(t, cache.WithLogger(discardLogger{}))
		s.caches[t] = c
		mux.Caches[t] = c
	}
	s.eds = newViewCache(resource.EndpointType, s.caches[resource.EndpointType], localityKey)
	s.rds = newViewCache(resource.RouteType, s.caches[resource.RouteType], labelsKey)
	mux.Caches[resource.EndpointType] = s.eds
	mux.Caches[resource.RouteType] = s.rds
	s.clients.views = []*viewCache{s.eds, s.rds}
	var watcher *fsnotify.Watcher
	if o.configDir != "" {
		set, err := config.LoadDir(o.configDir)
		if err != nil {
			s.cancel()
			s.reg.Close()
			return nil, err
		}
		s.cfg, s.cfgLoaded, s.attempted = set, time.Now(), time.Now()
		s.indexConfig(set)
		s.metrics.configLoaded(true, 0)
		s.log.Info("configuration loaded", "dir", o.configDir, "files", len(set.Files), "resources", set.Len())
		watcher, err = fsnotify.NewWatcher()
		if err == nil {
			err = watcher.Add(o.configDir)
		}
		if err != nil {
			s.cancel()
			s.reg.Close()
			if watcher != nil {
				watcher.Close()
			}
			return nil, fmt.Errorf("xdsserver: watch %s: %w", o.configDir, err)
		}
	}
	s.xds = v3server.NewServer(s.ctx, mux, s.clients.callbacks())
	s.admit = s.admission()
	s.grpc = grpc.NewServer(append([]grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxConcurrentStreams(1 << 16),
	}, s.admissionOptions()...)...)
	v3discoverygrpc.RegisterAggregatedDiscoveryServiceServer(s.grpc, s.xds)
	registrationpb.RegisterRegistrationServer(s.grpc, &registrationService{s: s})
	registerLRS(s.grpc, s)

	warmup := o.warmup
	if warmup == 0 {
		warmup = cmp.Or(o.grace, registry.DefaultGrace)
	}
	if warmup > 0 {
		s.warmUntil = time.Now().Add(warmup)
	}
	s.rebuild() // the initial state is in the caches before anyone connects
	s.wg.Add(1)
	go s.rebuildLoop()
	if warmup > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			select {
			case <-time.After(warmup):
				s.triggerRebuild() // publish what warm-up withheld
			case <-s.ctx.Done():
			}
		}()
	}
	if watcher != nil {
		s.wg.Add(1)
		go s.watchConfig(watcher)
	}
	s.startSources()
	return s, nil
}

// Serve accepts xDS and registration connections on lis until Shutdown or
// Close, and then returns ErrServerClosed.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		lis.Close()
		return ErrServerClosed
	}
	err := s.grpc.Serve(lis)
	s.mu.Lock()
	closed = s.closed
	s.mu.Unlock()
	if closed || err == nil {
		return ErrServerClosed
	}
	return err
}

// Shutdown stops accepting connections, closes xDS streams (clients move to
// another replica or keep their cached configuration) and waits, until ctx
// is done, for registration streams and background work to end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopBackground()
	return errors.Join(grpcstop.Graceful(ctx, s.grpc), s.stopSecure(ctx))
}

// stopSecure stops the secure port's server gracefully while ctx lasts.
func (s *Server) stopSecure(ctx context.Context) error {
	if srv := s.secureServer(); srv != nil {
		return grpcstop.Graceful(ctx, srv)
	}
	return nil
}

func (s *Server) secureServer() *grpc.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.secure
}

// Close stops the Server at once. It is idempotent.
func (s *Server) Close() error {
	// Connections go first, as in a crash: clients see them reset and move
	// to another replica at once, rather than retrying a stream on a
	// connection that is about to close and then backing off.
	s.markClosed()
	s.grpc.Stop()
	if srv := s.secureServer(); srv != nil {
		srv.Stop()
	}
	s.stopBackground()
	return nil
}

// markClosed records that the Server is closing, so that Serve reports
// ErrServerClosed.
func (s *Server) markClosed() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

func (s *Server) stopBackground() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		// Cancelling the server context ends the ADS streams, which would
		// otherwise keep GracefulStop waiting for ever.
		s.cancel()
		s.wg.Wait()
		s.reg.Close()
		s.mu.Lock()
		if s.knownExp != nil {
			s.knownExp.Stop()
		}
		s.mu.Unlock()
	})
}

// loadErrors counts the errors of a configuration load.
func loadErrors(err error) int {
	if err == nil {
		return 0
	}
	return max(len(config.Errors(err)), 1)
}

// Reload reads the configuration directory again now. It returns the load
// error, if any; the last good configuration stays in force then.
func (s *Server) Reload() error {
	if s.opts.configDir == "" {
		return nil
	}
	set, err := config.LoadDir(s.opts.configDir)
	return s.applyConfig(set, err, "dir "+s.opts.configDir)
}

// applyConfig puts a newly read configuration in force, or records the
// error that kept it out (the last good configuration stays in force).
func (s *Server) applyConfig(set *config.Set, err error, from string) error {
	s.mu.Lock()
	s.cfgErr = err
	s.attempted = time.Now()
	if err == nil {
		s.cfg, s.cfgLoaded = set, time.Now()
		s.indexConfig(set)
		s.awaiting = false
	}
	s.mu.Unlock()
	s.metrics.configLoaded(err == nil, loadErrors(err))
	if err != nil {
		for _, e := range config.Errors(err) {
			s.log.Error("configuration rejected; keeping the last good configuration", "source", from, "error", e.Error())
		}
		if len(config.Errors(err)) == 0 {
			s.log.Error("configuration rejected; keeping the last good configuration", "source", from, "error", err)
		}
		return err
	}
	s.log.Info("configuration loaded", "source", from, "files", len(set.Files), "resources", set.Len())
	s.triggerRebuild()
	return nil
}

// registrationService implements the registration API.
type registrationService struct {
	registrationpb.UnimplementedRegistrationServer
	s *Server
}

func (r *registrationService) Register(stream registrationpb.Registration_RegisterServer) error {
	s := r.s
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	ep, err := endpointFromRequest(req)
	if err != nil {
		s.metrics.registrations.WithLabelValues("rejected").Inc()
		s.log.Warn("registration rejected", "error", err)
		return statusInvalid(err)
	}
	// Who registers comes from the connection, never from the request.
	who, err := s.registrant(stream.Context(), req.GetOwnerSecret())
	if err == nil && !s.regLimiter.Allow(who.peer, s.registrationRate()) {
		err = limit("%s opens registrations too fast", who)
	}
	var lease registry.Lease
	if err == nil {
		ep.Identity, ep.Owner = "", who.owner
		if !who.id.IsZero() {
			ep.Identity = who.id.String()
		}
		lease, err = s.admitRegistration(who, ep)
	}
	if err != nil {
		result, st := registrationStatus(err)
		s.metrics.registrations.WithLabelValues(result).Inc()
		s.log.Warn("registration refused", "endpoint", ep.Key(), "registrant", who.String(), "reason", result, "error", err)
		return st
	}
	defer s.releaseRegistration(who)
	s.metrics.registrations.WithLabelValues("accepted").Inc()
	s.log.Info("endpoint registered", "endpoint", ep.Key(), "labels", ep.Labels, "identity", ep.Identity, "registrant", who.String())
	if err := stream.Send(&registrationpb.RegisterResponse{Id: ep.Key()}); err != nil {
		lease.Release(false)
		return err
	}
	updates := ratelimit.New(ratelimit.WithMaxKeys(1))
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			lease.Release(true)
			s.log.Info("endpoint deregistered", "endpoint", ep.Key())
			return nil
		}
		if err != nil {
			lease.Release(false)
			s.log.Info("registration stream broke; endpoint leaves after the grace period", "endpoint", ep.Key(), "error", err)
			return err
		}
		upd, err := endpointFromRequest(req)
		if err != nil || upd.Key() != ep.Key() {
			if err == nil {
				err = fmt.Errorf("an update must keep service, namespace, address and port (%s)", ep.Key())
			}
			lease.Release(false)
			return statusInvalid(err)
		}
		if !updates.Allow("", updateLimit) {
			lease.Release(false)
			s.metrics.registrations.WithLabelValues("limited").Inc()
			s.log.Warn("registration stream closed: endpoint updates too fast", "endpoint", ep.Key(), "registrant", who.String())
			return status.Error(codes.ResourceExhausted, "registration refused: endpoint updates too fast")
		}
		lease.Update(upd.Labels, upd.Locality)
	}
}

// registrationRate is the limit on new registration streams per peer.
func (s *Server) registrationRate() ratelimit.Limit {
	l := s.opts.regLimits.withDefaults()
	return ratelimit.Limit{Rate: l.Rate, Burst: l.Burst}
}

// discardLogger silences go-control-plane's internal logging.
type discardLogger struct{}

func (discardLogger) Debugf(string, ...any) {}
func (discardLogger) Infof(string, ...any)  {}
func (discardLogger) Warnf(string, ...any)  {}
func (discardLogger) Errorf(string, ...any) {}
