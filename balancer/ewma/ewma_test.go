package ewma

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/internal/peakewma"
)

const testTimeout = 30 * time.Second

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		json    string
		want    serviceconfig.LoadBalancingConfig
		wantErr string
	}{
		{name: "empty object", json: `{}`, want: &Config{}},
		{name: "null", json: `null`, want: &Config{}},
		{name: "nothing", json: ``, want: &Config{}},
		{name: "all fields", json: `{"decay":"5s","defaultRTT":"20ms","failurePenalty":"2s"}`, want: &Config{Decay: 5 * time.Second, DefaultRTT: 20 * time.Millisecond, FailurePenalty: 2 * time.Second}},
		{name: "one field", json: `{"decay":"1m"}`, want: &Config{Decay: time.Minute}},
		{name: "unknown field", json: `{"choiceCount":2}`, wantErr: `ewma: config {"choiceCount":2}: json: unknown field "choiceCount"`},
		{name: "zero decay", json: `{"decay":"0s"}`, wantErr: `ewma: config {"decay":"0s"}: decay is "0s", must be a positive duration`},
		{name: "negative penalty", json: `{"failurePenalty":"-1s"}`, wantErr: `ewma: config {"failurePenalty":"-1s"}: failurePenalty is "-1s", must be a positive duration`},
		{name: "not a duration", json: `{"defaultRTT":"fast"}`, wantErr: `ewma: config {"defaultRTT":"fast"}: defaultRTT is "fast", must be a positive duration`},
		{name: "number instead of string", json: `{"decay":10}`, wantErr: `ewma: config {"decay":10}: json: cannot unmarshal number`},
		{name: "list", json: `[]`, wantErr: `ewma: config []: json: cannot unmarshal array`},
		{name: "two objects", json: `{} {}`, wantErr: `ewma: config {} {}: must be a single JSON object`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := builder{}.ParseConfig(json.RawMessage(tc.json))
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("ParseConfig(%s) = %v, want error starting with %q", tc.json, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig(%s) = %v, want no error", tc.json, err)
			}
			if diff := cmp.Diff(got, tc.want, cmpopts.IgnoreInterfaces(struct {
				serviceconfig.LoadBalancingConfig
			}{})); diff != "" {
				t.Errorf("ParseConfig(%s) mismatch (-got +want):\n%s", tc.json, diff)
			}
		})
	}
}

// TestConfigRoundTrip: grpc-go's xDS stack marshals a parsed config and
// parses it again; the result must be the same config.
func TestConfigRoundTrip(t *testing.T) {
	for _, cfg := range []*Config{
		{},
		{Decay: 5 * time.Second},
		{Decay: 1500 * time.Millisecond, DefaultRTT: 20 * time.Millisecond, FailurePenalty: 2 * time.Second},
	} {
		js, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("json.Marshal(%+v) = %v", cfg, err)
		}
		got, err := builder{}.ParseConfig(js)
		if err != nil {
			t.Fatalf("ParseConfig(%s) = %v", js, err)
		}
		if diff := cmp.Diff(got, cfg, cmpopts.IgnoreInterfaces(struct {
			serviceconfig.LoadBalancingConfig
		}{})); diff != "" {
			t.Errorf("ParseConfig(json.Marshal(%+v)) mismatch (-got +want):\n%s", cfg, diff)
		}
	}
}

func TestRegistered(t *testing.T) {
	b := balancer.Get(Name)
	if b == nil {
		t.Fatalf("balancer.Get(%q) = nil, want the ewma builder", Name)
	}
	if got := b.Name(); got != "trellis_ewma" {
		t.Errorf("Name() = %q, want %q", got, "trellis_ewma")
	}
}

func TestOutcome(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want result
	}{
		{nil, success},
		{status.Error(codes.NotFound, "no"), success},
		{status.Error(codes.InvalidArgument, "no"), success},
		{status.Error(codes.Canceled, "gone"), ignored},
		{status.Error(codes.Unavailable, "down"), failure},
		{status.Error(codes.DeadlineExceeded, "slow"), failure},
		{status.Error(codes.Internal, "bug"), failure},
		{errors.New("not a status"), failure}, // UNKNOWN
	} {
		if got := outcome(balancer.DoneInfo{Err: tc.err}); got != tc.want {
			t.Errorf("outcome(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// fakeClock replaces timeNow: time moves only when the test says.
type fakeClock struct{ now atomic.Int64 }

func useFakeClock(t *testing.T) *fakeClock {
	c := &fakeClock{}
	c.now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	old := timeNow
	timeNow = func() time.Time { return time.Unix(0, c.now.Load()) }
	t.Cleanup(func() { timeNow = old })
	return c
}

func (c *fakeClock) advance(d time.Duration) { c.now.Add(int64(d)) }

// childPicker stands for an endpoint's pick_first picker.
type childPicker struct{ name string }

func (c *childPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{Metadata: nil, Done: nil}, nil
}

// TestPickerMeasuresFromPickToDone drives the picker with a fake clock:
// the latency recorded is the time from Pick to Done, a failure counts as
// the penalty, and later picks go to the cheaper endpoint.
func TestPickerMeasuresFromPickToDone(t *testing.T) {
	clock := useFakeClock(t)
	params := peakewma.Params{DefaultRTT: 50 * time.Millisecond, FailurePenalty: 2 * time.Second}
	now := clock.now.Load()
	a, b := peakewma.New(params, now, nil), peakewma.New(params, now, nil)
	p := &picker{params: params, ready: []choice{{picker: &childPicker{"a"}, est: a}, {picker: &childPicker{"b"}, est: b}}}

	t.Cleanup(func() { randUint64 = defaultRand })
	// Both cost the same: the first sampled (r1 % 2) wins; then the one
	// without an outstanding call does.
	randUint64 = func() uint64 { return 0 }
	resA, err := p.Pick(balancer.PickInfo{})
	if err != nil {
		t.Fatalf("Pick() = %v", err)
	}
	randUint64 = func() uint64 { return 0 }
	resB, err := p.Pick(balancer.PickInfo{})
	if err != nil {
		t.Fatalf("Pick() = %v", err)
	}
	if a.Outstanding() != 1 || b.Outstanding() != 1 {
		t.Fatalf("outstanding after two picks: %d and %d, want 1 and 1", a.Outstanding(), b.Outstanding())
	}
	clock.advance(3 * time.Millisecond)
	resA.Done(balancer.DoneInfo{})
	if got := time.Duration(a.Value(params, clock.now.Load())); got != 3*time.Millisecond {
		t.Errorf("estimate after a call of 3ms = %v, want 3ms", got)
	}
	clock.advance(17 * time.Millisecond)
	resB.Done(balancer.DoneInfo{Err: status.Error(codes.NotFound, "an answer")})
	if got := time.Duration(b.Value(params, clock.now.Load())); got != 20*time.Millisecond {
		t.Errorf("estimate after a call of 20ms = %v, want 20ms", got)
	}

	// Now a (3ms) is cheaper than b (20ms) whichever comes first.
	for r1 := range uint64(2) {
		randUint64 = func() uint64 { return r1 }
		res, _ := p.Pick(balancer.PickInfo{})
		if a.Outstanding() != 1 {
			t.Errorf("Pick() with r1=%d went to the 20ms endpoint, want the 3ms one", r1)
		}
		res.Done(balancer.DoneInfo{})
	}

	// A fast failure counts as the penalty.
	randUint64 = func() uint64 { return 0 }
	res, _ := p.Pick(balancer.PickInfo{})
	clock.advance(time.Millisecond)
	res.Done(balancer.DoneInfo{Err: status.Error(codes.Unavailable, "down")})
	if got := time.Duration(a.Value(params, clock.now.Load())); got != 2*time.Second {
		t.Errorf("estimate after a failed call = %v, want the 2s penalty", got)
	}
}

var defaultRand = randUint64

type backend struct {
	addr  string
	calls atomic.Int64
	delay atomic.Int64 // nanoseconds added to every call
	fail  atomic.Bool  // every call fails with UNAVAILABLE
	srv   *grpc.Server
}

func (b *backend) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	b.calls.Add(1)
	if d := time.Duration(b.delay.Load()); d > 0 {
		tm := time.NewTimer(d) // the backend's service time
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if b.fail.Load() {
		return nil, status.Error(codes.Unavailable, "injected by the test")
	}
	return h(ctx, req)
}

func startBackends(t *testing.T, n int) []*backend {
	t.Helper()
	var bs []*backend
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("net.Listen() = %v", err)
		}
		b := &backend{addr: lis.Addr().String()}
		b.srv = grpc.NewServer(grpc.UnaryInterceptor(b.intercept))
		greeterpb.RegisterGreeterServer(b.srv, &greeter.Server{Version: "v1", Instance: b.addr})
		go b.srv.Serve(lis)
		t.Cleanup(b.srv.Stop)
		bs = append(bs, b)
	}
	return bs
}

func dial(t *testing.T, bs []*backend, cfg string) greeterpb.GreeterClient {
	t.Helper()
	var eps []resolver.Endpoint
	for _, b := range bs {
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: b.addr}}})
	}
	r := manual.NewBuilderWithScheme("ewma-test")
	r.InitialState(resolver.State{Endpoints: eps})
	cc, err := grpc.NewClient(r.Scheme()+":///greeter",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{"trellis_ewma":%s}]}`, cfg)),
	)
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return greeterpb.NewGreeterClient(cc)
}

// run sends n RPCs from workers goroutines and returns how many failed.
func run(ctx context.Context, c greeterpb.GreeterClient, workers, n int) int64 {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if _, err := c.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return failed.Load()
}

func shares(bs []*backend, before []int64) []float64 {
	var total int64
	for i, b := range bs {
		total += b.calls.Load() - before[i]
	}
	out := make([]float64, len(bs))
	for i, b := range bs {
		out[i] = float64(b.calls.Load()-before[i]) / float64(max(total, 1))
	}
	return out
}

func counts(bs []*backend) []int64 {
	var c []int64
	for _, b := range bs {
		c = append(c, b.calls.Load())
	}
	return c
}

// TestAvoidsSlowBackend: of three real servers, one ten times slower, the
// slow one gets a small share under concurrent load, where round robin
// would give it a third.
func TestAvoidsSlowBackend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	bs := startBackends(t, 3)
	for _, b := range bs {
		b.delay.Store(int64(time.Millisecond))
	}
	bs[0].delay.Store(int64(10 * time.Millisecond))
	client := dial(t, bs, `{}`)
	if failed := run(ctx, client, 8, 300); failed > 0 {
		t.Fatalf("%d warm-up RPCs failed", failed)
	}
	before := counts(bs)
	if failed := run(ctx, client, 8, 3000); failed > 0 {
		t.Fatalf("%d RPCs failed", failed)
	}
	got := shares(bs, before)
	if got[0] > 0.15 {
		t.Errorf("the slow backend got %.1f%% of the RPCs, want under 15%% (round robin: 33%%); shares %.3f", 100*got[0], got)
	}
	for i, s := range got[1:] {
		if s < 0.3 {
			t.Errorf("fast backend %d got %.1f%% of the RPCs, want over 30%%; shares %.3f", i+1, 100*s, got)
		}
	}
	t.Logf("shares %.3f", got)
}

// TestAvoidsFailingBackend: a backend that fails fast is not preferred for
// its speed: each failure counts as the penalty.
func TestAvoidsFailingBackend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	bs := startBackends(t, 3)
	for _, b := range bs {
		b.delay.Store(int64(2 * time.Millisecond))
	}
	bs[0].delay.Store(0)
	bs[0].fail.Store(true)
	client := dial(t, bs, `{"failurePenalty":"1s"}`)
	run(ctx, client, 4, 200)
	before := counts(bs)
	failed := run(ctx, client, 4, 2000)
	got := shares(bs, before)
	if got[0] > 0.05 {
		t.Errorf("the failing backend got %.1f%% of the RPCs (%d failed), want under 5%%; shares %.3f", 100*got[0], failed, got)
	}
	t.Logf("shares %.3f, %d failed", got, failed)
}

// TestSkipsStoppedBackend: once a backend stops, every RPC succeeds on the
// others.
func TestSkipsStoppedBackend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	bs := startBackends(t, 3)
	client := dial(t, bs, `{}`)
	run(ctx, client, 4, 300)
	bs[0].srv.Stop()
	for streak := 0; streak < 50; {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("no run of successful RPCs after stopping %s: %v", bs[0].addr, err)
			}
			streak = 0
			continue
		}
		streak++
	}
	before := counts(bs)
	if failed := run(ctx, client, 4, 600); failed > 0 {
		t.Errorf("%d RPCs failed with two backends up", failed)
	}
	if n := bs[0].calls.Load() - before[0]; n != 0 {
		t.Errorf("stopped backend answered %d RPCs", n)
	}
}
