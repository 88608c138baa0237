package ewma

import (
	"bytes"
	"encoding/json"
	"fmt"
	rand "math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/peakewma"
)

// Name is the name under which the policy is registered with grpc-go's
// balancer registry, and the policy name in service configs and xDS
// TypedStruct type URLs ("type.googleapis.com/trellis_ewma").
const Name = "trellis_ewma"

var logger = grpclog.Component("trellis_ewma")

// timeNow and randUint64 are replaced by tests.
var (
	timeNow    = time.Now
	randUint64 = rand.Uint64
)

func init() {
	balancer.Register(builder{})
}

// Config is the configuration of the policy. In JSON its fields are Go
// duration strings, all optional:
//
//	{"decay": "10s", "defaultRTT": "50ms", "failurePenalty": "1s"}
//
// The zero value is valid: every zero field takes its default.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	// Decay is the time constant of the moving average. If zero, 10s.
	Decay time.Duration
	// DefaultRTT is the latency assumed of an endpoint before its first
	// response. If zero, the mean estimate of the endpoints that have
	// responded, or 10ms when none has.
	DefaultRTT time.Duration
	// FailurePenalty is the least latency a failed RPC counts as. If zero,
	// 1s.
	FailurePenalty time.Duration
}

// MarshalJSON returns the JSON form ParseConfig reads, as grpc-go's xDS
// stack marshals a parsed child config to parse it again.
func (c *Config) MarshalJSON() ([]byte, error) {
	m := map[string]string{}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"decay", c.Decay}, {"defaultRTT", c.DefaultRTT}, {"failurePenalty", c.FailurePenalty}} {
		if f.d > 0 {
			m[f.name] = f.d.String()
		}
	}
	return json.Marshal(m)
}

func (c *Config) params() peakewma.Params {
	if c == nil {
		return peakewma.Params{}
	}
	return peakewma.Params{Decay: c.Decay, DefaultRTT: c.DefaultRTT, FailurePenalty: c.FailurePenalty}
}

type builder struct{}

var _ balancer.ConfigParser = builder{}

func (builder) Name() string { return Name }

// ParseConfig reads a JSON object with the optional fields decay,
// defaultRTT and failurePenalty, each a positive Go duration string
// ("250ms"). Unknown fields are rejected.
func (builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	p, err := peakewma.ParseParams(js)
	if err != nil {
		return nil, fmt.Errorf("ewma: config %s: %w", bytes.TrimSpace(js), err)
	}
	return &Config{Decay: p.Decay, DefaultRTT: p.DefaultRTT, FailurePenalty: p.FailurePenalty}, nil
}

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &ewmaBalancer{ClientConn: cc, estimates: resolver.NewEndpointMap[*peakewma.Estimate]()}
	b.child = endpointsharding.NewBalancer(b, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return b
}

// ewmaBalancer embeds the parent balancer.ClientConn to intercept the
// aggregate state endpointsharding reports, and replaces its round-robin
// picker with a peak EWMA one over the READY children.
type ewmaBalancer struct {
	balancer.ClientConn
	child balancer.Balancer

	mu        sync.Mutex
	params    peakewma.Params
	estimates *resolver.EndpointMap[*peakewma.Estimate] // of the endpoints in the last update, kept across pickers
}

func (b *ewmaBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	cfg, ok := s.BalancerConfig.(*Config)
	if !ok && s.BalancerConfig != nil {
		logger.Errorf("ewma: received config of unexpected type %T", s.BalancerConfig)
		return balancer.ErrBadResolverState
	}
	b.mu.Lock()
	b.params = cfg.params()
	b.mu.Unlock()
	// The pick_first children get no config of ours, and listen to health
	// updates (client-side health checks, outlier ejection).
	return b.child.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(s.ResolverState),
	})
}

func (b *ewmaBalancer) ResolverError(err error) { b.child.ResolverError(err) }

func (b *ewmaBalancer) UpdateSubConnState(sc balancer.SubConn, s balancer.SubConnState) {
	logger.Errorf("ewma: UpdateSubConnState(%v, %+v) called unexpectedly", sc, s)
}

func (b *ewmaBalancer) ExitIdle() { b.child.ExitIdle() }

func (b *ewmaBalancer) Close() { b.child.Close() }

// UpdateState is called by endpointsharding with the aggregate state of the
// children.
func (b *ewmaBalancer) UpdateState(s balancer.State) {
	children := endpointsharding.ChildStatesFromPicker(s.Picker)
	b.mu.Lock()
	params := b.params
	// Endpoints keep their estimates while they are in the resolver state,
	// whatever their connectivity; new ones warm up from the others.
	now := timeNow().UnixNano()
	peers := b.estimates.Values()
	current := resolver.NewEndpointMap[*peakewma.Estimate]()
	var ready []choice
	for _, child := range children {
		est, ok := b.estimates.Get(child.Endpoint)
		if !ok {
			est = peakewma.New(params, now, peers)
		}
		current.Set(child.Endpoint, est)
		if child.State.ConnectivityState == connectivity.Ready {
			ready = append(ready, choice{picker: child.State.Picker, est: est})
		}
	}
	b.estimates = current
	b.mu.Unlock()

	if len(ready) == 0 {
		// endpointsharding's picker spreads over the children in the
		// aggregate state: RPCs queue while they connect, fail when all
		// failed.
		b.ClientConn.UpdateState(s)
		return
	}
	b.ClientConn.UpdateState(balancer.State{
		ConnectivityState: connectivity.Ready,
		Picker:            &picker{params: params, ready: ready},
	})
}

// choice is a READY endpoint: its pick_first picker and its estimate.
type choice struct {
	picker balancer.Picker
	est    *peakewma.Estimate
}

// picker chooses between two READY endpoints at random the one of least
// cost. It is immutable (the estimates are safe for concurrent use), hence
// safe for concurrent use.
type picker struct {
	params peakewma.Params
	ready  []choice
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	start := timeNow()
	c := &p.ready[0]
	if len(p.ready) > 1 {
		i, j := peakewma.TwoIndexes(len(p.ready), randUint64(), randUint64())
		c = &p.ready[i]
		if peakewma.Choose(p.params, start.UnixNano(), c.est, p.ready[j].est) != c.est {
			c = &p.ready[j]
		}
	}
	res, err := c.picker.Pick(info)
	if err != nil {
		return res, err
	}
	est, params, childDone := c.est, p.params, res.Done
	est.Start()
	res.Done = func(di balancer.DoneInfo) {
		now := timeNow()
		elapsed := now.Sub(start)
		switch outcome(di) {
		case success:
			est.Observe(params, now.UnixNano(), elapsed)
		case failure:
			est.Fail(params, now.UnixNano(), elapsed)
		default:
			est.Cancel()
		}
		if childDone != nil {
			childDone(di)
		}
	}
	return res, nil
}

type result int

const (
	success result = iota
	failure
	ignored
)

// outcome classifies how an RPC ended. The codes Envoy maps to 5xx (as
// balancer/outlier counts them) are failures of the endpoint; a call the
// client cancelled says nothing of it; every other status, errors of the
// application included, is a response whose latency counts.
func outcome(di balancer.DoneInfo) result {
	if di.Err == nil {
		return success
	}
	switch status.Code(di.Err) {
	case codes.Canceled:
		return ignored
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		return failure
	}
	return success
}
