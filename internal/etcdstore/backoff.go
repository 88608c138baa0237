package etcdstore

import (
	"context"
	"time"

	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/trellismesh/trellis/internal/backoff"
)

// retryBackoff spaces retries while etcd is away: from 100 ms, doubling,
// at most 2 s, each delay between half and all of that. Short, so that a
// returning etcd is noticed soon.
var retryBackoff = backoff.Exponential{Config: grpcbackoff.Config{
	BaseDelay: 100 * time.Millisecond, Multiplier: 2, Jitter: 0.5, MaxDelay: 2 * time.Second,
}, Capped: true}

// retrier counts the retries of one loop since its last success.
type retrier struct{ retries int }

func newRetrier() *retrier { return &retrier{} }

func (r *retrier) reset() { r.retries = 0 }

// wait sleeps for the next delay; it returns false if ctx ends first.
func (r *retrier) wait(ctx context.Context) bool {
	t := time.NewTimer(retryBackoff.Backoff(r.retries))
	r.retries++
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
