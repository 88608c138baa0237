package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/ca"
)

const joinToken = "join-token-0123456789"

var (
	testTD = spiffeid.RequireTrustDomainFromString("example.org")
	testID = spiffeid.RequireFromPath(testTD, "/ns/default/sa/reviews")
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newCA(t *testing.T, td string) *ca.CA {
	t.Helper()
	c, err := ca.LoadOrCreate(t.TempDir(), td)
	if err != nil {
		t.Fatalf("ca.LoadOrCreate() = %v", err)
	}
	return c
}

// startCA serves the real ca.Service for c over TLS on 127.0.0.1.
func startCA(t *testing.T, c *ca.CA) string {
	t.Helper()
	svc, err := ca.NewService(c,
		ca.WithJoinTokens(map[string]ca.Identity{joinToken: {Namespace: "default", ServiceAccount: "reviews"}}),
		ca.WithCallerRateLimit(ca.RateLimit{Burst: 1000, Every: time.Millisecond}),
		ca.WithPeerRateLimit(ca.RateLimit{Burst: 1000, Every: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.ServerCertificate(spiffeid.RequireFromPath(c.TrustDomain(), "/ns/trellis/sa/xdsserver"), []string{"localhost"}, nil)
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
	return lis.Addr().String()
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// testDialer dials whatever target holds, trusting roots, and records
// whether each request presented a client certificate.
type testDialer struct {
	target  atomic.Value // string
	roots   *x509.CertPool
	memDial func(context.Context, string) (net.Conn, error) // replaces target
	mu      sync.Mutex
	certs   []bool
}

func newTestDialer(target string, roots ...*x509.Certificate) *testDialer {
	d := &testDialer{roots: x509.NewCertPool()}
	for _, r := range roots {
		d.roots.AddCert(r)
	}
	d.target.Store(target)
	return d
}

func (d *testDialer) dial(ctx context.Context, cert *tls.Certificate) (*grpc.ClientConn, error) {
	d.mu.Lock()
	d.certs = append(d.certs, cert != nil)
	d.mu.Unlock()
	cfg := &tls.Config{RootCAs: d.roots, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	if d.memDial != nil {
		return grpc.NewClient("passthrough:///ca", grpc.WithContextDialer(d.memDial), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	return grpc.NewClient(d.target.Load().(string), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
}

func (d *testDialer) presented() []bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]bool(nil), d.certs...)
}

// fakeTimers replaces newTimer: each timer's duration is reported on
// asked, and it fires when the test sends on fire.
type fakeTimers struct {
	asked chan time.Duration
	fire  chan time.Time
}

func useFakeTimers(t *testing.T) *fakeTimers {
	t.Helper()
	ft := &fakeTimers{asked: make(chan time.Duration, 100), fire: make(chan time.Time)}
	old := newTimer
	newTimer = func(d time.Duration) (<-chan time.Time, func() bool) {
		ft.asked <- d
		return ft.fire, func() bool { return true }
	}
	t.Cleanup(func() { newTimer = old })
	return ft
}

func (ft *fakeTimers) next(ctx context.Context, t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-ft.asked:
		return d
	case <-ctx.Done():
		t.Fatalf("no timer armed: %v", ctx.Err())
		return 0
	}
}

func (ft *fakeTimers) tick(ctx context.Context, t *testing.T) {
	t.Helper()
	select {
	case ft.fire <- time.Now():
	case <-ctx.Done():
		t.Fatalf("nobody waiting on the timer: %v", ctx.Err())
	}
}

func waitClosed(ctx context.Context, t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatalf("%s: %v", what, ctx.Err())
	}
}

func serialOf(t *testing.T, s Source) string {
	t.Helper()
	svid, err := s.GetX509SVID()
	if err != nil {
		t.Fatalf("GetX509SVID() = %v", err)
	}
	return svid.Certificates[0].SerialNumber.Text(16)
}

func newSource(ctx context.Context, t *testing.T, d *testDialer, opts ...Option) *CASource {
	t.Helper()
	opts = append([]Option{WithJoinToken(joinToken), WithTTL(60 * time.Second)}, opts...)
	src, err := NewCASource(ctx, d.dial, testTD, opts...)
	if err != nil {
		t.Fatalf("NewCASource() = %v", err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func TestCASourceRotatesAtHalfLife(t *testing.T) {
	ctx := testContext(t)
	ft := useFakeTimers(t)
	authority := newCA(t, "example.org")
	d := newTestDialer(startCA(t, authority), authority.Root())
	src := newSource(ctx, t, d)

	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := svid.ID, testID; got != want {
		t.Errorf("GetX509SVID().ID = %v, want %v", got, want)
	}
	if got := time.Until(svid.Certificates[0].NotAfter); got > 61*time.Second {
		t.Errorf("SVID lifetime = %v, want about 60s", got)
	}
	seen := map[string]bool{serialOf(t, src): true}
	for i := range 4 {
		if got := ft.next(ctx, t); got < 20*time.Second || got > 36*time.Second {
			t.Errorf("rotation %d: timer = %v, want 40-60%% of a 60s lifetime", i, got)
		}
		changed := src.Changed()
		ft.tick(ctx, t)
		waitClosed(ctx, t, changed, "rotation")
		serial := serialOf(t, src)
		if seen[serial] {
			t.Errorf("rotation %d: serial %s seen before, want a new certificate", i, serial)
		}
		seen[serial] = true
		svid, _ := src.GetX509SVID()
		if svid.ID != testID {
			t.Errorf("rotation %d: ID = %v, want %v", i, svid.ID, testID)
		}
	}
	// The join token was used once; every renewal presented the SVID.
	want := []bool{false, true, true, true, true}
	if got := d.presented(); !equalBools(got, want) {
		t.Errorf("client certificate presented = %v, want %v", got, want)
	}
	cert, err := src.Certificate()
	if err != nil || cert.Leaf.SerialNumber.Text(16) != serialOf(t, src) {
		t.Errorf("Certificate() = %v, %v, want the current SVID", cert, err)
	}
	roots, err := src.Roots()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("Certificate().Leaf.Verify(Roots()) = %v", err)
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCASourceKeepsSVIDDuringCAOutage(t *testing.T) {
	ctx := testContext(t)
	ft := useFakeTimers(t)
	authority := newCA(t, "example.org")
	addr := startCA(t, authority)
	d := newTestDialer(addr, authority.Root())
	src := newSource(ctx, t, d)
	before := serialOf(t, src)
	ft.next(ctx, t) // rotation timer

	d.target.Store(deadAddr(t))
	var backoffs []time.Duration
	for range 3 {
		ft.tick(ctx, t)
		backoffs = append(backoffs, ft.next(ctx, t))
		if got := serialOf(t, src); got != before {
			t.Fatalf("during outage: serial = %s, want the old %s kept", got, before)
		}
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if got := backoffs[i]; got < want*8/10 || got > want*12/10 {
			t.Errorf("retry %d after failure in %v, want %v ±20%%", i, got, want)
		}
	}

	d.target.Store(addr)
	changed := src.Changed()
	ft.tick(ctx, t)
	waitClosed(ctx, t, changed, "renewal after outage")
	if got := serialOf(t, src); got == before {
		t.Errorf("after outage: serial = %s, want a new one", got)
	}
	if got := ft.next(ctx, t); got < 20*time.Second {
		t.Errorf("after recovery: timer = %v, want back to rotation at half life", got)
	}
}

func TestCASourceFollowsNewRoot(t *testing.T) {
	ctx := testContext(t)
	ft := useFakeTimers(t)
	oldCA, newCA := newCA(t, "example.org"), newCA(t, "example.org")
	d := newTestDialer(startCA(t, oldCA), oldCA.Root(), newCA.Root())
	src := newSource(ctx, t, d)
	ft.next(ctx, t)

	// The control plane comes back with another root: it refuses the old
	// SVID, and the source falls back to its join token.
	d.target.Store(startCA(t, newCA))
	changed := src.Changed()
	ft.tick(ctx, t)
	waitClosed(ctx, t, changed, "re-enrolment with the new root")
	b, err := src.GetX509BundleForTrustDomain(testTD)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.X509Authorities(); len(got) != 1 || !got[0].Equal(newCA.Root()) {
		t.Errorf("bundle after root change = %d authorities, want only the new root", len(got))
	}
	svid, _ := src.GetX509SVID()
	if err := svid.Certificates[0].CheckSignatureFrom(newCA.Root()); err != nil {
		t.Errorf("SVID after root change not signed by the new root: %v", err)
	}
	if got, want := d.presented(), []bool{false, true, false}; !equalBools(got, want) {
		t.Errorf("client certificate presented = %v, want %v", got, want)
	}
}

func TestNewCASourceRefusedToken(t *testing.T) {
	ctx := testContext(t)
	authority := newCA(t, "example.org")
	d := newTestDialer(startCA(t, authority), authority.Root())
	src, err := NewCASource(ctx, d.dial, testTD, WithJoinToken("wrong"))
	if got, want := status.Code(err), codes.Unauthenticated; got != want {
		t.Errorf("NewCASource(wrong token) = %v, %v, want code %v", src, err, want)
	}
}

func TestNewCASourceGivesUpWithContext(t *testing.T) {
	ft := useFakeTimers(t)
	ctx, cancel := context.WithCancel(testContext(t))
	d := newTestDialer(deadAddr(t))
	errc := make(chan error, 1)
	go func() {
		_, err := NewCASource(ctx, d.dial, testTD, WithJoinToken(joinToken))
		errc <- err
	}()
	ft.next(ctx, t) // first attempt failed; it waits to retry
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("NewCASource(dead CA, cancelled) = %v, want %v", err, context.Canceled)
	}
}

func TestValidateChainRefusesBadResponses(t *testing.T) {
	authority := newCA(t, "example.org")
	foreignCA := newCA(t, "evil.org")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(c *ca.CA, k *ecdsa.PrivateKey, id spiffeid.ID) []string {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		if err != nil {
			t.Fatal(err)
		}
		chain, err := c.Sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range chain {
			out = append(out, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
		}
		return out
	}
	good := sign(authority, key, testID)
	foreign := sign(foreignCA, key, spiffeid.RequireFromPath(foreignCA.TrustDomain(), "/ns/default/sa/reviews"))
	rootPEM := string(authority.RootPEM())
	tests := []struct {
		name  string
		chain []string
	}{
		{"foreign trust domain", foreign},
		{"leaf for another key", sign(authority, otherKey, testID)},
		{"root only", []string{rootPEM}},
		{"root swapped for another CA's", []string{good[0], string(foreignCA.RootPEM())}},
		{"CA certificate as leaf", []string{rootPEM, rootPEM}},
		{"garbage", []string{"junk", "junk"}},
		{"empty", nil},
	}
	if _, _, err := validateChain(good, key, testTD); err != nil {
		t.Fatalf("validateChain(good) = %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := validateChain(tt.chain, key, testTD); !errors.Is(err, ErrInvalidSVID) {
				t.Errorf("validateChain(%s) = %v, want %v", tt.name, err, ErrInvalidSVID)
			}
		})
	}
}

func TestCASourceClosed(t *testing.T) {
	ctx := testContext(t)
	useFakeTimers(t)
	authority := newCA(t, "example.org")
	src := newSource(ctx, t, newTestDialer(startCA(t, authority), authority.Root()))
	if err := src.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	if _, err := src.GetX509SVID(); !errors.Is(err, ErrClosed) {
		t.Errorf("GetX509SVID() after Close = %v, want %v", err, ErrClosed)
	}
}
