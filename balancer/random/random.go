package random

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	rand "math/rand/v2"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/serviceconfig"
)

// Name is the name under which the policy is registered with grpc-go's
// balancer registry, and the policy name in service configs and xDS
// TypedStruct type URLs ("type.googleapis.com/trellis_random").
const Name = "trellis_random"

var logger = grpclog.Component("trellis_random")

func init() {
	balancer.Register(builder{})
}

// Config is the configuration of the policy. It has no fields: in JSON it is
// the empty object {}. The zero value is the only valid value.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`
}

type builder struct{}

var _ balancer.ConfigParser = builder{}

func (builder) Name() string { return Name }

// ParseConfig accepts an empty JSON object (or null) and rejects anything
// else, in particular unknown fields.
func (builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg := &Config{}
	trimmed := bytes.TrimSpace(js)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return cfg, nil
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, fmt.Errorf("random: config %s: must be an empty JSON object: %w", trimmed, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("random: config %s: must be a single JSON object", trimmed)
	}
	return cfg, nil
}

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &randomBalancer{ClientConn: cc}
	b.child = endpointsharding.NewBalancer(b, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return b
}

// randomBalancer embeds the parent balancer.ClientConn to intercept the
// aggregate state endpointsharding reports, and replaces its round-robin
// picker with a random one over the READY children.
type randomBalancer struct {
	balancer.ClientConn
	child balancer.Balancer
}

func (b *randomBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	if _, ok := s.BalancerConfig.(*Config); !ok && s.BalancerConfig != nil {
		logger.Errorf("random: received config of unexpected type %T", s.BalancerConfig)
		return balancer.ErrBadResolverState
	}
	// The pick_first children get no config of ours, and listen to health
	// updates (client-side health checks, outlier ejection).
	return b.child.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(s.ResolverState),
	})
}

func (b *randomBalancer) ResolverError(err error) { b.child.ResolverError(err) }

func (b *randomBalancer) UpdateSubConnState(sc balancer.SubConn, s balancer.SubConnState) {
	logger.Errorf("random: UpdateSubConnState(%v, %+v) called unexpectedly", sc, s)
}

func (b *randomBalancer) ExitIdle() { b.child.ExitIdle() }

func (b *randomBalancer) Close() { b.child.Close() }

// UpdateState is called by endpointsharding with the aggregate state of the
// children.
func (b *randomBalancer) UpdateState(s balancer.State) {
	var ready []balancer.Picker
	for _, child := range endpointsharding.ChildStatesFromPicker(s.Picker) {
		if child.State.ConnectivityState == connectivity.Ready {
			ready = append(ready, child.State.Picker)
		}
	}
	if len(ready) == 0 {
		// endpointsharding's picker spreads over the children in the
		// aggregate state: RPCs queue while they connect, fail when all
		// failed.
		b.ClientConn.UpdateState(s)
		return
	}
	b.ClientConn.UpdateState(balancer.State{
		ConnectivityState: connectivity.Ready,
		Picker:            &picker{ready: ready},
	})
}

// picker delegates every pick to the picker of a READY child chosen
// uniformly at random. It is immutable, hence safe for concurrent use.
type picker struct {
	ready []balancer.Picker
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	return p.ready[rand.IntN(len(p.ready))].Pick(info)
}
