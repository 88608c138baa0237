package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/ca"
)

// FuzzValidateChain feeds arbitrary CA responses (leaf, root) to
// validateChain: it must never panic, and whatever it accepts is an SVID
// of the expected trust domain, for the source's key, and not a CA.
func FuzzValidateChain(f *testing.F) {
	c, err := ca.LoadOrCreate(f.TempDir(), "example.org")
	if err != nil {
		f.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		f.Fatal(err)
	}
	chain, err := c.Sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), testID, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0].Raw})
	f.Add(leafPEM, c.RootPEM())
	f.Add(c.RootPEM(), c.RootPEM())
	f.Add([]byte("junk"), c.RootPEM())
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, leaf, root []byte) {
		svid, bundle, err := validateChain([]string{string(leaf), string(root)}, key, testTD)
		if err != nil {
			return
		}
		if !svid.ID.MemberOf(testTD) || bundle.TrustDomain() != testTD {
			t.Fatalf("validateChain() accepted ID %v bundle %v, want trust domain %v", svid.ID, bundle.TrustDomain(), testTD)
		}
		if svid.Certificates[0].IsCA {
			t.Fatalf("validateChain() accepted a CA leaf")
		}
	})
}
