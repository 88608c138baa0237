package pick

import (
	"errors"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/trellismesh/trellis/internal/backoff"
	"github.com/trellismesh/trellis/internal/outlier"
	"github.com/trellismesh/trellis/internal/peakewma"
)

// Names of the policies, the values of Config.Policy.
const (
	RoundRobin   = "round_robin"
	LeastRequest = "least_request"
	Random       = "random"
	RingHash     = "ring_hash"
	EWMA         = "ewma"
)

// Defaults of Config's zero fields.
const (
	defaultChoiceCount = 2
	maxChoiceCount     = 10 // grpc-go's cap
	defaultMinRingSize = 1024
	ringSizeCap        = 4096 // grpc-go's default cap on ring sizes
	defaultMaxRequests = 1024 // grpc-go's default circuit breaker
)

var (
	// ErrNoEndpoints is returned by Pick when the cluster has no endpoint,
	// or every endpoint is ejected.
	ErrNoEndpoints = errors.New("pick: no endpoints available")
	// ErrOverloaded is returned by Pick when Config.MaxRequests requests
	// are outstanding in the cluster (the circuit breaker is open).
	ErrOverloaded = errors.New("pick: too many outstanding requests")
)

// timeNow and randUint64 are replaced by tests.
var (
	timeNow    = time.Now
	randUint64 = rand.Uint64
)

// Endpoint is one address of the cluster. Its zero weights are 1.
type Endpoint struct {
	// Address is the endpoint's "host:port"; it identifies the endpoint
	// across Updates and is the ring hash key. Required; of endpoints with
	// the same Address, the first is used.
	Address string
	// Weight is the endpoint's weight within its locality. If zero, 1.
	Weight uint32
	// Locality is the endpoint's "region/zone/subzone"; endpoints with the
	// same Locality and Priority share LocalityWeight. May be empty.
	Locality string
	// LocalityWeight is the weight of the endpoint's locality within its
	// priority; the first endpoint of a locality sets it. If zero, 1.
	LocalityWeight uint32
	// Priority is the endpoint's priority, 0 the most preferred.
	Priority uint32
}

// Config configures a Picker. The zero value is round robin with grpc-go's
// circuit breaker of 1024 requests and no outlier ejection.
type Config struct {
	// Policy is RoundRobin, LeastRequest, Random, RingHash or EWMA. If
	// empty or unknown, RoundRobin.
	Policy string
	// ChoiceCount is how many endpoints LeastRequest samples. If below 2,
	// 2; above 10, 10 (grpc-go's bounds).
	ChoiceCount int
	// MinRingSize is RingHash's minimum number of ring entries. If zero,
	// 1024; above 4096, 4096 (grpc-go's cap).
	MinRingSize uint64
	// MaxRequests is the most requests outstanding in the cluster at once
	// (Envoy's circuit_breakers max_requests, Istio's http2MaxRequests).
	// If zero, 1024, grpc-go's default.
	MaxRequests uint32
	// Outlier configures outlier ejection. If nil, no endpoint is ejected.
	Outlier *Outlier
	// Decay is EWMA's time constant τ: a response faster than an
	// endpoint's estimate moves it by 1-exp(-Δt/τ). If zero, 10s.
	Decay time.Duration
	// DefaultRTT is EWMA's estimate of an endpoint that has not responded
	// yet. If zero, the mean estimate of the endpoints that have, or 10ms
	// when none has.
	DefaultRTT time.Duration
	// FailurePenalty is the least latency EWMA counts a Failure or
	// GatewayFailure as. If zero, 1s.
	FailurePenalty time.Duration
	// OnEject, if not nil, is called with the address of each endpoint
	// outlier detection ejects, for metrics. It must not call the Picker.
	OnEject func(address string)
}

func (c Config) ewmaParams() peakewma.Params {
	return peakewma.Params{Decay: c.Decay, DefaultRTT: c.DefaultRTT, FailurePenalty: c.FailurePenalty}
}

// Result is the outcome of a request, given to the done function of Pick.
// The zero value is Success.
type Result int

const (
	// Success resets the endpoint's consecutive error counts.
	Success Result = iota
	// Failure is an HTTP 5xx other than 502, 503 and 504, or an error
	// of the endpoint that is not a gateway failure (Envoy's 5xx).
	Failure
	// GatewayFailure is HTTP 502, 503 or 504, a connection failure or a
	// timeout; it counts both as an error and as a gateway error.
	GatewayFailure
	// Ignored is an outcome that says nothing of the endpoint, such as a
	// request the caller cancelled; the counts are left as they are.
	Ignored
	// Unreachable is a connection to the endpoint that could not be made
	// (refused, unreachable). It counts as a GatewayFailure, and the
	// endpoint is not picked again — while any other is reachable — until
	// a backoff has passed (1 s, then 1.6 times longer each time in a row,
	// up to 2 minutes, jittered by 20 %), as grpc-go keeps a subchannel in
	// TRANSIENT_FAILURE out of its picks until it reconnects. A success
	// ends it.
	Unreachable
)

// unreachableBackoff is how long an unreachable endpoint stays out of
// picks: grpc-go's connection backoff (1 s, ×1.6, at most 2 min, ±20 %).
var unreachableBackoff = backoff.Exponential{Config: grpcbackoff.DefaultConfig}

// ResultForStatus classifies an HTTP status code as Envoy's outlier
// detection does.
func ResultForStatus(code int) Result {
	switch {
	case code == 502 || code == 503 || code == 504:
		return GatewayFailure
	case code >= 500 && code <= 599:
		return Failure
	}
	return Success
}

// Picker picks endpoints for requests. It is safe for concurrent use; Pick
// never blocks. Create it with New.
type Picker struct {
	outstanding atomic.Int64 // requests picked and not done, in the cluster
	// downUntil is the latest downUntil of the endpoints (unix
	// nanoseconds), so that Pick looks at the clock only while one may be
	// unreachable; 0: none.
	downUntil atomic.Int64
	snap      atomic.Pointer[snapshot]
	detector  *outlier.Detector // outlier ejection over eps; its lock is taken after mu

	mu     sync.Mutex // guards the fields below and the guarded fields of endpoints
	cfg    Config
	eps    []*endpoint // in the order given, without duplicates
	byAddr map[string]*endpoint
}

// endpoint is the state of one endpoint, kept across Updates.
type endpoint struct {
	Endpoint // guarded by Picker.mu

	pub         atomic.Pointer[Endpoint] // a copy of Endpoint, what Pick returns
	done        func(Result)             // created once, so Pick does not allocate
	est         *peakewma.Estimate       // latency estimate, used by EWMA
	host        *outlier.Host            // outlier state; Ejected is read without locks
	outstanding atomic.Int64
	downUntil   atomic.Int64 // unix nanoseconds until which the endpoint is unreachable; 0: reachable
	unreachable atomic.Int32 // connection failures in a row
	usable      bool         // guarded by Picker.mu: not ejected, as rebuildLocked last saw it
}

// snapshot is what Pick reads: the policy over the endpoints of the
// priority in use. It is immutable but for next.
type snapshot struct {
	policy      string
	ewma        peakewma.Params
	maxRequests int64
	choiceCount int
	eps         []*endpoint // round robin, least request, random: the usable endpoints
	scaled      []uint16    // stride scheduler weights; nil when all weights are equal
	cumulative  []float64   // random sampling by weight; nil when all weights are equal
	ring        []ringEntry // ring hash, over all endpoints of the priority
	next        atomic.Uint64
}

// New returns a Picker for eps with cfg.
func New(cfg Config, eps []Endpoint) *Picker {
	p := &Picker{
		byAddr:   map[string]*endpoint{},
		detector: outlier.New(outlier.WithClock(func() time.Time { return timeNow() })),
	}
	p.Update(cfg, eps)
	return p
}

// Update replaces the configuration and endpoints. Endpoints that stay (by
// Address) keep their outstanding requests, error counts and ejections;
// requests picked before the Update are counted when done as before.
func (p *Picker) Update(cfg Config, eps []Endpoint) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg = cfg
	byAddr := make(map[string]*endpoint, len(eps))
	list := make([]*endpoint, 0, len(eps))
	// New endpoints warm up from the estimates of those already known.
	now := timeNow().UnixNano()
	peers := make([]*peakewma.Estimate, 0, len(p.eps))
	for _, ep := range p.eps {
		peers = append(peers, ep.est)
	}
	for _, e := range eps {
		if _, dup := byAddr[e.Address]; dup {
			continue
		}
		e.Weight, e.LocalityWeight = max(e.Weight, 1), max(e.LocalityWeight, 1)
		ep := p.byAddr[e.Address]
		if ep == nil {
			ep = &endpoint{est: peakewma.New(cfg.ewmaParams(), now, peers), host: outlier.NewHost(e.Address)}
			ep.done = func(r Result) { p.finish(ep, r) }
		}
		ep.Endpoint = e
		ep.pub.Store(&e)
		byAddr[e.Address] = ep
		list = append(list, ep)
	}
	p.eps, p.byAddr = list, byAddr
	hosts := make([]*outlier.Host, len(list))
	for i, ep := range list {
		hosts[i] = ep.host
	}
	p.detector.Update(cfg.Outlier, hosts)
	p.rebuildLocked()
}

// Pick returns the endpoint for a request whose hash (used by RingHash
// only) is hash, and a function to call exactly once with the request's
// result when it ends; calling it again corrupts the counts. The error is
// ErrNoEndpoints or ErrOverloaded. With EWMA, the request's latency runs
// from Pick to done, and Pick allocates the done function that times it.
func (p *Picker) Pick(hash uint64) (ep Endpoint, done func(Result), err error) {
	if p.detector.Due() && p.mu.TryLock() {
		if p.detector.Tick() {
			p.rebuildLocked()
		}
		p.mu.Unlock()
	}
	s := p.snap.Load()
	if len(s.eps) == 0 && len(s.ring) == 0 {
		return Endpoint{}, nil, ErrNoEndpoints
	}
	e := s.choose(hash)
	if until := p.downUntil.Load(); until != 0 {
		e = p.reachable(s, e, hash, until)
	}
	if p.outstanding.Add(1) > s.maxRequests {
		p.outstanding.Add(-1)
		return Endpoint{}, nil, ErrOverloaded
	}
	e.outstanding.Add(1)
	if s.policy == EWMA {
		start, params := timeNow(), s.ewma
		e.est.Start()
		return *e.pub.Load(), func(r Result) { p.finishEWMA(e, params, start, r) }, nil
	}
	return *e.pub.Load(), e.done, nil
}

// choose picks an endpoint by the snapshot's policy; the snapshot has one.
func (s *snapshot) choose(hash uint64) *endpoint {
	switch s.policy {
	case RingHash:
		return s.pickRing(hash)
	case LeastRequest:
		return s.pickLeastRequest()
	case Random:
		return s.eps[s.sample()]
	case EWMA:
		return s.pickEWMA(timeNow())
	}
	return s.eps[s.nextIndex()]
}

// reachable returns e, or if e is unreachable another endpoint of the
// snapshot that is not, picked the same way; e if every one is. until is
// Picker.downUntil.
func (p *Picker) reachable(s *snapshot, e *endpoint, hash uint64, until int64) *endpoint {
	now := timeNow().UnixNano()
	if now >= until {
		p.downUntil.CompareAndSwap(until, 0) // every backoff has passed
		return e
	}
	n := len(s.eps)
	if s.policy == RingHash {
		n = len(s.ring)
	}
	for tries := 0; e.downUntil.Load() > now && tries < n; tries++ {
		hash = hash*0x9e3779b97f4a7c15 + 1 // ring hash: another point of the ring
		e = s.choose(hash)
	}
	if e.downUntil.Load() > now && s.policy != RingHash {
		// The policy kept choosing unreachable ones: take the first
		// reachable endpoint from a random start.
		start := int(randUint64() % uint64(len(s.eps)))
		for i := range s.eps {
			if c := s.eps[(start+i)%len(s.eps)]; c.downUntil.Load() <= now {
				return c
			}
		}
	}
	return e
}

// markUnreachable keeps ep out of picks for its backoff.
func (p *Picker) markUnreachable(ep *endpoint) {
	n := ep.unreachable.Add(1)
	d := unreachableBackoff.Backoff(int(n - 1))
	until := timeNow().Add(d).UnixNano()
	ep.downUntil.Store(until)
	for {
		cur := p.downUntil.Load()
		if cur >= until || p.downUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// finishEWMA is the done function of a request picked by EWMA: it feeds
// the request's latency to the endpoint's estimate, then counts it as
// finish does.
func (p *Picker) finishEWMA(ep *endpoint, params peakewma.Params, start time.Time, r Result) {
	now := timeNow()
	switch r {
	case Success:
		ep.est.Observe(params, now.UnixNano(), now.Sub(start))
	case Failure, GatewayFailure, Unreachable:
		ep.est.Fail(params, now.UnixNano(), now.Sub(start))
	default:
		ep.est.Cancel()
	}
	p.finish(ep, r)
}

// finish is an endpoint's done function.
func (p *Picker) finish(ep *endpoint, r Result) {
	ep.outstanding.Add(-1)
	p.outstanding.Add(-1)
	switch r {
	case Unreachable:
		p.markUnreachable(ep)
		r = GatewayFailure
	case Success:
		if ep.unreachable.Load() != 0 {
			ep.unreachable.Store(0)
			ep.downUntil.Store(0)
		}
	}
	if !p.detector.Record(ep.host, outcome(r)) {
		return
	}
	p.mu.Lock()
	p.rebuildLocked()
	onEject, addr := p.cfg.OnEject, ep.Address
	p.mu.Unlock()
	if onEject != nil {
		onEject(addr)
	}
}

// rebuildLocked publishes a new snapshot for the current endpoints and
// ejections.
func (p *Picker) rebuildLocked() {
	// One view of the ejections, which the detector may change meanwhile
	// (it is followed by another rebuild).
	for _, ep := range p.eps {
		ep.usable = !ep.host.Ejected()
	}
	usable := func(ep *endpoint) bool { return ep.usable }

	s := &snapshot{policy: p.cfg.Policy, ewma: p.cfg.ewmaParams(), maxRequests: int64(p.cfg.MaxRequests), choiceCount: p.cfg.ChoiceCount}
	if s.maxRequests == 0 {
		s.maxRequests = defaultMaxRequests
	}
	s.choiceCount = min(max(s.choiceCount, defaultChoiceCount), maxChoiceCount)
	// The lowest priority with an endpoint not ejected.
	prio, found := uint32(0), false
	for _, ep := range p.eps {
		if usable(ep) && (!found || ep.Priority < prio) {
			prio, found = ep.Priority, true
		}
	}
	var members []*endpoint
	for _, ep := range p.eps {
		if found && ep.Priority == prio {
			members = append(members, ep)
		}
	}
	switch s.policy {
	case RingHash:
		ringSize := p.cfg.MinRingSize
		if ringSize == 0 {
			ringSize = defaultMinRingSize
		}
		s.ring = newRing(members, weights(members), min(ringSize, ringSizeCap))
	case LeastRequest, Random, EWMA:
	default:
		s.policy = RoundRobin
	}
	if s.policy != RingHash {
		var live []*endpoint
		for _, ep := range members {
			if usable(ep) {
				live = append(live, ep)
			}
		}
		s.eps = live
		w := weights(live)
		if !allEqual(w) {
			s.scaled, s.cumulative = scaleWeights(w), cumulate(w)
		}
		if len(live) > 0 {
			s.next.Store(randUint64() % uint64(len(live)))
		}
	}
	p.snap.Store(s)
}

// weights returns the share of each endpoint: its locality's share of the
// locality weights times its share of its locality's endpoint weights.
func weights(eps []*endpoint) []float64 {
	type locality struct {
		weight    float64
		endpoints float64 // sum of endpoint weights
	}
	locs := map[string]*locality{}
	var total float64
	for _, ep := range eps {
		l := locs[ep.Locality]
		if l == nil {
			l = &locality{weight: float64(ep.LocalityWeight)}
			locs[ep.Locality] = l
			total += l.weight
		}
		l.endpoints += float64(ep.Weight)
	}
	w := make([]float64, len(eps))
	for i, ep := range eps {
		l := locs[ep.Locality]
		w[i] = l.weight / total * float64(ep.Weight) / l.endpoints
	}
	return w
}

func allEqual(w []float64) bool {
	for _, x := range w {
		if x != w[0] {
			return false
		}
	}
	return true
}

// maxScaled is the largest weight of the stride scheduler.
const maxScaled = 1<<16 - 1

// scaleWeights scales w so that the largest is maxScaled and none is 0, as
// grpc-go's weighted round robin scheduler does.
func scaleWeights(w []float64) []uint16 {
	top := 0.0
	for _, x := range w {
		top = max(top, x)
	}
	s := make([]uint16, len(w))
	for i, x := range w {
		s[i] = uint16(max(1, min(maxScaled, x/top*maxScaled+0.5)))
	}
	return s
}

func cumulate(w []float64) []float64 {
	c := make([]float64, len(w))
	sum := 0.0
	for i, x := range w {
		sum += x
		c[i] = sum
	}
	return c
}

// nextIndex returns the next endpoint of round robin: in turn when the
// weights are equal, else by grpc-go's static stride scheduler, which
// picks each endpoint weight times in maxScaled generations.
func (s *snapshot) nextIndex() int {
	n := uint64(len(s.eps))
	if s.scaled == nil {
		return int(s.next.Add(1) % n)
	}
	const offset = maxScaled / 2
	for {
		seq := s.next.Add(1)
		i, gen := seq%n, seq/n
		w := uint64(s.scaled[i])
		if (w*gen+i*offset)%maxScaled >= maxScaled-w {
			return int(i)
		}
	}
}

// sample returns an endpoint index at random, by weight.
func (s *snapshot) sample() int {
	if s.cumulative == nil {
		return int(randUint64() % uint64(len(s.eps)))
	}
	total := s.cumulative[len(s.cumulative)-1]
	x := float64(randUint64()>>11) / (1 << 53) * total
	i := sort.SearchFloat64s(s.cumulative, x)
	if i < len(s.cumulative) && s.cumulative[i] == x {
		i++
	}
	return min(i, len(s.eps)-1)
}

// pickLeastRequest samples choiceCount endpoints and returns the one with
// the fewest outstanding requests, the first on a tie (gRFC A48).
func (s *snapshot) pickLeastRequest() *endpoint {
	var best *endpoint
	var bestN int64
	for range s.choiceCount {
		e := s.eps[s.sample()]
		if n := e.outstanding.Load(); best == nil || n < bestN {
			best, bestN = e, n
		}
	}
	return best
}

// pickEWMA samples two distinct endpoints at random (by weight) and returns
// the one whose latency estimate times outstanding requests is lower, the
// first on a tie (power of two choices over peak EWMA).
func (s *snapshot) pickEWMA(now time.Time) *endpoint {
	n := len(s.eps)
	if n == 1 {
		return s.eps[0]
	}
	var i, j int
	if s.cumulative == nil {
		i, j = peakewma.TwoIndexes(n, randUint64(), randUint64())
	} else {
		i, j = s.sample(), s.sample()
		for try := 0; j == i && try < 8; try++ {
			j = s.sample()
		}
		if j == i {
			j = (i + 1) % n
		}
	}
	a, b := s.eps[i], s.eps[j]
	if peakewma.Choose(s.ewma, now.UnixNano(), a.est, b.est) == b.est {
		return b
	}
	return a
}
