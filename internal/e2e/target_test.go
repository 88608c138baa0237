package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/mesh"
)

// fileTreePolicy is the policy of the attack on http.FileServer: the files
// under /public are served to anyone, /admin to no one.
const fileTreePolicy = `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-public, namespace: default}
spec:
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/public/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
`

// adminSecret is the content of /admin/secret.txt, which no test request
// may ever read.
const adminSecret = "the admin secret"

// fileHit is what the file server's handler saw of one request.
type fileHit struct {
	method, target, path string
}

// fileServer is an http.FileServer over a tree with /public/x and
// /admin/secret.txt, recording every request that reaches it.
type fileServer struct {
	h    http.Handler
	mu   sync.Mutex
	hits []fileHit
}

func newFileServer(t *testing.T) *fileServer {
	t.Helper()
	root := t.TempDir()
	for name, content := range map[string]string{"public/x": "public x", "admin/secret.txt": adminSecret} {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &fileServer{h: http.FileServer(http.Dir(root))}
}

func (f *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.hits = append(f.hits, fileHit{method: r.Method, target: r.RequestURI, path: r.URL.Path})
	f.mu.Unlock()
	f.h.ServeHTTP(w, r)
}

func (f *fileServer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.hits)
}

func (f *fileServer) all() []fileHit {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fileHit(nil), f.hits...)
}

// serveMesh serves h with a mesh.HTTPServer registered as greeter v1
// (service port 8080) with the greeter identity, and returns its address.
func (m *secureMesh) serveMesh(t *testing.T, h http.Handler) string {
	t.Helper()
	srv, err := mesh.NewHTTPServer(h, httpServerOpts(m.as("greeter-token"), mesh.WithService("greeter", "v1"), mesh.WithServicePort(8080))...)
	if err != nil {
		t.Fatalf("mesh.NewHTTPServer() = %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, mesh.ErrServerClosed) {
			t.Errorf("Serve() = %v, want mesh.ErrServerClosed", err)
		}
	})
	return lis.Addr().String()
}

// rawHTTP1 sends the request line as is (HTTP/1.0 or 1.1, plaintext or
// over cfg's TLS), with a Host header, and returns the status code and the
// body; 0 if the server closed the connection without an answer.
func rawHTTP1(t *testing.T, addr string, cfg *tls.Config, line string) (int, string) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	var conn net.Conn
	var err error
	if cfg != nil {
		cfg = cfg.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		conn, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	} else {
		conn, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "%s\r\nHost: greeter:8080\r\nConnection: close\r\n\r\n", line)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// h2Get sends a GET whose :path is target, exactly (net/http sends an
// opaque URL as it is), over client c, which speaks HTTP/2.
func h2Get(c *http.Client, scheme, addr, target string) (code, proto int, body string, err error) {
	req, err := http.NewRequest("GET", scheme+"://"+addr+"/", nil)
	if err != nil {
		return 0, 0, "", err
	}
	req.URL.Opaque = target
	req.Host = "greeter:8080"
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.ProtoMajor, string(b), nil
}

// TestFragmentInTargetRefused: a raw '#' in the request target is refused
// with 400 before the policy and the handler, over HTTP/1.0, HTTP/1.1,
// h2c and h2 over TLS. net/http keeps the fragment in the path it gives
// the handler while the policy's canonicaliser drops it, so
// "/public/x#/../../admin/secret.txt" was "/public/x" to the ALLOW and
// "/admin/secret.txt" to http.FileServer.
func TestFragmentInTargetRefused(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "PERMISSIVE")+fileTreePolicy)
	files := newFileServer(t)
	addr := m.serveMesh(t, files)
	cfg := m.mtlsConfig(t, "client-token")
	serving(ctx, t, httpClient(t, nil, false), "http://"+addr+"/public/x")
	h2c, h2 := httpClient(t, nil, true), httpClient(t, cfg, true)

	attacks := []string{
		"/public/x#/../../admin/secret.txt",
		"/public/x#",
		"/public/x?q=1#/../../admin/secret.txt",
		"/public/%2e%2e/x#/../admin/secret.txt",
	}
	// Controls: the same transports serve a clean target, so a refusal
	// below is the fragment's, not the transport's.
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		line string
	}{
		{"HTTP/1.0", nil, "GET /public/x HTTP/1.0"},
		{"HTTP/1.1", nil, "GET /public/x HTTP/1.1"},
		{"HTTP/1.1 over TLS", cfg, "GET /public/x HTTP/1.1"},
	} {
		if code, body := rawHTTP1(t, addr, tc.cfg, tc.line); code != http.StatusOK || body != "public x" {
			t.Fatalf("%s: %q = %d %q, want 200 \"public x\"", tc.name, tc.line, code, body)
		}
	}
	for _, tc := range []struct {
		name   string
		c      *http.Client
		scheme string
	}{{"h2c", h2c, "http"}, {"h2", h2, "https"}} {
		if code, proto, body, err := h2Get(tc.c, tc.scheme, addr, "/public/x"); err != nil || code != http.StatusOK || proto != 2 || body != "public x" {
			t.Fatalf("%s GET /public/x = %d HTTP/%d %q, %v; want 200 over HTTP/2", tc.name, code, proto, body, err)
		}
	}

	for _, target := range attacks {
		for _, tc := range []struct {
			name string
			cfg  *tls.Config
			line string
		}{
			{"HTTP/1.0", nil, "GET " + target + " HTTP/1.0"},
			{"HTTP/1.1", nil, "GET " + target + " HTTP/1.1"},
			{"HTTP/1.1 over TLS", cfg, "GET " + target + " HTTP/1.1"},
			{"HTTP/1.1 absolute-form", nil, "GET http://greeter:8080" + target + " HTTP/1.1"},
		} {
			before := files.count()
			code, body := rawHTTP1(t, addr, tc.cfg, tc.line)
			if code != http.StatusBadRequest || files.count() != before || strings.Contains(body, adminSecret) {
				t.Errorf("%s: %q = %d %q, reached the handler %d times; want 400 and never the handler", tc.name, tc.line, code, body, files.count()-before)
			}
		}
		for _, tc := range []struct {
			name   string
			c      *http.Client
			scheme string
		}{{"h2c", h2c, "http"}, {"h2", h2, "https"}} {
			before := files.count()
			code, proto, body, err := h2Get(tc.c, tc.scheme, addr, target)
			if err != nil || code != http.StatusBadRequest || proto != 2 || files.count() != before || strings.Contains(body, adminSecret) {
				t.Errorf("%s GET %s = %d HTTP/%d %q, %v, reached the handler %d times; want 400 over HTTP/2 and never the handler", tc.name, target, code, proto, body, err, files.count()-before)
			}
		}
	}
	for _, h := range files.all() {
		if strings.Contains(h.target, "#") {
			t.Errorf("the handler saw a target with a fragment: %+v", h)
		}
	}
}

// TestTargetFormsServeOnlyWhatPolicyMatched: whatever the form of the
// request target (encoded '#', ';' parameters, queries, backslashes,
// absolute-form, "*", CONNECT, odd methods), a request either is refused
// before the handler or reaches it with a path that the handler resolves
// under /public/, the only tree the policy allows. http.FileServer never
// serves /admin/secret.txt.
func TestTargetFormsServeOnlyWhatPolicyMatched(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "PERMISSIVE")+fileTreePolicy)
	files := newFileServer(t)
	addr := m.serveMesh(t, files)
	serving(ctx, t, httpClient(t, nil, false), "http://"+addr+"/public/x")
	lines := []string{
		"GET /public/x%23/../../admin/secret.txt HTTP/1.1",
		"GET /public/x;/../../admin/secret.txt HTTP/1.1",
		"GET /public/x;a=b/../../admin/secret.txt HTTP/1.1",
		"GET /public/x%3B/../../admin/secret.txt HTTP/1.1",
		"GET /public/x?/../../admin/secret.txt HTTP/1.1",
		"GET /public/x%3F/../../admin/secret.txt HTTP/1.1",
		`GET /public/x/..\..\admin/secret.txt HTTP/1.1`,
		"GET /public/..%5C..%5Cadmin/secret.txt HTTP/1.1",
		"GET /public/..%2F..%2Fadmin/secret.txt HTTP/1.1",
		"GET /public/%2e%2e/admin/secret.txt HTTP/1.1",
		"GET /public/x/%2e%2e/%2e%2e/admin/secret.txt HTTP/1.1",
		"GET /public/%2e%2e%2fadmin/secret.txt HTTP/1.1",
		"GET //admin/secret.txt HTTP/1.1",
		"GET /public//../admin/secret.txt HTTP/1.1",
		"GET /public/%00/../../admin/secret.txt HTTP/1.1",
		"GET /public/%C0%AE%C0%AE/admin/secret.txt HTTP/1.1",
		"GET http://greeter:8080/admin/secret.txt HTTP/1.1",
		"GET http://greeter:8080/public/../admin/secret.txt HTTP/1.1",
		"GET http://greeter:8080/public/%2e%2e/admin/secret.txt HTTP/1.1",
		"GET http://greeter:8080//admin/secret.txt HTTP/1.1",
		"GET HTTP://greeter:8080/admin/secret.txt HTTP/1.1",
		"GET https://greeter:8080/admin/secret.txt HTTP/1.1",
		"GET http:/admin/secret.txt HTTP/1.1",
		"GET http://greeter:8080?/public/x HTTP/1.1",
		"GET http://user@greeter:8080/admin/secret.txt HTTP/1.1",
		"GET * HTTP/1.1",
		"OPTIONS * HTTP/1.1",
		"CONNECT greeter:8080 HTTP/1.1",
		"CONNECT /admin/secret.txt HTTP/1.1",
		"get /admin/secret.txt HTTP/1.1",
		"HEAD /admin/secret.txt HTTP/1.1",
		"GET /admin/secret.txt HTTP/1.0",
		"GET /Admin/secret.txt HTTP/1.1",
	}
	for _, line := range lines {
		before := files.count()
		code, body := rawHTTP1(t, addr, nil, line)
		if strings.Contains(body, adminSecret) {
			t.Errorf("%q = %d and served the admin secret", line, code)
		}
		// net/http answers "OPTIONS *" itself (200, no body) without
		// calling any handler; nothing is served.
		if code >= 200 && code < 300 && files.count() == before && line != "OPTIONS * HTTP/1.1" {
			t.Errorf("%q = %d without reaching the handler", line, code)
		}
	}
	// Every request that reached the handler resolves under /public/ as the
	// handler sees it (http.FileServer cleans the path it was given).
	for _, h := range files.all() {
		if p := path.Clean("/" + h.path); !strings.HasPrefix(p, "/public/") {
			t.Errorf("the handler got %s %q (path %q, resolving to %q), outside what the policy allows", h.method, h.target, h.path, p)
		}
	}
}
