package pick

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRoundRobinEven(t *testing.T) {
	p := New(Config{}, endpoints(4))
	got := tally(t, p, 4000)
	want := map[string]int{"10.0.0.1:80": 1000, "10.0.0.2:80": 1000, "10.0.0.3:80": 1000, "10.0.0.4:80": 1000}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("round robin picks (-got +want):\n%s", diff)
	}
	// In turn: four picks in a row are four endpoints.
	if n := len(tally(t, p, 4)); n != 4 {
		t.Errorf("4 round robin picks hit %d endpoints, want 4", n)
	}
}

func TestRandomStart(t *testing.T) {
	firsts := map[string]bool{}
	for range 200 {
		ep, done, err := New(Config{}, endpoints(4)).Pick(0)
		if err != nil {
			t.Fatal(err)
		}
		done(Success)
		firsts[ep.Address] = true
	}
	if len(firsts) != 4 {
		t.Errorf("first picks of 200 round robin pickers hit %d endpoints, want 4", len(firsts))
	}
}

// TestWeights: an endpoint's share is its locality's share times its share
// within the locality, for every policy.
func TestWeights(t *testing.T) {
	weighted := []Endpoint{
		{Address: "a:80", Weight: 1},
		{Address: "b:80", Weight: 3},
	}
	// As the control plane writes them: each locality weighted by its
	// number of endpoints, so every endpoint gets the same share.
	localities := []Endpoint{
		{Address: "a:80", Locality: "r/z1/", LocalityWeight: 3},
		{Address: "b:80", Locality: "r/z1/", LocalityWeight: 3},
		{Address: "c:80", Locality: "r/z1/", LocalityWeight: 3},
		{Address: "d:80", Locality: "r/z2/", LocalityWeight: 1},
	}
	uneven := []Endpoint{
		{Address: "a:80", Locality: "r/z1/", LocalityWeight: 1},
		{Address: "b:80", Locality: "r/z1/", LocalityWeight: 1},
		{Address: "c:80", Locality: "r/z2/", LocalityWeight: 2},
	}
	const n = 40000
	for _, policy := range []string{RoundRobin, Random, LeastRequest, RingHash} {
		for _, tc := range []struct {
			name string
			eps  []Endpoint
			want map[string]int
		}{
			{"endpoint weights", weighted, map[string]int{"a:80": n / 4, "b:80": 3 * n / 4}},
			{"locality weights", localities, map[string]int{"a:80": n / 4, "b:80": n / 4, "c:80": n / 4, "d:80": n / 4}},
			{"uneven localities", uneven, map[string]int{"a:80": n / 6, "b:80": n / 6, "c:80": 2 * n / 3}},
		} {
			t.Run(policy+"/"+tc.name, func(t *testing.T) {
				p := New(Config{Policy: policy, MinRingSize: 4096}, tc.eps)
				got := map[string]int{}
				for range n {
					ep, done, err := p.Pick(randUint64())
					if err != nil {
						t.Fatal(err)
					}
					done(Success)
					got[ep.Address]++
				}
				for addr, w := range tc.want {
					if !within(got[addr], w, 0.08) {
						t.Errorf("%s picks of %s = %d, want %d ±8%% (all: %v)", policy, addr, got[addr], w, got)
					}
				}
			})
		}
	}
}

func TestRandomSpread(t *testing.T) {
	p := New(Config{Policy: Random}, endpoints(4))
	got := tally(t, p, 40000)
	for addr, n := range got {
		if !within(n, 10000, 0.05) {
			t.Errorf("random picks of %s = %d, want 10000 ±5%%", addr, n)
		}
	}
	if len(got) != 4 {
		t.Errorf("random picks hit %d endpoints, want 4", len(got))
	}
}

// TestLeastRequest: an endpoint with many outstanding requests is picked
// only when every sample lands on it, and Update keeps its count.
func TestLeastRequest(t *testing.T) {
	eps := endpoints(3)
	busy := eps[0].Address
	p := New(Config{Policy: LeastRequest}, eps[:1])
	var held []func(Result)
	for range 100 {
		_, done, err := p.Pick(0)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, done)
	}
	p.Update(Config{Policy: LeastRequest}, eps) // keeps busy's 100 outstanding
	const n = 3000
	got := tally(t, p, n)
	// With two samples, busy wins only when both are busy: 1/9.
	if share := float64(got[busy]) / n; share > 0.16 {
		t.Errorf("least request picked the busy endpoint %.1f%% of the time, want about 11%%", 100*share)
	}
	for _, done := range held {
		done(Success)
	}
	got = tally(t, p, n)
	if !within(got[busy], n/3, 0.15) {
		t.Errorf("once idle, least request picked it %d times, want about %d (all: %v)", got[busy], n/3, got)
	}
}

func TestRingHash(t *testing.T) {
	eps := endpoints(10)
	p := New(Config{Policy: RingHash}, eps)
	const keys = 10000
	before := make([]string, keys)
	for k := range keys {
		h := xxhash64(fmt.Sprint("key", k))
		for i := range 3 {
			ep, done, err := p.Pick(h)
			if err != nil {
				t.Fatal(err)
			}
			done(Success)
			if i > 0 && ep.Address != before[k] {
				t.Fatalf("Pick(%#x) = %s, then %s, want the same endpoint", h, before[k], ep.Address)
			}
			before[k] = ep.Address
		}
	}
	removed := eps[3].Address
	p.Update(Config{Policy: RingHash}, append(eps[:3:3], eps[4:]...))
	moved, movedOthers := 0, 0
	for k := range keys {
		ep, done, err := p.Pick(xxhash64(fmt.Sprint("key", k)))
		if err != nil {
			t.Fatal(err)
		}
		done(Success)
		if ep.Address == removed {
			t.Fatalf("Pick() = %s, which was removed", removed)
		}
		if ep.Address != before[k] {
			moved++
			if before[k] != removed {
				movedOthers++
			}
		}
	}
	// The removed endpoint's keys move, and the ring's rescaling moves
	// about as many more (grpc-go's ring).
	if share := float64(moved) / keys; share < 0.05 || share > 0.2 {
		t.Errorf("removing 1 of 10 endpoints moved %.1f%% of the keys, want 10%% to 20%%", 100*share)
	}
	if share := float64(movedOthers) / keys; share > 0.1 {
		t.Errorf("removing 1 of 10 endpoints moved %.1f%% of the other endpoints' keys, want at most 10%%", 100*share)
	}
}

func TestRingSize(t *testing.T) {
	for _, tc := range []struct {
		min  uint64
		eps  []Endpoint
		want int
	}{
		{0, endpoints(10), 1030},      // ceil(0.1 × 1024) × 10
		{100, endpoints(3), 102},      // ceil(100/3) × 3
		{1 << 20, endpoints(2), 4096}, // capped
		{8, []Endpoint{{Address: "a", Weight: 1}, {Address: "b", Weight: 3}}, 8},
	} {
		p := New(Config{Policy: RingHash, MinRingSize: tc.min}, tc.eps)
		if got := len(p.snap.Load().ring); got != tc.want {
			t.Errorf("ring of %d endpoints with MinRingSize %d has %d entries, want %d", len(tc.eps), tc.min, got, tc.want)
		}
	}
}

func TestXXHash(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"", 0xef46db3751d8e999},
		{"a", 0xd24ec4f1a98c6e5b},
		{"abc", 0x44bc2cf5ad770999},
	} {
		if got := xxhash64(tc.in); got != tc.want {
			t.Errorf("xxhash64(%q) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

func TestCircuitBreaker(t *testing.T) {
	p := New(Config{MaxRequests: 3}, endpoints(2))
	var held []func(Result)
	for range 3 {
		_, done, err := p.Pick(0)
		if err != nil {
			t.Fatalf("Pick() = %v, want no error below MaxRequests", err)
		}
		held = append(held, done)
	}
	if _, _, err := p.Pick(0); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Pick() beyond MaxRequests = %v, want ErrOverloaded", err)
	}
	held[0](Success)
	_, done, err := p.Pick(0)
	if err != nil {
		t.Fatalf("Pick() after a request ended = %v, want no error", err)
	}
	done(Success)
	// Update keeps the count of outstanding requests.
	p.Update(Config{MaxRequests: 2}, endpoints(2))
	if _, _, err := p.Pick(0); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Pick() with 2 outstanding and MaxRequests 2 = %v, want ErrOverloaded", err)
	}
	held[1](Success)
	held[2](Success)
	tally(t, p, 10)
}

func TestDefaultMaxRequests(t *testing.T) {
	p := New(Config{}, endpoints(1))
	for i := range 1024 {
		if _, _, err := p.Pick(0); err != nil {
			t.Fatalf("Pick() %d = %v, want no error", i, err)
		}
	}
	if _, _, err := p.Pick(0); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Pick() 1025 = %v, want ErrOverloaded", err)
	}
}

func TestNoEndpoints(t *testing.T) {
	for _, policy := range []string{RoundRobin, LeastRequest, Random, RingHash} {
		if _, _, err := New(Config{Policy: policy}, nil).Pick(0); !errors.Is(err, ErrNoEndpoints) {
			t.Errorf("%s: Pick() with no endpoints = %v, want ErrNoEndpoints", policy, err)
		}
	}
}

func TestResultForStatus(t *testing.T) {
	for code, want := range map[int]Result{200: Success, 404: Success, 500: Failure, 501: Failure, 502: GatewayFailure, 503: GatewayFailure, 504: GatewayFailure, 599: Failure} {
		if got := ResultForStatus(code); got != want {
			t.Errorf("ResultForStatus(%d) = %v, want %v", code, got, want)
		}
	}
}

// TestConcurrent picks, reports and updates from many goroutines; run with
// -race. The counts must come back to zero.
func TestConcurrent(t *testing.T) {
	newFakeClock(t)
	cfg := Config{Policy: LeastRequest, MaxRequests: 1 << 20, Outlier: &Outlier{ConsecutiveErrors: 3, MaxEjectionPercent: 50, MinHealthPercent: 50}}
	p := New(cfg, endpoints(6))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				_, done, err := p.Pick(uint64(i))
				if err != nil {
					t.Errorf("Pick() = %v", err)
					return
				}
				done(Result(i % 3))
				if g == 0 && i%500 == 0 {
					p.Update(cfg, endpoints(6-i/500))
				}
			}
		})
	}
	wg.Wait()
	if n := p.outstanding.Load(); n != 0 {
		t.Errorf("outstanding requests after all were done = %d, want 0", n)
	}
}
