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
		endpoints:  resolver.NewEndpointMap[*endpoint](),
		addrs:      map[string]*endpoint{},
		subConns:   map[*subConn]struct{}{},
	}
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

	mu        sync.Mutex
	closed    bool
	cfg       *Config // nil before the first config
	endpoints *resolver.EndpointMap[*endpoint]
	addrs     map[string]*endpoint // by address, for SubConns created by the child
	subConns  map[*subConn]struct{}
	suspended bool // fewer than MinHealthPercent of the endpoints not ejected
	timer     *time.Timer
	interval  time.Duration // of timer
	timerGen  uint64        // invalidates the callbacks of stopped timers
}

// endpoint is the outlier state of one endpoint. Fields are guarded by
// outlierBalancer.mu, except out.
type endpoint struct {
	name               string
	consecutiveErrors  uint32
	consecutiveGateway uint32
	ejected            bool
	ejectedAt          time.Time
	multiplier         int  // ejections in a row, decaying each interval not ejected
	gone               bool // no longer in the resolver state

	// out is ejected && !suspended: whether picks avoid the endpoint. The
	// picker reads it without locks.
	out atomic.Bool
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
	b.cfg = cfg
	b.updateEndpointsLocked(s.ResolverState)
	if !cfg.detecting() {
		for _, ep := range b.endpoints.All() {
			ep.consecutiveErrors, ep.consecutiveGateway = 0, 0
			ep.ejected, ep.ejectedAt, ep.multiplier = false, time.Time{}, 0
		}
	}
	b.updateOutLocked()
	switch {
	case !cfg.detecting():
		b.stopTimerLocked()
	case b.timer == nil || b.interval != cfg.interval():
		b.startTimerLocked()
	}
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
	endpoints := resolver.NewEndpointMap[*endpoint]()
	addrs := map[string]*endpoint{}
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
			ep = &endpoint{name: "[" + strings.Join(names, " ") + "]"}
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
	for e, ep := range b.endpoints.All() {
		if _, ok := endpoints.Get(e); !ok {
			ep.gone = true
			ep.out.Store(false)
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

// record counts the result of an RPC on sc, and ejects its endpoint when
// it reaches a threshold.
func (b *outlierBalancer) record(sc *subConn, ctx context.Context, di balancer.DoneInfo) {
	result := classify(ctx, di)
	if result == ignored {
		return
	}
	ep := sc.ep.Load()
	if ep == nil {
		return
	}
	b.mu.Lock()
	if b.closed || b.cfg == nil || ep.gone || ep.ejected {
		b.mu.Unlock()
		return
	}
	switch result {
	case succeeded:
		ep.consecutiveErrors, ep.consecutiveGateway = 0, 0
	case serverError:
		ep.consecutiveErrors++
		ep.consecutiveGateway = 0
	case gatewayError:
		ep.consecutiveErrors++
		ep.consecutiveGateway++
	}
	var reason string
	switch cfg := b.cfg; {
	case cfg.ConsecutiveErrors > 0 && ep.consecutiveErrors >= cfg.ConsecutiveErrors:
		reason = fmt.Sprintf("%d consecutive errors", ep.consecutiveErrors)
	case cfg.ConsecutiveGatewayErrors > 0 && ep.consecutiveGateway >= cfg.ConsecutiveGatewayErrors:
		reason = fmt.Sprintf("%d consecutive gateway errors", ep.consecutiveGateway)
	}
	changed := false
	if reason != "" {
		// Start counting afresh whether or not the ejection is allowed,
		// as Envoy does.
		ep.consecutiveErrors, ep.consecutiveGateway = 0, 0
		changed = b.ejectLocked(ep, reason)
	}
	b.mu.Unlock()
	if changed {
		b.syncChild()
	}
}

// ejectLocked ejects ep unless MaxEjectionPercent forbids it, and reports
// whether it did.
func (b *outlierBalancer) ejectLocked(ep *endpoint, reason string) bool {
	total, ejected := b.endpoints.Len(), b.numEjectedLocked()
	maxPercent := int(b.cfg.MaxEjectionPercent)
	if maxPercent == 0 || (ejected > 0 && (ejected+1)*100 > maxPercent*total) {
		logger.Infof("outlier: [%p] endpoint %s had %s; not ejected: %d of %d endpoints are ejected, maxEjectionPercent is %d", b, ep.name, reason, ejected, total, maxPercent)
		return false
	}
	ep.ejected = true
	ep.ejectedAt = timeNow()
	ep.multiplier++
	logger.Infof("outlier: [%p] ejecting endpoint %s for %v after %s", b, ep.name, b.cfg.ejectionTime(ep.multiplier), reason)
	ejectionsMetric.Record(b.ClientConn.MetricsRecorder(), 1, b.opts.Target.String())
	b.updateOutLocked()
	return true
}

func (b *outlierBalancer) numEjectedLocked() int {
	n := 0
	for _, ep := range b.endpoints.All() {
		if ep.ejected {
			n++
		}
	}
	return n
}

// updateOutLocked recomputes whether ejection is suspended by
// MinHealthPercent, and which endpoints picks avoid.
func (b *outlierBalancer) updateOutLocked() {
	total, ejected := b.endpoints.Len(), b.numEjectedLocked()
	suspended := b.cfg.MinHealthPercent > 0 && (total-ejected)*100 < int(b.cfg.MinHealthPercent)*total
	if suspended != b.suspended {
		b.suspended = suspended
		if suspended {
			logger.Infof("outlier: [%p] ejection suspended: %d of %d endpoints are ejected, minHealthPercent is %d", b, ejected, total, b.cfg.MinHealthPercent)
		} else {
			logger.Infof("outlier: [%p] ejection resumed: %d of %d endpoints are ejected", b, ejected, total)
		}
	}
	for _, ep := range b.endpoints.All() {
		ep.out.Store(ep.ejected && !suspended)
	}
}

// startTimerLocked (re)starts the interval timer.
func (b *outlierBalancer) startTimerLocked() {
	b.stopTimerLocked()
	gen := b.timerGen
	b.interval = b.cfg.interval()
	b.timer = timeAfterFunc(b.interval, func() { b.tick(gen) })
}

func (b *outlierBalancer) stopTimerLocked() {
	b.timerGen++
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
}

// tick unejects the endpoints whose ejection time has passed, lets the
// multipliers of the others decay, and rearms the timer.
func (b *outlierBalancer) tick(gen uint64) {
	b.mu.Lock()
	if b.closed || gen != b.timerGen {
		b.mu.Unlock()
		return
	}
	now := timeNow()
	changed := false
	for _, ep := range b.endpoints.All() {
		switch {
		case ep.ejected && !now.Before(ep.ejectedAt.Add(b.cfg.ejectionTime(ep.multiplier))):
			ep.ejected = false
			ep.consecutiveErrors, ep.consecutiveGateway = 0, 0
			changed = true
			logger.Infof("outlier: [%p] unejecting endpoint %s", b, ep.name)
		case !ep.ejected && ep.multiplier > 0:
			ep.multiplier--
		}
	}
	if changed {
		b.updateOutLocked()
	}
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

	addr string                   // guarded by b.mu
	ep   atomic.Pointer[endpoint] // written under b.mu; nil if unknown

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
	return ep != nil && ep.out.Load()
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

// outcome is how an RPC result counts.
type outcome int

const (
	ignored      outcome = iota // cancelled by the client, or never sent
	succeeded                   // resets the consecutive counts
	serverError                 // a 5xx other than a gateway error
	gatewayError                // 502, 503, 504: also a 5xx
)

// classify maps an RPC result to an outcome, with the gRPC codes Envoy maps
// to HTTP 5xx as errors and the ones it maps to 502, 503 and 504 as gateway
// errors. Other codes are answers from a working server, so they count as
// successes. An RPC cancelled by the client does not count.
func classify(ctx context.Context, di balancer.DoneInfo) outcome {
	if di.Err == nil {
		if !di.BytesSent {
			return ignored // grpc dropped the pick before sending anything
		}
		return succeeded
	}
	if ctx != nil && errors.Is(ctx.Err(), context.Canceled) {
		return ignored
	}
	switch status.Code(di.Err) {
	case codes.Canceled:
		return ignored
	case codes.Unavailable, codes.DeadlineExceeded:
		return gatewayError
	case codes.Unknown, codes.Unimplemented, codes.Internal, codes.DataLoss:
		return serverError
	}
	return succeeded
}
