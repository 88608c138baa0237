package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	// ErrClosed is returned by the methods of a closed source.
	ErrClosed = errors.New("identity: source closed")
	// ErrInvalidSVID reports an SVID that fails validation: not a single
	// SPIFFE URI SAN in the expected trust domain, a CA certificate, a
	// chain that does not verify against its bundle, or a key mismatch.
	ErrInvalidSVID = errors.New("identity: invalid SVID")
)

// Source is what every identity source of this package provides: the
// workload's current X.509 SVID and trust bundles, in go-spiffe's terms
// (so go-spiffe's tlsconfig and grpccredentials accept it) and in
// crypto/tls's, plus a signal when they change.
type Source interface {
	x509svid.Source
	x509bundle.Source
	// Certificate returns the current SVID as a TLS certificate.
	Certificate() (*tls.Certificate, error)
	// Roots returns the X.509 authorities of the SVID's own trust domain.
	Roots() (*x509.CertPool, error)
	// Changed returns a channel closed at the next change of the SVID or
	// the bundles after the call. Call it again after each change.
	Changed() <-chan struct{}
	// Close stops the source. It is idempotent.
	Close() error
}

var (
	_ Source = (*CASource)(nil)
	_ Source = (*FileSource)(nil)
	_ Source = (*WorkloadSource)(nil)
)

// Test knobs.
var (
	timeNow  = time.Now
	newTimer = func(d time.Duration) (<-chan time.Time, func() bool) {
		t := time.NewTimer(d)
		return t.C, t.Stop
	}
)

// state is the current identity of a source, shared by its
// implementations. It is safe for concurrent use.
type state struct {
	mu      sync.Mutex
	svid    *x509svid.SVID
	bundles *x509bundle.Set
	cert    *tls.Certificate
	roots   *x509.CertPool
	changed chan struct{}
	closed  bool
}

func newState() *state {
	return &state{changed: make(chan struct{})}
}

// set installs a new identity and wakes those waiting on Changed.
func (s *state) set(svid *x509svid.SVID, bundles *x509bundle.Set) error {
	raw := make([][]byte, len(svid.Certificates))
	for i, c := range svid.Certificates {
		raw[i] = c.Raw
	}
	own, err := bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSVID, err)
	}
	roots := x509.NewCertPool()
	for _, c := range own.X509Authorities() {
		roots.AddCert(c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.svid = svid
	s.bundles = bundles
	s.cert = &tls.Certificate{Certificate: raw, PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	s.roots = roots
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

func (s *state) current() (*x509svid.SVID, *x509bundle.Set) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid, s.bundles
}

func (s *state) close() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	return true
}

// GetX509SVID implements x509svid.Source.
func (s *state) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.svid == nil {
		return nil, errors.New("identity: no SVID yet")
	}
	return s.svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *state) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.bundles == nil {
		return nil, errors.New("identity: no bundle yet")
	}
	return s.bundles.GetX509BundleForTrustDomain(td)
}

// Certificate returns the current SVID as a TLS certificate, for
// tls.Config.GetCertificate or GetClientCertificate.
func (s *state) Certificate() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.cert == nil {
		return nil, errors.New("identity: no SVID yet")
	}
	return s.cert, nil
}

// Roots returns the authorities of the SVID's own trust domain, for
// tls.Config.RootCAs or ClientCAs.
func (s *state) Roots() (*x509.CertPool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.roots == nil {
		return nil, errors.New("identity: no bundle yet")
	}
	return s.roots, nil
}

// Changed returns a channel closed at the next change.
func (s *state) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// An Option configures a source; each option says which sources use it.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	log   *slog.Logger
	token string
	ttl   time.Duration
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// WithLogger sets where a source logs; by default it is silent.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.log = l })
}

// WithJoinToken sets the join token a CASource presents for its first
// SVID, and again if its SVID expired or is refused. CASource only.
func WithJoinToken(token string) Option {
	return optionFunc(func(c *config) { c.token = token })
}

// WithTTL sets the lifetime a CASource asks for; the CA may cap it. If
// zero, the CA's default. CASource only.
func WithTTL(d time.Duration) Option {
	return optionFunc(func(c *config) { c.ttl = d })
}
