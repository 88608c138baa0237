package ca

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	securitypb "istio.io/api/security/v1alpha1"

	"github.com/trellismesh/trellis/internal/ratelimit"
	"github.com/trellismesh/trellis/internal/svid"
)

// Service serves Istio's certificate API (istio.v1.auth.
// IstioCertificateService) from a CA. A caller is authenticated by a join
// token ("authorization: Bearer <token>" metadata) or, to renew, by the
// TLS client certificate it presents, which must be an SVID of this CA; the
// identity issued is the one so authenticated, never one the CSR asks for.
// A renewal gets no longer a lifetime than the certificate it presents,
// and renewals end WithMaxRenewalChain after the token was last presented.
//
// Authentication comes first: an authenticated request is rate limited
// per identity only (WithCallerRateLimit), and a request that fails to
// authenticate per peer address (WithPeerRateLimit), so a flood of bad
// credentials from an address shared with a workload does not slow the
// workload. Both limiters hold a bounded number of keys.
//
// To let callers renew, serve it over TLS that asks for a client
// certificate (tls.RequestClientCert is enough: the Service verifies the
// certificate itself).
//
// A Service is safe for concurrent use.
type Service struct {
	securitypb.UnimplementedIstioCertificateServiceServer

	ca       *CA
	cfg      config
	tokens   []*joinToken
	callerRL *ratelimit.Limiter
	peerRL   *ratelimit.Limiter
	callerL  ratelimit.Limit
	peerL    ratelimit.Limit

	mu       sync.Mutex // guards the state of single-use tokens
	consumed map[[sha256.Size]byte]bool
	inFlight map[[sha256.Size]byte]bool
}

type joinToken struct {
	hash      [sha256.Size]byte
	id        spiffeid.ID
	expires   time.Time
	singleUse bool
}

// limiterKeys bounds each rate limiter's keys (identities, or peer
// addresses): some 200 bytes each, so a few MiB at most.
const limiterKeys = 10000

var _ securitypb.IstioCertificateServiceServer = (*Service)(nil)

// NewService returns a Service issuing from ca. Options that configure a
// Service: WithJoinTokens, WithMaxRenewalChain, WithConsumedTokensFile,
// WithCallerRateLimit, WithPeerRateLimit, WithLogger. It fails if a join
// token is empty or maps to an identity that is not a valid SPIFFE path,
// or if the consumed-tokens file cannot be read.
func NewService(ca *CA, opts ...Option) (*Service, error) {
	if ca == nil {
		return nil, errors.New("ca: NewService: nil CA")
	}
	cfg := newConfig(opts)
	s := &Service{
		ca:       ca,
		cfg:      cfg,
		callerRL: ratelimit.New(ratelimit.WithMaxKeys(limiterKeys)),
		peerRL:   ratelimit.New(ratelimit.WithMaxKeys(limiterKeys)),
		callerL:  cfg.callerRL.limit(),
		peerL:    cfg.peerRL.limit(),
		consumed: map[[sha256.Size]byte]bool{},
		inFlight: map[[sha256.Size]byte]bool{},
	}
	now := timeNow()
	for tok, ident := range cfg.tokens {
		if tok == "" {
			return nil, errors.New("ca: empty join token")
		}
		if ident.Namespace == "" || ident.ServiceAccount == "" {
			return nil, fmt.Errorf("ca: join token for %q/%q: namespace and service account are required", ident.Namespace, ident.ServiceAccount)
		}
		id, err := spiffeid.FromSegments(ca.td, "ns", ident.Namespace, "sa", ident.ServiceAccount)
		if err != nil {
			return nil, fmt.Errorf("ca: join token for %q/%q: %w", ident.Namespace, ident.ServiceAccount, err)
		}
		if !ident.Expires.IsZero() && !now.Before(ident.Expires) {
			cfg.log.Warn("ca: join token already expired", "id", id.String(), "expires", ident.Expires)
		}
		s.tokens = append(s.tokens, &joinToken{hash: sha256.Sum256([]byte(tok)), id: id, expires: ident.Expires, singleUse: ident.SingleUse})
	}
	if cfg.consumedFile != "" {
		if err := s.loadConsumed(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Register registers the Service on r.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	securitypb.RegisterIstioCertificateServiceServer(r, s)
}

// credential is what a request authenticated with.
type credential struct {
	id  spiffeid.ID
	how string // "token" or "svid"
	// token is the join token presented, if any.
	token *joinToken
	// leaf is the certificate presented to renew, if any.
	leaf *x509.Certificate
}

// CreateCertificate implements IstioCertificateServiceServer.
func (s *Service) CreateCertificate(ctx context.Context, req *securitypb.IstioCertificateRequest) (*securitypb.IstioCertificateResponse, error) {
	now := timeNow()
	p, _ := peer.FromContext(ctx)
	addr := peerHost(p)
	cred, err := s.authenticate(ctx, p, now)
	if err != nil {
		if !s.peerRL.Allow(peerKey(p), s.peerL) {
			// The flood case: as little work and log as possible.
			s.cfg.log.Debug("ca: unauthenticated request, rate limited", "peer", addr, "err", err)
			return nil, status.Error(codes.ResourceExhausted, "rate limited")
		}
		s.cfg.log.Warn("ca: unauthenticated request", "peer", addr, "err", err)
		return nil, status.Error(codes.Unauthenticated, "unauthorized")
	}
	if cred.token != nil && cred.token.singleUse {
		defer s.release(cred.token)
	}
	log := s.cfg.log.With("peer", addr, "id", cred.id.String(), "auth", cred.how)
	if !s.callerRL.Allow(cred.id.String(), s.callerL) {
		log.Warn("ca: rate limited")
		return nil, status.Error(codes.ResourceExhausted, "rate limited")
	}
	secs := req.GetValidityDuration()
	if secs < 0 {
		log.Warn("ca: negative validity", "validity_duration", secs)
		return nil, status.Error(codes.InvalidArgument, "invalid validity duration")
	}
	ttl := s.ca.cfg.maxTTL // caps any larger request
	if secs < int64(math.MaxInt64/time.Second) {
		ttl = min(ttl, time.Duration(secs)*time.Second) // zero means the default
	}
	params, err := s.limits(cred, ttl, now)
	if err != nil {
		log.Warn("ca: renewal refused", "reason", err)
		return nil, status.Error(codes.Unauthenticated, "unauthorized")
	}
	chain, err := s.ca.sign([]byte(req.GetCsr()), params)
	if err != nil {
		log.Warn("ca: refused", "err", err)
		if errors.Is(err, ErrInvalidCSR) {
			return nil, status.Error(codes.InvalidArgument, "invalid csr")
		}
		return nil, status.Error(codes.Internal, "internal error")
	}
	if cred.token != nil && cred.token.singleUse {
		if err := s.consume(cred.token); err != nil {
			log.Error("ca: cannot record the single-use token as consumed; certificate withheld", "err", err)
			return nil, status.Error(codes.Internal, "internal error")
		}
	}
	log.Info("ca: issued", "serial", chain[0].SerialNumber.Text(16), "not_after", chain[0].NotAfter)
	// As istiod does, the last element is the whole trust bundle, which
	// holds several roots during a root rotation.
	resp := &securitypb.IstioCertificateResponse{}
	for _, c := range chain[:len(chain)-1] {
		resp.CertChain = append(resp.CertChain, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	resp.CertChain = append(resp.CertChain, string(s.ca.RootPEM()))
	return resp, nil
}

// limits returns what cred may be issued, a certificate of at most ttl:
// for a token, one that expires by the end of the renewal chain starting
// now; for a renewal, one no longer-lived than the presented certificate
// and expiring by the end of its renewal chain, which must reach past the
// presented certificate's own expiry.
func (s *Service) limits(cred credential, ttl time.Duration, now time.Time) (issueParams, error) {
	if cred.leaf == nil {
		authTime := now.Truncate(time.Second)
		return issueParams{id: cred.id, ttl: ttl, authTime: authTime, notAfter: authTime.Add(s.cfg.maxChain)}, nil
	}
	leaf := cred.leaf
	authTime, err := authTimeOf(leaf)
	if err != nil {
		return issueParams{}, err
	}
	authTime = minTime(authTime, now)
	end := authTime.Add(s.cfg.maxChain)
	if !end.After(leaf.NotAfter) {
		return issueParams{}, fmt.Errorf("renewal chain ends at %s, no later than the presented certificate (%s): a join token is needed",
			end.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	// Issued certificates start clockSkew before now: keep the whole
	// validity period within the presented one's length.
	lifetime := leaf.NotAfter.Sub(leaf.NotBefore) - clockSkew
	if lifetime < time.Second {
		return issueParams{}, fmt.Errorf("presented certificate lives %v, too short to renew", leaf.NotAfter.Sub(leaf.NotBefore))
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return issueParams{id: cred.id, ttl: min(ttl, lifetime), authTime: authTime, notAfter: end}, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func peerHost(p *peer.Peer) string {
	if p == nil || p.Addr == nil {
		return "unknown"
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// peerKey is the peer-rate-limit key of p: its IPv4 address, or its
// IPv6 /64, the smallest block a host is commonly given.
func peerKey(p *peer.Peer) string {
	if p == nil || p.Addr == nil {
		return "unknown"
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return ip.String()
	}
	pfx, err := ip.WithZone("").Prefix(64)
	if err != nil {
		return ip.String()
	}
	return pfx.String()
}

// authenticate decides the identity of the caller: a join token if one is
// presented (and then only it), else the TLS client certificate. A
// single-use token is returned reserved: the caller releases it.
func (s *Service) authenticate(ctx context.Context, p *peer.Peer, now time.Time) (credential, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if vals := md.Get("authorization"); len(vals) > 0 {
		if len(vals) != 1 {
			return credential{}, errors.New("more than one authorization header")
		}
		scheme, tok, ok := strings.Cut(vals[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return credential{}, errors.New("authorization is not a bearer token")
		}
		t := s.lookupToken(tok)
		if t == nil {
			return credential{}, errors.New("unknown join token")
		}
		if !t.expires.IsZero() && !now.Before(t.expires) {
			return credential{}, fmt.Errorf("join token for %s expired at %s", t.id, t.expires.UTC().Format(time.RFC3339))
		}
		if t.singleUse {
			if err := s.reserve(t); err != nil {
				return credential{}, err
			}
		}
		return credential{id: t.id, how: "token", token: t}, nil
	}
	if p != nil {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			id, err := s.verifySVID(info.State.PeerCertificates, now)
			if err != nil {
				return credential{}, fmt.Errorf("client certificate: %w", err)
			}
			return credential{id: id, how: "svid", leaf: info.State.PeerCertificates[0]}, nil
		}
	}
	return credential{}, errors.New("no credentials")
}

// lookupToken compares tok against every configured token in constant
// time (hashes make the comparison independent of lengths too).
func (s *Service) lookupToken(tok string) *joinToken {
	h := sha256.Sum256([]byte(tok))
	var found *joinToken
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare(h[:], t.hash[:]) == 1 {
			found = t
		}
	}
	return found
}

// reserve marks single-use token t in use by one request, or fails if it
// was consumed or is in use.
func (s *Service) reserve(t *joinToken) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.consumed[t.hash]:
		return fmt.Errorf("single-use join token for %s already consumed", t.id)
	case s.inFlight[t.hash]:
		return fmt.Errorf("single-use join token for %s in use by another request", t.id)
	}
	s.inFlight[t.hash] = true
	return nil
}

// release ends the request holding single-use token t.
func (s *Service) release(t *joinToken) {
	s.mu.Lock()
	delete(s.inFlight, t.hash)
	s.mu.Unlock()
}

// consume records single-use token t as consumed, durably if
// WithConsumedTokensFile is set, before its certificate is returned.
func (s *Service) consume(t *joinToken) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.consumed[t.hash] = true
	if s.cfg.consumedFile == "" {
		return nil
	}
	hashes := make([]string, 0, len(s.consumed))
	for h := range s.consumed {
		hashes = append(hashes, hex.EncodeToString(h[:]))
	}
	slices.Sort(hashes)
	if err := writeAtomic(s.cfg.consumedFile, []byte(strings.Join(hashes, "\n")+"\n"), 0o600); err != nil {
		delete(s.consumed, t.hash)
		return err
	}
	return nil
}

// loadConsumed reads the consumed-tokens file, if it exists.
func (s *Service) loadConsumed() error {
	data, err := os.ReadFile(s.cfg.consumedFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ca: consumed tokens: %w", err)
	}
	for i, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		var h [sha256.Size]byte
		if n, err := hex.Decode(h[:], []byte(line)); err != nil || n != sha256.Size || len(line) != 2*sha256.Size {
			return fmt.Errorf("ca: consumed tokens: %s:%d: not a SHA-256 hash", s.cfg.consumedFile, i+1)
		}
		s.consumed[h] = true
	}
	return nil
}

// verifySVID checks a presented chain is an unexpired, non-CA X.509 SVID
// for client authentication, of this CA's trust domain, chaining to one
// of its trust anchors, and returns its identity.
func (s *Service) verifySVID(certs []*x509.Certificate, now time.Time) (spiffeid.ID, error) {
	return svid.Verify(certs, s.ca.Bundle(), x509.ExtKeyUsageClientAuth, spiffeid.MatchMemberOf(s.ca.td), now)
}
