package outlier

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	estats "google.golang.org/grpc/experimental/stats"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/balancer/pick"
)

// TestProtocolsAgree gives the same outcomes, in the same order, to the
// same hosts through the two pickers of the mesh, the gRPC policy (with a
// child that follows health updates, as the policies built on pick_first
// do) and the HTTP client's balancer/pick, and checks after each step that
// both avoid the same hosts, the ones expected, and report the same
// ejections. The corner cases are those of docs/RELIABILITY.md: every host
// failing, a flapping host, min health. Time runs in a synctest bubble, so
// the gRPC policy's interval timer fires as it does in production.
func TestProtocolsAgree(t *testing.T) {
	type step struct {
		host    int
		outcome string // "5xx", "gateway", "ok"
		n       int
		sleep   time.Duration // or: time passes
		wantOut []int         // the hosts neither picker picks, after the step
	}
	fail := func(host, n int, wantOut ...int) step {
		return step{host: host, outcome: "5xx", n: n, wantOut: wantOut}
	}
	gateway := func(host, n int, wantOut ...int) step {
		return step{host: host, outcome: "gateway", n: n, wantOut: wantOut}
	}
	ok := func(host int, wantOut ...int) step { return step{host: host, outcome: "ok", n: 1, wantOut: wantOut} }
	sleep := func(d time.Duration, wantOut ...int) step { return step{sleep: d, wantOut: wantOut} }
	const s = time.Second

	for _, tc := range []struct {
		name   string
		config string // the trellis_outlier JSON fields, but childPolicy
		hosts  int
		steps  []step
	}{{
		name:   "consecutive errors, a success resets them",
		config: `"consecutiveErrors":3,"maxEjectionPercent":100`,
		hosts:  3,
		steps:  []step{fail(0, 2), ok(0), fail(0, 2), fail(0, 1, 0), sleep(29*s, 0), sleep(1 * s)},
	}, {
		name:   "gateway errors, split from the others",
		config: `"consecutiveErrors":0,"consecutiveGatewayErrors":2,"maxEjectionPercent":100`,
		hosts:  3,
		steps:  []step{gateway(1, 1), fail(1, 1), gateway(1, 1), gateway(1, 1, 1)},
	}, {
		name:   "every host failing: maxEjectionPercent 50 ejects two of four",
		config: `"consecutiveErrors":2,"maxEjectionPercent":50`,
		hosts:  4,
		steps: []step{
			fail(0, 1), fail(1, 1), fail(2, 1), fail(3, 1),
			fail(0, 1, 0), fail(1, 1, 0, 1), fail(2, 1, 0, 1), fail(3, 1, 0, 1),
			sleep(40 * s), // back; ejected 2 and 3 are next
			fail(2, 2, 2), fail(3, 2, 2, 3), fail(0, 2, 2, 3),
		},
	}, {
		name:   "every host failing: one can always be ejected",
		config: `"consecutiveErrors":1,"maxEjectionPercent":1`,
		hosts:  3,
		steps:  []step{fail(0, 1, 0), fail(1, 1, 0), fail(2, 1, 0)},
	}, {
		name:   "every host failing: all out, then all back",
		config: `"consecutiveErrors":1,"maxEjectionPercent":100`,
		hosts:  3,
		steps:  []step{fail(0, 1, 0), fail(1, 1, 0, 1), fail(2, 1, 0, 1, 2), sleep(29*s, 0, 1, 2), sleep(11 * s)},
	}, {
		name:   "min health suspends ejection",
		config: `"consecutiveErrors":1,"maxEjectionPercent":100,"minHealthPercent":50`,
		hosts:  4,
		steps: []step{
			fail(0, 1, 0), fail(1, 1, 0, 1),
			sleep(10*s, 0, 1),
			fail(2, 1),     // 1 of 4 left: every host picked
			sleep(25*s, 2), // 0 and 1 back at 30s: resumed
			sleep(10 * s),  // 2 back at 40s
		},
	}, {
		name:   "a flapping host: n × baseEjectionTime, decaying",
		config: `"consecutiveErrors":1,"interval":"10s","baseEjectionTime":"30s","maxEjectionPercent":100`,
		hosts:  3,
		steps: []step{
			fail(0, 1, 0), sleep(29*s, 0), sleep(1 * s),
			fail(0, 1, 0), sleep(59*s, 0), sleep(1 * s),
			fail(0, 1, 0), sleep(89*s, 0), sleep(1 * s),
			sleep(30 * s), // three intervals: the count decays to 0
			fail(0, 1, 0), sleep(29*s, 0), sleep(1 * s),
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg, err := parseConfig([]byte(fmt.Sprintf(`{"childPolicy":[{%q:{}}],%s}`, healthRRName, tc.config)))
				if err != nil {
					t.Fatal(err)
				}
				g := newGRPCSide(t, cfg, tc.hosts)
				defer g.close()
				h := newHTTPSide(cfg, tc.hosts)
				for i, st := range tc.steps {
					if st.sleep > 0 {
						time.Sleep(st.sleep)
						synctest.Wait() // the gRPC policy's timer has run
					}
					for range st.n {
						g.report(t, st.host, st.outcome)
						h.report(t, st.host, st.outcome)
					}
					gotGRPC, gotHTTP := g.out(t), h.out(t)
					if diff := cmp.Diff(gotGRPC, gotHTTP); diff != "" {
						t.Fatalf("step %d (%+v): hosts out, gRPC against HTTP (-gRPC +HTTP):\n%s", i, st, diff)
					}
					if diff := cmp.Diff(gotGRPC, st.wantOut); diff != "" {
						t.Fatalf("step %d (%+v): hosts out (-got +want):\n%s", i, st, diff)
					}
					if gr, hr := g.ejections(), h.ejections(); gr != hr {
						t.Fatalf("step %d (%+v): %d ejections through gRPC, %d through HTTP", i, st, gr, hr)
					}
				}
			})
		})
	}
}

func address(i int) string { return fmt.Sprintf("10.0.0.%d:80", i+1) }

// httpSide is the HTTP client's picker.
type httpSide struct {
	p     *pick.Picker
	hosts int
	mu    sync.Mutex
	eject int
}

func newHTTPSide(cfg *Config, hosts int) *httpSide {
	h := &httpSide{hosts: hosts}
	o := cfg.params()
	eps := make([]pick.Endpoint, hosts)
	for i := range eps {
		eps[i] = pick.Endpoint{Address: address(i)}
	}
	h.p = pick.New(pick.Config{Outlier: &o, OnEject: func(string) {
		h.mu.Lock()
		h.eject++
		h.mu.Unlock()
	}}, eps)
	return h
}

func (h *httpSide) ejections() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.eject
}

// report picks until host comes up and gives it outcome.
func (h *httpSide) report(t *testing.T, host int, outcome string) {
	t.Helper()
	r := map[string]pick.Result{"5xx": pick.Failure, "gateway": pick.GatewayFailure, "ok": pick.Success}[outcome]
	for range 10 * h.hosts {
		ep, done, err := h.p.Pick(0)
		if err != nil {
			t.Fatalf("HTTP: Pick() = %v while reporting on host %d", err, host)
		}
		if ep.Address == address(host) {
			done(r)
			return
		}
		done(pick.Ignored)
	}
	t.Fatalf("HTTP: host %d never picked", host)
}

// out returns the hosts round robin does not reach.
func (h *httpSide) out(t *testing.T) []int {
	reached := map[string]bool{}
	for range 4 * h.hosts {
		ep, done, err := h.p.Pick(0)
		if err != nil {
			break // every host ejected
		}
		done(pick.Ignored)
		reached[ep.Address] = true
	}
	var out []int
	for i := range h.hosts {
		if !reached[address(i)] {
			out = append(out, i)
		}
	}
	return out
}

// grpcSide is the trellis_outlier policy over a fake ClientConn, with
// healthRR as its child.
type grpcSide struct {
	b     balancer.Balancer
	cc    *fakeClientConn
	hosts int
}

func newGRPCSide(t *testing.T, cfg *Config, hosts int) *grpcSide {
	cc := &fakeClientConn{recorder: &ejectionCounter{}}
	g := &grpcSide{b: builder{}.Build(cc, balancer.BuildOptions{}), cc: cc, hosts: hosts}
	var state resolver.State
	for i := range hosts {
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: address(i)}}})
	}
	if err := g.b.UpdateClientConnState(balancer.ClientConnState{ResolverState: state, BalancerConfig: cfg}); err != nil {
		t.Fatalf("UpdateClientConnState() = %v", err)
	}
	// Every SubConn connects, then its health check passes.
	for _, sc := range cc.subConns() {
		sc.listener(balancer.SubConnState{ConnectivityState: connectivity.Ready})
	}
	for _, sc := range cc.subConns() {
		sc.health(balancer.SubConnState{ConnectivityState: connectivity.Ready})
	}
	return g
}

func (g *grpcSide) close() { g.b.Close() }

func (g *grpcSide) ejections() int { return int(g.cc.recorder.count()) }

// report picks until host comes up and ends its RPC with outcome.
func (g *grpcSide) report(t *testing.T, host int, outcome string) {
	t.Helper()
	var err error
	switch outcome {
	case "5xx":
		err = status.Error(codes.Internal, "failing")
	case "gateway":
		err = status.Error(codes.Unavailable, "failing")
	}
	for range 10 * g.hosts {
		res, perr := g.cc.currentPicker().Pick(balancer.PickInfo{Ctx: t.Context()})
		if perr != nil {
			t.Fatalf("gRPC: Pick() = %v while reporting on host %d", perr, host)
		}
		if res.SubConn.(*fakeSubConn).addr == address(host) {
			res.Done(balancer.DoneInfo{Err: err, BytesSent: true, BytesReceived: true})
			return
		}
		res.Done(balancer.DoneInfo{}) // never sent: ignored
	}
	t.Fatalf("gRPC: host %d never picked", host)
}

// out returns the hosts the picker does not reach.
func (g *grpcSide) out(t *testing.T) []int {
	reached := map[string]bool{}
	for range 4 * g.hosts {
		res, err := g.cc.currentPicker().Pick(balancer.PickInfo{Ctx: t.Context()})
		if err != nil {
			break // every host ejected
		}
		res.Done(balancer.DoneInfo{})
		reached[res.SubConn.(*fakeSubConn).addr] = true
	}
	var out []int
	for i := range g.hosts {
		if !reached[address(i)] {
			out = append(out, i)
		}
	}
	return out
}

// fakeClientConn is the parent ClientConn of the policy: it hands out
// fakeSubConns and keeps the latest picker.
type fakeClientConn struct {
	balancer.ClientConn // not implemented: calls panic
	recorder            *ejectionCounter

	mu     sync.Mutex
	scs    []*fakeSubConn
	picker balancer.Picker
}

func (cc *fakeClientConn) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	sc := &fakeSubConn{addr: addrs[0].Addr, listener: opts.StateListener}
	cc.scs = append(cc.scs, sc)
	return sc, nil
}

func (cc *fakeClientConn) UpdateState(s balancer.State) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.picker = s.Picker
}

func (cc *fakeClientConn) MetricsRecorder() estats.MetricsRecorder { return cc.recorder }

func (cc *fakeClientConn) subConns() []*fakeSubConn {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return slices.Clone(cc.scs)
}

func (cc *fakeClientConn) currentPicker() balancer.Picker {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.picker
}

// fakeSubConn is a SubConn of the parent; the test delivers its state and
// health updates.
type fakeSubConn struct {
	balancer.SubConn // not implemented: calls panic
	addr             string
	listener         func(balancer.SubConnState)
	health           func(balancer.SubConnState)
}

func (sc *fakeSubConn) Connect() {}

func (sc *fakeSubConn) Shutdown() {}

func (sc *fakeSubConn) RegisterHealthListener(l func(balancer.SubConnState)) { sc.health = l }

// ejectionCounter counts the ejections metric.
type ejectionCounter struct {
	estats.MetricsRecorder // not implemented: calls panic
	mu                     sync.Mutex
	n                      int64
}

func (r *ejectionCounter) RecordInt64Count(h *estats.Int64CountHandle, incr int64, _ ...string) {
	if h.Descriptor().Name == "trellis.lb.outlier.ejections" {
		r.mu.Lock()
		r.n += incr
		r.mu.Unlock()
	}
}

func (r *ejectionCounter) count() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// healthRR is a child policy that creates one SubConn per endpoint and
// round-robins over those whose health listener last said READY, as the
// policies built on pick_first leave out an endpoint whose health is not.
const healthRRName = "outlier_test_health_rr"

func init() {
	balancer.Register(healthRRBuilder{})
}

type healthRRBuilder struct{}

func (healthRRBuilder) Name() string { return healthRRName }

func (healthRRBuilder) Build(cc balancer.ClientConn, _ balancer.BuildOptions) balancer.Balancer {
	return &healthRR{cc: cc}
}

type healthRR struct {
	cc balancer.ClientConn

	mu      sync.Mutex
	scs     []balancer.SubConn
	healthy map[balancer.SubConn]bool
}

func (b *healthRR) UpdateClientConnState(s balancer.ClientConnState) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.scs != nil {
		return nil
	}
	b.healthy = map[balancer.SubConn]bool{}
	for _, ep := range s.ResolverState.Endpoints {
		var sc balancer.SubConn
		//lint:ignore SA1019 a child policy creates its SubConns so, as pick_first does.
		sc, err := b.cc.NewSubConn(ep.Addresses, balancer.NewSubConnOptions{StateListener: func(st balancer.SubConnState) {
			if st.ConnectivityState == connectivity.Ready {
				sc.RegisterHealthListener(func(h balancer.SubConnState) { b.setHealth(sc, h.ConnectivityState == connectivity.Ready) })
			}
		}})
		if err != nil {
			return err
		}
		sc.Connect()
		b.scs = append(b.scs, sc)
	}
	return nil
}

func (b *healthRR) setHealth(sc balancer.SubConn, healthy bool) {
	b.mu.Lock()
	b.healthy[sc] = healthy
	var ready []balancer.SubConn
	for _, sc := range b.scs {
		if b.healthy[sc] {
			ready = append(ready, sc)
		}
	}
	b.mu.Unlock()
	if len(ready) == 0 {
		b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure, Picker: errPicker{}})
		return
	}
	b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: &rrPicker{scs: ready}})
}

func (b *healthRR) ResolverError(error) {}

func (b *healthRR) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (b *healthRR) Close() {}

func (b *healthRR) ExitIdle() {}

type errPicker struct{}

func (errPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, status.Error(codes.Unavailable, "no healthy endpoint")
}
