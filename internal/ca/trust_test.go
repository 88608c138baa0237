package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	securitypb "istio.io/api/security/v1alpha1"
)

// fakeClock is the CA's clock in a test, moved by hand; it starts at a
// whole second of the real time, so that the TLS stack (which uses the
// real clock) accepts the certificates issued at its start.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func useFakeClock(t *testing.T) *fakeClock {
	t.Helper()
	c := &fakeClock{now: time.Now().Truncate(time.Second)}
	setClock(t, c.Now)
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a log destination safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// lenient lets a test's honest callers through the per-identity limit.
var lenient = WithCallerRateLimit(RateLimit{Burst: 1000, Every: time.Millisecond})

// renew asks s for a certificate presenting cert, requesting validity
// seconds, and returns the new certificate (with its key) or the error.
func renew(t *testing.T, s *testServer, cert *tls.Certificate, validity int64) (*tls.Certificate, error) {
	t.Helper()
	key := newKey(t)
	resp, err := s.client(t, cert).CreateCertificate(testContext(t), &securitypb.IstioCertificateRequest{Csr: string(makeCSR(t, csrOpts{key: key})), ValidityDuration: validity})
	if err != nil {
		return nil, err
	}
	chain := parseChain(t, resp)
	return &tls.Certificate{Certificate: [][]byte{chain[0].Raw}, PrivateKey: key, Leaf: chain[0]}, nil
}

// issueWith asks s for a certificate with join token tok.
func issueWith(t *testing.T, s *testServer, tok string, validity int64) (*tls.Certificate, error) {
	t.Helper()
	key := newKey(t)
	resp, err := s.client(t, nil).CreateCertificate(withToken(testContext(t), tok), &securitypb.IstioCertificateRequest{Csr: string(makeCSR(t, csrOpts{key: key})), ValidityDuration: validity})
	if err != nil {
		return nil, err
	}
	chain := parseChain(t, resp)
	return &tls.Certificate{Certificate: [][]byte{chain[0].Raw}, PrivateKey: key, Leaf: chain[0]}, nil
}

func lifetime(c *x509.Certificate) time.Duration { return c.NotAfter.Sub(c.NotBefore) }

// TestUnauthenticatedFloodDoesNotStarveTokenHolder: failed attempts
// (a guessed token, no credential, a certificate of no trusted root) from
// the address a token holder and a renewing workload share exhaust only
// the bucket of the unauthenticated; both workloads get every certificate
// their own limit allows, while the flood is refused with
// ResourceExhausted.
func TestUnauthenticatedFloodDoesNotStarveTokenHolder(t *testing.T) {
	ctx := testContext(t)
	s := startService(t, newTestCA(t),
		WithCallerRateLimit(RateLimit{Burst: 10, Every: time.Hour}),
		WithPeerRateLimit(RateLimit{Burst: 5, Every: time.Hour}))
	svid := issueVia(t, s, ratingsToken) // ratings has 9 requests left
	now := time.Now()
	stranger := selfIssued(t, testID, false, now.Add(-time.Hour), now.Add(time.Hour), nil, nil)
	flooders := []struct {
		name  string
		c     securitypb.IstioCertificateServiceClient
		token string
	}{
		{"bad token", s.client(t, nil), "guess"},
		{"no credentials", s.client(t, nil), ""},
		{"untrusted certificate", s.client(t, stranger), ""},
	}
	csr := string(makeCSR(t, csrOpts{}))

	floodCtx, stop := context.WithCancel(ctx)
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		seen      = map[codes.Code]int{}
		exhausted = make(chan struct{})
		once      sync.Once
	)
	for _, f := range flooders {
		for range 2 {
			wg.Go(func() {
				for floodCtx.Err() == nil {
					rctx := floodCtx
					if f.token != "" {
						rctx = withToken(rctx, f.token)
					}
					_, err := f.c.CreateCertificate(rctx, &securitypb.IstioCertificateRequest{Csr: csr})
					code := status.Code(err)
					if code == codes.Canceled {
						return // stopped before the CA answered
					}
					mu.Lock()
					seen[code]++
					mu.Unlock()
					if code == codes.ResourceExhausted {
						once.Do(func() { close(exhausted) })
					}
				}
			})
		}
	}
	select {
	case <-exhausted:
	case <-ctx.Done():
		t.Fatalf("flood never exhausted the unauthenticated bucket: %v", ctx.Err())
	}

	issued, renewed := 0, 0
	for range 10 {
		if _, err := s.client(t, nil).CreateCertificate(withToken(ctx, reviewsToken), &securitypb.IstioCertificateRequest{Csr: csr}); err == nil {
			issued++
		} else {
			t.Logf("token holder refused: %v", err)
		}
	}
	for range 9 {
		if _, err := s.client(t, svid).CreateCertificate(ctx, &securitypb.IstioCertificateRequest{Csr: csr}); err == nil {
			renewed++
		} else {
			t.Logf("renewal refused: %v", err)
		}
	}
	stop()
	wg.Wait()

	if issued != 10 {
		t.Errorf("during the flood, token holder issued %d of 10, want 10", issued)
	}
	if renewed != 9 {
		t.Errorf("during the flood, renewing workload renewed %d of 9, want 9", renewed)
	}
	t.Logf("flood: %v", seen)
	if seen[codes.OK] != 0 {
		t.Errorf("flood got %d certificates, want none", seen[codes.OK])
	}
	if got, want := seen[codes.Unauthenticated], 5; got != want {
		t.Errorf("flood: %d answered Unauthenticated, want the burst of %d", got, want)
	}
	if seen[codes.ResourceExhausted] == 0 {
		t.Errorf("flood: none refused with ResourceExhausted")
	}
	// The token holder's identity still has its own limit.
	if _, err := s.client(t, nil).CreateCertificate(withToken(ctx, reviewsToken), &securitypb.IstioCertificateRequest{Csr: csr}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("11th request of the token holder = %v, want ResourceExhausted", err)
	}
}

// TestPeerRateLimitMemoryBounded: failed attempts from ever new addresses
// keep at most limiterKeys buckets, and addresses of one IPv6 /64 share
// one.
func TestPeerRateLimitMemoryBounded(t *testing.T) {
	svc, err := NewService(newTestCA(t), WithPeerRateLimit(RateLimit{Burst: 2, Every: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	call := func(ip net.IP) codes.Code {
		ctx := peer.NewContext(testContext(t), &peer.Peer{Addr: &net.TCPAddr{IP: ip, Port: 4242}})
		_, err := svc.CreateCertificate(ctx, &securitypb.IstioCertificateRequest{})
		return status.Code(err)
	}
	for i := range 3 * limiterKeys {
		call(net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)))
	}
	if got := svc.peerRL.Stats().Keys; got > limiterKeys {
		t.Errorf("after %d addresses, peer limiter holds %d keys, want at most %d", 3*limiterKeys, got, limiterKeys)
	}
	var got []codes.Code
	for i := range 4 {
		got = append(got, call(net.ParseIP(fmt.Sprintf("2001:db8:1:2::%x", i+1))))
	}
	want := []codes.Code{codes.Unauthenticated, codes.Unauthenticated, codes.ResourceExhausted, codes.ResourceExhausted}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("failed attempts from one IPv6 /64 (-got +want):\n%s", diff)
	}
	if got := call(net.ParseIP("2001:db8:1:3::1")); got != codes.Unauthenticated {
		t.Errorf("failed attempt from another /64 = %v, want Unauthenticated", got)
	}
}

func TestPeerKey(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:a:b:c:d:e:f"), Port: 1}, "2001:db8:a:b::/64"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1, Zone: "eth0"}, "fe80::/64"},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "/run/x.sock"},
	}
	for _, tt := range tests {
		if got := peerKey(&peer.Peer{Addr: tt.addr}); got != tt.want {
			t.Errorf("peerKey(%v) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	if got := peerKey(nil); got != "unknown" {
		t.Errorf("peerKey(nil) = %q, want %q", got, "unknown")
	}
}

// TestRenewalCannotExtendLifetime: renewing a 60 s certificate never
// yields a longer-lived one, whatever the request asks; asking for less
// still gives less.
func TestRenewalCannotExtendLifetime(t *testing.T) {
	s := startService(t, newTestCA(t), lenient)
	short, err := issueWith(t, s, reviewsToken, 60)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		validity int64
		want     time.Duration // NotAfter - NotBefore
	}{
		{0, lifetime(short.Leaf)},
		{86400, lifetime(short.Leaf)},
		{1 << 62, lifetime(short.Leaf)},
		{30, 30*time.Second + clockSkew},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.validity), func(t *testing.T) {
			cert := short
			for i := range 3 { // and the renewal of the renewal
				cert, err = renew(t, s, cert, tt.validity)
				if err != nil {
					t.Fatalf("renewal %d asking %ds = %v", i+1, tt.validity, err)
				}
				if got := lifetime(cert.Leaf); got != tt.want {
					t.Errorf("renewal %d asking %ds: lifetime %v, want %v", i+1, tt.validity, got, tt.want)
				}
			}
		})
	}
}

// TestRenewalChainEndsAtMaximum: renewals carry over when the token was
// presented, no certificate outlives it plus the maximum, the renewal that
// could not reach past the presented certificate is refused with
// Unauthenticated (logged with the reason), and presenting the token
// again starts a new chain.
func TestRenewalChainEndsAtMaximum(t *testing.T) {
	clock := useFakeClock(t)
	var logs syncBuffer
	s := startService(t, newTestCA(t), lenient, WithMaxRenewalChain(3*time.Hour),
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	t0 := clock.Now()
	cert, err := issueWith(t, s, reviewsToken, 3600)
	if err != nil {
		t.Fatal(err)
	}
	var got []time.Duration // each renewal's NotAfter, from t0
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("20 renewals and none refused; NotAfter after t0: %v", got)
		}
		clock.advance(30 * time.Minute)
		next, err := renew(t, s, cert, 3600)
		if err != nil {
			if code := status.Code(err); code != codes.Unauthenticated {
				t.Fatalf("renewal at t0+%v = %v, want Unauthenticated at the end of the chain", clock.Now().Sub(t0), err)
			}
			if !clock.Now().Before(cert.Leaf.NotAfter) {
				t.Errorf("refused at t0+%v, after the presented certificate expired at t0+%v; want while it is valid", clock.Now().Sub(t0), cert.Leaf.NotAfter.Sub(t0))
			}
			break
		}
		cert = next
		got = append(got, cert.Leaf.NotAfter.Sub(t0))
	}
	want := []time.Duration{90 * time.Minute, 2 * time.Hour, 150 * time.Minute, 3 * time.Hour}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("NotAfter of each renewal, from t0 (-got +want):\n%s", diff)
	}
	if !strings.Contains(logs.String(), "renewal chain ends") {
		t.Errorf("log does not give the reason of the refusal:\n%s", logs.String())
	}

	// The token starts a new chain, which renews past the old end.
	cert, err = issueWith(t, s, reviewsToken, 3600)
	if err != nil {
		t.Fatalf("token after the chain ended = %v", err)
	}
	clock.advance(30 * time.Minute)
	if cert, err = renew(t, s, cert, 3600); err != nil {
		t.Fatalf("renewal in the new chain = %v", err)
	}
	if end := t0.Add(3 * time.Hour); !cert.Leaf.NotAfter.After(end) {
		t.Errorf("new chain's renewal NotAfter = t0+%v, want past the old chain's end t0+3h", cert.Leaf.NotAfter.Sub(t0))
	}
}

// TestRenewalChainBoundsTokenIssuance: with a maximum shorter than the
// lifetime asked, even the token's certificate ends at the maximum, and
// it cannot be renewed.
func TestRenewalChainBoundsTokenIssuance(t *testing.T) {
	clock := useFakeClock(t)
	s := startService(t, newTestCA(t), lenient, WithMaxRenewalChain(10*time.Minute))
	cert, err := issueWith(t, s, reviewsToken, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cert.Leaf.NotAfter, clock.Now().Add(10*time.Minute); !got.Equal(want) {
		t.Errorf("token certificate NotAfter = %v, want %v", got, want)
	}
	if _, err := renew(t, s, cert, 3600); status.Code(err) != codes.Unauthenticated {
		t.Errorf("renewal = %v, want Unauthenticated", err)
	}
}

// signedBy issues a client certificate for testID from c's root key
// directly (as another CA of the mesh would), with extra extensions.
func signedBy(t *testing.T, c *CA, notBefore, notAfter time.Time, exts ...pkix.Extension) *tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(7),
		NotBefore:       notBefore,
		NotAfter:        notAfter,
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:            []*url.URL{testID.URL()},
		ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Root(), key.Public(), c.key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestRenewalChainCountsFromNotBeforeWithoutRecord: a certificate that
// does not record when its holder proved a token (another CA's) starts its
// chain at its NotBefore, which the renewal records; one with a malformed
// record is refused.
func TestRenewalChainCountsFromNotBeforeWithoutRecord(t *testing.T) {
	clock := useFakeClock(t)
	c := newTestCA(t)
	s := startService(t, c, lenient, WithMaxRenewalChain(3*time.Hour))
	now := clock.Now()
	garbage := pkix.Extension{Id: oidAuthTime, Value: []byte{0x05, 0x00}}
	tests := []struct {
		name         string
		cert         *tls.Certificate
		wantNotAfter time.Time // zero: refused
	}{
		{"young", signedBy(t, c, now.Add(-time.Hour), now.Add(30*time.Minute)), now.Add(90*time.Minute - clockSkew)},
		{"chain nearly over", signedBy(t, c, now.Add(-150*time.Minute), now.Add(10*time.Minute)), now.Add(30 * time.Minute)},
		{"older than the chain", signedBy(t, c, now.Add(-4*time.Hour), now.Add(time.Hour)), time.Time{}},
		{"chain ends before it does", signedBy(t, c, now.Add(-2*time.Hour), now.Add(time.Hour+time.Second)), time.Time{}},
		{"malformed record", signedBy(t, c, now.Add(-time.Hour), now.Add(30*time.Minute), garbage), time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := renew(t, s, tt.cert, 3*3600)
			if tt.wantNotAfter.IsZero() {
				if status.Code(err) != codes.Unauthenticated {
					t.Errorf("renewal = %v, want Unauthenticated", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("renewal = %v", err)
			}
			if !got.Leaf.NotAfter.Equal(tt.wantNotAfter) {
				t.Errorf("renewal NotAfter = now%+v, want now%+v", got.Leaf.NotAfter.Sub(now), tt.wantNotAfter.Sub(now))
			}
			at, err := authTimeOf(got.Leaf)
			if err != nil || !at.Equal(tt.cert.Leaf.NotBefore) {
				t.Errorf("renewal records authentication at %v, %v, want the presented NotBefore %v", at, err, tt.cert.Leaf.NotBefore)
			}
		})
	}
}

// TestIssuedCertificatesRecordAuthTime: Sign and the Service's token path
// record the time of the call, non-critically.
func TestIssuedCertificatesRecordAuthTime(t *testing.T) {
	clock := useFakeClock(t)
	c := newTestCA(t)
	chain, err := c.Sign(makeCSR(t, csrOpts{}), testID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	at, err := authTimeOf(chain[0])
	if err != nil || !at.Equal(clock.Now()) {
		t.Errorf("Sign() records authentication at %v, %v, want %v", at, err, clock.Now())
	}
	for _, ext := range chain[0].Extensions {
		if ext.Id.Equal(oidAuthTime) && ext.Critical {
			t.Errorf("authentication time extension is critical")
		}
	}
	var gt time.Time
	for _, ext := range chain[0].Extensions {
		if ext.Id.Equal(oidAuthTime) {
			if _, err := asn1.UnmarshalWithParams(ext.Value, &gt, "generalized"); err != nil {
				t.Errorf("authentication time is not a GeneralizedTime: %v", err)
			}
		}
	}
}

// TestExpiredJoinTokenRefused: a token is refused from its expiry on,
// while a certificate it got before keeps renewing.
func TestExpiredJoinTokenRefused(t *testing.T) {
	clock := useFakeClock(t)
	expires := clock.Now().Add(time.Hour)
	s := startService(t, newTestCA(t), lenient, WithJoinTokens(map[string]Identity{
		reviewsToken: {Namespace: "default", ServiceAccount: "reviews", Expires: expires},
		ratingsToken: {Namespace: "default", ServiceAccount: "ratings"},
	}))
	cert, err := issueWith(t, s, reviewsToken, 7200)
	if err != nil {
		t.Fatalf("token before expiry = %v", err)
	}
	clock.advance(time.Hour - time.Second)
	if _, err := issueWith(t, s, reviewsToken, 60); err != nil {
		t.Errorf("token a second before expiry = %v, want served", err)
	}
	clock.advance(time.Second)
	if _, err := issueWith(t, s, reviewsToken, 60); status.Code(err) != codes.Unauthenticated {
		t.Errorf("token at expiry = %v, want Unauthenticated", err)
	}
	if _, err := issueWith(t, s, ratingsToken, 60); err != nil {
		t.Errorf("token without expiry = %v, want served", err)
	}
	if _, err := renew(t, s, cert, 7200); err != nil {
		t.Errorf("renewal after the token expired = %v, want served", err)
	}
}

// TestSingleUseJoinTokenConsumed: a single-use token gets one
// certificate; presenting it again is refused, while that certificate
// renews, and other tokens are untouched.
func TestSingleUseJoinTokenConsumed(t *testing.T) {
	s := startService(t, newTestCA(t), lenient, WithJoinTokens(map[string]Identity{
		reviewsToken: {Namespace: "default", ServiceAccount: "reviews", SingleUse: true},
		ratingsToken: {Namespace: "default", ServiceAccount: "ratings"},
	}))
	cert, err := issueWith(t, s, reviewsToken, 3600)
	if err != nil {
		t.Fatalf("single-use token, first use = %v", err)
	}
	if _, err := issueWith(t, s, reviewsToken, 3600); status.Code(err) != codes.Unauthenticated {
		t.Errorf("single-use token, second use = %v, want Unauthenticated", err)
	}
	if _, err := renew(t, s, cert, 3600); err != nil {
		t.Errorf("renewal of the single-use token's certificate = %v, want served", err)
	}
	for range 2 {
		if _, err := issueWith(t, s, ratingsToken, 3600); err != nil {
			t.Errorf("reusable token = %v, want served", err)
		}
	}
}

// TestSingleUseJoinTokenIssuedOnceUnderConcurrency: of concurrent requests
// with one single-use token, exactly one gets a certificate.
func TestSingleUseJoinTokenIssuedOnceUnderConcurrency(t *testing.T) {
	s := startService(t, newTestCA(t), lenient, WithJoinTokens(map[string]Identity{
		reviewsToken: {Namespace: "default", ServiceAccount: "reviews", SingleUse: true},
	}))
	const n = 20
	c := s.client(t, nil)
	csr := string(makeCSR(t, csrOpts{}))
	results := make(chan codes.Code, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := c.CreateCertificate(withToken(testContext(t), reviewsToken), &securitypb.IstioCertificateRequest{Csr: csr})
			results <- status.Code(err)
		})
	}
	wg.Wait()
	close(results)
	got := map[codes.Code]int{}
	for code := range results {
		got[code]++
	}
	if diff := cmp.Diff(got, map[codes.Code]int{codes.OK: 1, codes.Unauthenticated: n - 1}); diff != "" {
		t.Errorf("%d concurrent uses of a single-use token (-got +want):\n%s", n, diff)
	}
}

// TestSingleUseJoinTokenNotConsumedByRefusedRequest: a request the CA
// refuses (a bad CSR) leaves the token usable.
func TestSingleUseJoinTokenNotConsumedByRefusedRequest(t *testing.T) {
	s := startService(t, newTestCA(t), lenient, WithJoinTokens(map[string]Identity{
		reviewsToken: {Namespace: "default", ServiceAccount: "reviews", SingleUse: true},
	}))
	bad := string(makeCSR(t, csrOpts{uris: []string{ratingsID.String()}}))
	if _, err := s.client(t, nil).CreateCertificate(withToken(testContext(t), reviewsToken), &securitypb.IstioCertificateRequest{Csr: bad}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad CSR = %v, want InvalidArgument", err)
	}
	if _, err := issueWith(t, s, reviewsToken, 3600); err != nil {
		t.Errorf("single-use token after a refused request = %v, want served", err)
	}
}

// TestSingleUseJoinTokenConsumedAcrossRestart: with a consumed-tokens
// file, a new Service (a restart) still refuses a consumed token; the file
// holds no token in the clear; a corrupt file fails NewService.
func TestSingleUseJoinTokenConsumedAcrossRestart(t *testing.T) {
	c := newTestCA(t)
	file := filepath.Join(t.TempDir(), "consumed")
	opts := []Option{lenient, WithConsumedTokensFile(file), WithJoinTokens(map[string]Identity{
		reviewsToken: {Namespace: "default", ServiceAccount: "reviews", SingleUse: true},
		ratingsToken: {Namespace: "default", ServiceAccount: "ratings", SingleUse: true},
	})}
	if _, err := issueWith(t, startService(t, c, opts...), reviewsToken, 3600); err != nil {
		t.Fatalf("first use = %v", err)
	}
	s2 := startService(t, c, opts...)
	if _, err := issueWith(t, s2, reviewsToken, 3600); status.Code(err) != codes.Unauthenticated {
		t.Errorf("consumed token after restart = %v, want Unauthenticated", err)
	}
	if _, err := issueWith(t, s2, ratingsToken, 3600); err != nil {
		t.Errorf("unused single-use token after restart = %v, want served", err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), reviewsToken) {
		t.Errorf("consumed-tokens file holds a token in the clear: %q", data)
	}
	if got := strings.Count(string(data), "\n"); got != 2 {
		t.Errorf("consumed-tokens file has %d lines, want 2:\n%s", got, data)
	}
	if err := os.WriteFile(file, []byte("not a hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewService(c, opts...); err == nil {
		t.Errorf("NewService(corrupt consumed-tokens file) = nil error, want error")
	}
}
