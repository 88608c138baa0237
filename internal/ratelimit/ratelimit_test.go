package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

func newTestLimiter(opts ...Option) (*Limiter, *fakeClock) {
	c := &fakeClock{}
	c.t.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	l := New(opts...)
	l.now = c.now
	return l, c
}

func TestRateHeldUnderBurst(t *testing.T) {
	tests := []struct {
		lim      Limit
		interval time.Duration // between attempts
		duration time.Duration
	}{
		{Limit{Rate: 100, Burst: 20}, time.Millisecond, 10 * time.Second},
		{Limit{Rate: 100, Burst: 1}, 100 * time.Microsecond, 5 * time.Second},
		{Limit{Rate: 1000, Burst: 1000}, 50 * time.Microsecond, 3 * time.Second},
		{Limit{Rate: 0.5, Burst: 3}, 10 * time.Millisecond, time.Minute},
		{Limit{Rate: 7, Burst: 7}, 3 * time.Millisecond, 20 * time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%g/s burst %d", tt.lim.Rate, tt.lim.Burst), func(t *testing.T) {
			l, c := newTestLimiter()
			admitted, attempts := 0, 0
			for elapsed := time.Duration(0); elapsed < tt.duration; elapsed += tt.interval {
				attempts++
				if l.Allow("k", tt.lim) {
					admitted++
				}
				c.advance(tt.interval)
			}
			want := tt.lim.Rate*tt.duration.Seconds() + float64(tt.lim.Burst)
			if math.Abs(float64(admitted)-want) > 0.05*want {
				t.Errorf("admitted %d calls in %v, want %.0f±5%%", admitted, tt.duration, want)
			}
			if float64(admitted) > want+1e-9 {
				t.Errorf("admitted %d calls in %v, more than rate×time+burst = %.0f", admitted, tt.duration, want)
			}
			s := l.Stats()
			if s.Allowed != uint64(admitted) || s.Limited != uint64(attempts-admitted) {
				t.Errorf("Stats() = %+v, want %d allowed and %d limited", s, admitted, attempts-admitted)
			}
		})
	}
}

func TestBurstCapacity(t *testing.T) {
	for _, burst := range []int{1, 5, 100} {
		t.Run(fmt.Sprint(burst), func(t *testing.T) {
			l, c := newTestLimiter()
			lim := Limit{Rate: 10, Burst: burst}
			for i := range burst {
				if !l.Allow("k", lim) {
					t.Fatalf("Allow() #%d of an idle key = false, want true (burst %d)", i+1, burst)
				}
			}
			if l.Allow("k", lim) {
				t.Fatalf("Allow() beyond the burst = true, want false")
			}
			c.advance(99 * time.Millisecond) // 0.99 tokens
			if l.Allow("k", lim) {
				t.Fatalf("Allow() after 0.99 token's time = true, want false")
			}
			c.advance(time.Millisecond)
			if !l.Allow("k", lim) {
				t.Fatalf("Allow() after one token's time = false, want true")
			}
			c.advance(time.Hour) // refills to the burst, no further
			n := 0
			for l.Allow("k", lim) {
				n++
			}
			if n != burst {
				t.Errorf("after an hour idle, %d calls admitted, want the burst %d", n, burst)
			}
		})
	}
}

func TestKeysAreIsolated(t *testing.T) {
	l, _ := newTestLimiter()
	lim := Limit{Rate: 1, Burst: 3}
	for l.Allow("spiffe://td/ns/a/sa/a", lim) {
	}
	for _, key := range []string{"spiffe://td/ns/b/sa/b", ""} {
		for i := range 3 {
			if !l.Allow(key, lim) {
				t.Errorf("Allow(%q) #%d = false after another key was exhausted, want true", key, i+1)
			}
		}
	}
	if got := l.Stats(); got != (Stats{Allowed: 9, Limited: 1, Keys: 3}) {
		t.Errorf("Stats() = %+v, want 9 allowed, 1 limited, 3 keys", got)
	}
}

func TestLimitChangeKeepsTokens(t *testing.T) {
	l, _ := newTestLimiter()
	for range 8 {
		l.Allow("k", Limit{Rate: 1, Burst: 10})
	}
	// 2 tokens left; a smaller burst caps them, a larger one does not add.
	n := 0
	for l.Allow("k", Limit{Rate: 1, Burst: 100}) {
		n++
	}
	if n != 2 {
		t.Errorf("after raising the burst, %d calls admitted, want the 2 tokens left", n)
	}
}

func TestEviction(t *testing.T) {
	lim := Limit{Rate: 10, Burst: 2}
	tests := []struct {
		name string
		run  func(l *Limiter, c *fakeClock)
		// exhausted lists the keys whose buckets must still be empty.
		exhausted []string
		keys      int
	}{{
		name: "least recently used goes first",
		run: func(l *Limiter, _ *fakeClock) {
			for _, k := range []string{"a", "a", "b", "b", "a", "c"} {
				l.Allow(k, lim)
			}
		},
		exhausted: []string{"a"}, // b was dropped for c; a kept its empty bucket
		keys:      2,
	}, {
		name: "idle full buckets are dropped",
		run: func(l *Limiter, c *fakeClock) {
			l.Allow("a", lim)
			l.Allow("b", lim)
			c.advance(time.Second) // both refilled
			l.Allow("c", lim)
		},
		keys: 1,
	}, {
		name: "busy keys are not dropped for idle ones",
		run: func(l *Limiter, c *fakeClock) {
			l.Allow("idle", lim)
			c.advance(time.Second)
			l.Allow("busy", lim)
			l.Allow("busy", lim)
			l.Allow("new", lim)
		},
		exhausted: []string{"busy"},
		keys:      2,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, c := newTestLimiter(WithMaxKeys(2))
			tt.run(l, c)
			if got := l.Stats().Keys; got != tt.keys {
				t.Errorf("Stats().Keys = %d, want %d", got, tt.keys)
			}
			for _, k := range tt.exhausted {
				if l.Allow(k, lim) {
					t.Errorf("Allow(%q) = true, want its bucket kept and empty", k)
				}
			}
		})
	}
}

func TestMaxKeysBound(t *testing.T) {
	l, _ := newTestLimiter(WithMaxKeys(100))
	for i := range 10_000 {
		l.Allow(fmt.Sprint(i), Limit{Rate: 1, Burst: 1})
		if n := l.Stats().Keys; n > 100 {
			t.Fatalf("after %d keys, Stats().Keys = %d, want at most 100", i+1, n)
		}
	}
}

func TestInvalidLimitAdmitsNothing(t *testing.T) {
	l, _ := newTestLimiter()
	for _, lim := range []Limit{{}, {Rate: 1}, {Burst: 1}, {Rate: -1, Burst: 1}, {Rate: math.Inf(1), Burst: 1}, {Rate: math.NaN(), Burst: 1}} {
		if l.Allow("k", lim) {
			t.Errorf("Allow(%+v) = true, want false", lim)
		}
	}
}

func TestConcurrentCallsShareTheBucket(t *testing.T) {
	l, _ := newTestLimiter() // the clock stands still: exactly the burst passes
	lim := Limit{Rate: 1, Burst: 500}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 100 {
				if l.Allow("k", lim) {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != 500 {
		t.Errorf("16×100 concurrent calls admitted %d, want the burst 500", got)
	}
}

func TestFromTokenBucket(t *testing.T) {
	tests := []struct {
		tb      *v3typepb.TokenBucket
		want    Limit
		wantErr bool
	}{
		{tb: &v3typepb.TokenBucket{MaxTokens: 20, TokensPerFill: wrapperspb.UInt32(100), FillInterval: durationpb.New(time.Second)}, want: Limit{Rate: 100, Burst: 20}},
		{tb: &v3typepb.TokenBucket{MaxTokens: 5, FillInterval: durationpb.New(2 * time.Second)}, want: Limit{Rate: 0.5, Burst: 5}},
		{tb: &v3typepb.TokenBucket{MaxTokens: 5, TokensPerFill: wrapperspb.UInt32(5), FillInterval: durationpb.New(50 * time.Millisecond)}, want: Limit{Rate: 100, Burst: 5}},
		{tb: &v3typepb.TokenBucket{TokensPerFill: wrapperspb.UInt32(1), FillInterval: durationpb.New(time.Second)}, wantErr: true},
		{tb: &v3typepb.TokenBucket{MaxTokens: 1, TokensPerFill: wrapperspb.UInt32(0), FillInterval: durationpb.New(time.Second)}, wantErr: true},
		{tb: &v3typepb.TokenBucket{MaxTokens: 1}, wantErr: true},
		{tb: nil, wantErr: true},
	}
	for _, tt := range tests {
		got, err := FromTokenBucket(tt.tb)
		if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrInvalidTokenBucket)) {
			t.Errorf("FromTokenBucket(%v) error = %v, want error %v", tt.tb, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(got, tt.want); diff != "" {
			t.Errorf("FromTokenBucket(%v) (-got +want):\n%s", tt.tb, diff)
		}
	}
}

func BenchmarkAllow(b *testing.B) {
	l := New()
	lim := Limit{Rate: 1e9, Burst: 1 << 30}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow("k", lim)
		}
	})
}
