package outlier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	estats "google.golang.org/grpc/experimental/stats"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	detection "github.com/trellismesh/trellis/internal/outlier"
)

// Name is the name under which the policy is registered with grpc-go's
// balancer registry, and the policy name in service configs and xDS
// TypedStruct type URLs ("type.googleapis.com/trellis_outlier").
const Name = "trellis_outlier"

var (
	logger = grpclog.Component("trellis_outlier")

	// Test knobs.
	timeNow       = time.Now
	timeAfterFunc = time.AfterFunc
	// maxPicks bounds how many times one RPC asks the child picker for an
	// endpoint when it keeps returning ejected ones; the last answer is
	// used.
	maxPicks = 3

	// errEjected is the connection error of the TRANSIENT_FAILURE health
	// state the child sees for an ejected endpoint.
	errEjected = errors.New("outlier: endpoint ejected after consecutive errors")

	// ejectionsMetric counts ejections, reported through the channel's
	// metrics recorders (gRFC A79) as grpc-go's own policies report theirs;
	// Trellis's telemetry exports it (telemetry.Telemetry.ComponentMetrics).
	ejectionsMetric = estats.RegisterInt64Count(estats.MetricDescriptor{
		Name:        "trellis.lb.outlier.ejections",
		Description: "Endpoints ejected by outlier detection (consecutive errors).",
		Unit:        "{ejection}",
		Labels:      []string{"grpc.target"},
	})
)

func init() {
	balancer.Register(builder{})
}

type builder struct{}

var _ balancer.ConfigParser = builder{}

func (builder) Name() string { return Name }

// ParseConfig parses and validates a JSON config; see Config.
func (builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg, err := parseConfig(js)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &outlierBalancer{
		ClientConn: cc,
		opts:       opts,
		endpoints:  resolver.NewEndpointMap[*detection.Host](),
		addrs:      map[string]*detection.Host{},
		subConns:   map[*subConn]struct{}{},
	}
	b.detector = detection.New(
		detection.WithClock(func() time.Time { return timeNow() }),
		detection.WithLogger(func(format string, args ...any) {
			logger.Infof("outlier: [%p] "+format, append([]any{b}, args...)...)
		}),
	)
	logger.Infof("outlier: [%p] created", b)
	return b
}

// outlierBalancer is the balancer.Balancer of the policy, and the
// balancer.ClientConn of its child: it embeds the parent ClientConn and
// overrides NewSubConn, to wrap SubConns, and UpdateState, to wrap pickers.
type outlierBalancer struct {
	balancer.ClientConn
	opts balancer.BuildOptions

	// childMu serialises everything that calls into the child policy: the
	// balancer API calls from grpc, SubConn state and health updates, and
	// ejection changes made by RPC completions and the interval timer. Lock
	// order: childMu, then mu or subConn.mu; childMu is never acquired while
	// mu is held.
	childMu     sync.Mutex
	child       balancer.Balancer // nil before the first config
	childName   string
	childClosed bool

	// detector is the ejection state machine over the endpoints; it has
	// its own lock, taken after mu when both are held.
	detector *detection.Detector

	mu        sync.Mutex
	closed    bool
	endpoints *resolver.EndpointMap[*detection.Host] // the outlier state of each endpoint
	addrs     map[string]*detection.Host             // by address, for SubConns created by the child
	subConns  map[*subConn]struct{}
	timer     *time.Timer
	timerGen  uint64 // invalidates the callbacks of stopped timers
}

func (b *outlierBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	cfg, ok := s.BalancerConfig.(*Config)
	if !ok || cfg == nil {
		logger.Errorf("outlier: [%p] received config of unexpected type %T", b, s.BalancerConfig)
		return balancer.ErrBadResolverState
	}
	bld := balancer.Get(cfg.ChildPolicy.Name)
	if cfg.ChildPolicy.Name == "" || bld == nil {
		return fmt.Errorf("outlier: child policy %q is not registered", cfg.ChildPolicy.Name)
	}

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.updateEndpointsLocked(s.ResolverState)
	hosts := make([]*detection.Host, 0, b.endpoints.Len())
	for _, h := range b.endpoints.All() {
		hosts = append(hosts, h)
	}
	params := cfg.params()
	b.detector.Update(&params, hosts)
	b.startTimerLocked()
	b.mu.Unlock()

	b.childMu.Lock()
	if b.childClosed {
		b.childMu.Unlock()
		return nil
	}
	if b.child == nil || b.childName != bld.Name() {
		if b.child != nil {
			logger.Infof("outlier: [%p] switching child policy from %s to %s", b, b.childName, bld.Name())
			b.child.Close()
		}
		b.child = bld.Build(b, b.opts)
		b.childName = bld.Name()
	}
	err := b.child.UpdateClientConnState(balancer.ClientConnState{
		ResolverState:  s.ResolverState,
		BalancerConfig: cfg.ChildPolicy.Config,
	})
	b.childMu.Unlock()

	b.syncChild()
	return err
}

// updateEndpointsLocked keeps the state of the endpoints still present,
// and maps addresses, and the SubConns created for them, to endpoints.
func (b *outlierBalancer) updateEndpointsLocked(s resolver.State) {
	eps := s.Endpoints
	if len(eps) == 0 {
		for _, a := range s.Addresses {
			eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{a}})
		}
	}
	endpoints := resolver.NewEndpointMap[*detection.Host]()
	addrs := map[string]*detection.Host{}
	for _, e := range eps {
		if _, dup := endpoints.Get(e); dup {
			continue
		}
		ep, ok := b.endpoints.Get(e)
		if !ok {
			var names []string
			for _, a := range e.Addresses {
				names = append(names, a.Addr)
			}
			ep = detection.NewHost("[" + strings.Join(names, " ") + "]")
		}
		endpoints.Set(e, ep)
		for _, a := range e.Addresses {
			if _, dup := addrs[a.Addr]; dup {
				logger.Warningf("outlier: [%p] address %s is in more than one endpoint", b, a.Addr)
				continue
			}
			addrs[a.Addr] = ep
		}
	}
	b.endpoints, b.addrs = endpoints, addrs
	for sc := range b.subConns {
		sc.ep.Store(addrs[sc.addr])
	}
}

func (b *outlierBalancer) ResolverError(err error) {
	b.childMu.Lock()
	defer b.childMu.Unlock()
	switch {
	case b.childClosed:
	case b.child == nil:
		b.ClientConn.UpdateState(balancer.State{
			ConnectivityState: connectivity.TransientFailure,
			Picker:            base.NewErrPicker(fmt.Errorf("outlier: name resolver error: %w", err)),
		})
	default:
		b.child.ResolverError(err)
	}
}

func (b *outlierBalancer) UpdateSubConnState(sc balancer.SubConn, s balancer.SubConnState) {
	logger.Errorf("outlier: [%p] UpdateSubConnState(%v, %+v) called unexpectedly", b, sc, s)
}

func (b *outlierBalancer) ExitIdle() {
	b.childMu.Lock()
	defer b.childMu.Unlock()
	if b.child != nil && !b.childClosed {
		b.child.ExitIdle()
	}
}

// Close stops the interval timer and closes the child. It is idempotent.
func (b *outlierBalancer) Close() {
	b.mu.Lock()
	b.closed = true
	b.stopTimerLocked()
	b.detector.Update(nil, nil) // RPCs still in flight count for nothing
	b.mu.Unlock()

	b.childMu.Lock()
	if b.child != nil && !b.childClosed {
		b.child.Close()
	}
	b.childClosed = true
	b.childMu.Unlock()
	logger.Infof("outlier: [%p] closed", b)
}

// NewSubConn creates a SubConn for the child, wrapped to attribute RPC
// results to the endpoint of its address and to hide it from the child
// while the endpoint is ejected.
func (b *outlierBalancer) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	sc := &subConn{b: b}
	if len(addrs) == 1 {
		sc.addr = addrs[0].Addr
	}
	listener := opts.StateListener
	opts.StateListener = func(s balancer.SubConnState) { b.updateSubConnState(sc, listener, s) }
	//lint:ignore SA1019 the policy implements balancer.ClientConn for its child, and forwards.
	inner, err := b.ClientConn.NewSubConn(addrs, opts)
	if err != nil {
		return nil, err
	}
	sc.SubConn = inner
	b.mu.Lock()
	if !b.closed {
		sc.ep.Store(b.addrs[sc.addr])
		b.subConns[sc] = struct{}{}
	}
	b.mu.Unlock()
	return sc, nil
}

// RemoveSubConn is deprecated in balancer.ClientConn; it unwraps sc.
func (b *outlierBalancer) RemoveSubConn(sc balancer.SubConn) {
	sc.Shutdown()
}

// UpdateAddresses is deprecated in balancer.ClientConn; it unwraps sc and
// maps it to the endpoint of its new address.
func (b *outlierBalancer) UpdateAddresses(sc balancer.SubConn, addrs []resolver.Address) {
	w, ok := sc.(*subConn)
	if !ok {
		//lint:ignore SA1019 forwarded for a child that still calls it.
		b.ClientConn.UpdateAddresses(sc, addrs)
		return
	}
	b.mu.Lock()
	w.addr = ""
	if len(addrs) == 1 {
		w.addr = addrs[0].Addr
	}
	w.ep.Store(b.addrs[w.addr])
	b.mu.Unlock()
	// The child may hold b.childMu: the child's health listener learns of
	// the new endpoint's ejection state at the next change; picks avoid it
	// at once.
	//lint:ignore SA1019 forwarded for a child that still calls it.
	b.ClientConn.UpdateAddresses(w.SubConn, addrs)
}

// UpdateState wraps the child's picker to count RPC results and avoid
// ejected endpoints.
func (b *outlierBalancer) UpdateState(s balancer.State) {
	if s.Picker != nil {
		s.Picker = &picker{child: s.Picker}
	}
	b.ClientConn.UpdateState(s)
}

// updateSubConnState forwards a connectivity state update to the child.
func (b *outlierBalancer) updateSubConnState(sc *subConn, listener func(balancer.SubConnState), s balancer.SubConnState) {
	if s.ConnectivityState == connectivity.Shutdown {
		b.mu.Lock()
		delete(b.subConns, sc)
		b.mu.Unlock()
	}
	b.childMu.Lock()
	defer b.childMu.Unlock()
	// The parent's SubConn drops its health listener on every connectivity
	// change: so do we, and the child registers a new one when READY.
	sc.mu.Lock()
	sc.resetHealthLocked(nil)
	sc.mu.Unlock()
	if listener != nil && !b.childClosed {
		listener(s)
	}
}

// updateHealth forwards a health update to the child's health listener,
// unless the endpoint is ejected: the child then sees TRANSIENT_FAILURE.
func (b *outlierBalancer) updateHealth(sc *subConn, gen uint64, s balancer.SubConnState) {
	b.childMu.Lock()
	defer b.childMu.Unlock()
	if b.childClosed {
		return
	}
	sc.mu.Lock()
	if gen != sc.healthGen {
		sc.mu.Unlock()
		return
	}
	sc.latestHealth, sc.haveHealth = s, true
	listener, update := sc.healthListener, sc.pendingLocked(true)
	sc.mu.Unlock()
	if update != nil {
		listener(*update)
	}
}

// syncChild tells the child's health listeners about ejections and
// unejections. It reads the current state, so calls may race: the last one
// leaves the child in line with it.
func (b *outlierBalancer) syncChild() {
	b.childMu.Lock()
	defer b.childMu.Unlock()
	if b.childClosed {
		return
	}
	b.mu.Lock()
	scs := make([]*subConn, 0, len(b.subConns))
	for sc := range b.subConns {
		scs = append(scs, sc)
	}
	b.mu.Unlock()
	for _, sc := range scs {
		sc.mu.Lock()
		listener, update := sc.healthListener, sc.pendingLocked(false)
		sc.mu.Unlock()
		if update != nil {
			listener(*update)
		}
	}
}

// record counts the result of an RPC on sc, and tells the child when its
// endpoint is ejected.
func (b *outlierBalancer) record(sc *subConn, ctx context.Context, di balancer.DoneInfo) {
	result := classify(ctx, di)
	if result == detection.Ignored {
		return
	}
	ep := sc.ep.Load()
	if ep == nil {
		return
	}
	if b.detector.Record(ep, result) {
		ejectionsMetric.Record(b.ClientConn.MetricsRecorder(), 1, b.opts.Target.String())
		b.syncChild()
	}
}

// startTimerLocked (re)starts the interval timer, for the detector's next
// interval; it stops it when detection is off.
func (b *outlierBalancer) startTimerLocked() {
	b.stopTimerLocked()
	wait, ok := b.detector.Wait()
	if !ok || b.closed {
		return
	}
	gen := b.timerGen
	b.timer = timeAfterFunc(wait, func() { b.tick(gen) })
}

func (b *outlierBalancer) stopTimerLocked() {
	b.timerGen++
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
}

// tick runs the detector's interval checks, tells the child of the
// unejections, and rearms the timer.
func (b *outlierBalancer) tick(gen uint64) {
	b.mu.Lock()
	if b.closed || gen != b.timerGen {
		b.mu.Unlock()
		return
	}
	changed := b.detector.Tick()
	b.startTimerLocked()
	b.mu.Unlock()
	if changed {
		b.syncChild()
	}
}

// subConn wraps a SubConn of the parent for the child.
type subConn struct {
	balancer.SubConn
	b *outlierBalancer

	addr string                         // guarded by b.mu
	ep   atomic.Pointer[detection.Host] // the endpoint's state, written under b.mu; nil if unknown

	// mu guards the health state. Listeners are called with b.childMu held
	// and mu released.
	mu             sync.Mutex
	healthGen      uint64 // invalidates the parent's calls to replaced listeners
	healthListener func(balancer.SubConnState)
	latestHealth   balancer.SubConnState // as the parent last reported it
	haveHealth     bool
	childSeesOut   bool // the child's listener was last told TRANSIENT_FAILURE for an ejection
}

// out reports whether picks avoid the SubConn's endpoint.
func (sc *subConn) out() bool {
	ep := sc.ep.Load()
	return ep != nil && ep.Ejected()
}

func (sc *subConn) Shutdown() {
	sc.b.mu.Lock()
	delete(sc.b.subConns, sc)
	sc.b.mu.Unlock()
	sc.SubConn.Shutdown()
}

// RegisterHealthListener registers the child's health listener, and one of
// ours with the parent's SubConn that relays health updates, replacing
// them by TRANSIENT_FAILURE while the endpoint is ejected.
func (sc *subConn) RegisterHealthListener(listener func(balancer.SubConnState)) {
	sc.mu.Lock()
	gen := sc.resetHealthLocked(listener)
	sc.mu.Unlock()
	if listener == nil {
		sc.SubConn.RegisterHealthListener(nil)
		return
	}
	sc.SubConn.RegisterHealthListener(func(s balancer.SubConnState) { sc.b.updateHealth(sc, gen, s) })
}

func (sc *subConn) resetHealthLocked(listener func(balancer.SubConnState)) uint64 {
	sc.healthGen++
	sc.healthListener = listener
	sc.haveHealth = false
	sc.childSeesOut = false
	return sc.healthGen
}

// pendingLocked returns the health update the child's listener needs to
// match the endpoint's ejection, or nil. fresh says that a health update
// from the parent has just been stored.
func (sc *subConn) pendingLocked(fresh bool) *balancer.SubConnState {
	if sc.healthListener == nil {
		return nil
	}
	out := sc.out()
	switch {
	case out && !sc.childSeesOut:
		sc.childSeesOut = true
		return &balancer.SubConnState{ConnectivityState: connectivity.TransientFailure, ConnectionError: errEjected}
	case out:
		return nil // held back until unejection
	case sc.childSeesOut || fresh:
		sc.childSeesOut = false
		if !sc.haveHealth {
			return nil
		}
		s := sc.latestHealth
		return &s
	}
	return nil
}

func (sc *subConn) String() string {
	return fmt.Sprintf("outlier(%v)", sc.SubConn)
}

// picker wraps the child's picker. It is safe for concurrent use.
type picker struct {
	child balancer.Picker
}

// Pick asks the child for a SubConn, again (up to maxPicks in all) while it
// returns one whose endpoint is ejected, and attaches the counting of the
// RPC's result. It never blocks.
func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	for try := 1; ; try++ {
		res, err := p.child.Pick(info)
		if err != nil {
			return res, err
		}
		sc, ok := res.SubConn.(*subConn)
		if !ok {
			return res, nil
		}
		if sc.out() && try < maxPicks {
			if res.Done != nil {
				res.Done(balancer.DoneInfo{}) // as grpc does for picks it drops
			}
			continue
		}
		childDone, ctx := res.Done, info.Ctx
		res.SubConn = sc.SubConn
		res.Done = func(di balancer.DoneInfo) {
			if childDone != nil {
				childDone(di)
			}
			sc.b.record(sc, ctx, di)
		}
		return res, nil
	}
}

// classify maps an RPC result to an outcome, with the gRPC codes Envoy maps
// to HTTP 5xx as errors and the ones it maps to 502, 503 and 504 as gateway
// errors. Other codes are answers from a working server, so they count as
// successes. An RPC cancelled by the client does not count.
func classify(ctx context.Context, di balancer.DoneInfo) detection.Outcome {
	if di.Err == nil {
		if !di.BytesSent {
			return detection.Ignored // grpc dropped the pick before sending anything
		}
		return detection.Success
	}
	if ctx != nil && errors.Is(ctx.Err(), context.Canceled) {
		return detection.Ignored
	}
	switch status.Code(di.Err) {
	case codes.Canceled:
		return detection.Ignored
	case codes.Unavailable, codes.DeadlineExceeded:
		return detection.GatewayFailure
	case codes.Unknown, codes.Unimplemented, codes.Internal, codes.DataLoss:
		return detection.Failure
	}
	return detection.Success
}
