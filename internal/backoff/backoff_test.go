package backoff

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// withJitter makes randFloat64 return r for the rest of the test.
func withJitter(t *testing.T, r float64) {
	t.Helper()
	old := randFloat64
	randFloat64 = func() float64 { return r }
	t.Cleanup(func() { randFloat64 = old })
}

// justBelowOne is the largest value rand.Float64 returns.
var justBelowOne = math.Nextafter(1, 0)

// TestBackoffStaysWithinBounds guards the bounds every caller relies on:
// the delay before retry n is min(BaseDelay·Multiplier^n, MaxDelay)
// spread by Jitter, above and below it by default, only below it when
// Capped; for the configurations the module uses.
func TestBackoffStaysWithinBounds(t *testing.T) {
	tests := []struct {
		name string
		b    Exponential
		// want[n] is the delay before jitter of retry n; the last one
		// holds for every later retry.
		want []time.Duration
	}{
		{
			name: "grpc-go's default (unreachable endpoints)",
			b:    Exponential{Config: grpcbackoff.DefaultConfig},
			want: []time.Duration{time.Second, 1600 * time.Millisecond, 2560 * time.Millisecond, 4096 * time.Millisecond,
				6553600 * time.Microsecond, 10485760 * time.Microsecond, 16777216 * time.Microsecond, 26843545600 * time.Nanosecond,
				42949672960 * time.Nanosecond, 68719476736 * time.Nanosecond, 109951162777600 * time.Nanosecond / 1000, 2 * time.Minute},
		},
		{
			name: "renewal and replacement connections: doubling, ±20 %",
			b:    Exponential{Config: grpcbackoff.Config{BaseDelay: time.Second, Multiplier: 2, Jitter: 0.2, MaxDelay: 30 * time.Second}},
			want: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second},
		},
		{
			name: "streams to the control plane: half to all, capped",
			b:    Exponential{Config: grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 2, Jitter: 0.5, MaxDelay: 5 * time.Second}, Capped: true},
			want: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond, 5 * time.Second},
		},
		{
			name: "Envoy's full jitter",
			b:    Exponential{Config: grpcbackoff.Config{BaseDelay: 25 * time.Millisecond, Multiplier: 2, Jitter: 1, MaxDelay: 250 * time.Millisecond}, Capped: true},
			want: []time.Duration{25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 250 * time.Millisecond},
		},
		{
			name: "no jitter (NACKs)",
			b:    Exponential{Config: grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 2, MaxDelay: 5 * time.Second}},
			want: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond, 5 * time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := tt.b.Config.Jitter
			for n := range len(tt.want) + 40 {
				d := float64(tt.want[min(n, len(tt.want)-1)])
				lo, hi := time.Duration(d*(1-j))-1, time.Duration(d*(1+j))+1
				if tt.b.Capped {
					hi = time.Duration(d) + 1
				}
				for range 200 {
					if got := tt.b.Backoff(n); got < lo || got > hi {
						t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", n, got, lo, hi)
					}
				}
			}
			// At the extremes of the jitter source, the extremes of
			// the range (to the nanosecond: d is rounded).
			for n := range len(tt.want) {
				d := float64(tt.want[n])
				hi := d * (1 + j)
				if tt.b.Capped {
					hi = d
				}
				for _, c := range []struct {
					r    float64
					want float64
				}{{0, d * (1 - j)}, {justBelowOne, hi}} {
					withJitter(t, c.r)
					if got := tt.b.Backoff(n); math.Abs(float64(got)-c.want) > 2 {
						t.Errorf("Backoff(%d) with jitter source %v = %v, want %v", n, c.r, got, time.Duration(c.want))
					}
				}
			}
		})
	}
}

// TestFullJitterNeverReachesTheCeiling guards Envoy's semantics for
// retries: a delay in [0, d), never d itself.
func TestFullJitterNeverReachesTheCeiling(t *testing.T) {
	b := Exponential{Config: grpcbackoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 2, Jitter: 1, MaxDelay: 50 * time.Millisecond}, Capped: true}
	withJitter(t, justBelowOne)
	for n, ceiling := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 50 * time.Millisecond} {
		if got := b.Backoff(n); got >= ceiling {
			t.Errorf("Backoff(%d) = %v, want below %v", n, got, ceiling)
		}
	}
	withJitter(t, 0)
	if got := b.Backoff(3); got != 0 {
		t.Errorf("Backoff(3) with jitter source 0 = %v, want 0", got)
	}
}

// TestBackoffEdgeCases guards the inputs no caller should send but some
// may: huge and negative retry counts, no growth, the zero value.
func TestBackoffEdgeCases(t *testing.T) {
	withJitter(t, 0.5) // the middle: no jitter either way
	grow := grpcbackoff.Config{BaseDelay: time.Second, Multiplier: 2, MaxDelay: time.Minute}
	tests := []struct {
		name string
		b    Exponential
		n    int
		want time.Duration
	}{
		{name: "huge retry count", b: Exponential{Config: grow}, n: math.MaxInt, want: time.Minute},
		{name: "negative retry count", b: Exponential{Config: grow}, n: -3, want: time.Second},
		{name: "multiplier 1", b: Exponential{Config: grpcbackoff.Config{BaseDelay: time.Second, Multiplier: 1, MaxDelay: time.Minute}}, n: math.MaxInt, want: time.Second},
		{name: "multiplier 0", b: Exponential{Config: grpcbackoff.Config{BaseDelay: time.Second, MaxDelay: time.Minute}}, n: 5, want: time.Second},
		{name: "base above max", b: Exponential{Config: grpcbackoff.Config{BaseDelay: time.Hour, Multiplier: 2, MaxDelay: time.Minute}}, n: 0, want: time.Minute},
		{name: "zero value", n: 7, want: 0},
		{name: "first retry jittered too", b: Exponential{Config: grpcbackoff.Config{BaseDelay: time.Second, Multiplier: 2, Jitter: 1, MaxDelay: time.Minute}, Capped: true}, n: 0, want: time.Second / 2},
	}
	var got, want []time.Duration
	for _, tt := range tests {
		got = append(got, tt.b.Backoff(tt.n))
		want = append(want, tt.want)
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Backoff() of %d cases (-got +want):\n%s", len(tests), diff)
	}
}
