package xdsserver

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/trellismesh/trellis/internal/svid"
)

// timeNow is the clock client certificates are verified against; tests
// replace it.
var timeNow = time.Now

// errNoCA: a client certificate arrived but there is no CA to verify it.
var errNoCA = errors.New("no CA to verify client certificates with")

// peerIdentity returns the SPIFFE ID proved by the client certificate of the
// connection in ctx, or the zero ID if the client presented none (plaintext
// port, or TLS without a certificate). A certificate that does not verify is
// an error: presenting one and failing is never treated as presenting none.
//
// The secure port requests client certificates without verifying them
// (tls.RequestClientCert, since a first CA request carries a join token
// instead), so the verification is done here, by svid.Verify: the chain
// verifies against the CA's trust anchors now, the leaf is not a CA, is
// for client authentication, and has exactly one URI SAN, a workload
// SPIFFE ID in the CA's trust domain.
func (s *Server) peerIdentity(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, nil
	}
	if s.ca == nil {
		return spiffeid.ID{}, errNoCA
	}
	return verifyWorkloadCert(info.State.PeerCertificates, s.ca.Anchors(), s.ca.TrustDomain(), timeNow())
}

// verifyWorkloadCert verifies a client certificate chain, leaf first, as
// an SVID of trust domain td for client authentication, against the
// trust anchors.
func verifyWorkloadCert(chain []*x509.Certificate, anchors []*x509.Certificate, td spiffeid.TrustDomain, now time.Time) (spiffeid.ID, error) {
	return svid.Verify(chain, x509bundle.FromX509Authorities(td, anchors), x509.ExtKeyUsageClientAuth, spiffeid.MatchMemberOf(td), now)
}

// identityNamespace returns the namespace of a workload SPIFFE ID
// (spiffe://<td>/ns/<namespace>/sa/<service-account>), or "" if the ID does
// not have that form.
func identityNamespace(id spiffeid.ID) string {
	parts := strings.Split(id.Path(), "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "sa" || parts[2] == "" || parts[4] == "" {
		return ""
	}
	return parts[2]
}
