package xdsserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	securitypb "istio.io/api/security/v1alpha1"

	"github.com/trellismesh/trellis/internal/identity"
)

// serveSecure runs s's secure port on loopback and returns its address.
func serveSecure(t *testing.T, s *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeSecure(lis) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("ServeSecure() = %v, want ErrServerClosed", err)
		}
	})
	return lis.Addr().String()
}

// dialer reaches the secure port trusting only root, and checks the
// control plane's own SPIFFE ID, as a workload does.
func dialer(addr string, root []byte) identity.Dialer {
	return func(ctx context.Context, cert *tls.Certificate) (*grpc.ClientConn, error) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(root)
		cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			want := "spiffe://cluster.local/ns/trellis-system/sa/xdsserver"
			if uris := cs.PeerCertificates[0].URIs; len(uris) != 1 || uris[0].String() != want {
				return errors.New("control plane presents the wrong SPIFFE ID")
			}
			return nil
		}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
}

// TestCAIssuesJoinTokenIdentity: the control plane's CA, on its secure
// port, gives a workload the identity its join token is bound to, lists it
// at /debug/ca, and keeps the same root across a restart on the same data
// directory.
func TestCAIssuesJoinTokenIdentity(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	opts := []Option{WithDataDir(dir), WithJoinTokens(map[string]WorkloadIdentity{"s3cret": {Namespace: "default", ServiceAccount: "reviews"}})}
	s, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveSecure(t, s)
	root := s.CARootPEM()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")

	src, err := identity.NewCASource(ctx, dialer(addr, root), td, identity.WithJoinToken("s3cret"))
	if err != nil {
		t.Fatalf("NewCASource() = %v", err)
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := svid.ID.String(), "spiffe://cluster.local/ns/default/sa/reviews"; got != want {
		t.Errorf("issued identity = %s, want %s", got, want)
	}

	if _, err := identity.NewCASource(ctx, dialer(addr, root), td, identity.WithJoinToken("guess")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("NewCASource(unknown token) = %v, want an Unauthenticated refusal", err)
	}

	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/debug/ca", nil))
	var dump struct {
		TrustDomain string `json:"trustDomain"`
		Issued      []struct {
			ID     string `json:"spiffeId"`
			Serial string `json:"serial"`
		} `json:"issued"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &dump); err != nil {
		t.Fatalf("/debug/ca: %v: %s", err, rec.Body)
	}
	found := false
	for _, ic := range dump.Issued {
		found = found || ic.ID == svid.ID.String() && ic.Serial == svid.Certificates[0].SerialNumber.Text(16)
	}
	if dump.TrustDomain != "cluster.local" || !found {
		t.Errorf("/debug/ca = %s, want trust domain cluster.local and the issued SVID", rec.Body)
	}

	// An xDS client on the secure port with its certificate shows its
	// identity in /debug/clients.
	cert, err := src.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := dialer(addr, root)(ctx, cert)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := v3discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&v3discoverypb.DiscoveryRequest{Node: &v3corepb.Node{Id: "secure-client"}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool {
		for _, c := range s.ConfigDump().Clients {
			if c.Node == "secure-client" {
				return c.Identity == "spiffe://cluster.local/ns/default/sa/reviews"
			}
		}
		return false
	})

	s2, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if string(s2.CARootPEM()) != string(root) {
		t.Errorf("a restart on the same data directory changed the CA root")
	}
}

// TestServeSecureNeedsCA: without a CA there is no secure port, and the
// admin page says so.
func TestServeSecureNeedsCA(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServeSecure(lis); err == nil || errors.Is(err, ErrServerClosed) {
		t.Errorf("ServeSecure() without a CA = %v, want an error saying the CA is needed", err)
	}
	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/debug/ca", nil))
	if rec.Code != 404 {
		t.Errorf("/debug/ca without a CA = %d, want 404", rec.Code)
	}
}

// TestCAJoinTokenLimits: the join-token limits of WorkloadIdentity reach
// the CA — an expired token is refused, a single-use token is refused
// once used, also by a restarted control plane on the same data
// directory — and WithMaxRenewalChain bounds renewals.
func TestCAJoinTokenLimits(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	opts := []Option{WithDataDir(dir), WithMaxRenewalChain(time.Minute), WithJoinTokens(map[string]WorkloadIdentity{
		"once":    {Namespace: "default", ServiceAccount: "reviews", SingleUse: true},
		"expired": {Namespace: "default", ServiceAccount: "ratings", Expires: time.Now().Add(-time.Second)},
	})}
	s, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveSecure(t, s)
	root := s.CARootPEM()

	if _, err := identity.NewCASource(ctx, dialer(addr, root), td, identity.WithJoinToken("expired")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("NewCASource(expired token) = %v, want Unauthenticated", err)
	}
	src, err := identity.NewCASource(ctx, dialer(addr, root), td, identity.WithJoinToken("once"), identity.WithTTL(time.Hour))
	if err != nil {
		t.Fatalf("NewCASource(single-use token) = %v", err)
	}
	defer src.Close()
	cert, err := src.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if got, max := time.Until(cert.Leaf.NotAfter), time.Minute; got > max {
		t.Errorf("certificate lives %v, want at most the renewal chain of %v", got, max)
	}
	if _, err := identity.NewCASource(ctx, dialer(addr, root), td, identity.WithJoinToken("once")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("NewCASource(used single-use token) = %v, want Unauthenticated", err)
	}
	// The chain ends with this certificate: renewing it is refused.
	cc, err := dialer(addr, root)(ctx, cert)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := securitypb.NewIstioCertificateServiceClient(cc).CreateCertificate(ctx, &securitypb.IstioCertificateRequest{Csr: testCSR(t)}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("renewal past the renewal chain = %v, want Unauthenticated", err)
	}

	s2, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	addr2 := serveSecure(t, s2)
	if _, err := identity.NewCASource(ctx, dialer(addr2, root), td, identity.WithJoinToken("once")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("NewCASource(used single-use token) after a restart = %v, want Unauthenticated", err)
	}
}

func testCSR(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}
