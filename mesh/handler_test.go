package mesh

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCanonicalHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		tls  bool
		want string
	}{
		{"Reviews:9080", false, "reviews:9080"},
		{"REVIEWS", false, "reviews"},
		{"reviews:80", false, "reviews"},
		{"reviews:443", false, "reviews:443"},
		{"reviews:443", true, "reviews"},
		{"reviews:80", true, "reviews:80"},
		{"[::1]:80", false, "[::1]"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = tc.host
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if got := canonicalHost(r); got != tc.want {
			t.Errorf("canonicalHost(%q, tls=%v) = %q, want %q", tc.host, tc.tls, got, tc.want)
		}
	}
}

func TestRawPath(t *testing.T) {
	for _, tc := range []struct {
		target, want string
	}{
		{"/a/b?x=1", "/a/b?x=1"},
		{"//admin", "//admin"},
		{"/x/../admin", "/x/../admin"},
		{"/%2Fadmin", "/%2Fadmin"},
		{"/%61dmin", "/%61dmin"},
		{"http://reviews/%2Fadmin?x", "/%2Fadmin"},
		{"*", "*"}, // not a path: denied by the policy check
	} {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + tc.target + " HTTP/1.1\r\nHost: h\r\n\r\n")))
		if err != nil {
			t.Fatalf("reading GET %s: %v", tc.target, err)
		}
		if got := rawPath(r); got != tc.want {
			t.Errorf("rawPath(%q) = %q, want %q", tc.target, got, tc.want)
		}
	}
}

// TestHandlerOutsideHTTPServer: Handler on a plain net/http server refuses
// every request with 503 when asked to join the mesh (it cannot), and
// otherwise only strips X-Forwarded-Client-Cert.
func TestHandlerOutsideHTTPServer(t *testing.T) {
	var ran int
	var xfcc []string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran++
		xfcc = r.Header.Values("X-Forwarded-Client-Cert")
		if _, ok := PeerID(r.Context()); ok {
			t.Errorf("PeerID() ok outside a mesh server")
		}
	})
	for _, tc := range []struct {
		name string
		opts []HandlerOption
		want int
	}{
		{"with service", []HandlerOption{WithService("ratings", "v1")}, http.StatusServiceUnavailable},
		{"without service", nil, http.StatusOK},
	} {
		ran, xfcc = 0, nil
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/ratings", nil)
		req.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://x/ns/a/sa/b")
		Handler(h, tc.opts...).ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, rec.Code, tc.want)
		}
		if wantRan := tc.want == http.StatusOK; (ran == 1) != wantRan {
			t.Errorf("%s: handler ran %d times", tc.name, ran)
		}
		if len(xfcc) > 0 {
			t.Errorf("%s: the handler saw X-Forwarded-Client-Cert %q", tc.name, xfcc)
		}
	}
}

// TestHTTPServerWithoutService: an HTTPServer without WithService or an
// identity serves plaintext HTTP/1.1 and h2c with no control plane, and
// follows net/http's lifecycle.
func TestHTTPServerWithoutService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	for _, tc := range []struct {
		name string
		h2c  bool
		want string
	}{
		{"HTTP/1.1", false, "HTTP/1.1"},
		{"h2c", true, "HTTP/2.0"},
	} {
		tr := &http.Transport{}
		if tc.h2c {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			tr.Protocols = &p
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+lis.Addr().String()+"/", nil)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if string(body) != tc.want {
			t.Errorf("%s: served as %q, want %q", tc.name, body, tc.want)
		}
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown() = %v", err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve() = %v, want ErrServerClosed", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close() after Shutdown = %v", err)
	}
	lis2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(lis2); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve() after Shutdown = %v, want ErrServerClosed", err)
	}
	if _, err := lis2.Accept(); err == nil {
		t.Errorf("Serve() after Shutdown left the listener open")
	}
}

// TestFragmentRefusedOutsidePolicy: a raw '#' in the request target is
// refused with 400 by Handler on a plain net/http server too, and by an
// HTTPServer following no policy: the handler behind it would see the
// fragment in its path ("/x#/../admin" is "/admin" to http.FileServer)
// while a path check in front of it would not.
func TestFragmentRefusedOutsidePolicy(t *testing.T) {
	var ran atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ran.Add(1) })
	plain := httptest.NewServer(Handler(h))
	t.Cleanup(plain.Close)
	srv, err := NewHTTPServer(h)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve() = %v, want ErrServerClosed", err)
		}
	})
	for _, addr := range []string{plain.Listener.Addr().String(), lis.Addr().String()} {
		for _, tc := range []struct {
			target string
			want   int
		}{
			{"/x", http.StatusOK},
			{"/x#/../admin", http.StatusBadRequest},
			{"/x?a#b", http.StatusBadRequest},
			{"http://h/x#", http.StatusBadRequest},
			{"/x%23/../admin", http.StatusOK}, // an escaped '#' is a path byte
		} {
			ran.Store(0)
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(conn, "GET "+tc.target+" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("GET %s on %s: %v", tc.target, addr, err)
			}
			resp.Body.Close()
			conn.Close()
			if resp.StatusCode != tc.want || (ran.Load() == 1) != (tc.want == http.StatusOK) {
				t.Errorf("GET %s on %s = %d, handler ran %d times; want %d", tc.target, addr, resp.StatusCode, ran.Load(), tc.want)
			}
		}
	}
}
