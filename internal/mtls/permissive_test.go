package mtls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLooksLikeTLS(t *testing.T) {
	tests := []struct {
		name  string
		first string
		want  bool
	}{
		{name: "ClientHello, record version 1.0", first: "\x16\x03\x01", want: true},
		{name: "ClientHello, record version 1.2", first: "\x16\x03\x03", want: true},
		{name: "SSL 3.0 record", first: "\x16\x03\x00", want: true},
		{name: "unknown record version", first: "\x16\x03\x05", want: false},
		{name: "handshake type, not version 3", first: "\x16\x02\x01", want: false},
		{name: "alert record", first: "\x15\x03\x03", want: false},
		{name: "HTTP/2 preface", first: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", want: false},
		{name: "HTTP/1 GET", first: "GET / HTTP/1.1\r\n", want: false},
		{name: "HTTP/1 POST", first: "POST /x HTTP/1.1\r\n", want: false},
		{name: "short", first: "\x16\x03", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := looksLikeTLS([]byte(tt.first)); got != tt.want {
				t.Errorf("looksLikeTLS(%q) = %v, want %v", tt.first, got, tt.want)
			}
		})
	}
}

// acceptOne returns the next connection of l, or fails the test when ctx
// ends first.
func acceptOne(ctx context.Context, t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept() = %v, want a connection", r.err)
		}
		t.Cleanup(func() { r.conn.Close() })
		return r.conn
	case <-ctx.Done():
		t.Fatalf("Accept() did not return: %v", ctx.Err())
		return nil
	}
}

func newPermissive(t *testing.T, opts ...Option) *PermissiveListener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := newPKI(t)
	l := NewPermissiveListener(inner, ServerConfig(p.server, nil), opts...)
	t.Cleanup(func() { l.Close() })
	return l
}

func dial(ctx context.Context, t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitClosed fails the test unless the server closes c before ctx ends.
func waitClosed(ctx context.Context, t *testing.T, c net.Conn) {
	t.Helper()
	dl, _ := ctx.Deadline()
	c.SetReadDeadline(dl)
	_, err := c.Read(make([]byte, 1))
	if ne, ok := errors.AsType[net.Error](err); err == nil || ok && ne.Timeout() {
		t.Errorf("Read() on a silent client = %v, want the server to close it", err)
	}
}

func TestSilentClientDoesNotBlockAccept(t *testing.T) {
	ctx := testContext(t)
	// A deadline far beyond the test's: only concurrent sniffing lets
	// the second client through.
	l := newPermissive(t, WithHandshakeTimeout(time.Hour))
	dial(ctx, t, l.Addr()) // silent
	talker := dial(ctx, t, l.Addr())
	if _, err := io.WriteString(talker, "GET / HTTP/1.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	got := acceptOne(ctx, t, l)
	if diff := cmp.Diff(got.RemoteAddr().String(), talker.LocalAddr().String()); diff != "" {
		t.Errorf("Accept() returned the wrong client (-got +want):\n%s", diff)
	}
}

func TestSilentClientDroppedAfterDeadline(t *testing.T) {
	ctx := testContext(t)
	l := newPermissive(t, WithHandshakeTimeout(50*time.Millisecond))
	silent := dial(ctx, t, l.Addr())
	waitClosed(ctx, t, silent)
	// The silent client was closed, not handed over: the next Accept
	// returns the next client.
	talker := dial(ctx, t, l.Addr())
	if _, err := io.WriteString(talker, "x"); err != nil {
		t.Fatal(err)
	}
	got := acceptOne(ctx, t, l)
	if diff := cmp.Diff(got.RemoteAddr().String(), talker.LocalAddr().String()); diff != "" {
		t.Errorf("Accept() returned the wrong client (-got +want):\n%s", diff)
	}
}

func TestPermissiveListenerReplaysPlaintext(t *testing.T) {
	ctx := testContext(t)
	l := newPermissive(t)
	const msg = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	c := dial(ctx, t, l.Addr())
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := acceptOne(ctx, t, l)
	if _, ok := got.(*tls.Conn); ok {
		t.Fatalf("Accept() = *tls.Conn for plaintext, want the plain connection")
	}
	buf := make([]byte, len(msg))
	got.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(got, buf); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(buf), msg); diff != "" {
		t.Errorf("bytes read from the accepted connection (-got +want):\n%s", diff)
	}
}

func TestPermissiveListenerCloseStopsEverything(t *testing.T) {
	ctx := testContext(t)
	l := newPermissive(t, WithHandshakeTimeout(time.Hour))
	silent := dial(ctx, t, l.Addr())
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	if err := l.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept() after Close = %v, want %v", err, net.ErrClosed)
		}
	case <-ctx.Done():
		t.Fatal("Accept() still blocked after Close")
	}
	waitClosed(ctx, t, silent)
	if err := l.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept() after Close = %v, want %v", err, net.ErrClosed)
	}
}

func TestPermissiveListenerServesHTTPAndHTTPS(t *testing.T) {
	ctx := testContext(t)
	p := newPKI(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			fmt.Fprint(w, "plaintext")
			return
		}
		id, err := PeerID(*r.TLS)
		if err != nil {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, id)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(NewPermissiveListener(inner, ServerConfig(p.server, nil))) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve() = %v, want %v", err, http.ErrServerClosed)
		}
	})

	transport := func(cfg *tls.Config) *http.Client {
		tr := &http.Transport{TLSClientConfig: cfg}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	tests := []struct {
		name    string
		client  *http.Client
		scheme  string
		want    string
		wantErr bool
	}{
		{name: "plaintext", client: transport(nil), scheme: "http", want: "plaintext"},
		{name: "mTLS", client: transport(mustClientConfig(t, p.client, serverID)), scheme: "https", want: clientID},
		{name: "TLS without certificate", client: transport(&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}), scheme: "https", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, tt.scheme+"://"+inner.Addr().String()+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := tt.client.Do(req)
			if tt.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("GET = %s, want an error", resp.Status)
				}
				return
			}
			if err != nil {
				t.Fatalf("GET = %v, want success", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(body), tt.want); diff != "" {
				t.Errorf("handler saw (-got +want):\n%s", diff)
			}
		})
	}
}
