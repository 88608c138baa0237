package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/trellismesh/trellis/internal/ca"
)

// memListener is a net.Listener of in-memory connections (net.Pipe), so
// that the CA's gRPC server, its TLS and the source can all live in a
// synctest bubble, where hours pass in an instant.
type memListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *memListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15012} }

func (l *memListener) dial(ctx context.Context, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startMemCA serves the real ca.Service for c, over real TLS, on an
// in-memory listener, and returns a Dialer for it recording whether each
// request presented a certificate.
func startMemCA(t *testing.T, c *ca.CA, opts ...ca.Option) *testDialer {
	t.Helper()
	opts = append([]ca.Option{ca.WithJoinTokens(map[string]ca.Identity{joinToken: {Namespace: "default", ServiceAccount: "reviews"}})}, opts...)
	svc, err := ca.NewService(c, opts...)
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
	lis := newMemListener()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	d := &testDialer{roots: x509.NewCertPool()}
	d.roots.AddCert(c.Root())
	d.memDial = lis.dial
	return d
}

// TestCASourceReprovesJoinTokenAtEndOfRenewalChain: when the CA refuses a
// renewal because the chain of renewals reached its maximum, the source
// presents its join token while its certificate is still valid, and
// carries on renewing in the new chain; no certificate of the first chain
// outlives the maximum.
func TestCASourceReprovesJoinTokenAtEndOfRenewalChain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Fake time: a deadline of days passes in an instant if stuck.
		ctx, cancel := context.WithTimeout(t.Context(), 48*time.Hour)
		defer cancel()
		const maxChain = 3 * time.Hour
		authority := newCA(t, "example.org")
		d := startMemCA(t, authority, ca.WithMaxRenewalChain(maxChain))
		t0 := time.Now()
		src, err := NewCASource(ctx, d.dial, testTD, WithJoinToken(joinToken), WithTTL(time.Hour))
		if err != nil {
			t.Fatalf("NewCASource() = %v", err)
		}
		defer src.Close()

		var firstChain []time.Duration // NotAfter of each SVID of the first chain, from t0
		for {
			svid, err := src.GetX509SVID()
			if err != nil {
				t.Fatal(err)
			}
			notAfter := svid.Certificates[0].NotAfter
			if notAfter.After(t0.Add(maxChain)) {
				break // only the token can have started a chain this late
			}
			firstChain = append(firstChain, notAfter.Sub(t0))
			if len(firstChain) > 50 {
				t.Fatalf("50 SVIDs and still in the first chain: %v", firstChain)
			}
			changed := src.Changed()
			select {
			case <-changed:
			case <-ctx.Done():
				t.Fatalf("no new SVID after %v: %v", time.Since(t0), ctx.Err())
			}
			if now := time.Now(); !now.Before(notAfter) {
				t.Errorf("new SVID at t0+%v, after the previous one expired at t0+%v", now.Sub(t0), notAfter.Sub(t0))
			}
		}
		if len(firstChain) < 4 {
			t.Errorf("first chain had %d SVIDs (%v), want the token's and at least 3 renewals", len(firstChain), firstChain)
		}
		t.Logf("first chain, NotAfter from t0: %v; dials presenting a certificate: %v", firstChain, d.presented())
		// The dials: the token, renewals, one refused renewal, the token.
		got := d.presented()
		if n := len(got); n < 3 || got[0] || !got[n-2] || got[n-1] {
			t.Errorf("client certificate presented = %v, want the token first and a refused renewal before the token again", got)
		}
		for i, p := range got[1 : len(got)-1] {
			if !p {
				t.Errorf("dial %d presented no certificate, want only renewals between the two token requests: %v", i+1, got)
			}
		}

		// The new chain renews as the first did.
		changed := src.Changed()
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no renewal in the new chain: %v", ctx.Err())
		}
		if got := d.presented(); !got[len(got)-1] {
			t.Errorf("next SVID after the token was not a renewal: %v", got)
		}
	})
}
