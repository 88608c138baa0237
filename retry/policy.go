package retry

import (
	"time"

	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"

	"github.com/trellismesh/trellis/internal/backoff"
)

// Defaults of a Policy's backoff, those of Envoy and grpc-go's xDS retry.
const (
	DefaultBaseBackoff = 25 * time.Millisecond
	// MaxBackoff defaults to ten times BaseBackoff.
	defaultMaxBackoffFactor = 10
)

// Policy says how one call is attempted and retried. The zero value makes a
// single attempt with no deadline of its own.
type Policy struct {
	// Attempts is the most attempts of a call, the first included. If zero
	// or one, a call is not retried.
	Attempts int
	// Codes are the gRPC status codes that are retried.
	Codes Codes
	// PerTryTimeout bounds each attempt. An attempt that runs out of it is
	// retried (while attempts and the call's own deadline remain) whatever
	// Codes says: retrying a slow attempt is what a per-try timeout is for,
	// as in Envoy. If zero, an attempt has the call's whole deadline.
	PerTryTimeout time.Duration
	// Timeout bounds the whole call, every attempt and backoff included. If
	// zero, only the caller's deadline applies.
	Timeout time.Duration
	// BaseBackoff and MaxBackoff bound the delay before retry n (n = 1, 2,
	// ...): a random duration in [0, min(BaseBackoff·2^(n-1), MaxBackoff)).
	// If zero, 25 milliseconds and ten times BaseBackoff.
	BaseBackoff, MaxBackoff time.Duration
	// Budget, if not nil, caps the retries of all calls sharing it: a
	// retry it refuses is not made, and the call ends with its last error.
	Budget *BudgetTracker
}

// Codes is a set of gRPC status codes. The zero value is empty.
type Codes uint32

// CodesOf returns the set of the given codes.
func CodesOf(cs ...codes.Code) Codes {
	var s Codes
	for _, c := range cs {
		if c < 32 {
			s |= 1 << c
		}
	}
	return s
}

// Has reports whether c is in the set.
func (s Codes) Has(c codes.Code) bool { return c < 32 && s&(1<<c) != 0 }

// active reports whether the policy changes anything about a call.
func (p *Policy) active() bool {
	return p.Attempts > 1 || p.PerTryTimeout > 0 || p.Timeout > 0
}

// Backoff returns the delay before retry n (n ≥ 1): Envoy's full jitter.
func (p *Policy) Backoff(n int) time.Duration {
	base := p.BaseBackoff
	if base <= 0 {
		base = DefaultBaseBackoff
	}
	maxB := p.MaxBackoff
	if maxB <= 0 {
		maxB = defaultMaxBackoffFactor * base
	}
	return backoff.Exponential{Config: grpcbackoff.Config{
		BaseDelay: base, Multiplier: 2, Jitter: 1, MaxDelay: maxB,
	}, Capped: true}.Backoff(n - 1)
}
