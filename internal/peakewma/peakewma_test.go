package peakewma

import (
	"math"
	"testing"
	"time"
)

const (
	ms  = int64(time.Millisecond)
	sec = int64(time.Second)
)

// step is one event on an Estimate at time at (nanoseconds): a response
// (rtt), a failure (fail), or a cancelled request.
type step struct {
	at     int64
	rtt    time.Duration
	fail   bool
	cancel bool
}

func TestEstimate(t *testing.T) {
	tau := float64(10 * time.Second)
	for _, tc := range []struct {
		name   string
		params Params
		start  time.Duration // DefaultRTT; the estimate is created at 0
		steps  []step
		at     int64 // when the value is read
		want   float64
	}{
		{
			name:  "warm-up value before any response",
			start: 50 * time.Millisecond,
			at:    0,
			want:  float64(50 * time.Millisecond),
		},
		{
			name:  "warm-up value decays while unanswered",
			start: 50 * time.Millisecond,
			at:    10 * sec,
			want:  float64(50*time.Millisecond) * math.Exp(-1),
		},
		{
			name:  "first response replaces the warm-up value, even below it",
			start: time.Second,
			steps: []step{{at: 1 * ms, rtt: 2 * time.Millisecond}},
			at:    1 * ms,
			want:  float64(2 * time.Millisecond),
		},
		{
			name:  "peak replaces the estimate at once",
			start: time.Second,
			steps: []step{{at: 0, rtt: 2 * time.Millisecond}, {at: 1 * ms, rtt: 40 * time.Millisecond}},
			at:    1 * ms,
			want:  float64(40 * time.Millisecond),
		},
		{
			name:  "lower response moves the estimate by 1-exp(-dt/tau)",
			start: time.Second,
			steps: []step{{at: 0, rtt: 40 * time.Millisecond}, {at: 5 * sec, rtt: 10 * time.Millisecond}},
			at:    5 * sec,
			want: func() float64 {
				w := math.Exp(-float64(5*sec) / tau)
				return float64(40*time.Millisecond)*w + float64(10*time.Millisecond)*(1-w)
			}(),
		},
		{
			name:   "a shorter decay forgets faster",
			params: Params{Decay: time.Second},
			start:  time.Second,
			steps:  []step{{at: 0, rtt: 40 * time.Millisecond}, {at: 1 * sec, rtt: 10 * time.Millisecond}},
			at:     1 * sec,
			want: func() float64 {
				w := math.Exp(-1.0) // 0.905 with the default decay
				return float64(40*time.Millisecond)*w + float64(10*time.Millisecond)*(1-w)
			}(),
		},
		{
			name:  "decays towards zero without responses",
			start: time.Second,
			steps: []step{{at: 0, rtt: 40 * time.Millisecond}},
			at:    20 * sec,
			want:  float64(40*time.Millisecond) * math.Exp(-2),
		},
		{
			name:  "response above the decayed value is a peak",
			start: time.Second,
			steps: []step{{at: 0, rtt: 40 * time.Millisecond}, {at: 20 * sec, rtt: 10 * time.Millisecond}},
			at:    20 * sec,
			want:  float64(10 * time.Millisecond), // 40ms × exp(-2) = 5.4ms < 10ms
		},
		{
			name:  "failure counts as the default penalty of 1s",
			start: time.Second,
			steps: []step{{at: 0, rtt: 2 * time.Millisecond}, {at: 1 * ms, rtt: 3 * time.Millisecond, fail: true}},
			at:    1 * ms,
			want:  float64(time.Second),
		},
		{
			name:   "failure slower than the penalty counts as its latency",
			params: Params{FailurePenalty: 100 * time.Millisecond},
			start:  time.Second,
			steps:  []step{{at: 0, rtt: 2 * time.Millisecond}, {at: 1 * ms, rtt: 300 * time.Millisecond, fail: true}},
			at:     1 * ms,
			want:   float64(300 * time.Millisecond),
		},
		{
			name:   "configured penalty",
			params: Params{FailurePenalty: 100 * time.Millisecond},
			start:  time.Second,
			steps:  []step{{at: 0, rtt: 2 * time.Millisecond}, {at: 1 * ms, rtt: time.Millisecond, fail: true}},
			at:     1 * ms,
			want:   float64(100 * time.Millisecond),
		},
		{
			name:  "cancelled request leaves the estimate",
			start: time.Second,
			steps: []step{{at: 0, rtt: 2 * time.Millisecond}, {at: 0, rtt: 900 * time.Millisecond, cancel: true}},
			at:    0,
			want:  float64(2 * time.Millisecond),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.params
			p.DefaultRTT = tc.start
			e := New(p, 0, nil)
			for _, s := range tc.steps {
				e.Start()
				switch {
				case s.cancel:
					e.Cancel()
				case s.fail:
					e.Fail(p, s.at, s.rtt)
				default:
					e.Observe(p, s.at, s.rtt)
				}
			}
			if got := e.Value(p, tc.at); math.Abs(got-tc.want) > 1e-6*tc.want {
				t.Errorf("Value(%v) = %v, want %v", time.Duration(tc.at), time.Duration(got), time.Duration(tc.want))
			}
			if got := e.Outstanding(); got != 0 {
				t.Errorf("Outstanding() = %d, want 0 after every request ended", got)
			}
		})
	}
}

func TestWarmUp(t *testing.T) {
	p := Params{}
	answered := func(rtt time.Duration) *Estimate {
		e := New(p, 0, nil)
		e.Start()
		e.Observe(p, 0, rtt)
		return e
	}
	silent := New(Params{DefaultRTT: 7 * time.Second}, 0, nil)
	for _, tc := range []struct {
		name   string
		params Params
		peers  []*Estimate
		want   time.Duration
	}{
		{name: "no peers: 10ms", want: 10 * time.Millisecond},
		{name: "peers without responses: 10ms", peers: []*Estimate{silent}, want: 10 * time.Millisecond},
		{name: "mean of the peers that answered", peers: []*Estimate{answered(10 * time.Millisecond), silent, answered(30 * time.Millisecond)}, want: 20 * time.Millisecond},
		{name: "DefaultRTT wins over peers", params: Params{DefaultRTT: 5 * time.Millisecond}, peers: []*Estimate{answered(10 * time.Millisecond)}, want: 5 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := New(tc.params, 0, tc.peers)
			if got := time.Duration(e.Value(tc.params, 0)); got != tc.want {
				t.Errorf("New(%+v, peers).Value() = %v, want %v", tc.params, got, tc.want)
			}
		})
	}
}

func TestCostWeighsOutstanding(t *testing.T) {
	p := Params{}
	fast, slow := New(p, 0, nil), New(p, 0, nil)
	for _, x := range []struct {
		e   *Estimate
		rtt time.Duration
	}{{fast, time.Millisecond}, {slow, 10 * time.Millisecond}} {
		x.e.Start()
		x.e.Observe(p, 0, x.rtt)
	}
	for _, tc := range []struct {
		fastOutstanding int
		want            *Estimate
	}{
		{0, fast},
		{8, fast},  // 1ms × 9 < 10ms × 1
		{9, fast},  // 1ms × 10 = 10ms × 1: the first wins a tie
		{10, slow}, // 1ms × 11 > 10ms × 1
	} {
		for range tc.fastOutstanding {
			fast.Start()
		}
		if got := Choose(p, 0, fast, slow); got != tc.want {
			t.Errorf("with %d outstanding on the fast endpoint: Choose() = cost %v, want cost %v", tc.fastOutstanding, got.Cost(p, 0), tc.want.Cost(p, 0))
		}
		if got, want := fast.Cost(p, 0), float64(time.Millisecond)*float64(tc.fastOutstanding+1); got != want {
			t.Errorf("Cost() = %v, want %v", got, want)
		}
		for range tc.fastOutstanding {
			fast.Cancel()
		}
	}
}

func TestTwoIndexes(t *testing.T) {
	for n := 2; n <= 5; n++ {
		seen := map[[2]int]bool{}
		for r1 := range uint64(n) {
			for r2 := range uint64(n - 1) {
				i, j := TwoIndexes(n, r1, r2)
				if i == j || i < 0 || j < 0 || i >= n || j >= n {
					t.Fatalf("TwoIndexes(%d, %d, %d) = %d, %d, want two distinct indexes below %d", n, r1, r2, i, j, n)
				}
				seen[[2]int{i, j}] = true
			}
		}
		if len(seen) != n*(n-1) {
			t.Errorf("TwoIndexes(%d, ...) yields %d ordered pairs, want all %d", n, len(seen), n*(n-1))
		}
	}
}
