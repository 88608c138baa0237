package mtls

import (
	"log/slog"
	"time"
)

// DefaultHandshakeTimeout is how long a new connection may take to show
// its first bytes (and, in Credentials, to finish its TLS handshake) when
// no WithHandshakeTimeout option is given.
const DefaultHandshakeTimeout = 10 * time.Second

// An Option configures ServerConfig, Credentials or PermissiveListener;
// each option says which of them use it.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	log              *slog.Logger
	handshakeTimeout time.Duration
	failed           func(reason string)
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.handshakeTimeout <= 0 {
		c.handshakeTimeout = DefaultHandshakeTimeout
	}
	if c.failed == nil {
		c.failed = func(string) {}
	}
	return c
}

// WithLogger sets where rejected peers and dropped connections are
// logged; by default nothing is. All of ServerConfig, Credentials and
// PermissiveListener use it.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		c.log = l
	})
}

// WithHandshakeTimeout bounds how long an accepted connection may take to
// send the first bytes PERMISSIVE mode sniffs; a connection silent for
// longer is closed. Credentials also bound the TLS handshake that
// follows by the same deadline (grpc.Server lifts it once the transport
// is up). If zero or negative, DefaultHandshakeTimeout. Credentials and
// PermissiveListener use it.
func WithHandshakeTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.handshakeTimeout = d })
}

// Reasons a handshake failed, given to WithHandshakeFailures' function.
const (
	// FailurePeerRejected: the peer's certificate is not a valid SVID of
	// a trusted domain, or not authorized.
	FailurePeerRejected = "peer_rejected"
	// FailureNotTLS: the peer sent something other than TLS where TLS is
	// required (plaintext into STRICT).
	FailureNotTLS = "not_tls"
	// FailureHandshake: any other handshake error (a protocol error, a
	// timeout, a peer that went away).
	FailureHandshake = "handshake_error"
)

// WithHandshakeFailures calls f with the reason (FailurePeerRejected,
// FailureNotTLS, FailureHandshake) of every failed server handshake, once
// per connection, for metrics. ServerConfig reports the peers it rejects;
// Credentials report every other failure of their handshakes. f must be
// safe for concurrent use.
func WithHandshakeFailures(f func(reason string)) Option {
	return optionFunc(func(c *config) { c.failed = f })
}
