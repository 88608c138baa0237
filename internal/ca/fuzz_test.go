package ca

import (
	"encoding/pem"
	"net"
	"testing"
	"time"
)

// FuzzSign feeds arbitrary bytes to Sign, as PEM and wrapped as the DER of
// a PEM CERTIFICATE REQUEST: it must never panic, and a certificate it
// issues carries exactly the identity it was given and is never a CA.
func FuzzSign(f *testing.F) {
	c, err := LoadOrCreate(f.TempDir(), "example.org")
	if err != nil {
		f.Fatal(err)
	}
	good := makeCSR(f, csrOpts{})
	f.Add(good)
	f.Add(makeCSR(f, csrOpts{uris: []string{testID.String()}}))
	f.Add(makeCSR(f, csrOpts{uris: []string{"spiffe://example.org/ns/x/sa/y"}}))
	f.Add(makeCSR(f, csrOpts{isCA: true}))
	f.Add(makeCSR(f, csrOpts{dns: []string{"a"}, ips: []net.IP{net.IPv4(1, 2, 3, 4)}}))
	block, _ := pem.Decode(good)
	f.Add(block.Bytes)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		inputs := [][]byte{data}
		if len(data) <= MaxCSRSize {
			inputs = append(inputs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: data}))
		}
		for _, in := range inputs {
			chain, err := c.Sign(in, testID, time.Hour)
			if err != nil {
				continue
			}
			leaf := chain[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != testID.String() {
				t.Fatalf("Sign() issued URIs %v, want exactly %v", leaf.URIs, testID)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.IsCA {
				t.Fatalf("Sign() issued DNS %v IP %v email %v CA %v, want none", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses, leaf.IsCA)
			}
		}
	})
}
