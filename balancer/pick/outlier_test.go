package pick

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// live returns the sorted addresses round robin picks reach.
func live(t *testing.T, p *Picker) []string {
	t.Helper()
	var got []string
	for addr := range tally(t, p, 50) {
		got = append(got, addr)
	}
	slices.Sort(got)
	return got
}

// addrs returns the sorted addresses of eps[idx...].
func addrs(eps []Endpoint, idx ...int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, eps[i].Address)
	}
	slices.Sort(out)
	return out
}

func TestEjection(t *testing.T) {
	eps := endpoints(4)
	all := addrs(eps, 0, 1, 2, 3)
	for _, tc := range []struct {
		name    string
		outlier Outlier
		results []Result // given to endpoint 0, in order
		want    []string
	}{{
		name:    "5 consecutive errors eject",
		outlier: Outlier{ConsecutiveErrors: 5, MaxEjectionPercent: 100},
		results: []Result{Failure, Failure, GatewayFailure, Failure, Failure},
		want:    addrs(eps, 1, 2, 3),
	}, {
		name:    "4 do not",
		outlier: Outlier{ConsecutiveErrors: 5, MaxEjectionPercent: 100},
		results: []Result{Failure, Failure, Failure, Failure},
		want:    all,
	}, {
		name:    "a success resets the count",
		outlier: Outlier{ConsecutiveErrors: 5, MaxEjectionPercent: 100},
		results: []Result{Failure, Failure, Failure, Failure, Success, Failure, Failure, Failure, Failure},
		want:    all,
	}, {
		name:    "ignored results do not reset it",
		outlier: Outlier{ConsecutiveErrors: 5, MaxEjectionPercent: 100},
		results: []Result{Failure, Failure, Ignored, Failure, Failure, Failure},
		want:    addrs(eps, 1, 2, 3),
	}, {
		name:    "consecutive gateway errors eject",
		outlier: Outlier{ConsecutiveGatewayErrors: 3, MaxEjectionPercent: 100},
		results: []Result{GatewayFailure, GatewayFailure, GatewayFailure},
		want:    addrs(eps, 1, 2, 3),
	}, {
		name:    "another error resets the gateway count",
		outlier: Outlier{ConsecutiveGatewayErrors: 3, MaxEjectionPercent: 100},
		results: []Result{GatewayFailure, GatewayFailure, Failure, GatewayFailure, GatewayFailure},
		want:    all,
	}, {
		name:    "zero thresholds disable detection",
		outlier: Outlier{MaxEjectionPercent: 100},
		results: slices.Repeat([]Result{GatewayFailure}, 20),
		want:    all,
	}, {
		name:    "maxEjectionPercent 0 ejects nothing",
		outlier: Outlier{ConsecutiveErrors: 1},
		results: []Result{Failure},
		want:    all,
	}, {
		name:    "one endpoint can always be ejected",
		outlier: Outlier{ConsecutiveErrors: 1, MaxEjectionPercent: 1},
		results: []Result{Failure},
		want:    addrs(eps, 1, 2, 3),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			newFakeClock(t)
			p := New(Config{Outlier: &tc.outlier}, eps)
			for _, r := range tc.results {
				report(t, p, eps[0].Address, 1, r)
			}
			if diff := cmp.Diff(live(t, p), tc.want); diff != "" {
				t.Errorf("endpoints picked (-got +want):\n%s", diff)
			}
		})
	}
}

func TestEjectionPercentages(t *testing.T) {
	eps := endpoints(10)
	for _, tc := range []struct {
		name    string
		outlier Outlier
		failing int // endpoints 0 to failing-1 fail
		want    []string
	}{
		{"maxEjectionPercent 20 of 10", Outlier{MaxEjectionPercent: 20}, 4, addrs(eps, 2, 3, 4, 5, 6, 7, 8, 9)},
		{"maxEjectionPercent 100", Outlier{MaxEjectionPercent: 100}, 4, addrs(eps, 4, 5, 6, 7, 8, 9)},
		// 5 ejected leaves 50%, 6 would leave 40%: ejection is suspended
		// and every endpoint is picked.
		{"minHealthPercent 50 kept", Outlier{MaxEjectionPercent: 100, MinHealthPercent: 50}, 5, addrs(eps, 5, 6, 7, 8, 9)},
		{"minHealthPercent 50 suspends", Outlier{MaxEjectionPercent: 100, MinHealthPercent: 50}, 6, addrs(eps, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			newFakeClock(t)
			tc.outlier.ConsecutiveErrors = 1
			p := New(Config{Outlier: &tc.outlier}, eps)
			for i := range tc.failing {
				report(t, p, eps[i].Address, 1, Failure)
			}
			if diff := cmp.Diff(live(t, p), tc.want); diff != "" {
				t.Errorf("endpoints picked (-got +want):\n%s", diff)
			}
		})
	}
}

func TestAllEjected(t *testing.T) {
	newFakeClock(t)
	eps := endpoints(1)
	p := New(Config{Outlier: &Outlier{ConsecutiveErrors: 1, MaxEjectionPercent: 100}}, eps)
	report(t, p, eps[0].Address, 1, Failure)
	if _, _, err := p.Pick(0); !errors.Is(err, ErrNoEndpoints) {
		t.Errorf("Pick() with every endpoint ejected = %v, want ErrNoEndpoints", err)
	}
}

// TestEjectionTime: an ejection lasts BaseEjectionTime × the ejections in
// a row, capped at max(300s, base), and ends at the first Interval after.
func TestEjectionTime(t *testing.T) {
	clock := newFakeClock(t)
	eps := endpoints(2)
	const base, interval = 100 * time.Second, time.Second
	p := New(Config{Outlier: &Outlier{ConsecutiveErrors: 1, MaxEjectionPercent: 50, Interval: interval, BaseEjectionTime: base}}, eps)
	all, out := addrs(eps, 0, 1), addrs(eps, 1)
	// eject, then check just before and after the ejection's length.
	for i, length := range []time.Duration{base, 2 * base, 3 * base, 300 * time.Second, 300 * time.Second} {
		report(t, p, eps[0].Address, 1, Failure)
		clock.Advance(length - interval)
		if diff := cmp.Diff(live(t, p), out); diff != "" {
			t.Fatalf("ejection %d after %v: endpoints picked (-got +want):\n%s", i+1, length-interval, diff)
		}
		clock.Advance(interval)
		if diff := cmp.Diff(live(t, p), all); diff != "" {
			t.Fatalf("ejection %d after %v: endpoints picked (-got +want):\n%s", i+1, length, diff)
		}
	}
	// The multiplier (5) decays by one each interval not ejected: after 4
	// intervals it is 1, and the next ejection lasts 2 × base.
	clock.Advance(4 * interval)
	tally(t, p, 1) // runs the checks that are due
	report(t, p, eps[0].Address, 1, Failure)
	clock.Advance(2*base - interval)
	if diff := cmp.Diff(live(t, p), out); diff != "" {
		t.Errorf("after decay, ejection at %v: endpoints picked (-got +want):\n%s", 2*base-interval, diff)
	}
	clock.Advance(interval)
	if diff := cmp.Diff(live(t, p), all); diff != "" {
		t.Errorf("after decay, ejection at %v: endpoints picked (-got +want):\n%s", 2*base, diff)
	}
}

// TestPriorityFailover: picks use priority 0 while it has an endpoint not
// ejected, then priority 1, and come back when priority 0 does.
func TestPriorityFailover(t *testing.T) {
	clock := newFakeClock(t)
	eps := []Endpoint{
		{Address: "a:80", Priority: 0},
		{Address: "b:80", Priority: 0},
		{Address: "c:80", Priority: 1},
		{Address: "d:80", Priority: 2},
	}
	cfg := Config{Outlier: &Outlier{ConsecutiveErrors: 1, MaxEjectionPercent: 100, BaseEjectionTime: 30 * time.Second}}
	p := New(cfg, eps)
	if diff := cmp.Diff(live(t, p), []string{"a:80", "b:80"}); diff != "" {
		t.Fatalf("picked (-got +want):\n%s", diff)
	}
	report(t, p, "a:80", 1, Failure)
	if diff := cmp.Diff(live(t, p), []string{"b:80"}); diff != "" {
		t.Fatalf("a ejected: picked (-got +want):\n%s", diff)
	}
	report(t, p, "b:80", 1, Failure)
	if diff := cmp.Diff(live(t, p), []string{"c:80"}); diff != "" {
		t.Fatalf("priority 0 ejected: picked (-got +want):\n%s", diff)
	}
	// Update keeps the ejections of endpoints that stay.
	p.Update(cfg, eps[:3])
	if diff := cmp.Diff(live(t, p), []string{"c:80"}); diff != "" {
		t.Fatalf("after Update: picked (-got +want):\n%s", diff)
	}
	clock.Advance(30 * time.Second)
	if diff := cmp.Diff(live(t, p), []string{"a:80", "b:80"}); diff != "" {
		t.Fatalf("ejections over: picked (-got +want):\n%s", diff)
	}
	p.Update(cfg, eps[2:])
	if diff := cmp.Diff(live(t, p), []string{"c:80"}); diff != "" {
		t.Fatalf("priority 0 gone: picked (-got +want):\n%s", diff)
	}
}

// TestRingHashEjection: keys of an ejected endpoint go to the next entries
// of the ring; the others stay.
func TestRingHashEjection(t *testing.T) {
	newFakeClock(t)
	eps := endpoints(5)
	p := New(Config{Policy: RingHash, Outlier: &Outlier{ConsecutiveErrors: 1, MaxEjectionPercent: 100}}, eps)
	const keys = 2000
	before := make([]string, keys)
	for k := range keys {
		ep, done, _ := p.Pick(uint64(k) * 0x9e3779b97f4a7c15)
		done(Success)
		before[k] = ep.Address
	}
	report(t, p, eps[0].Address, 1, Failure)
	for k := range keys {
		ep, done, _ := p.Pick(uint64(k) * 0x9e3779b97f4a7c15)
		done(Success)
		switch {
		case ep.Address == eps[0].Address:
			t.Fatalf("key %d went to the ejected endpoint", k)
		case before[k] != eps[0].Address && ep.Address != before[k]:
			t.Fatalf("key %d moved from %s to %s, want it to stay", k, before[k], ep.Address)
		}
	}
}

// TestOutlierRemoved: without Outlier, ejections end at once.
func TestOutlierRemoved(t *testing.T) {
	newFakeClock(t)
	eps := endpoints(2)
	p := New(Config{Outlier: &Outlier{ConsecutiveErrors: 1, MaxEjectionPercent: 50}}, eps)
	report(t, p, eps[0].Address, 1, Failure)
	if got := live(t, p); len(got) != 1 {
		t.Fatalf("endpoints picked = %v, want one ejected", got)
	}
	p.Update(Config{}, eps)
	if diff := cmp.Diff(live(t, p), addrs(eps, 0, 1)); diff != "" {
		t.Errorf("endpoints picked (-got +want):\n%s", diff)
	}
}

// TestOnEject: OnEject hears each ejection, with the endpoint's address,
// and not the failures short of one.
func TestOnEject(t *testing.T) {
	newFakeClock(t)
	eps := endpoints(3)
	var got []string
	p := New(Config{Outlier: &Outlier{ConsecutiveErrors: 2, MaxEjectionPercent: 100}, OnEject: func(addr string) { got = append(got, addr) }}, eps)
	report(t, p, eps[1].Address, 1, Failure)
	if len(got) != 0 {
		t.Fatalf("OnEject called after one failure of two: %v", got)
	}
	report(t, p, eps[1].Address, 1, Failure)
	if len(got) != 1 || got[0] != eps[1].Address {
		t.Errorf("OnEject calls = %v, want [%s]", got, eps[1].Address)
	}
}

// TestUnreachableEndpointIsSkipped: an endpoint whose connection failed is
// not picked while its backoff lasts (1 s, then 1.6 s, ±20 %), with every
// policy, unless no other endpoint is reachable; a success ends it.
func TestUnreachableEndpointIsSkipped(t *testing.T) {
	for _, policy := range []string{RoundRobin, LeastRequest, Random, RingHash, EWMA} {
		t.Run(policy, func(t *testing.T) {
			clock := newFakeClock(t)
			eps := endpoints(3)
			p := New(Config{Policy: policy}, eps)
			down := eps[0].Address
			picked := func(n int) int {
				k := 0
				for i := range n {
					ep, done, err := p.Pick(uint64(i) * 0x9e3779b97f4a7c15)
					if err != nil {
						t.Fatal(err)
					}
					if ep.Address == down {
						k++
					}
					done(Ignored)
				}
				return k
			}
			report(t, p, down, 1, Unreachable)
			if k := picked(300); k != 0 {
				t.Errorf("picked the unreachable endpoint %d times of 300 during its backoff", k)
			}
			if policy == EWMA {
				return // EWMA itself avoids an endpoint whose request failed
			}
			clock.Advance(1300 * time.Millisecond) // past 1 s + 20 %
			if k := picked(300); k == 0 {
				t.Errorf("never picked the endpoint after its backoff")
			}
			report(t, p, down, 1, Unreachable) // the second in a row: 1.6 s ± 20 %
			clock.Advance(1200 * time.Millisecond)
			if k := picked(300); k != 0 {
				t.Errorf("picked the endpoint %d times of 300 within its second, longer backoff", k)
			}
			clock.Advance(800 * time.Millisecond)
			report(t, p, down, 1, Success)
			report(t, p, down, 1, Unreachable) // the count started again: 1 s
			clock.Advance(1300 * time.Millisecond)
			if k := picked(300); k == 0 {
				t.Errorf("a success did not reset the backoff")
			}
		})
	}
}

// TestAllUnreachableStillPicks: with every endpoint unreachable, Pick still
// answers (the request then fails on its own), rather than ErrNoEndpoints.
func TestAllUnreachableStillPicks(t *testing.T) {
	newFakeClock(t)
	eps := endpoints(2)
	p := New(Config{}, eps)
	for _, ep := range eps {
		report(t, p, ep.Address, 1, Unreachable)
	}
	if _, done, err := p.Pick(0); err != nil {
		t.Errorf("Pick() with every endpoint unreachable = %v, want an endpoint", err)
	} else {
		done(Ignored)
	}
}
