package e2e

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
)

// chaosSettings are the load and the length of TestBackendKilledEveryFewSeconds:
// short in CI; TRELLIS_CHAOS sets the length of the long run, which goes at
// the anchors' rate (1000 calls a second, one of three backends killed every
// 5 seconds):
//
//	TRELLIS_CHAOS=60s go test -run TestBackendKilledEveryFewSeconds -timeout 10m ./internal/e2e/
func chaosSettings(t *testing.T) (length, every time.Duration, rate int) {
	if v := os.Getenv("TRELLIS_CHAOS"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("TRELLIS_CHAOS=%q: %v", v, err)
		}
		return d, 5 * time.Second, 1000
	}
	return 8 * time.Second, 2 * time.Second, 200
}

// TestBackendKilledEveryFewSeconds: under steady open-loop load, one of
// three backends is killed every few seconds (and a new instance started in
// its place, as an orchestrator restarts a crashed process); with retries on
// UNAVAILABLE, no idempotent call fails.
func TestBackendKilledEveryFewSeconds(t *testing.T) {
	length, every, rate := chaosSettings(t)
	ctx, cancel := context.WithTimeout(context.Background(), length+2*time.Minute)
	defer cancel()
	cp, cc, gs, bs := meshWith(ctx, t, retryUnavailable, 3)
	for _, b := range bs {
		b.delay.Store(int64(time.Millisecond)) // calls in flight on the victim
	}
	client := greeterpb.NewGreeterClient(cc)

	// Open loop: a call is started every 1/rate whatever earlier calls do.
	var (
		calls, failed atomic.Int64
		mu            sync.Mutex
		firstErr      error
		wg            sync.WaitGroup
	)
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				_, err := client.SayHello(rctx, &greeterpb.HelloRequest{Name: "chaos"})
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}()
		}
	}()

	kills := 0
	start := time.Now()
	for victim := 0; time.Since(start)+every <= length; victim = (victim + 1) % len(gs) {
		select {
		case <-time.After(every):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		gs[victim].Close() // connections drop with calls in flight
		kills++
		// The replacement registers itself, as a restarted process would.
		g, b := startControlled(t, cp.addr, "v1")
		b.delay.Store(int64(time.Millisecond))
		gs[victim], bs[victim] = g, b
	}
	close(stop)
	wg.Wait()

	n, f := calls.Load(), failed.Load()
	t.Logf("%d calls at %d/s over %s, %d backends killed, %d failed", n, rate, time.Since(start).Round(time.Millisecond), kills, f)
	if f > 0 {
		t.Errorf("%d of %d calls failed; first: %v (code %v)", f, n, firstErr, status.Code(firstErr))
	}
	if kills < 3 {
		t.Errorf("only %d backends were killed", kills)
	}
	if want := int64(float64(rate) * time.Since(start).Seconds() / 2); n < want {
		t.Errorf("%d calls made, want at least %d: the load did not run", n, want)
	}
}
