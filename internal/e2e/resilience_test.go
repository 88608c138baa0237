package e2e

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/retry"
)

// behaviour lets a test make a server slow, failing or stuck.
type behaviour struct {
	delay    atomic.Int64  // nanoseconds added to every call
	failCode atomic.Uint32 // non-zero: every call fails with this code
	gate     atomic.Pointer[chan struct{}]
	inFlight atomic.Int32
	calls    atomic.Int64
	// failEvery, if non-zero, fails every failEvery-th call with UNAVAILABLE.
	failEvery atomic.Int64
	// workers, if set, is a semaphore: calls beyond its capacity queue for
	// a worker before their delay, as on a server with finite workers.
	workers atomic.Pointer[chan struct{}]
}

// run applies the behaviour to one call: it returns the error the call
// fails with, or nil to serve it.
func (b *behaviour) run(ctx context.Context) error {
	n := b.calls.Add(1)
	if every := b.failEvery.Load(); every > 0 && n%every == 0 {
		return status.Error(codes.Unavailable, "injected by the test: flaky")
	}
	b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	if g := b.gate.Load(); g != nil {
		select {
		case <-*g:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	if w := b.workers.Load(); w != nil {
		select {
		case *w <- struct{}{}:
			defer func() { <-*w }()
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	if d := time.Duration(b.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	if c := codes.Code(b.failCode.Load()); c != codes.OK {
		return status.Error(c, "injected by the test")
	}
	return nil
}

func (b *behaviour) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := b.run(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func startControlled(t *testing.T, cp, version string) (*greeterServer, *behaviour) {
	t.Helper()
	b := &behaviour{}
	g := startGreeter(t, cp, version, mesh.WithServerOptions(grpc.UnaryInterceptor(b.intercept)))
	return g, b
}

// meshWith starts a control plane with the given YAML and n controlled
// greeters of version v1, and returns a client once every one answers.
func meshWith(ctx context.Context, t *testing.T, yaml string, n int) (*controlPlane, grpc.ClientConnInterface, []*greeterServer, []*behaviour) {
	t.Helper()
	dir := t.TempDir()
	if yaml != "" {
		writeFile(t, dir, "mesh.yaml", yaml)
	}
	cp := startControlPlane(t, dir)
	var gs []*greeterServer
	var bs []*behaviour
	for range n {
		g, b := startControlled(t, cp.addr, "v1")
		gs, bs = append(gs, g), append(bs, b)
	}
	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	waitFor(ctx, t, fmt.Sprintf("%d greeters answering", n), func() error {
		if tl := send(ctx, cc, 10*n); len(tl.instances) != n {
			return fmt.Errorf("instances %v, errors %d (%v)", tl.instances, tl.errors, tl.lastErr)
		}
		return nil
	})
	return cp, cc, gs, bs
}

// load sends RPCs from workers goroutines until stop is closed, and
// returns the number of calls and the errors.
func load(ctx context.Context, cc grpc.ClientConnInterface, workers int, stop <-chan struct{}) (calls int64, errs []error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var n atomic.Int64
	client := greeterpb.NewGreeterClient(cc)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := client.SayHello(rctx, &greeterpb.HelloRequest{Name: "load"})
				cancel()
				n.Add(1)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return n.Load(), errs
}

// retryUnavailable retries greeter calls on UNAVAILABLE, up to 3 times.
const retryUnavailable = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - retries: {attempts: 3, retryOn: unavailable}
    route: [{destination: {host: greeter}}]
`

// TestRetriesSurviveKilledBackend: with retries on UNAVAILABLE, killing one
// of three backends under steady load fails no call.
func TestRetriesSurviveKilledBackend(t *testing.T) {
	ctx := testContext(t)
	_, cc, gs, bs := meshWith(ctx, t, retryUnavailable, 3)
	for _, b := range bs {
		b.delay.Store(int64(2 * time.Millisecond)) // keep calls in flight on the victim
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	var calls int64
	var errs []error
	go func() {
		calls, errs = load(ctx, cc, 8, stop)
		close(done)
	}()
	waitFor(ctx, t, "calls on the victim", func() error {
		if bs[0].calls.Load() < 50 {
			return fmt.Errorf("%d calls", bs[0].calls.Load())
		}
		return nil
	})
	gs[0].Close() // abrupt: connections drop with calls in flight
	before := bs[1].calls.Load() + bs[2].calls.Load()
	waitFor(ctx, t, "load on the survivors", func() error {
		if n := bs[1].calls.Load() + bs[2].calls.Load() - before; n < 300 {
			return fmt.Errorf("%d calls since the kill", n)
		}
		return nil
	})
	close(stop)
	<-done
	if len(errs) > 0 {
		t.Errorf("%d of %d calls failed after killing a backend; first: %v", len(errs), calls, errs[0])
	}
	t.Logf("%d calls, %d failed", calls, len(errs))
}

// TestRouteTimeoutEndsSlowCalls: a route timeout ends calls to a slow
// backend with DEADLINE_EXCEEDED close to the timeout.
func TestRouteTimeoutEndsSlowCalls(t *testing.T) {
	ctx := testContext(t)
	_, cc, _, bs := meshWith(ctx, t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - timeout: 300ms
    route: [{destination: {host: greeter}}]
`, 1)
	bs[0].delay.Store(int64(20 * time.Second))
	client := greeterpb.NewGreeterClient(cc)
	for range 3 {
		start := time.Now()
		_, err := client.SayHello(ctx, &greeterpb.HelloRequest{}) // no deadline of its own
		took := time.Since(start)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("SayHello() = %v, want DEADLINE_EXCEEDED", err)
		}
		if took < 250*time.Millisecond || took > 5*time.Second {
			t.Errorf("the call ended after %v, want close to the 300ms timeout", took)
		}
	}
}

// TestCircuitBreakerFailsFast: calls beyond http2MaxRequests fail at once
// with UNAVAILABLE, and calls succeed again once load drops.
func TestCircuitBreakerFailsFast(t *testing.T) {
	ctx := testContext(t)
	_, cc, _, bs := meshWith(ctx, t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy:
    connectionPool: {http: {http2MaxRequests: 2}}
`, 1)
	gate := make(chan struct{})
	bs[0].gate.Store(&gate)
	client := greeterpb.NewGreeterClient(cc)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{}); err != nil {
				t.Errorf("a call within the limit failed: %v", err)
			}
		}()
	}
	waitFor(ctx, t, "two calls in flight", func() error {
		if n := bs[0].inFlight.Load(); n != 2 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	start := time.Now()
	_, err := client.SayHello(ctx, &greeterpb.HelloRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("third concurrent call = %v, want UNAVAILABLE", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the rejected call took %v, want it to fail fast", took)
	}
	bs[0].gate.Store(nil)
	close(gate)
	wg.Wait()
	if tl := send(ctx, cc, 20); tl.errors > 0 {
		t.Errorf("after the load dropped: %d errors, last %v", tl.errors, tl.lastErr)
	}
}

// TestFaultInjection: an abort at 50% fails about half the calls with the
// configured code; a delay adds its time to every call.
func TestFaultInjection(t *testing.T) {
	ctx := testContext(t)
	_, cc, _, _ := meshWith(ctx, t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - match: [{headers: {x-fault: {exact: delay}}}]
    fault: {delay: {fixedDelay: 150ms}}
    route: [{destination: {host: greeter}}]
  - match: [{headers: {x-fault: {exact: abort}}}]
    fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 50}}}
    route: [{destination: {host: greeter}}]
  - route: [{destination: {host: greeter}}]
`, 1)
	tl := send(ctx, cc, 1000, "x-fault", "abort")
	if share := float64(tl.errors) / 10; math.Abs(share-50) > 8 {
		t.Errorf("abort at 50%%: %.1f%% of calls failed, want 50±8%%", share)
	}
	if code := status.Code(tl.lastErr); code != codes.ResourceExhausted {
		t.Errorf("aborted call error = %v, want RESOURCE_EXHAUSTED", tl.lastErr)
	}
	client := greeterpb.NewGreeterClient(cc)
	dctx := metadata.AppendToOutgoingContext(ctx, "x-fault", "delay")
	for range 3 {
		start := time.Now()
		if _, err := client.SayHello(dctx, &greeterpb.HelloRequest{}); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 150*time.Millisecond {
			t.Errorf("delayed call took %v, want at least 150ms", took)
		}
	}
	if tl := send(ctx, cc, 50); tl.errors > 0 {
		t.Errorf("calls without a fault header: %d errors, last %v", tl.errors, tl.lastErr)
	}
}

// TestRingHashKeepsHeaderOnOneBackend: consistent hashing on a header sends
// every call with one value to one backend, and spreads values over
// backends.
func TestRingHashKeepsHeaderOnOneBackend(t *testing.T) {
	ctx := testContext(t)
	_, cc, _, _ := meshWith(ctx, t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
`, 3)
	used := map[string]bool{}
	for i := range 20 {
		user := fmt.Sprintf("user-%d", i)
		tl := send(ctx, cc, 15, "x-user", user)
		if tl.errors > 0 || len(tl.instances) != 1 {
			t.Errorf("%s reached %v (errors %d), want one backend", user, tl.instances, tl.errors)
		}
		for inst := range tl.instances {
			used[inst] = true
		}
	}
	if len(used) < 2 {
		t.Errorf("20 users all landed on %v, want them spread", used)
	}
}

// TestLeastRequestAvoidsSlowBackend: with LEAST_REQUEST, a slow backend,
// holding more calls in flight, gets a smaller share than round robin's third.
func TestLeastRequestAvoidsSlowBackend(t *testing.T) {
	ctx := testContext(t)
	_, cc, _, bs := meshWith(ctx, t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
`, 3)
	bs[0].delay.Store(int64(50 * time.Millisecond))
	start := [3]int64{bs[0].calls.Load(), bs[1].calls.Load(), bs[2].calls.Load()}
	stop := make(chan struct{})
	done := make(chan struct{})
	var errs []error
	go func() { _, errs = load(ctx, cc, 12, stop); close(done) }()
	waitFor(ctx, t, "600 calls", func() error {
		if n := bs[1].calls.Load() + bs[2].calls.Load() - start[1] - start[2]; n < 600 {
			return fmt.Errorf("%d calls on the fast backends", n)
		}
		return nil
	})
	close(stop)
	<-done
	if len(errs) > 0 {
		t.Fatalf("%d calls failed: %v", len(errs), errs[0])
	}
	var total int64
	for i, b := range bs {
		total += b.calls.Load() - start[i]
	}
	slow := float64(bs[0].calls.Load()-start[0]) / float64(total)
	if slow > 0.2 {
		t.Errorf("the slow backend got %.1f%% of calls, want well under round robin's 33%%", 100*slow)
	}
	t.Logf("slow backend share %.1f%% of %d calls", 100*slow, total)
}

// TestOutlierEjectsFailingBackend: a backend failing every call with
// UNAVAILABLE is ejected by consecutive-error outlier detection, its share
// falling to nothing well within one interval, and returns after the
// ejection time once it recovers.
func TestOutlierEjectsFailingBackend(t *testing.T) {
	ctx := testContext(t)
	_, cc, gs, bs := meshWith(ctx, t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 100ms
      baseEjectionTime: 1s
      maxEjectionPercent: 34
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: greeter}}]
`, 3)
	bad := gs[0].addr
	bs[0].failCode.Store(uint32(codes.Unavailable))
	before := bs[0].calls.Load()
	start := time.Now()
	tl := send(ctx, cc, 300)
	if n := bs[0].calls.Load() - before; n > 3 {
		t.Errorf("the failing backend got %d of 300 calls, want at most the 3 that eject it", n)
	}
	if tl.errors > 3 {
		t.Errorf("%d calls failed, want at most 3 (%v)", tl.errors, tl.lastErr)
	}
	ejectedFor := time.Since(start)
	bs[0].failCode.Store(0)
	waitFor(ctx, t, "the recovered backend to return", func() error {
		if tl := send(ctx, cc, 30); tl.instances[bad] == 0 {
			return fmt.Errorf("instances %v", tl.instances)
		}
		return nil
	})
	if back := time.Since(start); back < time.Second {
		t.Errorf("the backend returned %v after its ejection, before the 1s ejection time", back)
	}
	t.Logf("300 calls in %v while ejected", ejectedFor)
}

// TestRandomSpreadsLoad: RANDOM spreads calls over every backend.
func TestRandomSpreadsLoad(t *testing.T) {
	ctx := testContext(t)
	_, cc, gs, _ := meshWith(ctx, t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
`, 3)
	tl := send(ctx, cc, 1500)
	for _, g := range gs {
		if n := tl.instances[g.addr]; n < 350 || n > 650 {
			t.Errorf("backend %s got %d of 1500 calls, want about 500 (%v)", g.addr, n, tl.instances)
		}
	}
}

// connCounter counts the connections a server accepts.
type connCounter struct{ conns atomic.Int64 }

func (c *connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *connCounter) HandleRPC(context.Context, stats.RPCStats)                       {}
func (c *connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (c *connCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnBegin); ok {
		c.conns.Add(1)
	}
}

// TestMaxRequestsPerConnectionRecycles: with maxRequestsPerConnection, a
// client moves to a new connection after that many calls, draining the old
// one, and no call fails.
func TestMaxRequestsPerConnectionRecycles(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	writeFile(t, dir, "dr.yaml", `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 10}}
`)
	cp := startControlPlane(t, dir)
	counter := &connCounter{}
	b := &behaviour{}
	b.delay.Store(int64(time.Millisecond))
	startGreeter(t, cp.addr, "v1", mesh.WithServerOptions(grpc.StatsHandler(counter), grpc.UnaryInterceptor(b.intercept)))
	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	waitFor(ctx, t, "the greeter to answer", func() error {
		if tl := send(ctx, cc, 1); tl.errors > 0 {
			return tl.lastErr
		}
		return nil
	})
	before := counter.conns.Load()
	tl := send(ctx, cc, 100)
	if tl.errors > 0 {
		t.Errorf("%d of 100 calls failed while recycling connections: %v", tl.errors, tl.lastErr)
	}
	if n := counter.conns.Load() - before; n < 5 {
		t.Errorf("100 calls opened %d new connections, want about 10 (one per 10 calls)", n)
	}
}

// TestPerTryTimeoutRetriesStuckBackend: with a per-try timeout, a call whose
// attempt lands on a backend that never answers is retried on another one
// within the route's timeout, instead of failing when the timeout ends.
// grpc-go has no per-try timeout: the mesh's retry engine provides it.
func TestPerTryTimeoutRetriesStuckBackend(t *testing.T) {
	ctx := testContext(t)
	_, cc, _, bs := meshWith(ctx, t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - timeout: 3s
    retries: {attempts: 3, retryOn: unavailable, perTryTimeout: 200ms}
    route: [{destination: {host: greeter}}]
`, 2)
	stuck := make(chan struct{}) // never closed: calls wait for their context
	bs[0].gate.Store(&stuck)
	t.Cleanup(func() { bs[0].gate.Store(nil) })
	client := greeterpb.NewGreeterClient(cc)
	const n = 20
	failed := 0
	for range n {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "x"}); err != nil {
			failed++
			t.Logf("SayHello() = %v", err)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d calls failed with one stuck backend and a per-try timeout, want 0", failed, n)
	}
	// Round robin sends about half the first attempts to the stuck backend,
	// and every one of them is retried on the other.
	if got := bs[0].calls.Load(); got == 0 {
		t.Errorf("the stuck backend saw %d attempts, want some (the test proves nothing otherwise)", got)
	}
	t.Logf("%d calls, stuck backend saw %d attempts, healthy one %d", n, bs[0].calls.Load(), bs[1].calls.Load())
}

// TestRetriesDoNotMultiply: a call that fails on every attempt is attempted
// exactly attempts+1 times: grpc-go's own retry is off under the mesh's
// engine, so the two never compound.
func TestRetriesDoNotMultiply(t *testing.T) {
	ctx := testContext(t)
	_, cc, _, bs := meshWith(ctx, t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - retries: {attempts: 2, retryOn: unavailable, perTryTimeout: 1s}
    route: [{destination: {host: greeter}}]
`, 1)
	before := bs[0].calls.Load()
	bs[0].failCode.Store(uint32(codes.Unavailable))
	_, err := greeterpb.NewGreeterClient(cc).SayHello(ctx, &greeterpb.HelloRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("SayHello() = %v, want UNAVAILABLE", err)
	}
	if got := bs[0].calls.Load() - before; got != 3 {
		t.Errorf("a failing call was attempted %d times, want 3 (1 + 2 retries)", got)
	}
}

// TestRetryBudgetPreventsRetryStorm: when every backend fails, retries are
// capped by the connection's retry budget (on by default), so upstream
// attempts stay within 1.25 × the calls made instead of 1 + attempts times;
// when the backends recover and the budget refills, retries work again.
func TestRetryBudgetPreventsRetryStorm(t *testing.T) {
	ctx := testContext(t)
	cp, _, _, bs := meshWith(ctx, t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - retries: {attempts: 4, retryOn: unavailable, backoff: 1ms}
    route: [{destination: {host: greeter}}]
`, 2)
	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr), mesh.WithRetryBudget(retry.Budget{Window: 2 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := greeterpb.NewGreeterClient(cc)
	waitFor(ctx, t, "the new connection answering", func() error {
		_, err := client.SayHello(ctx, &greeterpb.HelloRequest{})
		return err
	})
	attempts := func() int64 { return bs[0].calls.Load() + bs[1].calls.Load() }
	for _, b := range bs {
		b.failCode.Store(uint32(codes.Unavailable))
	}
	const calls = 2000
	before := attempts()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls / 8 {
				if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: fmt.Sprint(w)}); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	made := attempts() - before
	if failed.Load() != calls {
		t.Errorf("%d of %d calls failed with every backend failing, want all", failed.Load(), calls)
	}
	// Budget: 20 % of the calls plus 10 retries a second over the window,
	// however long the burst took.
	if ratio := float64(made) / calls; ratio > 1.25 {
		t.Errorf("upstream attempts = %d for %d calls (%.2f×), want ≤ 1.25× (without a budget: 5×)", made, calls, ratio)
	}
	t.Logf("every backend failing: %d calls made %d upstream attempts (%.3f×)", calls, made, float64(made)/calls)

	// Recovery: each backend now fails only every other call, which one
	// retry absorbs once the budget has refilled.
	for _, b := range bs {
		b.failEvery.Store(2)
		b.failCode.Store(0)
	}
	waitFor(ctx, t, "retries working again after recovery", func() error {
		for range 20 {
			if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{}); err != nil {
				return err
			}
		}
		return nil
	})
}
