package recycle

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/trellismesh/trellis/internal/backoff"
)

// Name is the name under which the policy is registered with grpc-go's
// balancer registry, and the policy name in service configs and xDS
// TypedStruct type URLs ("type.googleapis.com/trellis_recycle").
const Name = "trellis_recycle"

var (
	logger = grpclog.Component("trellis_recycle")

	// Test knobs: the backoff between failed replacement attempts of one
	// SubConn is retryBackoffBase, doubling after each failure up to
	// retryBackoffMax, with ±20% jitter.
	retryBackoffBase = time.Second
	retryBackoffMax  = 30 * time.Second
	timeNow          = time.Now
	// testPicked, if set, is called with each connection Pick returns,
	// before Pick lets go of it.
	testPicked func(*conn)
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
	b := &recycleBalancer{
		ClientConn: cc,
		opts:       opts,
		subConns:   map[*subConn]struct{}{},
		retiring:   map[*conn]struct{}{},
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	b.wg.Go(b.run)
	logger.Infof("recycle: [%p] created", b)
	return b
}

// recycleBalancer is the balancer.Balancer of the policy, and the
// balancer.ClientConn of its child: it embeds the parent ClientConn and
// overrides NewSubConn, to wrap SubConns, and UpdateState, to wrap pickers.
//
// Every call into the child (the balancer API, and SubConn state and health
// updates) is made from grpc's serializer, which runs one at a time. The
// worker goroutine (run) creates replacement connections and shuts down
// retired ones; it never calls the child.
type recycleBalancer struct {
	balancer.ClientConn
	opts balancer.BuildOptions

	// max is Config.MaxRequestsPerConnection, 0 before the first config.
	max atomic.Uint32

	// Used only from grpc's serializer.
	child     balancer.Balancer // nil before the first config
	childName string

	// stateMu orders the child's state updates with their re-sending after
	// a connection switch.
	stateMu   sync.Mutex
	state     balancer.State // the child's latest, picker wrapped
	haveState bool

	mu       sync.Mutex
	closed   bool
	subConns map[*subConn]struct{}
	retiring map[*conn]struct{} // retired, to shut down once no Pick holds them

	wake chan struct{} // buffered 1: the worker has something to do
	done chan struct{} // closed by Close: the worker exits
	wg   sync.WaitGroup
}

func (b *recycleBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	cfg, ok := s.BalancerConfig.(*Config)
	if !ok || cfg == nil {
		logger.Errorf("recycle: [%p] received config of unexpected type %T", b, s.BalancerConfig)
		return balancer.ErrBadResolverState
	}
	if cfg.MaxRequestsPerConnection == 0 {
		return fmt.Errorf("recycle: maxRequestsPerConnection is 0, must be at least 1")
	}
	bld := balancer.Get(cfg.ChildPolicy.Name)
	if cfg.ChildPolicy.Name == "" || bld == nil {
		return fmt.Errorf("recycle: child policy %q is not registered", cfg.ChildPolicy.Name)
	}
	if b.isClosed() {
		return nil
	}
	if old := b.max.Swap(cfg.MaxRequestsPerConnection); old != cfg.MaxRequestsPerConnection {
		// Connections may be over a lowered limit already.
		b.kick()
	}
	if b.child == nil || b.childName != bld.Name() {
		if b.child != nil {
			logger.Infof("recycle: [%p] switching child policy from %s to %s", b, b.childName, bld.Name())
			b.child.Close()
		}
		b.child = bld.Build(b, b.opts)
		b.childName = bld.Name()
	}
	return b.child.UpdateClientConnState(balancer.ClientConnState{
		ResolverState:  s.ResolverState,
		BalancerConfig: cfg.ChildPolicy.Config,
	})
}

func (b *recycleBalancer) ResolverError(err error) {
	switch {
	case b.isClosed():
	case b.child == nil:
		b.ClientConn.UpdateState(balancer.State{
			ConnectivityState: connectivity.TransientFailure,
			Picker:            base.NewErrPicker(fmt.Errorf("recycle: name resolver error: %w", err)),
		})
	default:
		b.child.ResolverError(err)
	}
}

func (b *recycleBalancer) UpdateSubConnState(sc balancer.SubConn, s balancer.SubConnState) {
	logger.Errorf("recycle: [%p] UpdateSubConnState(%v, %+v) called unexpectedly", b, sc, s)
}

func (b *recycleBalancer) ExitIdle() {
	if b.child != nil && !b.isClosed() {
		b.child.ExitIdle()
	}
}

// Close closes the child, which shuts its SubConns down, stops the worker
// and waits for it, and shuts down any connection still draining. It is
// idempotent.
func (b *recycleBalancer) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()

	if b.child != nil {
		b.child.Close()
	}
	close(b.done)
	b.wg.Wait()

	// The channel is closing or going idle: no RPC will use these.
	b.mu.Lock()
	var left []*conn
	for c := range b.retiring {
		left = append(left, c)
	}
	b.retiring = nil
	for w := range b.subConns {
		logger.Warningf("recycle: [%p] child closed without shutting down %v", b, w)
		left = append(left, w.takeAll()...)
	}
	b.subConns = nil
	b.mu.Unlock()
	for _, c := range left {
		c.shutdown()
	}
	logger.Infof("recycle: [%p] closed", b)
}

func (b *recycleBalancer) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// kick wakes the worker up without blocking.
func (b *recycleBalancer) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// NewSubConn creates a SubConn for the child: a wrapper around a real
// SubConn that it replaces, after MaxRequestsPerConnection picks, by a new
// one to the same addresses.
func (b *recycleBalancer) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	w := &subConn{
		b:        b,
		listener: opts.StateListener,
		opts:     opts,
		addrs:    append([]resolver.Address(nil), addrs...),
	}
	w.opts.StateListener = nil
	c := &conn{state: connectivity.Idle}
	opts.StateListener = func(s balancer.SubConnState) { b.updateConnState(w, c, s) }
	//lint:ignore SA1019 the policy implements balancer.ClientConn for its child, and forwards.
	sc, err := b.ClientConn.NewSubConn(addrs, opts)
	if err != nil {
		return nil, err
	}
	c.sc = sc
	w.SubConn = sc
	w.cur.Store(c)
	b.mu.Lock()
	if !b.closed {
		b.subConns[w] = struct{}{}
	}
	b.mu.Unlock()
	return w, nil
}

// RemoveSubConn is deprecated in balancer.ClientConn; it shuts sc down.
func (b *recycleBalancer) RemoveSubConn(sc balancer.SubConn) {
	sc.Shutdown()
}

// UpdateAddresses is deprecated in balancer.ClientConn; it unwraps sc.
func (b *recycleBalancer) UpdateAddresses(sc balancer.SubConn, addrs []resolver.Address) {
	if w, ok := sc.(*subConn); ok {
		w.UpdateAddresses(addrs)
		return
	}
	//lint:ignore SA1019 forwarded for a child that still calls it.
	b.ClientConn.UpdateAddresses(sc, addrs)
}

// UpdateState wraps the child's picker to count picks and return the
// current real SubConn of each wrapper.
func (b *recycleBalancer) UpdateState(s balancer.State) {
	if s.Picker != nil {
		s.Picker = &picker{child: s.Picker, b: b}
	}
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	b.state, b.haveState = s, true
	b.ClientConn.UpdateState(s)
}

// resendState sends the child's latest state to the parent again: a new
// picker generation makes grpc retry the picks that got a connection
// switched away from.
func (b *recycleBalancer) resendState() {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	if b.haveState && !b.isClosed() {
		b.ClientConn.UpdateState(b.state)
	}
}

// updateConnState handles a connectivity state update of the real SubConn
// c of w: forwarded to the child if c is w's current connection; for a
// replacement, the start of its promotion or its failure.
func (b *recycleBalancer) updateConnState(w *subConn, c *conn, s balancer.SubConnState) {
	w.mu.Lock()
	switch {
	case c == w.cur.Load():
		c.state = s.ConnectivityState
		if s.ConnectivityState == connectivity.Ready {
			// A new transport: a new connection.
			c.picks.Store(0)
		}
		var drop *conn
		if s.ConnectivityState != connectivity.Ready {
			// The switch needs the current connection READY throughout.
			drop = w.takeNextLocked()
		}
		// grpc drops health listeners on every connectivity change: the
		// child registers a new one when READY.
		w.health = nil
		w.mu.Unlock()
		drop.shutdown()
		if !b.isClosed() && w.listener != nil {
			w.listener(s)
		}

	case c == w.dead && s.ConnectivityState == connectivity.Shutdown:
		w.mu.Unlock()
		if !b.isClosed() && w.listener != nil {
			w.listener(s)
		}

	case c == w.next:
		c.state = s.ConnectivityState
		switch s.ConnectivityState {
		case connectivity.Ready:
			w.mu.Unlock()
			// Promoted when healthy: at once, without health checking.
			c.sc.RegisterHealthListener(func(s balancer.SubConnState) { b.updateHealth(w, c, s) })
		case connectivity.TransientFailure, connectivity.Idle:
			w.failLocked(c, s.ConnectionError)
			w.mu.Unlock()
			c.shutdown()
			b.kick()
		default:
			w.mu.Unlock()
		}

	default: // retired
		w.mu.Unlock()
	}
}

// updateHealth handles a health update of the real SubConn c of w:
// forwarded to the child's health listener if c is w's current connection;
// for a replacement, its promotion or its failure.
func (b *recycleBalancer) updateHealth(w *subConn, c *conn, s balancer.SubConnState) {
	w.mu.Lock()
	switch {
	case c == w.cur.Load():
		listener := w.health
		if listener != nil {
			w.childHealth = s.ConnectivityState
		}
		w.mu.Unlock()
		if listener != nil && !b.isClosed() {
			listener(s)
		}
	case c == w.next && c.state == connectivity.Ready:
		switch s.ConnectivityState {
		case connectivity.Ready:
			w.mu.Unlock()
			b.promote(w, c)
		case connectivity.TransientFailure:
			w.failLocked(c, s.ConnectionError)
			w.mu.Unlock()
			c.shutdown()
			b.kick()
		default: // CONNECTING: the health check has not answered yet
			w.mu.Unlock()
		}
	default:
		w.mu.Unlock()
	}
}

// promote makes the READY and healthy replacement c w's current
// connection, and drains the old one. The child sees nothing: w stays READY.
func (b *recycleBalancer) promote(w *subConn, c *conn) {
	w.mu.Lock()
	old := w.cur.Load()
	if w.shutdown || w.next != c || old == nil || old.state != connectivity.Ready {
		w.mu.Unlock()
		return
	}
	w.next = nil
	w.failures, w.retryAt = 0, time.Time{}
	// c's health listener, registered when it became READY, now serves the
	// child's, which must hear that c is healthy if it last heard otherwise.
	w.cur.Store(c)
	listener := w.health
	tell := listener != nil && w.childHealth != connectivity.Ready
	if tell {
		w.childHealth = connectivity.Ready
	}
	w.mu.Unlock()
	if tell && !b.isClosed() {
		listener(balancer.SubConnState{ConnectivityState: connectivity.Ready})
	}
	logger.Infof("recycle: [%p] %v: replaced connection %v after %d picks, draining it", b, w, old.sc, old.picks.Load())
	// New picks go to c. grpc retries a pick whose connection has gone by
	// the time it uses it only once the picker changes: change it before
	// the old connection goes.
	b.resendState()
	b.retire(old)
}

// retire shuts c down once no Pick holds it; Pick no longer returns it,
// as it is no longer the current connection of its wrapper.
func (b *recycleBalancer) retire(c *conn) {
	if c == nil {
		return
	}
	c.retired.Store(true)
	if c.pinned.Load() == 0 {
		c.shutdown()
		return
	}
	b.mu.Lock()
	if b.retiring != nil {
		b.retiring[c] = struct{}{}
	}
	b.mu.Unlock()
	// The last Pick may have let go before c was listed.
	b.kick()
}

// run is the worker: it starts replacements for connections that have
// carried their share of RPCs, retries failed ones after their backoff, and
// shuts down retired connections no Pick holds any more.
func (b *recycleBalancer) run() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-b.wake:
		case <-timer.C:
		}
		next := b.work()
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(next.Sub(timeNow()))
		}
	}
}

// work does one round of the worker's jobs, and returns when it needs to
// run again for a retry, or the zero time.
func (b *recycleBalancer) work() time.Time {
	b.mu.Lock()
	var free []*conn
	for c := range b.retiring {
		if c.pinned.Load() == 0 {
			free = append(free, c)
			delete(b.retiring, c)
		}
	}
	ws := make([]*subConn, 0, len(b.subConns))
	for w := range b.subConns {
		ws = append(ws, w)
	}
	b.mu.Unlock()
	for _, c := range free {
		c.shutdown()
	}

	limit := int64(b.max.Load())
	now := timeNow()
	var next time.Time
	for _, w := range ws {
		w.mu.Lock()
		c := w.cur.Load()
		due := limit > 0 && !w.shutdown && c != nil && w.next == nil &&
			c.state == connectivity.Ready && c.picks.Load() >= limit
		if due && now.Before(w.retryAt) {
			if next.IsZero() || w.retryAt.Before(next) {
				next = w.retryAt
			}
			due = false
		}
		w.mu.Unlock()
		if due {
			b.startReplacement(w, c)
		}
	}
	return next
}

// startReplacement creates and connects a replacement for w's current
// connection cur.
func (b *recycleBalancer) startReplacement(w *subConn, cur *conn) {
	w.mu.Lock()
	if w.shutdown || w.cur.Load() != cur || w.next != nil {
		w.mu.Unlock()
		return
	}
	c := &conn{state: connectivity.Idle}
	w.next = c
	addrs, opts := w.addrs, w.opts
	w.mu.Unlock()

	opts.StateListener = func(s balancer.SubConnState) { b.updateConnState(w, c, s) }
	//lint:ignore SA1019 the policy creates SubConns on its parent.
	sc, err := b.ClientConn.NewSubConn(addrs, opts)
	w.mu.Lock()
	if err != nil {
		if w.next == c {
			w.failLocked(c, err)
		}
		w.mu.Unlock()
		b.kick() // for the worker to set its timer for the retry
		return
	}
	c.sc = sc
	stale := w.next != c // w shut down, its addresses changed, or cur lost
	w.mu.Unlock()
	if stale {
		sc.Shutdown()
		return
	}
	logger.Infof("recycle: [%p] %v: connection %v carried %d picks, connecting %v to replace it", b, w, cur.sc, cur.picks.Load(), sc)
	sc.Connect()
}

// conn is one real SubConn, with its pick count.
type conn struct {
	sc balancer.SubConn // set before any state update or pick

	picks   atomic.Int64 // since the connection became READY
	pinned  atomic.Int32 // Picks holding the conn
	retired atomic.Bool  // no longer current: shut down when unpinned
	shut    atomic.Bool  // Shutdown called

	state connectivity.State // guarded by the wrapper's mu
}

// shutdown shuts the real SubConn down, once; nil-safe.
func (c *conn) shutdown() {
	if c == nil || c.sc == nil || !c.shut.CompareAndSwap(false, true) {
		return
	}
	c.sc.Shutdown()
}

// subConn is the SubConn the child sees: a wrapper around its current real
// SubConn, and a replacement while one connects.
type subConn struct {
	// SubConn is the first real SubConn. It only satisfies the embedding
	// requirement of balancer.SubConn: every method is overridden.
	balancer.SubConn

	b        *recycleBalancer
	listener func(balancer.SubConnState) // the child's
	opts     balancer.NewSubConnOptions  // for replacements; StateListener nil

	// cur is the real SubConn picks return; nil once shut down. Written
	// under mu.
	cur atomic.Pointer[conn]

	mu     sync.Mutex
	addrs  []resolver.Address
	next   *conn                       // the replacement being connected
	dead   *conn                       // cur when the child shut w down
	health func(balancer.SubConnState) // the child's health listener
	// childHealth is the state the child's health listener last heard, or
	// IDLE if none yet.
	childHealth connectivity.State
	failures    int       // replacement attempts failed in a row
	retryAt     time.Time // no replacement attempt before
	shutdown    bool
}

// takeNextLocked abandons the replacement, and returns it to shut down.
// Its SubConn may not exist yet: startReplacement then shuts it down.
func (w *subConn) takeNextLocked() *conn {
	c := w.next
	w.next = nil
	return c
}

// failLocked abandons the replacement c after a failure, and sets the time
// of the next attempt.
func (w *subConn) failLocked(c *conn, err error) {
	w.next = nil
	w.failures++
	d := backoff.Exponential{Config: grpcbackoff.Config{
		BaseDelay: retryBackoffBase, Multiplier: 2, Jitter: 0.2, MaxDelay: retryBackoffMax,
	}}.Backoff(w.failures - 1)
	w.retryAt = timeNow().Add(d)
	logger.Warningf("recycle: [%p] %v: replacement connection failed (%d in a row), retrying in %v: %v", w.b, w, w.failures, d, err)
}

// takeAll marks w shut down and returns its real SubConns.
func (w *subConn) takeAll() []*conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.shutdown = true
	cur := w.cur.Load()
	w.cur.Store(nil)
	if cur != nil {
		w.dead = cur
		cur.retired.Store(true)
	}
	return []*conn{cur, w.takeNextLocked()}
}

// Shutdown shuts down the current connection, draining it like a replaced
// one, and any replacement.
func (w *subConn) Shutdown() {
	w.mu.Lock()
	if w.shutdown {
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	b := w.b
	b.mu.Lock()
	delete(b.subConns, w)
	b.mu.Unlock()
	conns := w.takeAll()
	conns[1].shutdown()
	b.retire(conns[0])
}

// Connect connects the current connection.
func (w *subConn) Connect() {
	if c := w.cur.Load(); c != nil {
		c.sc.Connect()
	}
}

// UpdateAddresses updates the addresses of the current connection, and of
// later ones; a replacement connecting to the old addresses is abandoned.
//
// Deprecated: as balancer.SubConn.UpdateAddresses; forwarded for a child
// that still calls it.
func (w *subConn) UpdateAddresses(addrs []resolver.Address) {
	w.mu.Lock()
	w.addrs = append([]resolver.Address(nil), addrs...)
	drop := w.takeNextLocked()
	c := w.cur.Load()
	w.mu.Unlock()
	drop.shutdown()
	if c != nil {
		c.sc.UpdateAddresses(addrs)
	}
	// A connection over the limit gets a replacement to the new addresses.
	w.b.kick()
}

// GetOrBuildProducer gets or builds a producer on the current connection.
// It does not follow replacements.
func (w *subConn) GetOrBuildProducer(pb balancer.ProducerBuilder) (balancer.Producer, func()) {
	if c := w.cur.Load(); c != nil {
		return c.sc.GetOrBuildProducer(pb)
	}
	return w.SubConn.GetOrBuildProducer(pb)
}

// RegisterHealthListener registers the child's health listener. It hears
// the health of the current connection, and of each replacement from its
// promotion on.
func (w *subConn) RegisterHealthListener(listener func(balancer.SubConnState)) {
	w.mu.Lock()
	w.health, w.childHealth = listener, connectivity.Idle // nothing heard yet
	c := w.cur.Load()
	w.mu.Unlock()
	if c == nil {
		return
	}
	if listener == nil {
		c.sc.RegisterHealthListener(nil)
		return
	}
	c.sc.RegisterHealthListener(func(s balancer.SubConnState) { w.b.updateHealth(w, c, s) })
}

func (w *subConn) String() string {
	return fmt.Sprintf("recycle(%v)", w.SubConn)
}

// pin returns w's current connection, held so that it is not shut down
// until unpin; nil if w is shut down. It never blocks: it retries only if
// the current connection has just been replaced.
func (w *subConn) pin() *conn {
	for {
		c := w.cur.Load()
		if c == nil {
			return nil
		}
		c.pinned.Add(1)
		// retire sets retired after replacing cur, then reads pinned: one
		// of the two sees the other.
		if !c.retired.Load() {
			return c
		}
		w.b.unpin(c)
	}
}

func (b *recycleBalancer) unpin(c *conn) {
	if c.pinned.Add(-1) == 0 && c.retired.Load() {
		b.kick()
	}
}

// picker wraps the child's picker. It is safe for concurrent use.
type picker struct {
	child balancer.Picker
	b     *recycleBalancer
}

// Pick asks the child for a SubConn, counts the pick on its current
// connection, and returns that connection. It never blocks.
func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	res, err := p.child.Pick(info)
	if err != nil {
		return res, err
	}
	w, ok := res.SubConn.(*subConn)
	if !ok {
		return res, nil
	}
	c := w.pin()
	if c == nil {
		// The child's picker is stale; it sends a new one after shutting
		// the SubConn down.
		if res.Done != nil {
			res.Done(balancer.DoneInfo{}) // as grpc does for picks it drops
		}
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	}
	if c.picks.Add(1) == int64(p.b.max.Load()) {
		p.b.kick()
	}
	res.SubConn = c.sc
	if testPicked != nil {
		testPicked(c)
	}
	p.b.unpin(c)
	return res, nil
}
