package ratelimit

import (
	"container/list"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// DefaultMaxKeys is the number of keys a Limiter made without WithMaxKeys
// holds at most.
const DefaultMaxKeys = 1024

// timeNow is the clock of new Limiters; tests replace it.
var timeNow = time.Now

// Limit is a token bucket's parameters. The zero Limit admits nothing;
// see Valid.
type Limit struct {
	// Rate is the number of tokens added per second.
	Rate float64
	// Burst is the bucket's capacity: how many calls an idle key may
	// make at once.
	Burst int
}

// Valid reports whether l can admit calls: a positive, finite Rate and a
// positive Burst.
func (l Limit) Valid() bool { return l.Rate > 0 && l.Rate <= 1e12 && l.Burst > 0 }

// ErrInvalidTokenBucket is returned by FromTokenBucket for a bucket that
// cannot admit calls.
var ErrInvalidTokenBucket = errors.New("ratelimit: invalid token bucket")

// FromTokenBucket converts an Envoy token bucket: Burst is max_tokens, Rate
// tokens_per_fill (default 1) per fill_interval. The bucket is refilled
// continuously rather than in steps, so a call is never refused for
// waiting on a fill that is already due in part.
func FromTokenBucket(tb *v3typepb.TokenBucket) (Limit, error) {
	per := uint32(1)
	if tb.GetTokensPerFill() != nil {
		per = tb.GetTokensPerFill().GetValue()
	}
	interval := tb.GetFillInterval().AsDuration()
	if tb.GetMaxTokens() == 0 || per == 0 || interval <= 0 {
		return Limit{}, fmt.Errorf("%w: max_tokens %d, tokens_per_fill %d, fill_interval %v", ErrInvalidTokenBucket, tb.GetMaxTokens(), per, interval)
	}
	l := Limit{Rate: float64(per) / interval.Seconds(), Burst: int(tb.GetMaxTokens())}
	if !l.Valid() {
		return Limit{}, fmt.Errorf("%w: rate %g per second", ErrInvalidTokenBucket, l.Rate)
	}
	return l, nil
}

// Option configures a Limiter.
type Option interface{ apply(*Limiter) }

type optionFunc func(*Limiter)

func (f optionFunc) apply(l *Limiter) { f(l) }

// WithMaxKeys sets how many keys a Limiter holds at most. If n < 1,
// DefaultMaxKeys.
func WithMaxKeys(n int) Option {
	return optionFunc(func(l *Limiter) {
		if n >= 1 {
			l.maxKeys = n
		}
	})
}

// Limiter holds a token bucket per key. It is safe for concurrent use.
type Limiter struct {
	now     func() time.Time
	maxKeys int

	allowed, limited atomic.Uint64

	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     list.List                // front: most recently used
}

type bucket struct {
	key    string
	tokens float64
	last   time.Time
	limit  Limit
}

// New returns a Limiter with no keys.
func New(opts ...Option) *Limiter {
	l := &Limiter{now: timeNow, maxKeys: DefaultMaxKeys, buckets: map[string]*list.Element{}}
	for _, o := range opts {
		o.apply(l)
	}
	return l
}

// refill brings b's tokens to time now.
func (b *bucket) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(b.limit.Burst), b.tokens+d.Seconds()*b.limit.Rate)
		b.last = now
	}
}

// full reports whether b would be full at time now.
func (b *bucket) full(now time.Time) bool {
	return b.tokens+now.Sub(b.last).Seconds()*b.limit.Rate >= float64(b.limit.Burst)
}

// Allow takes a token from key's bucket, whose parameters are lim, and
// reports whether there was one. A key seen for the first time starts with
// a full bucket; a key whose limit changed keeps its tokens, up to the new
// burst. An invalid lim admits nothing. Allow never blocks on anything
// but the Limiter's lock.
func (l *Limiter) Allow(key string, lim Limit) bool {
	if !lim.Valid() {
		l.limited.Add(1)
		return false
	}
	now := l.now()
	l.mu.Lock()
	var b *bucket
	if e, ok := l.buckets[key]; ok {
		l.lru.MoveToFront(e)
		b = e.Value.(*bucket)
		b.limit = lim
		b.refill(now)
	} else {
		l.evict(now)
		b = &bucket{key: key, tokens: float64(lim.Burst), last: now, limit: lim}
		l.buckets[key] = l.lru.PushFront(b)
	}
	ok := b.tokens >= 1
	if ok {
		b.tokens--
	}
	l.mu.Unlock()
	if ok {
		l.allowed.Add(1)
	} else {
		l.limited.Add(1)
	}
	return ok
}

// evict makes room for one more key: it drops idle keys whose buckets have
// refilled from the least recently used end (a few per call, so that
// Allow stays cheap), then the least recently used key if still full.
func (l *Limiter) evict(now time.Time) {
	for range 2 {
		e := l.lru.Back()
		if e == nil || !e.Value.(*bucket).full(now) {
			break
		}
		l.remove(e)
	}
	for len(l.buckets) >= l.maxKeys {
		l.remove(l.lru.Back())
	}
}

func (l *Limiter) remove(e *list.Element) {
	delete(l.buckets, e.Value.(*bucket).key)
	l.lru.Remove(e)
}

// Stats are a Limiter's counters.
type Stats struct {
	Allowed uint64 // calls admitted
	Limited uint64 // calls refused
	Keys    int    // keys held now
}

// Stats returns the Limiter's counters since New.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	return Stats{Allowed: l.allowed.Load(), Limited: l.limited.Load(), Keys: n}
}
