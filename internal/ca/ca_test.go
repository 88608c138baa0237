package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	testTD = spiffeid.RequireTrustDomainFromString("example.org")
	testID = spiffeid.RequireFromPath(testTD, "/ns/default/sa/reviews")
)

func newTestCA(t *testing.T, opts ...Option) *CA {
	t.Helper()
	c, err := LoadOrCreate(t.TempDir(), "example.org", opts...)
	if err != nil {
		t.Fatalf("LoadOrCreate() = %v", err)
	}
	return c
}

// csrOpts shapes a test CSR.
type csrOpts struct {
	key     crypto.Signer
	uris    []string
	dns     []string
	ips     []net.IP
	emails  []string
	isCA    bool
	rawExts []pkix.Extension
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func makeCSR(t testing.TB, o csrOpts) []byte {
	t.Helper()
	if o.key == nil {
		o.key = newKey(t)
	}
	tmpl := &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: "whoever"},
		DNSNames:        o.dns,
		IPAddresses:     o.ips,
		EmailAddresses:  o.emails,
		ExtraExtensions: o.rawExts,
	}
	for _, u := range o.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	if o.isCA {
		v, err := asn1.Marshal(struct{ IsCA bool }{true})
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidBasicConstraints, Critical: true, Value: v})
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, o.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestLoadOrCreateRestartKeepsRoot(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadOrCreate(dir, "example.org")
	if err != nil {
		t.Fatalf("LoadOrCreate(%q) = %v", dir, err)
	}
	fi, err := os.Stat(filepath.Join(dir, RootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("key file mode = %v, want %v", got, want)
	}
	second, err := LoadOrCreate(dir, "example.org")
	if err != nil {
		t.Fatalf("LoadOrCreate(%q) again = %v", dir, err)
	}
	if !bytes.Equal(first.Root().RawSubjectPublicKeyInfo, second.Root().RawSubjectPublicKeyInfo) {
		t.Errorf("LoadOrCreate(%q) after restart has a different root key", dir)
	}
	if !first.Root().IsCA || first.Root().NotAfter.Sub(first.Root().NotBefore) < 9*365*24*time.Hour {
		t.Errorf("root IsCA=%v validity=%v, want CA with ~10 years", first.Root().IsCA, first.Root().NotAfter.Sub(first.Root().NotBefore))
	}
	if got, want := first.TrustDomain(), testTD; got != want {
		t.Errorf("TrustDomain() = %v, want %v", got, want)
	}
	if _, err := LoadOrCreate(dir, "other.org"); err == nil {
		t.Errorf("LoadOrCreate(%q, other.org) = nil error, want trust domain mismatch", dir)
	}
	// A certificate without its key is never silently replaced.
	if err := os.Remove(filepath.Join(dir, RootKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, "example.org"); err == nil {
		t.Errorf("LoadOrCreate(%q) without key = nil error, want error", dir)
	}
}

func TestLoadFilesUsesGivenRoot(t *testing.T) {
	src := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	cp, kp, err := generateRoot(testTD)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, cp, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, kp, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadFiles(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadFiles() = %v", err)
	}
	if got, want := string(c.RootPEM()), string(cp); got != want {
		t.Errorf("RootPEM() = %q, want %q", got, want)
	}
	if bytes.Equal(c.Root().Raw, src.Root().Raw) {
		t.Errorf("LoadFiles() root equals an unrelated CA's")
	}
	// Mismatched key.
	_, otherKey, err := generateRoot(testTD)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFiles(certFile, keyFile); err == nil {
		t.Errorf("LoadFiles() with mismatched key = nil error, want error")
	}
}

func TestSignRefusesBadCSRs(t *testing.T) {
	c := newTestCA(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherNameSAN, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: []byte{0x06, 0x01, 0x2a, 0xa0, 0x03, 0x0c, 0x01, 0x61}}})
	if err != nil {
		t.Fatal(err)
	}
	good := makeCSR(t, csrOpts{})
	block, _ := pem.Decode(good)
	block.Bytes[len(block.Bytes)-3] ^= 0xff
	badSig := pem.EncodeToMemory(block)
	tests := []struct {
		name string
		csr  []byte
		want error
	}{
		{"another identity's URI SAN", makeCSR(t, csrOpts{uris: []string{"spiffe://example.org/ns/kube-system/sa/admin"}}), ErrInvalidCSR},
		{"extra URI SAN", makeCSR(t, csrOpts{uris: []string{testID.String(), "spiffe://example.org/ns/x/sa/y"}}), ErrInvalidCSR},
		{"CA:true", makeCSR(t, csrOpts{isCA: true}), ErrInvalidCSR},
		{"DNS SAN", makeCSR(t, csrOpts{dns: []string{"reviews.default.svc"}}), ErrInvalidCSR},
		{"IP SAN", makeCSR(t, csrOpts{ips: []net.IP{net.IPv4(10, 0, 0, 1)}}), ErrInvalidCSR},
		{"email SAN", makeCSR(t, csrOpts{emails: []string{"a@example.org"}}), ErrInvalidCSR},
		{"otherName SAN", makeCSR(t, csrOpts{rawExts: []pkix.Extension{{Id: oidSubjectAltName, Value: otherNameSAN}}}), ErrInvalidCSR},
		{"RSA key", makeCSR(t, csrOpts{key: rsaKey}), ErrInvalidCSR},
		{"P-384 key", makeCSR(t, csrOpts{key: p384}), ErrInvalidCSR},
		{"Ed25519 key", makeCSR(t, csrOpts{key: edKey}), ErrInvalidCSR},
		{"bad signature", badSig, ErrInvalidCSR},
		{"garbage PEM", []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), ErrInvalidCSR},
		{"not PEM", []byte("hello"), ErrInvalidCSR},
		{"wrong PEM type", bytes.Replace(good, []byte("CERTIFICATE REQUEST"), []byte("CERTIFICATE"), 2), ErrInvalidCSR},
		{"oversized", append(bytes.Clone(good), bytes.Repeat([]byte("\n"), MaxCSRSize)...), ErrInvalidCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := c.Sign(tt.csr, testID, time.Hour)
			if !errors.Is(err, tt.want) {
				t.Errorf("Sign(%s) = %v, %v, want error %v", tt.name, chain, err, tt.want)
			}
		})
	}
}

func TestSignIssuesSVID(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	setClock(t, func() time.Time { return now })
	c := newTestCA(t, WithMaxTTL(2*time.Hour))
	tests := []struct {
		name    string
		csr     []byte
		ttl     time.Duration
		wantTTL time.Duration
	}{
		{"no SAN", makeCSR(t, csrOpts{}), time.Hour, time.Hour},
		{"own URI SAN", makeCSR(t, csrOpts{uris: []string{testID.String()}}), time.Hour, time.Hour},
		{"huge TTL capped", makeCSR(t, csrOpts{}), 1000 * time.Hour, 2 * time.Hour},
		{"zero TTL is default, capped", makeCSR(t, csrOpts{}), 0, 2 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := c.Sign(tt.csr, testID, tt.ttl)
			if err != nil {
				t.Fatalf("Sign() = %v", err)
			}
			leaf := chain[0]
			got := leafSummaryOf(leaf)
			want := leafSummary{
				URIs:        []string{testID.String()},
				IsCA:        false,
				KeyUsage:    x509.KeyUsageDigitalSignature,
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
				NotBefore:   now.Add(-time.Minute),
				NotAfter:    now.Add(tt.wantTTL),
				AKI:         c.Root().SubjectKeyId,
			}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("Sign() leaf (-got +want):\n%s", diff)
			}
			if leaf.SerialNumber.BitLen() < 100 {
				t.Errorf("Sign() serial has %d bits, want ~128", leaf.SerialNumber.BitLen())
			}
			if chain[len(chain)-1] != c.Root() {
				t.Errorf("Sign() chain does not end with the root")
			}
			roots := x509.NewCertPool()
			roots.AddCert(c.Root())
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("leaf.Verify() = %v", err)
			}
		})
	}
}

func TestSignRefusesForeignIdentity(t *testing.T) {
	c := newTestCA(t)
	foreign := spiffeid.RequireFromString("spiffe://evil.org/ns/default/sa/reviews")
	for _, id := range []spiffeid.ID{foreign, {}} {
		if _, err := c.Sign(makeCSR(t, csrOpts{}), id, time.Hour); !errors.Is(err, ErrForeignIdentity) {
			t.Errorf("Sign(%q) = %v, want %v", id, err, ErrForeignIdentity)
		}
	}
}

func TestServerCertificateCarriesSANs(t *testing.T) {
	c := newTestCA(t)
	id := spiffeid.RequireFromPath(testTD, "/ns/trellis/sa/xdsserver")
	cert, err := c.ServerCertificate(id, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("ServerCertificate() = %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.Root())
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"}); err != nil {
		t.Errorf("ServerCertificate().Leaf.Verify(localhost) = %v", err)
	}
	if got, want := cert.Leaf.URIs[0].String(), id.String(); got != want {
		t.Errorf("ServerCertificate() URI = %q, want %q", got, want)
	}
	if err := cert.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("VerifyHostname(127.0.0.1) = %v", err)
	}
}

func TestIssuedIsSortedAndBounded(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	setClock(t, func() time.Time { return now })
	c := newTestCA(t, WithIssuedLimit(3))
	ttls := []time.Duration{5 * time.Hour, time.Hour, 3 * time.Hour, 4 * time.Hour}
	for _, ttl := range ttls {
		if _, err := c.Sign(makeCSR(t, csrOpts{}), testID, ttl); err != nil {
			t.Fatal(err)
		}
	}
	var got []time.Duration
	for _, ic := range c.Issued() {
		got = append(got, ic.NotAfter.Sub(now))
		if ic.ID != testID || ic.Serial == "" || !ic.IssuedAt.Equal(now) {
			t.Errorf("Issued() entry = %+v, want ID %v, serial, issued at %v", ic, testID, now)
		}
	}
	// The soonest to expire (1h) was dropped at the limit.
	if diff := cmp.Diff(got, []time.Duration{3 * time.Hour, 4 * time.Hour, 5 * time.Hour}); diff != "" {
		t.Errorf("Issued() lifetimes (-got +want):\n%s", diff)
	}
	now = now.Add(3*time.Hour + time.Second)
	if got, want := len(c.Issued()), 2; got != want {
		t.Errorf("len(Issued()) after 3h = %d, want %d (expired dropped)", got, want)
	}
}

type leafSummary struct {
	URIs        []string
	IsCA        bool
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
	NotBefore   time.Time
	NotAfter    time.Time
	AKI         []byte
}

func leafSummaryOf(c *x509.Certificate) leafSummary {
	s := leafSummary{IsCA: c.IsCA, KeyUsage: c.KeyUsage, ExtKeyUsage: c.ExtKeyUsage,
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), AKI: c.AuthorityKeyId}
	for _, u := range c.URIs {
		s.URIs = append(s.URIs, u.String())
	}
	if len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) > 0 {
		s.URIs = append(s.URIs, "unexpected:"+strings.Join(c.DNSNames, ","))
	}
	return s
}

func setClock(t *testing.T, now func() time.Time) {
	t.Helper()
	old := timeNow
	timeNow = now
	t.Cleanup(func() { timeNow = old })
}
