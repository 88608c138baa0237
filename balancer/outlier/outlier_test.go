package outlier

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	_ "google.golang.org/grpc/balancer/leastrequest" // registers least_request_experimental
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	_ "github.com/trellismesh/trellis/balancer/random" // registers trellis_random
	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
)

const testTimeout = 20 * time.Second

func TestRegistered(t *testing.T) {
	b := balancer.Get(Name)
	if b == nil {
		t.Fatalf("balancer.Get(%q) = nil, want the outlier builder", Name)
	}
	if got := b.Name(); got != "trellis_outlier" {
		t.Errorf("Name() = %q, want %q", got, "trellis_outlier")
	}
}

// TestEjectsFailingEndpoint: with each child policy, a backend that starts
// failing every RPC gets exactly consecutiveErrors RPCs, the only ones that
// fail, and none after: ejection is immediate, it does not wait for an
// interval (an hour here). Each of the two mechanisms suffices alone: the
// health listener, with re-picks disabled, for the policies built on
// pick_first; re-picks for a policy that ignores health.
func TestEjectsFailingEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name     string
		child    string
		maxPicks int
	}{
		{name: "round_robin", child: "round_robin", maxPicks: 3},
		{name: "least_request", child: "least_request_experimental", maxPicks: 3},
		{name: "trellis_random", child: "trellis_random", maxPicks: 3},
		{name: "round_robin by health alone", child: "round_robin", maxPicks: 1},
		{name: "least_request by health alone", child: "least_request_experimental", maxPicks: 1},
		{name: "trellis_random by health alone", child: "trellis_random", maxPicks: 1},
		{name: "base balancer by re-picks alone", child: baseRoundRobin, maxPicks: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func(old int) { maxPicks = old }(maxPicks)
			maxPicks = tc.maxPicks
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			backends := startBackends(t, 3)
			client := dial(t, backends, fmt.Sprintf(`{"childPolicy":[{%q:{}}],"consecutiveErrors":5,"interval":"1h","baseEjectionTime":"1h"}`, tc.child))
			waitForAll(ctx, t, client, backends)

			bad := backends[0]
			bad.setMode(int32(codes.Unavailable))
			resetCalls(backends)
			const rpcs = 300
			failures := 0
			for range rpcs {
				if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
					if status.Code(err) != codes.Unavailable {
						t.Fatalf("SayHello() = %v, want success or the backend's UNAVAILABLE", err)
					}
					failures++
				}
			}
			if got := bad.calls.Load(); got != 5 {
				t.Errorf("failing backend got %d RPCs, want 5 (consecutiveErrors)", got)
			}
			if failures != 5 {
				t.Errorf("%d RPCs failed, want 5", failures)
			}
			for _, b := range backends[1:] {
				// 295 RPCs over two backends: each gets its part.
				if got := b.calls.Load(); got < 60 {
					t.Errorf("healthy backend %s got %d of %d RPCs, want at least 60", b.addr, got, rpcs)
				}
			}
		})
	}
}

// baseRoundRobin is a child policy built on grpc's balancer/base: it
// balances over READY SubConns and ignores health updates, so only re-picks
// keep RPCs off ejected endpoints.
const baseRoundRobin = "outlier_test_base_round_robin"

func init() {
	balancer.Register(base.NewBalancerBuilder(baseRoundRobin, rrPickerBuilder{}, base.Config{}))
}

type rrPickerBuilder struct{}

func (rrPickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	if len(info.ReadySCs) == 0 {
		return base.NewErrPicker(balancer.ErrNoSubConnAvailable)
	}
	p := &rrPicker{}
	for sc := range info.ReadySCs {
		p.scs = append(p.scs, sc)
	}
	return p
}

type rrPicker struct {
	scs  []balancer.SubConn
	next atomic.Uint32
}

func (p *rrPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{SubConn: p.scs[p.next.Add(1)%uint32(len(p.scs))]}, nil
}

// TestUnejectsAfterBaseEjectionTime: the interval timer brings an ejected
// backend that has recovered back, not before baseEjectionTime has passed.
func TestUnejectsAfterBaseEjectionTime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	backends := startBackends(t, 3)
	client := dial(t, backends, `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":5,"interval":"50ms","baseEjectionTime":"200ms"}`)
	waitForAll(ctx, t, client, backends)

	bad := backends[0]
	bad.setMode(int32(codes.Unavailable))
	for failures := 0; failures < 5; {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("SayHello() = %v; %d failures before the deadline, want 5", err, failures)
			}
			failures++
		}
	}
	ejected := time.Now() // the ejection happened before the fifth failure returned
	bad.setMode(int32(codes.OK))
	before := bad.calls.Load()
	for bad.calls.Load() == before {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
			t.Fatalf("SayHello() = %v while the failing backend is ejected, want success", err)
		}
	}
	if back := time.Since(ejected); back < 150*time.Millisecond {
		t.Errorf("ejected backend picked again after %v, want no sooner than baseEjectionTime 200ms", back)
	}
}

// TestEjectionBackoff drives the interval timer and the clock by hand: an
// endpoint ejected n times in a row stays out n × baseEjectionTime, and the
// count decays by one each interval it is not ejected.
func TestEjectionBackoff(t *testing.T) {
	clock := newFakeClock(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	backends := startBackends(t, 3)
	client := dial(t, backends, `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":5,"interval":"10s","baseEjectionTime":"30s"}`)
	waitForAll(ctx, t, client, backends)
	bad := backends[0]

	// picked reports whether bad gets one of 3 round-robin RPCs.
	picked := func() bool {
		t.Helper()
		before := bad.calls.Load()
		for range 3 {
			if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
				t.Fatalf("SayHello() = %v, want success", err)
			}
		}
		return bad.calls.Load() > before
	}
	eject := func() {
		t.Helper()
		bad.setMode(int32(codes.Internal))
		for failures := 0; failures < 5; {
			if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
				failures++
			}
		}
		bad.setMode(int32(codes.OK))
		if picked() {
			t.Fatal("backend picked right after 5 consecutive errors, want it ejected")
		}
	}
	// at advances the clock to d after the start and runs one interval tick.
	at := func(d time.Duration) { clock.set(d); clock.tick() }

	eject() // first ejection, at 0: out for 30s
	at(29 * time.Second)
	if picked() {
		t.Fatal("backend picked 29s into its first ejection, want it out for 30s")
	}
	at(30 * time.Second)
	if !picked() {
		t.Fatal("backend not picked 30s after its first ejection, want it back")
	}
	eject() // second in a row, at 30s: out for 60s
	at(89 * time.Second)
	if picked() {
		t.Fatal("backend picked 59s into its second ejection, want it out for 60s")
	}
	at(90 * time.Second)
	if !picked() {
		t.Fatal("backend not picked 60s after its second ejection, want it back")
	}
	// Two intervals not ejected: the count decays from 2 to 0.
	at(100 * time.Second)
	at(110 * time.Second)
	eject() // out for 30s again
	at(139 * time.Second)
	if picked() {
		t.Fatal("backend picked 29s into an ejection after the count decayed, want it out for 30s")
	}
	at(140 * time.Second)
	if !picked() {
		t.Fatal("backend not picked 30s after an ejection after the count decayed, want it back")
	}
}

// TestMaxEjectionPercent: with failing backends among three, no more are
// ejected than maxEjectionPercent allows, but one always can be.
func TestMaxEjectionPercent(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maxPercent  int
		failing     int
		wantEjected int
	}{
		{name: "34 percent of 3 is one", maxPercent: 34, failing: 2, wantEjected: 1},
		{name: "10 percent still ejects one", maxPercent: 10, failing: 2, wantEjected: 1},
		{name: "67 percent of 3 is two", maxPercent: 67, failing: 2, wantEjected: 2},
		{name: "zero ejects none", maxPercent: 0, failing: 1, wantEjected: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			backends := startBackends(t, 3)
			client := dial(t, backends, fmt.Sprintf(`{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":5,"interval":"1h","baseEjectionTime":"1h","maxEjectionPercent":%d}`, tc.maxPercent))
			waitForAll(ctx, t, client, backends)
			for _, b := range backends[:tc.failing] {
				b.setMode(int32(codes.Unavailable))
			}
			resetCalls(backends)
			for range 600 {
				client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"})
			}
			ejected := 0
			for _, b := range backends[:tc.failing] {
				switch n := b.calls.Load(); {
				case n == 5:
					ejected++
				case n < 100:
					t.Errorf("failing backend %s got %d RPCs, want 5 (ejected) or a third or half of 600 (not ejected)", b.addr, n)
				}
			}
			if ejected != tc.wantEjected {
				t.Errorf("%d of %d failing backends ejected, want %d", ejected, tc.failing, tc.wantEjected)
			}
		})
	}
}

// TestMinHealthPercent: ejection is suspended when it would leave fewer
// than minHealthPercent of the endpoints.
func TestMinHealthPercent(t *testing.T) {
	for _, tc := range []struct {
		name         string
		minHealth    int
		wantEjection bool
	}{
		{name: "two of three healthy is above 60 percent", minHealth: 60, wantEjection: true},
		{name: "two of three healthy is below 80 percent", minHealth: 80, wantEjection: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			backends := startBackends(t, 3)
			client := dial(t, backends, fmt.Sprintf(`{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":5,"interval":"1h","baseEjectionTime":"1h","maxEjectionPercent":100,"minHealthPercent":%d}`, tc.minHealth))
			waitForAll(ctx, t, client, backends)
			bad := backends[0]
			bad.setMode(int32(codes.Unavailable))
			resetCalls(backends)
			for range 300 {
				client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"})
			}
			n := bad.calls.Load()
			if tc.wantEjection && n != 5 {
				t.Errorf("failing backend got %d of 300 RPCs, want 5: ejected", n)
			}
			if !tc.wantEjection && n < 80 {
				t.Errorf("failing backend got %d of 300 RPCs, want about 100: ejection suspended", n)
			}
		})
	}
}

// call is one RPC of TestCounting: the backend answers with code, or the
// client cancels it, or the client's deadline expires.
type call struct {
	code     codes.Code
	cancel   bool
	deadline bool
}

func repeat(n int, c call) []call {
	calls := make([]call, n)
	for i := range calls {
		calls[i] = c
	}
	return calls
}

func concat(parts ...[]call) []call {
	var all []call
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

// TestCounting sends RPCs with given outcomes to a single backend, then
// probes whether it is ejected: when it is, the probe fails without
// reaching it.
func TestCounting(t *testing.T) {
	var (
		unavailable = call{code: codes.Unavailable}
		internal    = call{code: codes.Internal}
		ok          = call{code: codes.OK}
		cancelled   = call{cancel: true}
		timedOut    = call{deadline: true}
	)
	for _, tc := range []struct {
		name        string
		config      string
		calls       []call
		wantEjected bool
	}{
		{
			name:        "five consecutive errors eject",
			config:      `"consecutiveErrors":5`,
			calls:       repeat(5, unavailable),
			wantEjected: true,
		},
		{
			name:        "four do not",
			config:      `"consecutiveErrors":5`,
			calls:       repeat(4, unavailable),
			wantEjected: false,
		},
		{
			name:        "consecutiveErrors defaults to five",
			calls:       repeat(5, unavailable),
			wantEjected: true,
		},
		{
			name:        "a success resets the count",
			config:      `"consecutiveErrors":5`,
			calls:       concat(repeat(4, unavailable), []call{ok}, repeat(4, unavailable)),
			wantEjected: false,
		},
		{
			name:   "every 5xx-class code counts",
			config: `"consecutiveErrors":6`,
			calls: []call{
				{code: codes.Unknown}, {code: codes.DeadlineExceeded}, {code: codes.Unimplemented},
				{code: codes.Internal}, {code: codes.Unavailable}, {code: codes.DataLoss},
			},
			wantEjected: true,
		},
		{
			name:   "other codes are answers and reset the count",
			config: `"consecutiveErrors":5`,
			calls: concat(repeat(4, internal), []call{{code: codes.NotFound}}, repeat(4, internal), []call{{code: codes.PermissionDenied}},
				repeat(4, internal), []call{{code: codes.ResourceExhausted}}, repeat(4, internal), []call{{code: codes.InvalidArgument}},
				repeat(4, internal)),
			wantEjected: false,
		},
		{
			name:        "client cancellations do not count",
			config:      `"consecutiveErrors":5`,
			calls:       repeat(6, cancelled),
			wantEjected: false,
		},
		{
			name:        "client cancellations do not reset the count either",
			config:      `"consecutiveErrors":5`,
			calls:       concat(repeat(4, unavailable), repeat(2, cancelled), []call{unavailable}),
			wantEjected: true,
		},
		{
			name:        "client deadlines count",
			config:      `"consecutiveErrors":5`,
			calls:       repeat(5, timedOut),
			wantEjected: true,
		},
		{
			name:        "consecutive gateway errors eject",
			config:      `"consecutiveErrors":0,"consecutiveGatewayErrors":3`,
			calls:       []call{unavailable, timedOut, {code: codes.DeadlineExceeded}},
			wantEjected: true,
		},
		{
			name:        "other 5xx-class errors reset the gateway count",
			config:      `"consecutiveErrors":0,"consecutiveGatewayErrors":3`,
			calls:       []call{unavailable, unavailable, internal, unavailable, unavailable},
			wantEjected: false,
		},
		{
			name:        "gateway errors count as errors too",
			config:      `"consecutiveErrors":3,"consecutiveGatewayErrors":5`,
			calls:       []call{internal, unavailable, internal},
			wantEjected: true,
		},
		{
			name:        "zero disables",
			config:      `"consecutiveErrors":0`,
			calls:       repeat(20, unavailable),
			wantEjected: false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			backends := startBackends(t, 1)
			b := backends[0]
			cfg := `{"childPolicy":[{"round_robin":{}}],"interval":"1h","baseEjectionTime":"1h"`
			if tc.config != "" {
				cfg += "," + tc.config
			}
			client := dial(t, backends, cfg+"}")
			waitForAll(ctx, t, client, backends)

			for i, c := range tc.calls {
				err := b.do(ctx, t, client, c)
				if want := c.want(); status.Code(err) != want {
					t.Fatalf("call %d (%+v): SayHello() = %v, want code %v", i, c, err, want)
				}
			}
			b.setMode(int32(codes.OK))
			before := b.calls.Load()
			_, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "probe"})
			reached := b.calls.Load() > before
			if err == nil != reached {
				t.Fatalf("probe: SayHello() = %v, reached backend %v; want both or neither", err, reached)
			}
			if got := !reached; got != tc.wantEjected {
				t.Errorf("after %d calls: ejected = %v (probe: %v), want %v", len(tc.calls), got, err, tc.wantEjected)
			}
		})
	}
}

func (c call) want() codes.Code {
	switch {
	case c.cancel:
		return codes.Canceled
	case c.deadline:
		return codes.DeadlineExceeded
	}
	return c.code
}

// do makes one RPC with the outcome c.
func (b *backend) do(ctx context.Context, t *testing.T, client greeterpb.GreeterClient, c call) error {
	t.Helper()
	req := &greeterpb.HelloRequest{Name: "t"}
	switch {
	case c.cancel:
		b.setMode(modeHang)
		rpcCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := client.SayHello(rpcCtx, req)
			errc <- err
		}()
		select {
		case <-b.started:
		case <-ctx.Done():
			t.Fatal("RPC to cancel never reached the backend")
		}
		cancel()
		return <-errc
	case c.deadline:
		b.setMode(modeHang)
		rpcCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err := client.SayHello(rpcCtx, req)
		return err
	default:
		b.setMode(int32(c.code))
		_, err := client.SayHello(ctx, req)
		return err
	}
}

// TestConcurrentRPCs: RPCs in flight from many goroutines when a backend
// starts failing. At most consecutiveErrors plus the RPCs already on their
// way reach it, and the ones that fail are those.
func TestConcurrentRPCs(t *testing.T) {
	for _, child := range []string{"round_robin", "trellis_random"} {
		t.Run(child, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			backends := startBackends(t, 3)
			client := dial(t, backends, fmt.Sprintf(`{"childPolicy":[{%q:{}}],"consecutiveErrors":5,"interval":"1h","baseEjectionTime":"1h"}`, child))
			waitForAll(ctx, t, client, backends)
			bad := backends[0]
			bad.setMode(int32(codes.Unavailable))
			resetCalls(backends)

			const workers, perWorker = 8, 100
			var failures atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range perWorker {
						if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
							failures.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if got, want := bad.calls.Load(), int64(5+workers-1); got < 5 || got > want {
				t.Errorf("failing backend got %d RPCs, want 5 to %d", got, want)
			}
			if got, want := failures.Load(), bad.calls.Load(); got != want {
				t.Errorf("%d RPCs failed, want %d: those that reached the failing backend", got, want)
			}
		})
	}
}

// TestSwitchChildPolicy: a config update to another child policy keeps the
// ejections.
func TestSwitchChildPolicy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	backends := startBackends(t, 3)
	r, client := dialResolver(t, backends, `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":5,"interval":"1h","baseEjectionTime":"1h"}`)
	waitForAll(ctx, t, client, backends)
	bad := backends[0]
	bad.setMode(int32(codes.Unavailable))
	for failures := 0; failures < 5; {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
			failures++
		}
	}

	sc := r.CC().ParseServiceConfig(serviceConfig(`{"childPolicy":[{"trellis_random":{}}],"consecutiveErrors":5,"interval":"1h","baseEjectionTime":"1h"}`))
	if sc.Err != nil {
		t.Fatalf("ParseServiceConfig() = %v", sc.Err)
	}
	state := resolverState(backends)
	state.ServiceConfig = sc
	r.UpdateState(state)
	resetCalls(backends)
	// The new child connects afresh: wait for both healthy backends.
	waitForAll(ctx, t, client, backends[1:])
	for range 200 {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
			t.Fatalf("SayHello() = %v after switching to trellis_random, want success", err)
		}
	}
	if n := bad.calls.Load(); n != 0 {
		t.Errorf("ejected backend got %d RPCs after the switch, want 0", n)
	}
}

// TestDisablingDetectionUnejects: a config update with both thresholds zero
// brings ejected endpoints back at once.
func TestDisablingDetectionUnejects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	backends := startBackends(t, 3)
	r, client := dialResolver(t, backends, `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":5,"interval":"1h","baseEjectionTime":"1h"}`)
	waitForAll(ctx, t, client, backends)
	bad := backends[0]
	bad.setMode(int32(codes.Unavailable))
	for failures := 0; failures < 5; {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
			failures++
		}
	}
	bad.setMode(int32(codes.OK))

	sc := r.CC().ParseServiceConfig(serviceConfig(`{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":0}`))
	if sc.Err != nil {
		t.Fatalf("ParseServiceConfig() = %v", sc.Err)
	}
	state := resolverState(backends)
	state.ServiceConfig = sc
	r.UpdateState(state)
	// The update reaches the balancer asynchronously; once it has, the
	// backend is back in the rotation.
	waitForAll(ctx, t, client, backends[:1])
}

const modeHang = -1

// backend is a greeter server on loopback whose answers the test sets.
type backend struct {
	addr    string
	srv     *grpc.Server
	calls   atomic.Int64
	mode    atomic.Int32  // a codes.Code to fail with, OK to answer, or modeHang
	started chan struct{} // receives when an RPC starts hanging
}

func (b *backend) setMode(m int32) { b.mode.Store(m) }

func resetCalls(backends []*backend) {
	for _, b := range backends {
		b.calls.Store(0)
	}
}

func startBackends(t *testing.T, n int) []*backend {
	t.Helper()
	var backends []*backend
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("net.Listen() = %v", err)
		}
		b := &backend{addr: lis.Addr().String(), started: make(chan struct{})}
		b.srv = grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			b.calls.Add(1)
			switch m := b.mode.Load(); {
			case m == modeHang:
				select {
				case b.started <- struct{}{}:
				case <-ctx.Done():
				}
				<-ctx.Done()
				return nil, status.FromContextError(ctx.Err()).Err()
			case codes.Code(m) != codes.OK:
				return nil, status.Error(codes.Code(m), "backend: failing on purpose")
			}
			return h(ctx, req)
		}))
		greeterpb.RegisterGreeterServer(b.srv, &greeter.Server{Version: "v1", Instance: b.addr})
		go b.srv.Serve(lis)
		t.Cleanup(b.srv.Stop)
		backends = append(backends, b)
	}
	return backends
}

// resolverState lists the backends as endpoints, and as addresses for
// balancer/base.
func resolverState(backends []*backend) resolver.State {
	var s resolver.State
	for _, b := range backends {
		s.Endpoints = append(s.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: b.addr}}})
		s.Addresses = append(s.Addresses, resolver.Address{Addr: b.addr})
	}
	return s
}

func serviceConfig(outlierConfig string) string {
	return `{"loadBalancingConfig":[{"trellis_outlier":` + outlierConfig + `}]}`
}

// dial connects to the backends through a manual resolver, with
// trellis_outlier configured by outlierConfig in the default service config.
func dial(t *testing.T, backends []*backend, outlierConfig string) greeterpb.GreeterClient {
	t.Helper()
	_, client := dialResolver(t, backends, outlierConfig)
	return client
}

func dialResolver(t *testing.T, backends []*backend, outlierConfig string) (*manual.Resolver, greeterpb.GreeterClient) {
	t.Helper()
	r := manual.NewBuilderWithScheme("outlier-test")
	r.InitialState(resolverState(backends))
	cc, err := grpc.NewClient(r.Scheme()+":///greeter",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig(outlierConfig)),
	)
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return r, greeterpb.NewGreeterClient(cc)
}

// waitForAll sends RPCs until every backend has answered one.
func waitForAll(ctx context.Context, t *testing.T, client greeterpb.GreeterClient, backends []*backend) {
	t.Helper()
	want := map[string]bool{}
	for _, b := range backends {
		want[b.addr] = true
	}
	for len(want) > 0 {
		reply, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"})
		if err != nil {
			t.Fatalf("SayHello() = %v while waiting for all backends (missing %v)", err, want)
		}
		delete(want, reply.GetInstance())
	}
}

// fakeClock replaces timeNow and timeAfterFunc: time stands still until
// set, and interval ticks run when the test calls tick.
type fakeClock struct {
	t     *testing.T
	start time.Time

	mu    sync.Mutex
	now   time.Time
	timer func() // the callback of the latest timer
}

func newFakeClock(t *testing.T) *fakeClock {
	c := &fakeClock{t: t, start: time.Now()}
	c.now = c.start
	oldNow, oldAfterFunc := timeNow, timeAfterFunc
	timeNow = func() time.Time {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.now
	}
	timeAfterFunc = func(_ time.Duration, f func()) *time.Timer {
		c.mu.Lock()
		c.timer = f
		c.mu.Unlock()
		// A timer that does not fire during the test, for the balancer to
		// stop.
		return time.AfterFunc(time.Hour, func() {})
	}
	t.Cleanup(func() { timeNow, timeAfterFunc = oldNow, oldAfterFunc })
	return c
}

// set moves the clock to d after its start.
func (c *fakeClock) set(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.start.Add(d)
}

// tick runs the latest timer callback, as its firing would.
func (c *fakeClock) tick() {
	c.mu.Lock()
	f := c.timer
	c.mu.Unlock()
	if f == nil {
		c.t.Fatal("no interval timer was started")
	}
	f()
}
