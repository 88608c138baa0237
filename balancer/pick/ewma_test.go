package pick

import (
	"math"
	"sync"
	"testing"
	"time"
)

// simulate makes n picks one after another on a fake clock; each request
// takes latency[address] and ends with results[address] (Success if
// unset). It returns the picks per address.
func simulate(t *testing.T, clock *fakeClock, p *Picker, n int, latency map[string]time.Duration, results map[string]Result) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		ep, done, err := p.Pick(0)
		if err != nil {
			t.Fatalf("Pick() = %v, want no error", err)
		}
		got[ep.Address]++
		clock.Advance(latency[ep.Address])
		done(results[ep.Address])
	}
	return got
}

func TestEWMAAvoidsSlowEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name string
		eps  []Endpoint
	}{
		{"equal weights", endpoints(3)},
		{"weighted", []Endpoint{{Address: "10.0.0.1:80", Weight: 2}, {Address: "10.0.0.2:80", Weight: 1}, {Address: "10.0.0.3:80", Weight: 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(t)
			p := New(Config{Policy: EWMA}, tc.eps)
			latency := map[string]time.Duration{"10.0.0.1:80": 10 * time.Millisecond, "10.0.0.2:80": time.Millisecond, "10.0.0.3:80": time.Millisecond}
			got := simulate(t, clock, p, 3000, latency, nil)
			// Each endpoint answers once or twice at first; after that the slow
			// one loses every comparison until its estimate decays below the
			// fast ones' (23s at τ=10s, while the test takes 3s).
			if n := got["10.0.0.1:80"]; n > 30 {
				t.Errorf("the slow endpoint got %d of 3000 picks, want at most 30 (all: %v)", n, got)
			}
			for _, addr := range []string{"10.0.0.2:80", "10.0.0.3:80"} {
				if n := got[addr]; n < 1200 {
					t.Errorf("fast endpoint %s got %d of 3000 picks, want at least 1200 (all: %v)", addr, n, got)
				}
			}
		})
	}
}

func TestEWMASlowEndpointComesBack(t *testing.T) {
	clock := newFakeClock(t)
	p := New(Config{Policy: EWMA, Decay: time.Second}, endpoints(3))
	latency := map[string]time.Duration{"10.0.0.1:80": 10 * time.Millisecond, "10.0.0.2:80": time.Millisecond, "10.0.0.3:80": time.Millisecond}
	simulate(t, clock, p, 1000, latency, nil)
	// It recovers; its estimate decays (τ = 1s) until it is tried again,
	// and once it answers fast it takes its share.
	latency["10.0.0.1:80"] = time.Millisecond
	got := simulate(t, clock, p, 30000, latency, nil)
	if n := got["10.0.0.1:80"]; n < 5000 {
		t.Errorf("the recovered endpoint got %d of 30000 picks, want at least 5000 (all: %v)", n, got)
	}
}

func TestEWMAWeighsOutstanding(t *testing.T) {
	newFakeClock(t)
	p := New(Config{Policy: EWMA}, endpoints(3))
	params := Config{}.ewmaParams()
	for _, ep := range p.eps {
		ep.est.Start()
		ep.est.Observe(params, timeNow().UnixNano(), 5*time.Millisecond)
	}
	busy := p.byAddr["10.0.0.1:80"].est
	for _, tc := range []struct {
		outstanding int
		min, max    int
	}{
		{outstanding: 20, min: 0, max: 0},   // 5ms × 21 loses to 5ms × 1
		{outstanding: 0, min: 70, max: 130}, // a third of 300
	} {
		for range tc.outstanding {
			busy.Start()
		}
		got := 0
		for range 300 {
			ep, done, err := p.Pick(0)
			if err != nil {
				t.Fatal(err)
			}
			if ep.Address == "10.0.0.1:80" {
				got++
			}
			done(Ignored)
		}
		if got < tc.min || got > tc.max {
			t.Errorf("with %d requests outstanding on it, an endpoint of equal latency got %d of 300 picks, want %d to %d", tc.outstanding, got, tc.min, tc.max)
		}
		for range tc.outstanding {
			busy.Cancel()
		}
	}
}

func TestEWMAResults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		took    time.Duration
		result  Result
		want    time.Duration
		wantOut int64
	}{
		{name: "success counts its latency", took: 30 * time.Millisecond, result: Success, want: 30 * time.Millisecond},
		{name: "failure counts the default penalty", took: time.Millisecond, result: Failure, want: time.Second},
		{name: "gateway failure counts the configured penalty", cfg: Config{FailurePenalty: 200 * time.Millisecond}, took: time.Millisecond, result: GatewayFailure, want: 200 * time.Millisecond},
		{name: "slow failure counts its latency", cfg: Config{FailurePenalty: 200 * time.Millisecond}, took: 700 * time.Millisecond, result: Failure, want: 700 * time.Millisecond},
		{name: "ignored leaves the estimate", took: 900 * time.Millisecond, result: Ignored, want: 5 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(t)
			tc.cfg.Policy = EWMA
			p := New(tc.cfg, endpoints(1))
			simulate(t, clock, p, 1, map[string]time.Duration{"10.0.0.1:80": 5 * time.Millisecond}, nil)
			simulate(t, clock, p, 1, map[string]time.Duration{"10.0.0.1:80": tc.took}, map[string]Result{"10.0.0.1:80": tc.result})
			est := p.byAddr["10.0.0.1:80"].est
			got := time.Duration(est.Value(tc.cfg.ewmaParams(), timeNow().UnixNano()))
			if tc.result == Ignored {
				// 5ms decayed over the ignored request's time.
				tc.want = time.Duration(float64(tc.want) * math.Exp(-float64(tc.took)/float64(10*time.Second)))
			}
			if got != tc.want {
				t.Errorf("estimate after a request of %v ending %v = %v, want %v", tc.took, tc.result, got, tc.want)
			}
			if n := est.Outstanding(); n != 0 {
				t.Errorf("outstanding after done = %d, want 0", n)
			}
		})
	}
}

func TestEWMAWarmUp(t *testing.T) {
	clock := newFakeClock(t)
	cfg := Config{Policy: EWMA}
	p := New(cfg, endpoints(2))
	simulate(t, clock, p, 2, map[string]time.Duration{"10.0.0.1:80": 10 * time.Millisecond, "10.0.0.2:80": 30 * time.Millisecond}, nil)
	// A new endpoint starts from the mean of the others...
	p.Update(cfg, endpoints(3))
	now := timeNow().UnixNano()
	a, b := p.byAddr["10.0.0.1:80"].est.Value(cfg.ewmaParams(), now), p.byAddr["10.0.0.2:80"].est.Value(cfg.ewmaParams(), now)
	if got, want := p.byAddr["10.0.0.3:80"].est.Value(cfg.ewmaParams(), now), (a+b)/2; math.Abs(got-want) > 1 {
		t.Errorf("new endpoint's estimate = %v, want the mean of the others, %v", time.Duration(got), time.Duration(want))
	}
	// ... or from DefaultRTT; the endpoints it keeps keep their estimates.
	cfg.DefaultRTT = 3 * time.Millisecond
	p.Update(cfg, endpoints(4))
	if got := time.Duration(p.byAddr["10.0.0.4:80"].est.Value(cfg.ewmaParams(), now)); got != 3*time.Millisecond {
		t.Errorf("new endpoint's estimate = %v, want DefaultRTT 3ms", got)
	}
	if got := p.byAddr["10.0.0.1:80"].est.Value(cfg.ewmaParams(), now); got != a {
		t.Errorf("kept endpoint's estimate = %v after Update, want %v", time.Duration(got), time.Duration(a))
	}
}

// TestEWMAConcurrent picks and reports from many goroutines; run with
// -race.
func TestEWMAConcurrent(t *testing.T) {
	cfg := Config{Policy: EWMA, MaxRequests: 1 << 20}
	p := New(cfg, endpoints(5))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				_, done, err := p.Pick(0)
				if err != nil {
					t.Errorf("Pick() = %v", err)
					return
				}
				done(Result(i % 4))
				if g == 0 && i%500 == 0 {
					p.Update(cfg, endpoints(5-i/500))
				}
			}
		})
	}
	wg.Wait()
	if n := p.outstanding.Load(); n != 0 {
		t.Errorf("outstanding requests after all were done = %d, want 0", n)
	}
}
