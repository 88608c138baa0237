package meshcert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials/tls/certprovider"

	"github.com/trellismesh/trellis/internal/svid"
)

const testTimeout = 20 * time.Second

// testPKI is a root of example.org and what it signs.
type testPKI struct {
	root *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: "example.org"}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{root: root, key: key}
}

func (p *testPKI) issue(t *testing.T, id string, usage ...x509.ExtKeyUsage) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage, BasicConstraintsValid: true,
		URIs: []*url.URL{spiffeid.RequireFromString(id).URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.root, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: spiffeid.RequireFromString(id), Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// staticSource is an SVIDSource of one SVID and one bundle.
type staticSource struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (s staticSource) KeyMaterial(context.Context) (*certprovider.KeyMaterial, error) {
	return nil, errors.New("not used")
}
func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s staticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle.GetX509BundleForTrustDomain(td)
}

// TestControlPlaneTLSAcceptsOnlyTheControlPlane guards the workload's side
// of the control-plane connection: only the control plane's SPIFFE ID of
// the workload's trust domain, for server authentication, from the
// workload's bundle.
func TestControlPlaneTLSAcceptsOnlyTheControlPlane(t *testing.T) {
	p := newPKI(t)
	src := staticSource{
		svid:   p.issue(t, "spiffe://example.org/ns/default/sa/reviews", x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth),
		bundle: x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("example.org"), []*x509.Certificate{p.root}),
	}
	controlPlane := "spiffe://example.org" + ControlPlanePath
	tests := []struct {
		name    string
		server  *x509svid.SVID
		wantErr error
	}{
		{name: "control plane", server: p.issue(t, controlPlane, x509.ExtKeyUsageServerAuth)},
		{name: "another workload", server: p.issue(t, "spiffe://example.org/ns/default/sa/ratings", x509.ExtKeyUsageServerAuth), wantErr: svid.ErrUnauthorized},
		{name: "control plane ID from another root", server: newPKI(t).issue(t, controlPlane, x509.ExtKeyUsageServerAuth), wantErr: svid.ErrUntrusted},
		{name: "control plane ID for client authentication only", server: p.issue(t, controlPlane, x509.ExtKeyUsageClientAuth), wantErr: svid.ErrUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lis.Close() })
			cert := tls.Certificate{Certificate: [][]byte{tt.server.Certificates[0].Raw}, PrivateKey: tt.server.PrivateKey}
			done := make(chan struct{})
			go func() {
				defer close(done)
				conn, err := lis.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(testTimeout))
				tls.Server(conn, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}).Handshake()
			}()
			d := tls.Dialer{Config: ControlPlaneTLS(src)}
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			conn, err := d.DialContext(ctx, "tcp", lis.Addr().String())
			if err == nil {
				conn.Close()
			}
			<-done
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("client Handshake() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
