package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	securitypb "istio.io/api/security/v1alpha1"

	"github.com/trellismesh/trellis/internal/backoff"
)

const requestTimeout = 30 * time.Second

// retryBackoff spaces the retries of a failed request: from 1 s, doubling,
// at most 30 s, ±20 %.
var retryBackoff = backoff.Exponential{Config: grpcbackoff.Config{
	BaseDelay: time.Second, Multiplier: 2, Jitter: 0.2, MaxDelay: 30 * time.Second,
}}

var randFloat = mrand.Float64 // rotation jitter, a test knob

// A Dialer connects to the CA's certificate service. clientCert is nil for
// a request authenticated by the join token, and the current SVID for a
// renewal: the Dialer must present it as its TLS client certificate. The
// connection is closed after the request.
type Dialer func(ctx context.Context, clientCert *tls.Certificate) (*grpc.ClientConn, error)

// CASource is an identity Source fed by the mesh's built-in CA (Istio's
// certificate API). It sends a CSR for a fresh P-256 key, first
// authenticated by its join token and later renewing with its current SVID,
// and rotates at 40–60 % of each SVID's remaining lifetime; when the CA
// refuses a renewal (Unauthenticated, as at the end of a renewal chain) it
// presents its join token again, and on failure it retries with jittered
// backoff, keeping the current SVID. The trust bundle
// is the root of each response.
//
// A CASource is safe for concurrent use.
type CASource struct {
	*state
	dial Dialer
	td   spiffeid.TrustDomain
	cfg  config

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// NewCASource returns a CASource for trust domain td. It blocks until the
// first SVID arrives or ctx is done; it fails at once if the CA refuses
// the join token or the request. Close stops it.
func NewCASource(ctx context.Context, dial Dialer, td spiffeid.TrustDomain, opts ...Option) (*CASource, error) {
	if dial == nil || td.IsZero() {
		return nil, errors.New("identity: NewCASource needs a Dialer and a trust domain")
	}
	cfg := newConfig(opts)
	if cfg.token == "" {
		return nil, errors.New("identity: NewCASource needs a join token")
	}
	s := &CASource{state: newState(), dial: dial, td: td, cfg: cfg, done: make(chan struct{})}
	for attempt := 1; ; attempt++ {
		err := s.refresh(ctx)
		if err == nil {
			break
		}
		if permanent(err) {
			return nil, err
		}
		cfg.log.Warn("identity: first SVID failed, retrying", "err", err)
		c, stop := newTimer(retryBackoff.Backoff(attempt - 1))
		select {
		case <-ctx.Done():
			stop()
			return nil, fmt.Errorf("identity: no SVID: %w (last error: %w)", ctx.Err(), err)
		case <-c:
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	go s.run(runCtx)
	return s, nil
}

// Close stops the rotation goroutine and waits for it. Afterwards the
// source's methods return ErrClosed.
func (s *CASource) Close() error {
	s.closeOnce.Do(func() {
		s.state.close()
		s.cancel()
		<-s.done
	})
	return nil
}

func (s *CASource) run(ctx context.Context) {
	defer close(s.done)
	failures := 0
	wait := s.rotationDelay()
	for {
		c, stop := newTimer(wait)
		select {
		case <-ctx.Done():
			stop()
			return
		case <-c:
		}
		if err := s.refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = retryBackoff.Backoff(failures)
			failures++
			svid, _ := s.current()
			s.cfg.log.Warn("identity: renewal failed, keeping current SVID", "err", err,
				"not_after", svid.Certificates[0].NotAfter, "retry_in", wait)
			continue
		}
		failures = 0
		wait = s.rotationDelay()
	}
}

// rotationDelay is 40–60 % of the current SVID's remaining lifetime.
func (s *CASource) rotationDelay() time.Duration {
	svid, _ := s.current()
	remaining := svid.Certificates[0].NotAfter.Sub(timeNow())
	return max(time.Duration(float64(remaining)*(0.4+0.2*randFloat())), 0)
}

// permanent reports errors not worth retrying in the constructor.
func permanent(err error) bool {
	if errors.Is(err, ErrInvalidSVID) {
		return true
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
		return true
	}
	return false
}

// refresh gets a new SVID: renewing with the current one while it is
// valid, else (or if the CA refuses it) with the join token.
func (s *CASource) refresh(ctx context.Context) error {
	svid, _ := s.current()
	if svid != nil && timeNow().Before(svid.Certificates[0].NotAfter) {
		cert, err := s.Certificate()
		if err != nil {
			return err
		}
		err = s.request(ctx, cert)
		if status.Code(err) != codes.Unauthenticated {
			return err
		}
		s.cfg.log.Warn("identity: CA refused renewal, presenting the join token", "err", err)
	}
	return s.request(ctx, nil)
}

func (s *CASource) request(ctx context.Context, clientCert *tls.Certificate) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	conn, err := s.dial(ctx, clientCert)
	if err != nil {
		return fmt.Errorf("identity: dial CA: %w", err)
	}
	defer conn.Close()
	if clientCert == nil {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.cfg.token)
	}
	resp, err := securitypb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &securitypb.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		ValidityDuration: int64(s.cfg.ttl / time.Second),
	})
	if err != nil {
		return fmt.Errorf("identity: CA: %w", err)
	}
	svid, bundle, err := validateChain(resp.GetCertChain(), key, s.td)
	if err != nil {
		return err
	}
	if err := s.state.set(svid, x509bundle.NewSet(bundle)); err != nil {
		return err
	}
	s.cfg.log.Info("identity: new SVID", "id", svid.ID.String(),
		"serial", svid.Certificates[0].SerialNumber.Text(16), "not_after", svid.Certificates[0].NotAfter,
		slog.Bool("renewal", clientCert != nil))
	return nil
}

// validateChain checks what the CA returned (PEM certificates, leaf first,
// the trust bundle's roots last) for key: an SVID of trust domain td, not
// a CA, verifying against the roots. It returns the SVID (without the
// roots) and the roots as td's bundle.
func validateChain(chainPEM []string, key *ecdsa.PrivateKey, td spiffeid.TrustDomain) (*x509svid.SVID, *x509bundle.Bundle, error) {
	var certs []*x509.Certificate
	for _, p := range chainPEM {
		rest := []byte(p)
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: %w", ErrInvalidSVID, err)
			}
			certs = append(certs, c)
		}
	}
	if len(certs) < 2 {
		return nil, nil, fmt.Errorf("%w: chain of %d certificates, want leaf and root", ErrInvalidSVID, len(certs))
	}
	// The chain ends with the trust bundle: one root, or several during a
	// root rotation.
	n := len(certs)
	for n > 1 && certs[n-1].IsCA && certs[n-1].CheckSignatureFrom(certs[n-1]) == nil {
		n--
	}
	if n == len(certs) {
		return nil, nil, fmt.Errorf("%w: last certificate is not a self-signed CA", ErrInvalidSVID)
	}
	roots := certs[n:]
	svid := &x509svid.SVID{Certificates: certs[:n], PrivateKey: key}
	leaf := svid.Certificates[0]
	if leaf.IsCA {
		return nil, nil, fmt.Errorf("%w: leaf is a CA", ErrInvalidSVID)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, fmt.Errorf("%w: leaf is not for our key", ErrInvalidSVID)
	}
	bundle := x509bundle.FromX509Authorities(td, roots)
	id, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(timeNow()))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidSVID, err)
	}
	if !id.MemberOf(td) {
		return nil, nil, fmt.Errorf("%w: %q is outside trust domain %q", ErrInvalidSVID, id, td)
	}
	svid.ID = id
	return svid, bundle, nil
}
