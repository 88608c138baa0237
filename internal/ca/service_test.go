package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	securitypb "istio.io/api/security/v1alpha1"
)

const (
	reviewsToken = "reviews-token-0123456789"
	ratingsToken = "ratings-token-0123456789"
)

var ratingsID = spiffeid.RequireFromPath(testTD, "/ns/default/sa/ratings")

// testServer is a real ca.Service on a real gRPC server over TLS on
// 127.0.0.1.
type testServer struct {
	ca   *CA
	addr string
}

func startService(t *testing.T, c *CA, opts ...Option) *testServer {
	t.Helper()
	opts = append([]Option{WithJoinTokens(map[string]Identity{
		reviewsToken: {Namespace: "default", ServiceAccount: "reviews"},
		ratingsToken: {Namespace: "default", ServiceAccount: "ratings"},
	})}, opts...)
	svc, err := NewService(c, opts...)
	if err != nil {
		t.Fatalf("NewService() = %v", err)
	}
	cert, err := c.ServerCertificate(spiffeid.RequireFromPath(testTD, "/ns/trellis/sa/xdsserver"), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{*cert},
		ClientAuth:   tls.RequestClientCert,
	})))
	svc.Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return &testServer{ca: c, addr: lis.Addr().String()}
}

// client dials the server presenting clientCert (if any).
func (s *testServer) client(t *testing.T, clientCert *tls.Certificate) securitypb.IstioCertificateServiceClient {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(s.ca.Root())
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if clientCert != nil {
		cfg.Certificates = []tls.Certificate{*clientCert}
	}
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return securitypb.NewIstioCertificateServiceClient(conn)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func withToken(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

func parseChain(t *testing.T, resp *securitypb.IstioCertificateResponse) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, p := range resp.GetCertChain() {
		block, _ := pem.Decode([]byte(p))
		if block == nil {
			t.Fatalf("cert_chain entry is not PEM: %q", p)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func uriOf(c *x509.Certificate) string {
	if len(c.URIs) != 1 {
		return ""
	}
	return c.URIs[0].String()
}

// svidFor returns a TLS certificate issued by c for id via the join token.
func issueVia(t *testing.T, s *testServer, token string) *tls.Certificate {
	t.Helper()
	key := newKey(t)
	resp, err := s.client(t, nil).CreateCertificate(withToken(testContext(t), token), &securitypb.IstioCertificateRequest{Csr: string(makeCSR(t, csrOpts{key: key})), ValidityDuration: 3600})
	if err != nil {
		t.Fatalf("CreateCertificate(token) = %v", err)
	}
	chain := parseChain(t, resp)
	return &tls.Certificate{Certificate: [][]byte{chain[0].Raw}, PrivateKey: key, Leaf: chain[0]}
}

func TestServiceIssuesIdentityOfToken(t *testing.T) {
	s := startService(t, newTestCA(t, WithMaxTTL(2*time.Hour)))
	tests := []struct {
		name     string
		token    string
		validity int64
		csr      csrOpts
		wantID   string
		wantTTL  time.Duration
	}{
		{"reviews", reviewsToken, 600, csrOpts{}, testID.String(), 10 * time.Minute},
		{"ratings", ratingsToken, 600, csrOpts{}, ratingsID.String(), 10 * time.Minute},
		{"huge TTL capped to MaxTTL", reviewsToken, 1 << 62, csrOpts{}, testID.String(), 2 * time.Hour},
		{"zero TTL gets default capped", reviewsToken, 0, csrOpts{}, testID.String(), 2 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			resp, err := s.client(t, nil).CreateCertificate(withToken(testContext(t), tt.token),
				&securitypb.IstioCertificateRequest{Csr: string(makeCSR(t, tt.csr)), ValidityDuration: tt.validity})
			if err != nil {
				t.Fatalf("CreateCertificate() = %v", err)
			}
			chain := parseChain(t, resp)
			if len(chain) != 2 || !chain[1].Equal(s.ca.Root()) {
				t.Fatalf("CreateCertificate() chain of %d, want leaf then root last", len(chain))
			}
			if got := uriOf(chain[0]); got != tt.wantID {
				t.Errorf("CreateCertificate() identity = %q, want %q", got, tt.wantID)
			}
			if got := chain[0].NotAfter.Sub(before); got < tt.wantTTL-time.Minute || got > tt.wantTTL+time.Minute {
				t.Errorf("CreateCertificate() lifetime = %v, want %v", got, tt.wantTTL)
			}
		})
	}
}

func TestServiceRefusesBadRequests(t *testing.T) {
	s := startService(t, newTestCA(t), WithCallerRateLimit(RateLimit{Burst: 100, Every: time.Millisecond}), WithPeerRateLimit(RateLimit{Burst: 100, Every: time.Millisecond}))
	c := s.client(t, nil)
	tests := []struct {
		name     string
		token    string
		csr      string
		validity int64
		want     codes.Code
	}{
		{"CSR for another identity", reviewsToken, string(makeCSR(t, csrOpts{uris: []string{ratingsID.String()}})), 0, codes.InvalidArgument},
		{"CSR with extra URI SAN", reviewsToken, string(makeCSR(t, csrOpts{uris: []string{testID.String(), ratingsID.String()}})), 0, codes.InvalidArgument},
		{"CSR with CA:true", reviewsToken, string(makeCSR(t, csrOpts{isCA: true})), 0, codes.InvalidArgument},
		{"CSR with DNS SAN", reviewsToken, string(makeCSR(t, csrOpts{dns: []string{"ratings"}})), 0, codes.InvalidArgument},
		{"CSR with IP SAN", reviewsToken, string(makeCSR(t, csrOpts{ips: []net.IP{net.IPv4(127, 0, 0, 1)}})), 0, codes.InvalidArgument},
		{"garbage PEM", reviewsToken, "-----BEGIN CERTIFICATE REQUEST-----\nZm9v\n-----END CERTIFICATE REQUEST-----\n", 0, codes.InvalidArgument},
		{"oversized CSR", reviewsToken, string(makeCSR(t, csrOpts{})) + string(make([]byte, MaxCSRSize)), 0, codes.InvalidArgument},
		{"negative validity", reviewsToken, string(makeCSR(t, csrOpts{})), -1, codes.InvalidArgument},
		{"unknown token", "not-a-token", string(makeCSR(t, csrOpts{})), 0, codes.Unauthenticated},
		{"no credentials", "", string(makeCSR(t, csrOpts{})), 0, codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			if tt.token != "" {
				ctx = withToken(ctx, tt.token)
			}
			resp, err := c.CreateCertificate(ctx, &securitypb.IstioCertificateRequest{Csr: tt.csr, ValidityDuration: tt.validity})
			if got := status.Code(err); got != tt.want {
				t.Errorf("CreateCertificate(%s) = %v, %v, want code %v", tt.name, resp, err, tt.want)
			}
			if len(status.Convert(err).Message()) > 30 {
				t.Errorf("CreateCertificate(%s) error message %q reveals too much", tt.name, status.Convert(err).Message())
			}
		})
	}
}

func TestServiceRenewalKeepsIdentity(t *testing.T) {
	s := startService(t, newTestCA(t))
	svid := issueVia(t, s, ratingsToken)
	resp, err := s.client(t, svid).CreateCertificate(testContext(t), &securitypb.IstioCertificateRequest{Csr: string(makeCSR(t, csrOpts{}))})
	if err != nil {
		t.Fatalf("CreateCertificate(renewal) = %v", err)
	}
	chain := parseChain(t, resp)
	if got, want := uriOf(chain[0]), ratingsID.String(); got != want {
		t.Errorf("CreateCertificate(renewal) identity = %q, want %q", got, want)
	}
	if chain[0].SerialNumber.Cmp(svid.Leaf.SerialNumber) == 0 {
		t.Errorf("CreateCertificate(renewal) returned the old serial")
	}
}

// selfIssued makes a certificate for id signed by issuer (or self-signed).
func selfIssued(t *testing.T, id spiffeid.ID, isCA bool, notBefore, notAfter time.Time, issuer *x509.Certificate, issuerKey *ecdsa.PrivateKey) *tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		Subject:               pkix.Name{CommonName: "x"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		URIs:                  []*url.URL{id.URL()},
	}
	parent, signer := tmpl, key
	if issuer != nil {
		parent, signer = issuer, issuerKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestServiceRefusesBadRenewals(t *testing.T) {
	dir := t.TempDir()
	c, err := LoadOrCreate(dir, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	rootKey, ok := c.key.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("root key is %T, want ECDSA", c.key)
	}
	s := startService(t, c)
	now := time.Now()
	other := newTestCA(t)
	otherKey := other.key.(*ecdsa.PrivateKey)
	foreign := spiffeid.RequireFromString("spiffe://evil.org/ns/default/sa/reviews")
	tests := []struct {
		name string
		cert *tls.Certificate
	}{
		{"cert from a different root", selfIssued(t, testID, false, now.Add(-time.Hour), now.Add(time.Hour), other.Root(), otherKey)},
		{"self-signed cert", selfIssued(t, testID, false, now.Add(-time.Hour), now.Add(time.Hour), nil, nil)},
		{"expired cert", selfIssued(t, testID, false, now.Add(-2*time.Hour), now.Add(-time.Hour), c.Root(), rootKey)},
		{"CA:true cert", selfIssued(t, testID, true, now.Add(-time.Hour), now.Add(time.Hour), c.Root(), rootKey)},
		{"foreign trust domain", selfIssued(t, foreign, false, now.Add(-time.Hour), now.Add(time.Hour), c.Root(), rootKey)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.client(t, tt.cert).CreateCertificate(testContext(t), &securitypb.IstioCertificateRequest{Csr: string(makeCSR(t, csrOpts{}))})
			if got, want := status.Code(err), codes.Unauthenticated; got != want {
				t.Errorf("CreateCertificate(%s) = %v, %v, want code %v", tt.name, resp, err, want)
			}
		})
	}
}

func TestServiceFloodIsLimitedPerCaller(t *testing.T) {
	s := startService(t, newTestCA(t),
		WithCallerRateLimit(RateLimit{Burst: 3, Every: time.Hour}),
		WithPeerRateLimit(RateLimit{Burst: 1000, Every: time.Millisecond}))
	c := s.client(t, nil)
	csr := string(makeCSR(t, csrOpts{}))
	var exhausted int
	for i := range 10 {
		_, err := c.CreateCertificate(withToken(testContext(t), reviewsToken), &securitypb.IstioCertificateRequest{Csr: csr})
		switch status.Code(err) {
		case codes.OK:
			if i >= 3 {
				t.Errorf("CreateCertificate() #%d = OK, want ResourceExhausted past the burst of 3", i)
			}
		case codes.ResourceExhausted:
			exhausted++
		default:
			t.Fatalf("CreateCertificate() #%d = %v", i, err)
		}
	}
	if got, want := exhausted, 7; got != want {
		t.Errorf("flood: %d ResourceExhausted, want %d", got, want)
	}
	if _, err := c.CreateCertificate(withToken(testContext(t), ratingsToken), &securitypb.IstioCertificateRequest{Csr: csr}); err != nil {
		t.Errorf("CreateCertificate(other caller) during flood = %v, want served", err)
	}
}

func TestServiceFloodIsLimitedPerPeer(t *testing.T) {
	s := startService(t, newTestCA(t), WithPeerRateLimit(RateLimit{Burst: 2, Every: time.Hour}))
	c := s.client(t, nil)
	var codesSeen []codes.Code
	for range 4 {
		_, err := c.CreateCertificate(withToken(testContext(t), "guess"), &securitypb.IstioCertificateRequest{})
		codesSeen = append(codesSeen, status.Code(err))
	}
	want := []codes.Code{codes.Unauthenticated, codes.Unauthenticated, codes.ResourceExhausted, codes.ResourceExhausted}
	for i := range want {
		if codesSeen[i] != want[i] {
			t.Errorf("token guesses: codes = %v, want %v", codesSeen, want)
			break
		}
	}
}

func TestNewServiceRejectsBadTokens(t *testing.T) {
	c := newTestCA(t)
	tests := map[string]map[string]Identity{
		"empty token":         {"": {Namespace: "a", ServiceAccount: "b"}},
		"missing namespace":   {"t": {ServiceAccount: "b"}},
		"bad service account": {"t": {Namespace: "a", ServiceAccount: "b/c"}},
	}
	for name, tokens := range tests {
		if _, err := NewService(c, WithJoinTokens(tokens)); err == nil {
			t.Errorf("NewService(%s) = nil error, want error", name)
		}
	}
}
