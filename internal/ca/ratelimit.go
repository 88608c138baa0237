package ca

import (
	"sync"
	"time"
)

// maxBuckets bounds the limiter's memory; past it, full (idle) buckets are
// forgotten, which loses nothing since a new bucket starts full.
const maxBuckets = 10000

// limiter is a set of token buckets keyed by caller. It is safe for
// concurrent use.
type limiter struct {
	rl      RateLimit
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rl RateLimit) *limiter {
	return &limiter{rl: rl, buckets: map[string]*bucket{}}
}

// allow takes one token from key's bucket and reports whether there was one.
func (l *limiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.sweep(now)
		}
		b = &bucket{tokens: float64(l.rl.Burst), last: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(float64(l.rl.Burst), b.tokens+float64(elapsed)/float64(l.rl.Every))
		b.last = now
	}
}

func (l *limiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= float64(l.rl.Burst) {
			delete(l.buckets, k)
		}
	}
}
