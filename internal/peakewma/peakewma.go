// Package peakewma is the latency estimate shared by the mesh's two
// latency-aware pickers (balancer/ewma for gRPC, balancer/pick's "ewma"
// policy for HTTP): a peak-sensitive exponentially weighted moving average
// of response times, weighted by the requests outstanding, as Finagle's and
// Linkerd's peak EWMA balancers define it.
//
// An Estimate holds one endpoint's value v (nanoseconds), updated at time s:
//
//   - a response that took r at time t, with w = exp(-(t-s)/τ): if r is above
//     the current value v·w it replaces the estimate at once (peak
//     sensitivity); otherwise the estimate moves towards it, v·w + r·(1-w);
//   - between responses the value read decays towards zero, v·exp(-(t-s)/τ),
//     so an endpoint that is avoided or idle is tried again;
//   - a failed request counts as a response that took max(elapsed, penalty)
//     (failure accrual), so a failing endpoint is avoided for a while even
//     when it fails fast;
//   - before its first response, an endpoint starts from a warm-up value,
//     which its first response replaces whatever it is;
//   - the cost of choosing an endpoint is value × (outstanding + 1).
//
// Times are nanoseconds on any clock that callers use consistently; tests
// inject theirs. An Estimate is safe for concurrent use; reading one takes no
// lock.
package peakewma

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Params' zero fields.
const (
	DefaultDecay          = 10 * time.Second
	DefaultFailurePenalty = time.Second
	// FallbackRTT is the warm-up value when Params.DefaultRTT is zero and
	// no other endpoint has responded yet. It is low on purpose: an
	// endpoint estimated too fast gets a few requests more until its first
	// response (the outstanding weighting bounds them), while one estimated
	// too slow would starve until its estimate decayed, for τ·ln(ratio).
	FallbackRTT = 10 * time.Millisecond
)

// Params are the parameters of the algorithm. The zero value is valid: see
// each field.
type Params struct {
	// Decay is the time constant τ of the moving average. If zero, 10s.
	Decay time.Duration
	// DefaultRTT is the estimate of an endpoint that has not responded
	// yet. If zero, the mean estimate of the endpoints that have, or
	// FallbackRTT (10ms) when none has.
	DefaultRTT time.Duration
	// FailurePenalty is the least latency a failed request counts as. If
	// zero, 1s.
	FailurePenalty time.Duration
}

func (p Params) tau() float64 {
	if p.Decay <= 0 {
		return float64(DefaultDecay)
	}
	return float64(p.Decay)
}

// Penalty returns the latency a failed request that took elapsed counts as.
func (p Params) Penalty(elapsed time.Duration) time.Duration {
	pen := p.FailurePenalty
	if pen <= 0 {
		pen = DefaultFailurePenalty
	}
	return max(elapsed, pen)
}

// Estimate is the latency estimate and outstanding requests of one
// endpoint. Create it with New.
type Estimate struct {
	value       atomic.Uint64 // float64 bits, nanoseconds
	stamp       atomic.Int64  // time of the last update
	sampled     atomic.Bool   // has had a response
	outstanding atomic.Int64

	mu sync.Mutex // serialises updates
}

// New returns the estimate of an endpoint seen at now for the first time,
// starting from the warm-up value: p.DefaultRTT if set, else the mean of
// peers (see Mean) if there is one, else FallbackRTT.
func New(p Params, now int64, peers []*Estimate) *Estimate {
	rtt := float64(p.DefaultRTT)
	if rtt <= 0 {
		var ok bool
		if rtt, ok = Mean(p, now, peers); !ok {
			rtt = float64(FallbackRTT)
		}
	}
	e := &Estimate{}
	e.value.Store(math.Float64bits(rtt))
	e.stamp.Store(now)
	return e
}

// Mean returns the mean current value of the estimates that have had a
// response, and false if none has.
func Mean(p Params, now int64, es []*Estimate) (float64, bool) {
	var sum float64
	n := 0
	for _, e := range es {
		if e != nil && e.sampled.Load() {
			sum += e.Value(p, now)
			n++
		}
	}
	if n == 0 {
		return 0, false
	}
	return sum / float64(n), true
}

// weight returns exp(-Δt/τ) for the time since the last update.
func (e *Estimate) weight(p Params, now int64) float64 {
	dt := float64(max(now-e.stamp.Load(), 0))
	return math.Exp(-dt / p.tau())
}

// Value returns the latency estimate at now, in nanoseconds.
func (e *Estimate) Value(p Params, now int64) float64 {
	return math.Float64frombits(e.value.Load()) * e.weight(p, now)
}

// Outstanding returns the requests started and not finished.
func (e *Estimate) Outstanding() int64 { return e.outstanding.Load() }

// Cost returns the cost of sending one more request to the endpoint:
// its latency estimate times its outstanding requests plus one.
func (e *Estimate) Cost(p Params, now int64) float64 {
	return e.Value(p, now) * float64(e.outstanding.Load()+1)
}

// Start counts a request sent to the endpoint. Each Start is followed by
// exactly one Observe, Fail or Cancel.
func (e *Estimate) Start() { e.outstanding.Add(1) }

// Observe ends a request that got a response after rtt, at now.
func (e *Estimate) Observe(p Params, now int64, rtt time.Duration) {
	e.outstanding.Add(-1)
	e.update(p, now, float64(max(rtt, 0)))
}

// Fail ends a request that failed after elapsed, at now: it counts as a
// response that took p.Penalty(elapsed).
func (e *Estimate) Fail(p Params, now int64, elapsed time.Duration) {
	e.outstanding.Add(-1)
	e.update(p, now, float64(p.Penalty(elapsed)))
}

// Cancel ends a request whose outcome says nothing of the endpoint (the
// caller gave up on it): the estimate is left as it is.
func (e *Estimate) Cancel() { e.outstanding.Add(-1) }

func (e *Estimate) update(p Params, now int64, r float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v := math.Float64frombits(e.value.Load())
	w := e.weight(p, now)
	switch {
	case !e.sampled.Load():
		v = r // the first response replaces the warm-up value
		e.sampled.Store(true)
	case r > v*w:
		v = r // peak
	default:
		v = v*w + r*(1-w)
	}
	e.value.Store(math.Float64bits(v))
	e.stamp.Store(max(now, e.stamp.Load()))
}

// Choose returns whichever of a and b costs less at now, a on a tie.
func Choose(p Params, now int64, a, b *Estimate) *Estimate {
	if b.Cost(p, now) < a.Cost(p, now) {
		return b
	}
	return a
}

// TwoIndexes returns two distinct indexes below n (n ≥ 2) from the random
// numbers r1 and r2, as power of two choices samples.
func TwoIndexes(n int, r1, r2 uint64) (int, int) {
	i := int(r1 % uint64(n))
	j := int(r2 % uint64(n-1))
	if j >= i {
		j++
	}
	return i, j
}

// ParseParams reads the JSON form of Params, the trellis_ewma LB policy's
// configuration: an object with the optional fields decay, defaultRTT and
// failurePenalty, each a positive Go duration string ("250ms"). Unknown
// fields, trailing data and other values are errors; empty input or null
// is the zero Params. The gRPC policy (balancer/ewma) and the HTTP client's
// cluster reader (resolver/xdscluster) both parse with it, so the two
// protocols read one configuration the same way.
func ParseParams(js []byte) (Params, error) {
	var p Params
	trimmed := bytes.TrimSpace(js)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return p, nil
	}
	var raw struct {
		Decay          *string `json:"decay"`
		DefaultRTT     *string `json:"defaultRTT"`
		FailurePenalty *string `json:"failurePenalty"`
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return p, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return p, errors.New("must be a single JSON object")
	}
	for _, f := range []struct {
		name string
		v    *string
		dst  *time.Duration
	}{
		{"decay", raw.Decay, &p.Decay},
		{"defaultRTT", raw.DefaultRTT, &p.DefaultRTT},
		{"failurePenalty", raw.FailurePenalty, &p.FailurePenalty},
	} {
		if f.v == nil {
			continue
		}
		d, err := time.ParseDuration(*f.v)
		if err != nil || d <= 0 {
			return Params{}, fmt.Errorf("%s is %q, must be a positive duration", f.name, *f.v)
		}
		*f.dst = d
	}
	return p, nil
}
