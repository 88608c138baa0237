package ca

import (
	"crypto/x509"
	"io"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/ratelimit"
)

// An Option configures a CA or a Service; each option documents which it
// applies to, and the other ignores it.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	log          *slog.Logger
	td           spiffeid.TrustDomain
	maxTTL       time.Duration
	maxIssued    int
	tokens       map[string]Identity
	callerRL     RateLimit
	peerRL       RateLimit
	maxChain     time.Duration
	consumedFile string
	anchors      []*x509.Certificate
}

// RateLimit is a token bucket: Burst requests at once, then one more every
// Every. The zero value means the default of the option that takes it.
type RateLimit struct {
	// Burst is the bucket size. If zero, defaults to the option's default.
	Burst int
	// Every is the refill period of one token. If zero, defaults to the
	// option's default.
	Every time.Duration
}

// limit converts rl to the rate limiter's terms.
func (rl RateLimit) limit() ratelimit.Limit {
	return ratelimit.Limit{Rate: float64(time.Second) / float64(rl.Every), Burst: rl.Burst}
}

// Identity names the workload a join token stands for: it is issued
// spiffe://<trust-domain>/ns/<Namespace>/sa/<ServiceAccount>. Namespace
// and ServiceAccount are required; Expires and SingleUse limit the token
// itself, never the certificates it got (renewing them keeps working,
// within WithMaxRenewalChain).
type Identity struct {
	Namespace      string
	ServiceAccount string
	// Expires, if not zero, is when the token stops being accepted.
	Expires time.Time
	// SingleUse makes the token good for one certificate: the first
	// request it authenticates that is signed one consumes it (even if
	// the response is then lost), and the token is refused afterwards and
	// while that request is in flight. "Once" is per Service: the record
	// survives a restart only with WithConsumedTokensFile, and is not
	// shared between control-plane replicas, each of which may issue once
	// for the same token.
	SingleUse bool
}

var (
	defaultCallerRL = RateLimit{Burst: 5, Every: time.Second}
	defaultPeerRL   = RateLimit{Burst: 20, Every: 200 * time.Millisecond}
)

// DefaultMaxRenewalChain is how long certificates may be renewed, one from
// the other, after the workload last proved a join token, unless
// WithMaxRenewalChain says otherwise. It equals DefaultMaxTTL: whoever
// steals a certificate and its key then holds an identity no longer than
// the longest certificate the token could have been issued in one go,
// however often they renew it. A workload that keeps its token
// (identity.CASource does) proves it again transparently, one token check
// a day; one enrolled with a SingleUse token lives for at most this long.
const DefaultMaxRenewalChain = 24 * time.Hour

func newConfig(opts []Option) config {
	c := config{
		maxTTL:    DefaultMaxTTL,
		maxIssued: defaultMaxIssued,
		callerRL:  defaultCallerRL,
		peerRL:    defaultPeerRL,
		maxChain:  DefaultMaxRenewalChain,
	}
	for _, o := range opts {
		o.apply(&c)
	}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// WithLogger sets where a CA or Service logs; by default it is silent.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.log = l })
}

// WithTrustDomain sets the CA's trust domain when its root (LoadFiles)
// has no SPIFFE URI SAN. CA only.
func WithTrustDomain(td spiffeid.TrustDomain) Option {
	return optionFunc(func(c *config) { c.td = td })
}

// WithTrustAnchors adds roots the mesh trusts beside the CA's own, for a
// root rotation: a workload's trust bundle is the CA's root and these, and
// a renewal may present a certificate that chains to any of them. Each
// must be a self-signed CA certificate, unexpired, of the CA's trust
// domain if it names one. Rotating from root A to root B takes three
// steps, each lasting at least the longest certificate lifetime: sign with
// A trusting B, sign with B trusting A, sign with B alone. CA only.
func WithTrustAnchors(roots ...*x509.Certificate) Option {
	return optionFunc(func(c *config) { c.anchors = append(c.anchors, roots...) })
}

// WithMaxTTL caps the lifetime of issued certificates. If zero or less,
// DefaultMaxTTL. CA only.
func WithMaxTTL(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.maxTTL = d
		} else {
			c.maxTTL = DefaultMaxTTL
		}
	})
}

// WithIssuedLimit bounds how many issued certificates CA.Issued
// remembers. If zero or less, 10000. CA only.
func WithIssuedLimit(n int) Option {
	return optionFunc(func(c *config) {
		if n > 0 {
			c.maxIssued = n
		} else {
			c.maxIssued = defaultMaxIssued
		}
	})
}

// WithJoinTokens sets the join tokens a Service accepts, each standing for
// the identity it maps to, until it expires or, if single-use, is
// consumed. The map is copied. Service only.
func WithJoinTokens(tokens map[string]Identity) Option {
	return optionFunc(func(c *config) {
		c.tokens = make(map[string]Identity, len(tokens))
		for k, v := range tokens {
			c.tokens[k] = v
		}
	})
}

// WithConsumedTokensFile keeps the record of consumed SingleUse join
// tokens in file (their SHA-256 hashes, one a line, written atomically
// before the certificate is returned), so that a restart does not make
// them usable again. Without it the record lives in memory. Service only.
func WithConsumedTokensFile(file string) Option {
	return optionFunc(func(c *config) { c.consumedFile = file })
}

// WithMaxRenewalChain bounds how long a workload may keep renewing without
// proving a join token again. Every certificate the CA issues records, in
// a non-critical extension, when its holder last proved a token (for
// Sign, the time of the call); a renewal carries that time over, no certificate expires later than it
// plus d, and a renewal that could not reach past the expiry of the
// certificate it presents is refused with Unauthenticated, so the workload
// goes back to its token while its certificate is still valid. A presented
// certificate that records no such time (one of a trust anchor, or of an
// older CA) counts from its NotBefore. If zero or less,
// DefaultMaxRenewalChain. Service only.
func WithMaxRenewalChain(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.maxChain = d
		} else {
			c.maxChain = DefaultMaxRenewalChain
		}
	})
}

// WithCallerRateLimit limits requests per authenticated identity (a valid
// join token's, or a renewing certificate's). Such requests are never
// charged to the peer address, so other callers' failed attempts from the
// same address do not slow them. The default is a burst of 5 and one more
// per second. Service only.
func WithCallerRateLimit(rl RateLimit) Option {
	return optionFunc(func(c *config) { c.callerRL = withDefault(rl, defaultCallerRL) })
}

// WithPeerRateLimit limits the requests that fail to authenticate, per
// peer IP address (per /64 for IPv6); past it they are refused with
// ResourceExhausted instead of Unauthenticated, and not logged above
// debug level. The default is a burst of 20 and one more every 200 ms.
// Service only.
func WithPeerRateLimit(rl RateLimit) Option {
	return optionFunc(func(c *config) { c.peerRL = withDefault(rl, defaultPeerRL) })
}

func withDefault(rl, def RateLimit) RateLimit {
	if rl.Burst <= 0 {
		rl.Burst = def.Burst
	}
	if rl.Every <= 0 {
		rl.Every = def.Every
	}
	return rl
}
