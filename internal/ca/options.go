package ca

import (
	"crypto/x509"
	"io"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// An Option configures a CA or a Service; each option documents which it
// applies to, and the other ignores it.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	log       *slog.Logger
	td        spiffeid.TrustDomain
	maxTTL    time.Duration
	maxIssued int
	tokens    map[string]Identity
	callerRL  RateLimit
	peerRL    RateLimit
	anchors   []*x509.Certificate
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

// Identity names the workload a join token stands for: it is issued
// spiffe://<trust-domain>/ns/<Namespace>/sa/<ServiceAccount>. Both fields
// are required.
type Identity struct {
	Namespace      string
	ServiceAccount string
}

var (
	defaultCallerRL = RateLimit{Burst: 5, Every: time.Second}
	defaultPeerRL   = RateLimit{Burst: 20, Every: 200 * time.Millisecond}
)

func newConfig(opts []Option) config {
	c := config{
		maxTTL:    DefaultMaxTTL,
		maxIssued: defaultMaxIssued,
		callerRL:  defaultCallerRL,
		peerRL:    defaultPeerRL,
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
// the identity it maps to. The map is copied. Service only.
func WithJoinTokens(tokens map[string]Identity) Option {
	return optionFunc(func(c *config) {
		c.tokens = make(map[string]Identity, len(tokens))
		for k, v := range tokens {
			c.tokens[k] = v
		}
	})
}

// WithCallerRateLimit limits requests per authenticated identity. The
// default is a burst of 5 and one more per second. Service only.
func WithCallerRateLimit(rl RateLimit) Option {
	return optionFunc(func(c *config) { c.callerRL = withDefault(rl, defaultCallerRL) })
}

// WithPeerRateLimit limits requests per peer IP address, counted before
// authentication. The default is a burst of 20 and one more every 200 ms.
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
