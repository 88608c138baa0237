package svid

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	clientID = spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/frontend")
	otherID  = spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/ratings")
)

// authority is a CA of a test: a root, or an intermediate under one.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

var serial int64

func sign(t *testing.T, tmpl *x509.Certificate, parent *authority, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	signer, parentCert := key, tmpl
	if parent != nil {
		signer, parentCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// newAuthority makes a root of trust domain td (parent nil) or an
// intermediate under parent, after edit changes its template.
func newAuthority(t *testing.T, td string, parent *authority, edit ...func(*x509.Certificate)) *authority {
	t.Helper()
	tmpl := &x509.Certificate{
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: td}},
	}
	for _, e := range edit {
		e(tmpl)
	}
	key := newKey(t)
	return &authority{cert: sign(t, tmpl, parent, key), key: key}
}

// leaf signs a certificate for the URI SANs uris (an SVID when there is
// one SPIFFE ID) after edit changes its template.
func (a *authority) leaf(t *testing.T, uris []string, edit ...func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	for _, e := range edit {
		e(tmpl)
	}
	return sign(t, tmpl, a, newKey(t))
}

func extKeyUsage(u ...x509.ExtKeyUsage) func(*x509.Certificate) {
	return func(c *x509.Certificate) { c.ExtKeyUsage = u }
}

// TestVerifySVIDRefusesHostileChains guards the one verification of peer
// SVIDs against what a trusted CA could be made to sign, what an attacker's
// CA signs, and stale certificates; valid chains (directly under a root,
// through an intermediate, under either root of a rotation) pass.
func TestVerifySVIDRefusesHostileChains(t *testing.T) {
	root := newAuthority(t, "example.org", nil)
	next := newAuthority(t, "example.org", nil) // the next root of a rotation
	foreign := newAuthority(t, "other.org", nil)
	attacker := newAuthority(t, "example.org", nil) // not in the bundle
	inter := newAuthority(t, "example.org", root)
	serverOnlyInter := newAuthority(t, "example.org", root, extKeyUsage(x509.ExtKeyUsageServerAuth))
	anyInter := newAuthority(t, "example.org", root, extKeyUsage(x509.ExtKeyUsageAny))

	bundles := x509bundle.NewSet(
		x509bundle.FromX509Authorities(td, []*x509.Certificate{root.cert, next.cert}),
		x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("federated.org"), []*x509.Certificate{foreign.cert}),
	)
	client := clientID.String()
	now := time.Now()
	tests := []struct {
		name    string
		certs   []*x509.Certificate
		usage   x509.ExtKeyUsage
		match   spiffeid.Matcher // nil: clientID only
		now     time.Time        // zero: now
		want    spiffeid.ID
		wantErr error
	}{
		{name: "valid", certs: []*x509.Certificate{root.leaf(t, []string{client}), root.cert}, want: clientID},
		{name: "valid for server authentication", certs: []*x509.Certificate{root.leaf(t, []string{client})}, usage: x509.ExtKeyUsageServerAuth, want: clientID},
		{name: "under the next root of a rotation", certs: []*x509.Certificate{next.leaf(t, []string{client})}, want: clientID},
		{name: "chain through an intermediate", certs: []*x509.Certificate{inter.leaf(t, []string{client}), inter.cert}, want: clientID},
		{name: "intermediate for any usage", certs: []*x509.Certificate{anyInter.leaf(t, []string{client}), anyInter.cert}, want: clientID},

		{name: "no certificate", wantErr: ErrNoCertificate},
		{name: "wrong SPIFFE ID from the trusted CA", certs: []*x509.Certificate{root.leaf(t, []string{otherID.String()})}, wantErr: ErrUnauthorized},
		{name: "two URI SANs", certs: []*x509.Certificate{root.leaf(t, []string{client, otherID.String()})}, wantErr: ErrInvalid},
		{name: "no URI SAN", certs: []*x509.Certificate{root.leaf(t, nil, func(c *x509.Certificate) { c.DNSNames = []string{"frontend"} })}, wantErr: ErrInvalid},
		{name: "non-SPIFFE URI SAN", certs: []*x509.Certificate{root.leaf(t, []string{"https://example.org/ns/default/sa/frontend"})}, wantErr: ErrInvalid},
		{name: "trust domain ID as leaf", certs: []*x509.Certificate{root.leaf(t, []string{"spiffe://example.org"})}, wantErr: ErrInvalid},
		{name: "CA:true leaf", certs: []*x509.Certificate{root.leaf(t, []string{client}, func(c *x509.Certificate) {
			c.IsCA = true
			c.KeyUsage |= x509.KeyUsageCertSign
		})}, wantErr: ErrInvalid},
		{name: "leaf that may sign certificates", certs: []*x509.Certificate{root.leaf(t, []string{client}, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign })}, wantErr: ErrInvalid},
		{name: "leaf that may sign CRLs", certs: []*x509.Certificate{root.leaf(t, []string{client}, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCRLSign })}, wantErr: ErrInvalid},
		{name: "foreign trust domain", certs: []*x509.Certificate{foreign.leaf(t, []string{"spiffe://other.org/ns/default/sa/frontend"})}, match: spiffeid.MatchAny(), wantErr: ErrUntrusted},
		{name: "federated trust domain refused by the matcher", certs: []*x509.Certificate{foreign.leaf(t, []string{"spiffe://federated.org/ns/default/sa/frontend"})}, wantErr: ErrUnauthorized},
		{name: "our trust domain from a foreign root", certs: []*x509.Certificate{foreign.leaf(t, []string{client})}, wantErr: ErrUntrusted},
		{name: "chain to an untrusted root", certs: []*x509.Certificate{attacker.leaf(t, []string{client}), attacker.cert}, wantErr: ErrUntrusted},
		{name: "intermediate missing", certs: []*x509.Certificate{inter.leaf(t, []string{client})}, wantErr: ErrUntrusted},
		{name: "intermediate of an untrusted root", certs: []*x509.Certificate{newAuthority(t, "example.org", attacker).leaf(t, []string{client}), attacker.cert}, wantErr: ErrUntrusted},
		{name: "expired", certs: []*x509.Certificate{root.leaf(t, []string{client})}, now: now.Add(2 * time.Hour), wantErr: ErrUntrusted},
		{name: "not yet valid", certs: []*x509.Certificate{root.leaf(t, []string{client})}, now: now.Add(-time.Hour), wantErr: ErrUntrusted},
		{name: "missing extended key usage", certs: []*x509.Certificate{root.leaf(t, []string{client}, extKeyUsage())}, wantErr: ErrUntrusted},
		{name: "server auth only, for a client", certs: []*x509.Certificate{root.leaf(t, []string{client}, extKeyUsage(x509.ExtKeyUsageServerAuth))}, wantErr: ErrUntrusted},
		{name: "client auth only, for a server", certs: []*x509.Certificate{root.leaf(t, []string{client}, extKeyUsage(x509.ExtKeyUsageClientAuth))}, usage: x509.ExtKeyUsageServerAuth, wantErr: ErrUntrusted},
		{name: "any usage only", certs: []*x509.Certificate{root.leaf(t, []string{client}, extKeyUsage(x509.ExtKeyUsageAny))}, wantErr: ErrUntrusted},
		{name: "intermediate for server auth only", certs: []*x509.Certificate{serverOnlyInter.leaf(t, []string{client}), serverOnlyInter.cert}, wantErr: ErrUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			usage := tt.usage
			if usage == 0 {
				usage = x509.ExtKeyUsageClientAuth
			}
			match := tt.match
			if match == nil {
				match = spiffeid.MatchID(clientID)
			}
			at := tt.now
			if at.IsZero() {
				at = now
			}
			got, err := Verify(tt.certs, bundles, usage, match, at)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Verify(%s) = %v, %v, want error %v", tt.name, got, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Verify(%s) = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
}

// TestVerifyDefaults guards the two defaults of Verify: a nil matcher
// accepts nothing (fail closed), a zero time is the current time.
func TestVerifyDefaults(t *testing.T) {
	root := newAuthority(t, "example.org", nil)
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{root.cert})
	certs := []*x509.Certificate{root.leaf(t, []string{clientID.String()})}
	if id, err := Verify(certs, bundle, x509.ExtKeyUsageClientAuth, nil, time.Now()); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Verify(nil matcher) = %q, %v, want %v", id, err, ErrUnauthorized)
	}
	if id, err := Verify(certs, bundle, x509.ExtKeyUsageClientAuth, spiffeid.MatchAny(), time.Time{}); err != nil || id != clientID {
		t.Errorf("Verify(zero time) = %q, %v, want %q", id, err, clientID)
	}
	old := []*x509.Certificate{root.leaf(t, []string{clientID.String()}, func(c *x509.Certificate) {
		c.NotBefore = time.Now().Add(-2 * time.Hour)
		c.NotAfter = time.Now().Add(-time.Hour)
	})}
	if id, err := Verify(old, bundle, x509.ExtKeyUsageClientAuth, spiffeid.MatchAny(), time.Time{}); !errors.Is(err, ErrUntrusted) {
		t.Errorf("Verify(expired, zero time) = %q, %v, want %v", id, err, ErrUntrusted)
	}
}

// TestVerifyErrorsWrapOneCondition guards the classification callers
// map to their own conditions: each refusal wraps exactly one.
func TestVerifyErrorsWrapOneCondition(t *testing.T) {
	root := newAuthority(t, "example.org", nil)
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{root.cert})
	expired := root.leaf(t, []string{clientID.String()}, func(c *x509.Certificate) {
		c.NotBefore = time.Now().Add(-2 * time.Hour)
		c.NotAfter = time.Now().Add(-time.Hour)
	})
	caLeaf := root.leaf(t, []string{clientID.String()}, func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign })
	conditions := []error{ErrNoCertificate, ErrInvalid, ErrUntrusted, ErrUnauthorized}
	for _, certs := range [][]*x509.Certificate{nil, {caLeaf}, {expired}, {root.leaf(t, []string{otherID.String()})}} {
		_, err := Verify(certs, bundle, x509.ExtKeyUsageClientAuth, spiffeid.MatchID(clientID), time.Now())
		var wrapped []error
		for _, c := range conditions {
			if errors.Is(err, c) {
				wrapped = append(wrapped, c)
			}
		}
		if len(wrapped) != 1 {
			t.Errorf("Verify() = %v, wrapping %v, want exactly one of %v", err, wrapped, conditions)
		}
	}
}

func TestLeafID(t *testing.T) {
	root := newAuthority(t, "example.org", nil)
	tests := []struct {
		name    string
		uris    []string
		want    spiffeid.ID
		wantErr error
	}{
		{name: "workload", uris: []string{clientID.String()}, want: clientID},
		{name: "no URI SAN", wantErr: ErrInvalid},
		{name: "two URI SANs", uris: []string{clientID.String(), otherID.String()}, wantErr: ErrInvalid},
		{name: "trust domain only", uris: []string{"spiffe://example.org"}, wantErr: ErrInvalid},
		{name: "upper-case trust domain", uris: []string{"spiffe://EXAMPLE.org/x"}, wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LeafID(root.leaf(t, tt.uris))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("LeafID(%v) = %v, %v, want error %v", tt.uris, got, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("LeafID(%v) = %q, want %q", tt.uris, got, tt.want)
			}
		})
	}
}
