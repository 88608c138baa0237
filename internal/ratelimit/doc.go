// Package ratelimit is the engine of Trellis's local rate limits: token
// buckets, one per key, refilled continuously, with a bounded number of
// keys.
//
// A Limit is a bucket's rate and burst; a Limiter holds the buckets:
//
//	l := ratelimit.New(ratelimit.WithMaxKeys(1024))
//	lim := ratelimit.Limit{Rate: 100, Burst: 20} // 100 calls/s, 20 at once
//	if !l.Allow(callerID, lim) {
//		return status.Error(codes.ResourceExhausted, "rate limited")
//	}
//
// Each key's bucket starts full (Burst tokens), gains Rate tokens per
// second up to Burst, and a call takes one token or is refused. Over any
// interval of length T a key is thus admitted at most Rate×T + Burst calls.
// When a Limiter holds more keys than its maximum, it drops the least
// recently used; a key idle long enough for its bucket to have refilled is
// dropped first, which loses nothing (a new bucket starts full). Dropping a
// key that is not idle gives it a full bucket again; size the maximum above
// the number of keys expected to be busy at once.
//
// The mesh reads its limits from the Envoy local_ratelimit HTTP filter
// (a token_bucket of max_tokens, tokens_per_fill and fill_interval, which
// FromTokenBucket converts); the names the control plane writes it under
// (FilterName, the per-caller descriptor) are here, for both sides.
package ratelimit
