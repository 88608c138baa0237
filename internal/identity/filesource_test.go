package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/ca"
)

// issue returns PEM cert (leaf), PEM key and the CA's root PEM for testID.
func issue(t *testing.T, c *ca.CA) (certPEM, keyPEM []byte, serial string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := c.Sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), testID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0].Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		chain[0].SerialNumber.Text(16)
}

// replace writes data to path atomically, as secret managers do.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFileSourceReloadsChangedFiles(t *testing.T) {
	ctx := testContext(t)
	authority := newCA(t, "example.org")
	dir := t.TempDir()
	certFile, keyFile, bundleFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "bundle.pem")
	certPEM, keyPEM, first := issue(t, authority)
	replace(t, certFile, certPEM)
	replace(t, keyFile, keyPEM)
	replace(t, bundleFile, authority.RootPEM())

	src, err := NewFileSource(certFile, keyFile, bundleFile)
	if err != nil {
		t.Fatalf("NewFileSource() = %v", err)
	}
	t.Cleanup(func() { src.Close() })
	if got := serialOf(t, src); got != first {
		t.Errorf("GetX509SVID() serial = %s, want %s", got, first)
	}

	// Rotate: key first, then cert. In between the pair does not match and
	// is refused; the final pair is installed.
	certPEM, keyPEM, second := issue(t, authority)
	for serialOf(t, src) != second {
		changed := src.Changed()
		if serialOf(t, src) == second {
			break
		}
		if keyPEM != nil {
			replace(t, keyFile, keyPEM)
			replace(t, certFile, certPEM)
			keyPEM = nil
		}
		waitClosed(ctx, t, changed, "reload after rotation")
	}
	svid, _ := src.GetX509SVID()
	if svid.ID != testID {
		t.Errorf("GetX509SVID().ID = %v, want %v", svid.ID, testID)
	}
}

func TestNewFileSourceRefusesBadFiles(t *testing.T) {
	authority, other := newCA(t, "example.org"), newCA(t, "example.org")
	dir := t.TempDir()
	certPEM, keyPEM, _ := issue(t, authority)
	_, otherKey, _ := issue(t, authority)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		replace(t, p, data)
		return p
	}
	cert, key, bundle := write("c.pem", certPEM), write("k.pem", keyPEM), write("b.pem", authority.RootPEM())
	tests := []struct {
		name              string
		cert, key, bundle string
	}{
		{"key of another cert", cert, write("k2.pem", otherKey), bundle},
		{"bundle of another CA", cert, key, write("b2.pem", other.RootPEM())},
		{"CA certificate as SVID", write("c3.pem", authority.RootPEM()), key, bundle},
		{"missing file", filepath.Join(dir, "none.pem"), key, bundle},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := NewFileSource(tt.cert, tt.key, tt.bundle)
			if err == nil {
				src.Close()
				t.Errorf("NewFileSource(%s) = nil error, want error", tt.name)
			}
		})
	}
}
