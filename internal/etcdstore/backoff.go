package etcdstore

import (
	"context"
	"math/rand/v2"
	"time"
)

// Retry delays while etcd is away: from minBackoff, doubling, at most
// maxBackoff, with jitter. Short, so that a returning etcd is noticed soon.
var (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) reset() { b.d = 0 }

// wait sleeps for the next delay; it returns false if ctx ends first.
func (b *backoff) wait(ctx context.Context) bool {
	b.d = min(max(2*b.d, minBackoff), maxBackoff)
	d := b.d/2 + rand.N(b.d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
