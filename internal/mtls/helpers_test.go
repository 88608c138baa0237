package mtls

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"

	"github.com/trellismesh/trellis/internal/identity"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testTimeout = 20 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// testCA is a root certificate authority of one trust domain.
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

func newSerial(tb testing.TB) *big.Int {
	tb.Helper()
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func newTestCA(tb testing.TB, td string) *testCA {
	tb.Helper()
	key := newKey(tb)
	trustDomain := spiffeid.RequireTrustDomainFromString(td)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(tb),
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{trustDomain.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &testCA{td: trustDomain, cert: cert, key: key}
}

// issue signs a leaf for the given URI SANs (a valid SVID when there is
// one SPIFFE ID), after edit changes its template.
func (ca *testCA) issue(tb testing.TB, uris []string, edit ...func(*x509.Certificate)) *tls.Certificate {
	tb.Helper()
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(tb),
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			tb.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	for _, e := range edit {
		e(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
}

// svid issues a valid SVID for id.
func (ca *testCA) svid(tb testing.TB, id string) *tls.Certificate {
	tb.Helper()
	return ca.issue(tb, []string{id})
}

// testSource is an identity.Source whose certificate and trusted CAs a
// test sets. It is safe for concurrent use.
type testSource struct {
	mu      sync.Mutex
	cert    *tls.Certificate
	cas     []*testCA
	changed chan struct{}
}

var _ identity.Source = (*testSource)(nil)

func newTestSource(cert *tls.Certificate, trusted ...*testCA) *testSource {
	return &testSource{cert: cert, cas: trusted, changed: make(chan struct{})}
}

func (s *testSource) setCertificate(cert *tls.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cert = cert
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *testSource) setTrusted(trusted ...*testCA) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cas = trusted
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *testSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := spiffeid.FromURI(s.cert.Leaf.URIs[0])
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{s.cert.Leaf}, PrivateKey: s.cert.PrivateKey.(*ecdsa.PrivateKey)}, nil
}

func (s *testSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var roots []*x509.Certificate
	for _, ca := range s.cas {
		if ca.td == td {
			roots = append(roots, ca.cert)
		}
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("no bundle for %q", td)
	}
	return x509bundle.FromX509Authorities(td, roots), nil
}

func (s *testSource) Certificate() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cert, nil
}

func (s *testSource) Roots() (*x509.CertPool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pool := x509.NewCertPool()
	for _, ca := range s.cas {
		pool.AddCert(ca.cert)
	}
	return pool, nil
}

func (s *testSource) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *testSource) Close() error { return nil }

// Identities of the tests.
const (
	serverID  = "spiffe://example.org/ns/default/sa/reviews"
	clientID  = "spiffe://example.org/ns/default/sa/frontend"
	foreignID = "spiffe://other.org/ns/default/sa/frontend"
)

// pki is the usual setup: one trusted CA, a server and a client with
// SVIDs from it, trusting it.
type pki struct {
	ca             *testCA
	server, client *testSource
}

func newPKI(tb testing.TB) pki {
	tb.Helper()
	ca := newTestCA(tb, "example.org")
	return pki{
		ca:     ca,
		server: newTestSource(ca.svid(tb, serverID), ca),
		client: newTestSource(ca.svid(tb, clientID), ca),
	}
}

func mustClientConfig(tb testing.TB, src identity.Source, expected ...string) *tls.Config {
	tb.Helper()
	var ids []spiffeid.ID
	for _, e := range expected {
		ids = append(ids, spiffeid.RequireFromString(e))
	}
	cfg, err := ClientConfig(src, ids...)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// handshakeResult is what each side of one TLS connection saw.
type handshakeResult struct {
	serverErr, clientErr     error
	serverState, clientState tls.ConnectionState
}

// handshake connects a TLS client to a TLS server over loopback TCP. The
// server writes one byte after its handshake, which the client reads, so
// a client refused after its own handshake completed (TLS 1.3) learns it,
// and session tickets reach the client.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	ctx := testContext(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var res handshakeResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		raw, err := lis.Accept()
		if err != nil {
			res.serverErr = err
			return
		}
		conn := tls.Server(raw, serverCfg)
		defer conn.Close()
		if res.serverErr = conn.HandshakeContext(ctx); res.serverErr != nil {
			return
		}
		res.serverState = conn.ConnectionState()
		_, res.serverErr = conn.Write([]byte{1})
	}()
	var d tls.Dialer
	d.Config = clientCfg
	conn, err := d.DialContext(ctx, "tcp", lis.Addr().String())
	if err != nil {
		res.clientErr = err
	} else {
		tc := conn.(*tls.Conn)
		res.clientState = tc.ConnectionState()
		if dl, ok := ctx.Deadline(); ok {
			tc.SetReadDeadline(dl)
		}
		_, res.clientErr = tc.Read(make([]byte, 1))
		tc.Close()
	}
	<-done
	return res
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testService answers UnaryCall with what the server saw of the caller:
// Username is its SPIFFE ID (empty if none), Hostname the AuthType of its
// connection ("tls" or "plaintext").
type testService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (testService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	resp := &testgrpc.SimpleResponse{}
	if id, ok := PeerIDFromContext(ctx); ok {
		resp.Username = id.String()
	}
	if p, ok := peer.FromContext(ctx); ok && p.AuthInfo != nil {
		resp.Hostname = p.AuthInfo.AuthType()
	}
	return resp, nil
}

// startGRPC serves testService with creds on loopback and returns its
// address. The server stops at the end of the test.
func startGRPC(t *testing.T, creds credentials.TransportCredentials) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(creds))
	testgrpc.RegisterTestServiceServer(srv, testService{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("Serve() = %v", err)
		}
	})
	return lis.Addr().String()
}

// call makes one UnaryCall to addr over a new connection with creds and
// returns the response and the client's view of the server.
func call(ctx context.Context, t *testing.T, addr string, creds credentials.TransportCredentials) (*testgrpc.SimpleResponse, *peer.Peer, error) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var p peer.Peer
	resp, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Peer(&p))
	return resp, &p, err
}
