package backoff

import (
	"math/rand/v2"
	"time"

	grpcbackoff "google.golang.org/grpc/backoff"
)

// randFloat64 is the jitter source, a number in [0, 1); tests replace it.
var randFloat64 = rand.Float64

// Exponential is jittered exponential backoff. The delay before retry n
// (n = 0 for the first) grows from d = BaseDelay by Multiplier per retry
// until it reaches MaxDelay, d = min(BaseDelay·Multiplier^n, MaxDelay), and
// is then spread by Jitter:
//
//   - by default, as grpc-go's connection backoff, over
//     [(1−Jitter)·d, (1+Jitter)·d): the delay may exceed MaxDelay by the
//     jitter;
//   - if Capped, over [(1−Jitter)·d, d): jitter only shortens, and
//     MaxDelay bounds every delay. Jitter 0.5 is a delay between half and
//     all of d; Jitter 1 is full jitter, [0, d), Envoy's retry backoff.
//
// Jitter 0 is no jitter: d itself. Unlike grpc-go's, the first delay
// (n = 0) is jittered too, so that clients failing together do not retry
// together. A Multiplier of 1 or less does not grow the delay; a negative
// n counts as 0. The zero value yields no delay. Exponential is a value,
// safe for concurrent use.
type Exponential struct {
	Config grpcbackoff.Config
	Capped bool
}

// Backoff returns the delay before retry n, n being the number of retries
// made since the last success (0 before the first retry).
func (e Exponential) Backoff(n int) time.Duration {
	d, ceiling := float64(e.Config.BaseDelay), float64(e.Config.MaxDelay)
	if e.Config.Multiplier > 1 {
		for ; n > 0 && d < ceiling; n-- {
			d *= e.Config.Multiplier
		}
	}
	d = min(d, ceiling)
	j := e.Config.Jitter
	if e.Capped {
		d *= 1 - j + j*randFloat64()
	} else {
		d *= 1 + j*(2*randFloat64()-1)
	}
	return time.Duration(max(d, 0))
}
