package pick

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock replaces timeNow until the test ends.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock(t *testing.T) *fakeClock {
	t.Helper()
	c := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	old := timeNow
	timeNow = c.Now
	t.Cleanup(func() { timeNow = old })
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// endpoints returns n endpoints "10.0.0.i:80" of priority 0.
func endpoints(n int) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i] = Endpoint{Address: fmt.Sprintf("10.0.0.%d:80", i+1)}
	}
	return eps
}

// tally makes n picks, each done at once with Success, and counts them by
// address.
func tally(t *testing.T, p *Picker, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		ep, done, err := p.Pick(uint64(i))
		if err != nil {
			t.Fatalf("Pick() = %v, want no error", err)
		}
		done(Success)
		got[ep.Address]++
	}
	return got
}

// report gives k results r to addr, picking until addr comes up; the other
// picks end Ignored.
func report(t *testing.T, p *Picker, addr string, k int, r Result) {
	t.Helper()
	for tries := 0; k > 0; tries++ {
		if tries > 100000 {
			t.Fatalf("Pick() never returned %s", addr)
		}
		ep, done, err := p.Pick(randUint64())
		if err != nil {
			t.Fatalf("Pick() = %v, want no error", err)
		}
		if ep.Address == addr {
			done(r)
			k--
		} else {
			done(Ignored)
		}
	}
}

// within reports whether got is within frac of want.
func within(got, want int, frac float64) bool {
	d := float64(got - want)
	return d <= frac*float64(want) && -d <= frac*float64(want)
}
