package ca

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	securitypb "istio.io/api/security/v1alpha1"
)

// Service serves Istio's certificate API (istio.v1.auth.
// IstioCertificateService) from a CA. A caller is authenticated by a join
// token ("authorization: Bearer <token>" metadata) or, to renew, by the
// TLS client certificate it presents, which must be an SVID of this CA; the
// identity issued is the one so authenticated, never one the CSR asks for.
// Requests are rate limited per peer address and per identity.
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
	tokens   []joinToken
	callerRL *limiter
	peerRL   *limiter
}

type joinToken struct {
	hash [sha256.Size]byte
	id   spiffeid.ID
}

var _ securitypb.IstioCertificateServiceServer = (*Service)(nil)

// NewService returns a Service issuing from ca. Options that configure a
// Service: WithJoinTokens, WithCallerRateLimit, WithPeerRateLimit,
// WithLogger. It fails if a join token is empty or maps to an identity
// that is not a valid SPIFFE path.
func NewService(ca *CA, opts ...Option) (*Service, error) {
	if ca == nil {
		return nil, errors.New("ca: NewService: nil CA")
	}
	cfg := newConfig(opts)
	s := &Service{
		ca:       ca,
		cfg:      cfg,
		callerRL: newLimiter(cfg.callerRL),
		peerRL:   newLimiter(cfg.peerRL),
	}
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
		s.tokens = append(s.tokens, joinToken{hash: sha256.Sum256([]byte(tok)), id: id})
	}
	return s, nil
}

// Register registers the Service on r.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	securitypb.RegisterIstioCertificateServiceServer(r, s)
}

// CreateCertificate implements IstioCertificateServiceServer.
func (s *Service) CreateCertificate(ctx context.Context, req *securitypb.IstioCertificateRequest) (*securitypb.IstioCertificateResponse, error) {
	now := timeNow()
	p, _ := peer.FromContext(ctx)
	addr := peerHost(p)
	if !s.peerRL.allow(addr, now) {
		s.cfg.log.Warn("ca: rate limited", "peer", addr)
		return nil, status.Error(codes.ResourceExhausted, "rate limited")
	}
	id, how, err := s.authenticate(ctx, p, now)
	if err != nil {
		s.cfg.log.Warn("ca: unauthenticated request", "peer", addr, "err", err)
		return nil, status.Error(codes.Unauthenticated, "unauthorized")
	}
	log := s.cfg.log.With("peer", addr, "id", id.String(), "auth", how)
	if !s.callerRL.allow(id.String(), now) {
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
	chain, err := s.ca.Sign([]byte(req.GetCsr()), id, ttl)
	if err != nil {
		log.Warn("ca: refused", "err", err)
		if errors.Is(err, ErrInvalidCSR) {
			return nil, status.Error(codes.InvalidArgument, "invalid csr")
		}
		return nil, status.Error(codes.Internal, "internal error")
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

func peerHost(p *peer.Peer) string {
	if p == nil || p.Addr == nil {
		return "unknown"
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// authenticate decides the identity of the caller: a join token if one is
// presented (and then only it), else the TLS client certificate.
func (s *Service) authenticate(ctx context.Context, p *peer.Peer, now time.Time) (spiffeid.ID, string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if vals := md.Get("authorization"); len(vals) > 0 {
		if len(vals) != 1 {
			return spiffeid.ID{}, "", errors.New("more than one authorization header")
		}
		scheme, tok, ok := strings.Cut(vals[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return spiffeid.ID{}, "", errors.New("authorization is not a bearer token")
		}
		id, ok := s.lookupToken(tok)
		if !ok {
			return spiffeid.ID{}, "", errors.New("unknown join token")
		}
		return id, "token", nil
	}
	if p != nil {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			id, err := s.verifySVID(info.State.PeerCertificates, now)
			if err != nil {
				return spiffeid.ID{}, "", fmt.Errorf("client certificate: %w", err)
			}
			return id, "svid", nil
		}
	}
	return spiffeid.ID{}, "", errors.New("no credentials")
}

// lookupToken compares tok against every configured token in constant
// time (hashes make the comparison independent of lengths too).
func (s *Service) lookupToken(tok string) (spiffeid.ID, bool) {
	h := sha256.Sum256([]byte(tok))
	var found spiffeid.ID
	ok := 0
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare(h[:], t.hash[:]) == 1 {
			found, ok = t.id, 1
		}
	}
	return found, ok == 1
}

// verifySVID checks a presented chain is an unexpired, non-CA X.509 SVID
// of this CA's trust domain and returns its identity.
func (s *Service) verifySVID(certs []*x509.Certificate, now time.Time) (spiffeid.ID, error) {
	leaf := certs[0]
	if leaf.IsCA {
		return spiffeid.ID{}, errors.New("is a CA certificate")
	}
	roots := x509.NewCertPool()
	for _, a := range s.ca.anchors {
		roots.AddCert(a)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return spiffeid.ID{}, err
	}
	if len(leaf.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("has %d URI SANs, want 1", len(leaf.URIs))
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffeid.ID{}, err
	}
	if !id.MemberOf(s.ca.td) {
		return spiffeid.ID{}, fmt.Errorf("%q is outside trust domain %q", id, s.ca.td)
	}
	return id, nil
}
