package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
)

// Load-balancer configurations compared by the slow-backend benchmark.
const (
	roundRobinRule   = "" // no DestinationRule: round robin
	leastRequestRule = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
`
	ewmaRule = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: greeter
  annotations: {trellis.io/load-balancer: EWMA}
spec:
  host: greeter
`
)

// slowMesh starts a control plane with yaml and three greeters, the first
// with slow service time, the others 1ms, each serving at most workers
// calls at once (the rest queue) if workers > 0, and
// returns a mesh.Dial client once all three answer, and the slow one's
// address.
func slowMesh(ctx context.Context, tb testing.TB, yaml string, slowDelay time.Duration, workers int) (grpc.ClientConnInterface, []*behaviour, string) {
	tb.Helper()
	dir := tb.TempDir()
	if yaml != "" {
		writeFile(tb, dir, "mesh.yaml", yaml)
	}
	cp := startControlPlane(tb, dir)
	var bs []*behaviour
	var slow string
	for i := range 3 {
		b := &behaviour{}
		b.delay.Store(int64(time.Millisecond))
		if workers > 0 {
			w := make(chan struct{}, workers)
			b.workers.Store(&w)
		}
		g := startGreeter(tb, cp.addr, "v1", mesh.WithServerOptions(grpc.UnaryInterceptor(b.intercept)))
		if i == 0 {
			b.delay.Store(int64(slowDelay))
			slow = g.addr
		}
		bs = append(bs, b)
	}
	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	// EWMA avoids the slow greeter once it has answered, so wait for the
	// three endpoints in EDS and for calls answered by all of them, in
	// total, with concurrent calls (the outstanding weighting spreads them).
	seen := map[string]bool{}
	for len(seen) < 3 || len(cp.ConfigDump().Endpoints["outbound|9080||greeter.default.svc.cluster.local"]) < 3 {
		ss, _ := measureCalls(ctx, cc, 8, 24)
		for _, s := range ss {
			seen[s.instance] = true
		}
		if ctx.Err() != nil {
			tb.Fatalf("waiting for three greeters: %v (answered: %v)", ctx.Err(), seen)
		}
	}
	return cc, bs, slow
}

// sample is one call's latency and the backend that served it.
type sample struct {
	latency  time.Duration
	instance string
}

// measureCalls sends n calls from workers goroutines and returns their
// latencies and the number that failed.
func measureCalls(ctx context.Context, cc grpc.ClientConnInterface, workers, n int) ([]sample, int) {
	client := greeterpb.NewGreeterClient(cc)
	var next, failed atomic.Int64
	var mu sync.Mutex
	var out []sample
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				start := time.Now()
				r, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "bench"})
				d := time.Since(start)
				if err != nil {
					failed.Add(1)
					continue
				}
				mu.Lock()
				out = append(out, sample{d, r.GetInstance()})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out, int(failed.Load())
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// summary is the outcome of one policy's run.
type summary struct {
	p50, p99, fastP99 time.Duration
	slowShare         float64
}

func summarize(ss []sample, slow string) summary {
	var all, fast []time.Duration
	n := 0
	for _, s := range ss {
		all = append(all, s.latency)
		if s.instance == slow {
			n++
		} else {
			fast = append(fast, s.latency)
		}
	}
	return summary{p50: quantile(all, 0.5), p99: quantile(all, 0.99), fastP99: quantile(fast, 0.99), slowShare: float64(n) / float64(max(len(ss), 1))}
}

// TestEWMAAvoidsSlowBackend: selected by the DestinationRule annotation,
// trellis_ewma gives a backend ten times slower than the others a small
// share of mesh.Dial calls, where round robin gives it a third. (Its delay
// is 30ms so that the race detector's slowing of the fast ones keeps the
// ratio large.)
func TestEWMAAvoidsSlowBackend(t *testing.T) {
	ctx := testContext(t)
	cc, _, slow := slowMesh(ctx, t, ewmaRule, 30*time.Millisecond, 0)
	measureCalls(ctx, cc, 8, 300) // warm-up
	ss, failed := measureCalls(ctx, cc, 8, 2000)
	if failed > 0 {
		t.Fatalf("%d calls failed", failed)
	}
	s := summarize(ss, slow)
	if s.slowShare > 0.15 {
		t.Errorf("the slow backend served %.1f%% of the calls, want under 15%% (round robin: 33%%)", 100*s.slowShare)
	}
	t.Logf("slow backend share %.1f%%, p50 %v, p99 %v", 100*s.slowShare, s.p50, s.p99)
}

// BenchmarkSlowBackend sends the same load (2 or 8 concurrent callers
// through mesh.Dial, the real control plane and three real greeters, one
// ten times slower) with round robin, least request and peak EWMA, and
// reports the latency percentiles of each, the p99 of the calls the fast
// backends served, and the slow backend's share. The backends either serve
// every call at once after their delay ("concurrent": latency does not grow
// with load) or serve one call at a time, the others queueing ("queueing":
// a server with one worker, whose latency grows with its queue). Run it
// with a fixed count:
//
//	go test ./internal/e2e -run '^$' -bench SlowBackend -benchtime 4000x
func BenchmarkSlowBackend(b *testing.B) {
	for _, bc := range []struct{ name, yaml string }{
		{"round_robin", roundRobinRule},
		{"least_request", leastRequestRule},
		{"ewma", ewmaRule},
	} {
		for _, server := range []struct {
			name    string
			workers int
		}{{"concurrent", 0}, {"queueing", 1}} {
			for _, workers := range []int{2, 8} {
				b.Run(fmt.Sprintf("%s/%s/callers=%d", bc.name, server.name, workers), func(b *testing.B) {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
					defer cancel()
					cc, _, slow := slowMesh(ctx, b, bc.yaml, 10*time.Millisecond, server.workers)
					measureCalls(ctx, cc, workers, 500) // warm-up: connections, estimates
					b.ResetTimer()
					ss, failed := measureCalls(ctx, cc, workers, b.N)
					b.StopTimer()
					if failed > 0 {
						b.Fatalf("%d calls failed", failed)
					}
					s := summarize(ss, slow)
					b.ReportMetric(float64(s.p50)/1e6, "p50-ms")
					b.ReportMetric(float64(s.p99)/1e6, "p99-ms")
					b.ReportMetric(float64(s.fastP99)/1e6, "fast-p99-ms")
					b.ReportMetric(100*s.slowShare, "slow-%")
					b.Logf("%s, %s backends: p50 %v, p99 %v, fast backends' p99 %v, slow share %.1f%%", bc.name, server.name, s.p50, s.p99, s.fastP99, 100*s.slowShare)
				})
			}
		}
	}
}
