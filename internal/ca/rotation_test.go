package ca

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	securitypb "istio.io/api/security/v1alpha1"
)

// pemCerts parses every certificate of a PEM string.
func pemCerts(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return out
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// TestTrustAnchorsCarryARootRotation: a CA signing with a new root and
// trusting the old one gives workloads both roots, and renews a
// certificate of the old root; without the old root as an anchor the same
// renewal is refused.
func TestTrustAnchorsCarryARootRotation(t *testing.T) {
	oldCA := newTestCA(t)
	newCA := newTestCA(t, WithTrustAnchors(oldCA.Root()))
	if got := newCA.Bundle().X509Authorities(); len(got) != 2 || !got[0].Equal(newCA.Root()) || !got[1].Equal(oldCA.Root()) {
		t.Fatalf("Bundle() = %d authorities, want the new root then the old", len(got))
	}
	if got := pemCerts(t, string(newCA.RootPEM())); len(got) != 2 {
		t.Fatalf("RootPEM() holds %d certificates, want 2", len(got))
	}

	oldSVID := issueVia(t, startService(t, oldCA), ratingsToken)
	s := startService(t, newCA)
	resp, err := s.client(t, oldSVID).CreateCertificate(testContext(t), &securitypb.IstioCertificateRequest{Csr: string(makeCSR(t, csrOpts{}))})
	if err != nil {
		t.Fatalf("renewing a certificate of the old root with the new CA = %v", err)
	}
	chain := resp.GetCertChain()
	if len(chain) != 2 {
		t.Fatalf("cert_chain has %d entries, want the leaf and the trust bundle", len(chain))
	}
	leaf := pemCerts(t, chain[0])[0]
	if err := leaf.CheckSignatureFrom(newCA.Root()); err != nil {
		t.Errorf("the renewed certificate is not signed by the new root: %v", err)
	}
	if got, want := uriOf(leaf), ratingsID.String(); got != want {
		t.Errorf("renewed identity = %q, want %q", got, want)
	}
	if roots := pemCerts(t, chain[1]); len(roots) != 2 || !roots[0].Equal(newCA.Root()) || !roots[1].Equal(oldCA.Root()) {
		t.Errorf("the response's trust bundle holds %d roots, want the new root then the old", len(roots))
	}

	// The last step of the rotation: the old root is no longer trusted.
	alone := startService(t, newTestCA(t))
	_, err = alone.client(t, oldSVID).CreateCertificate(testContext(t), &securitypb.IstioCertificateRequest{Csr: string(makeCSR(t, csrOpts{}))})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("renewing a certificate of an untrusted root = %v, want Unauthenticated", err)
	}
}

func TestTrustAnchorsAreChecked(t *testing.T) {
	now := time.Now()
	foreign, err := LoadOrCreate(t.TempDir(), "evil.org")
	if err != nil {
		t.Fatal(err)
	}
	leaf := selfIssued(t, testID, false, now.Add(-time.Hour), now.Add(time.Hour), nil, nil).Leaf
	expired := selfIssued(t, spiffeid.RequireFromString("spiffe://example.org"), true, now.Add(-2*time.Hour), now.Add(-time.Hour), nil, nil).Leaf
	for _, tc := range []struct {
		name   string
		anchor *x509.Certificate
		want   string
	}{
		{"a leaf", leaf, "not a CA certificate"},
		{"another trust domain", foreign.Root(), `for trust domain "evil.org"`},
		{"expired", expired, "expired"},
	} {
		_, err := LoadOrCreate(t.TempDir(), "example.org", WithTrustAnchors(tc.anchor))
		if err == nil || !strings.Contains(err.Error(), "trust anchor 1") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: LoadOrCreate(WithTrustAnchors) = %v, want an error naming trust anchor 1: %s", tc.name, err, tc.want)
		}
	}
}
