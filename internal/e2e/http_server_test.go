package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/mtls"
	"github.com/trellismesh/trellis/mesh"
)

const (
	webID    = "spiffe://cluster.local/ns/default/sa/greeter"
	callerID = "spiffe://cluster.local/ns/default/sa/client"
)

// seenRequest is what the HTTP handler saw of one request.
type seenRequest struct {
	path   string
	peer   string // SPIFFE ID, or "plaintext"
	proto  int
	header http.Header
}

// recorder is an HTTP handler that records the requests it serves.
type recorder struct {
	mu   sync.Mutex
	seen []seenRequest
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := seenRequest{path: r.URL.Path, peer: "plaintext", proto: r.ProtoMajor, header: r.Header.Clone()}
	if id, ok := mesh.PeerID(r.Context()); ok {
		s.peer = id.String()
	}
	rec.mu.Lock()
	rec.seen = append(rec.seen, s)
	rec.mu.Unlock()
	fmt.Fprintf(w, "ok %s", s.peer)
}

func (rec *recorder) last() seenRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.seen) == 0 {
		return seenRequest{}
	}
	return rec.seen[len(rec.seen)-1]
}

func (rec *recorder) all() []seenRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.seen)
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.seen)
}

// startWeb serves rec with a mesh.HTTPServer registered as greeter v1
// (service port 8080), with the greeter identity.
func (m *secureMesh) startWeb(t *testing.T, opts ...mesh.HTTPServerOption) (*mesh.HTTPServer, string, *recorder) {
	t.Helper()
	rec := &recorder{}
	opts = append(httpServerOpts(m.as("greeter-token"), mesh.WithService("greeter", "v1"), mesh.WithServicePort(8080)), opts...)
	srv, err := mesh.NewHTTPServer(rec, opts...)
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
	return srv, lis.Addr().String(), rec
}

// caIdentity gets the identity of token from the control plane's CA, as a
// non-mesh program would.
func (m *secureMesh) caIdentity(t *testing.T, token string) identity.Source {
	t.Helper()
	src, err := identity.NewCASource(testContext(t), func(ctx context.Context, cert *tls.Certificate) (*grpc.ClientConn, error) {
		cfg, err := secureTLS(m.bundle)
		if err != nil {
			return nil, err
		}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return grpc.NewClient(m.secureAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}, spiffeid.RequireTrustDomainFromString("cluster.local"), identity.WithJoinToken(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// mtlsConfig is the TLS configuration of a client with token's identity
// calling the greeter identity.
func (m *secureMesh) mtlsConfig(t *testing.T, token string) *tls.Config {
	t.Helper()
	cfg, err := mtls.ClientConfig(m.caIdentity(t, token), spiffeid.RequireFromString(webID))
	if err != nil {
		t.Fatal(err)
	}
	cfg.NextProtos = []string{"h2", "http/1.1"}
	return cfg
}

// httpClient returns a client over mutual TLS (cfg non-nil) or plaintext
// HTTP/1.1; h2 asks for HTTP/2 (h2c in plaintext).
func httpClient(t *testing.T, cfg *tls.Config, h2 bool) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2, DisableKeepAlives: !h2}
	if cfg != nil && !h2 {
		cfg = cfg.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		tr.TLSClientConfig = cfg
	}
	if cfg == nil && h2 {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// get sends a GET with headers (name, value pairs; a name may repeat) and
// returns the status code, or 0 with the error.
func get(c *http.Client, url string, headers ...string) (int, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// serving waits until c gets 200 for url.
func serving(ctx context.Context, t *testing.T, c *http.Client, url string, headers ...string) {
	t.Helper()
	waitFor(ctx, t, "the HTTP server answering "+url, func() error {
		code, err := get(c, url, headers...)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})
}

// TestHTTPServerMTLSModes: under STRICT the HTTP server serves mutual TLS
// (the handler sees the client's SPIFFE ID) and refuses plaintext; under
// PERMISSIVE it serves both on one port; under DISABLE plaintext only.
func TestHTTPServerMTLSModes(t *testing.T) {
	for _, tc := range []struct {
		mode            string
		mtlsOK, plainOK bool
	}{
		{"STRICT", true, false},
		{"PERMISSIVE", true, true},
		{"DISABLE", false, true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ctx := testContext(t)
			m := startSecureMesh(t, fmt.Sprintf(peerAuthn, tc.mode))
			_, addr, rec := m.startWeb(t)
			secure := httpClient(t, m.mtlsConfig(t, "client-token"), false)
			plain := httpClient(t, nil, false)
			// Wait until the server follows the mode: one of the two
			// clients is served.
			if tc.mtlsOK {
				serving(ctx, t, secure, "https://"+addr+"/hello")
				if got := rec.last().peer; got != callerID {
					t.Errorf("mTLS client seen as %q, want %q", got, callerID)
				}
			} else {
				serving(ctx, t, plain, "http://"+addr+"/hello")
			}
			for _, c := range []struct {
				name   string
				client *http.Client
				url    string
				ok     bool
				peer   string
			}{
				{"mTLS", secure, "https://" + addr + "/hello", tc.mtlsOK, callerID},
				{"plaintext", plain, "http://" + addr + "/hello", tc.plainOK, "plaintext"},
			} {
				before := rec.count()
				code, err := get(c.client, c.url)
				switch {
				case c.ok && (err != nil || code != http.StatusOK):
					t.Errorf("%s request under %s = %d, %v; want 200", c.name, tc.mode, code, err)
				case c.ok && rec.last().peer != c.peer:
					t.Errorf("%s request seen as %q, want %q", c.name, rec.last().peer, c.peer)
				case !c.ok && err == nil:
					// The policy is known (a request was served): the
					// connection is refused at accept, before any answer.
					t.Errorf("%s request under %s = %d, want the connection refused", c.name, tc.mode, code)
				case !c.ok && rec.count() != before:
					t.Errorf("%s request under %s reached the handler", c.name, tc.mode)
				}
			}
		})
	}
}

// TestHTTPServerStrictRefusesPlaintextRequest: a plaintext request under
// STRICT is refused with 401 even on a connection accepted before the
// policy was known (the per-request check), and never reaches the handler.
func TestHTTPServerStrictRefusesPlaintextRequest(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "STRICT"))
	_, addr, rec := m.startWeb(t)
	// Connect at once: the connection is likely accepted before the policy
	// arrives; whichever way, the request must not be served.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /hello HTTP/1.1\r\nHost: greeter:8080\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("plaintext request under STRICT = %d, want 401 (or a closed connection)", resp.StatusCode)
		}
		if resp.Header.Get("WWW-Authenticate") != "" {
			t.Errorf("a STRICT refusal asks for a bearer token: %q", resp.Header.Get("WWW-Authenticate"))
		}
	}
	serving(ctx, t, httpClient(t, m.mtlsConfig(t, "client-token"), false), "https://"+addr+"/hello")
	for _, s := range rec.all() {
		if s.peer == "plaintext" {
			t.Errorf("the handler served a plaintext request under STRICT: %+v", s)
		}
	}
}

// TestHTTPServerHTTP2: one PERMISSIVE port serves HTTP/2 over mutual TLS
// (ALPN), HTTP/2 in plaintext (h2c, prior knowledge) and HTTP/1.1.
func TestHTTPServerHTTP2(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "PERMISSIVE"))
	_, addr, rec := m.startWeb(t)
	cfg := m.mtlsConfig(t, "client-token")
	for _, tc := range []struct {
		name   string
		client *http.Client
		url    string
		proto  int
		peer   string
	}{
		{"h2 over mTLS", httpClient(t, cfg, true), "https://" + addr + "/h2", 2, callerID},
		{"h2c", httpClient(t, nil, true), "http://" + addr + "/h2c", 2, "plaintext"},
		{"HTTP/1.1 over mTLS", httpClient(t, cfg, false), "https://" + addr + "/h1", 1, callerID},
		{"HTTP/1.1 plaintext", httpClient(t, nil, false), "http://" + addr + "/h1", 1, "plaintext"},
	} {
		serving(ctx, t, tc.client, tc.url)
		got := rec.last()
		if got.proto != tc.proto || got.peer != tc.peer {
			t.Errorf("%s: the handler saw HTTP/%d from %q, want HTTP/%d from %q", tc.name, got.proto, got.peer, tc.proto, tc.peer)
		}
	}
}

// TestHTTPServerAuthorizationPolicy: an ALLOW policy admits only the
// client's SPIFFE ID on /hello; a caller from another namespace and another
// path are denied with 403 and a body that reveals nothing; a DENY on a
// header wins over the ALLOW. A repeated header is matched as its values
// joined with "," (as Envoy matches it): "0,1" is not the DENY's "1"
// (see TestRepeatedHeaderMatchesJoinedValue).
func TestHTTPServerAuthorizationPolicy(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "STRICT")+`
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: default}
spec:
  selector: {matchLabels: {version: v1}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/client"]}}]
    to: [{operation: {paths: ["/hello"], methods: ["GET"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug, namespace: default}
spec:
  action: DENY
  rules:
  - when: [{key: "request.headers[x-debug]", values: ["1"]}]
`)
	_, addr, rec := m.startWeb(t)
	client := httpClient(t, m.mtlsConfig(t, "client-token"), false)
	intruder := httpClient(t, m.mtlsConfig(t, "intruder-token"), false)
	url := "https://" + addr
	serving(ctx, t, client, url+"/hello")
	for _, tc := range []struct {
		name    string
		client  *http.Client
		path    string
		headers []string
		want    int
	}{
		{"client on /hello", client, "/hello", nil, http.StatusOK},
		{"client on another path", client, "/other", nil, http.StatusForbidden},
		{"intruder on /hello", intruder, "/hello", nil, http.StatusForbidden},
		{"denied header", client, "/hello", []string{"X-Debug", "1"}, http.StatusForbidden},
		{"denied header joined with another", client, "/hello", []string{"X-Debug", "0", "X-Debug", "1"}, http.StatusOK},
		{"other header value", client, "/hello", []string{"X-Debug", "0"}, http.StatusOK},
	} {
		before := rec.count()
		req, _ := http.NewRequest("GET", url+tc.path, nil)
		for i := 0; i+1 < len(tc.headers); i += 2 {
			req.Header.Add(tc.headers[i], tc.headers[i+1])
		}
		resp, err := tc.client.Do(req)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
		if tc.want != http.StatusOK {
			if rec.count() != before {
				t.Errorf("%s: a denied request reached the handler", tc.name)
			}
			if b := string(body); strings.Contains(b, "allow-client") || strings.Contains(b, "deny-debug") || strings.Contains(b, "intruder") {
				t.Errorf("%s: the denial reveals the policy: %q", tc.name, b)
			}
		}
	}
}

// rawRequest sends a request line with target as is (no client would send
// most of these) and returns the status code, 0 if the connection closed.
func rawRequest(t *testing.T, addr string, cfg *tls.Config, target string) int {
	t.Helper()
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: 5 * time.Second}
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
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: greeter:8080\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestHTTPServerPathCanonicalisation: a DENY on /admin cannot be bypassed
// with another spelling of the path, over plaintext or mutual TLS; the
// handler never runs for any of them. The ALLOW lists /admin, so that it is
// the DENY (seeing the canonical path) that refuses it; /ADMIN is another
// path (paths are case-sensitive) that the ALLOW does not list.
func TestHTTPServerPathCanonicalisation(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "PERMISSIVE")+`
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-listed, namespace: default}
spec:
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/public/*", "/admin", "/admin/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*", "/public/admin"]}}]
`)
	_, addr, rec := m.startWeb(t)
	cfg := m.mtlsConfig(t, "client-token")
	serving(ctx, t, httpClient(t, nil, false), "http://"+addr+"/public/ok")
	for _, transport := range []struct {
		name string
		cfg  *tls.Config
	}{{"plaintext", nil}, {"mTLS", cfg}} {
		// Served: the controls, including a double-encoded "a" that must
		// not be decoded twice.
		for _, target := range []string{"/public/x", "//public/x", "/public/%2561dmin"} {
			if code := rawRequest(t, addr, transport.cfg, target); code != http.StatusOK {
				t.Errorf("%s GET %s = %d, want 200", transport.name, target, code)
			}
		}
		for _, target := range []string{
			"/admin", "//admin", "/x/../admin", "/public/../admin", "/./admin", "/admin/.",
			"/%2Fadmin", "/%2fadmin", "/%61dmin", "/%41DMIN", "/admin?x=1", "/ADMIN",
			"/admin/", "/admin/x", `\admin`, `/\admin`, "/%5Cadmin", "/admin%00", "/public/%2E%2E/admin",
		} {
			before := rec.count()
			if code := rawRequest(t, addr, transport.cfg, target); code == http.StatusOK || rec.count() != before {
				t.Errorf("%s GET %s = %d and reached the handler %d times; want refused", transport.name, target, code, rec.count()-before)
			}
		}
	}
	for _, s := range rec.all() {
		if strings.Contains(strings.ToLower(s.path), "admin") {
			t.Errorf("the handler served %q", s.path)
		}
	}
}

// TestHTTPServerRequestAuthentication: a JWT with the required claim is
// admitted (and consumed: the handler sees the verified payload header,
// not the token); an invalid token gets 401 with WWW-Authenticate: Bearer;
// no token or the wrong claim 403. Spoofed X-Forwarded-Client-Cert and
// payload headers never reach the handler.
func TestHTTPServerRequestAuthentication(t *testing.T) {
	ctx := testContext(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "PERMISSIVE")+`
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules:
  - issuer: https://issuer.example
    jwks: '`+string(jwks)+`'
    outputPayloadToHeader: x-jwt-payload
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-admins, namespace: default}
spec:
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]
    to: [{operation: {paths: ["/claims"]}}]
    when: [{key: "request.auth.claims[group]", values: ["admins"]}]
  - to: [{operation: {paths: ["/open"]}}]
`)
	_, addr, rec := m.startWeb(t)
	sign := func(k *rsa.PrivateKey, group string) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := josejwt.Signed(s).Claims(josejwt.Claims{Issuer: "https://issuer.example", Subject: "alice", Expiry: josejwt.NewNumericDate(time.Now().Add(time.Hour))}).Claims(map[string]any{"group": group}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := sign(key, "admins")
	for _, transport := range []struct {
		name   string
		client *http.Client
		url    string
	}{
		{"plaintext", httpClient(t, nil, false), "http://" + addr},
		{"h2 over mTLS", httpClient(t, m.mtlsConfig(t, "client-token"), true), "https://" + addr},
	} {
		c := transport.client
		serving(ctx, t, c, transport.url+"/claims", "Authorization", good)
		spoof := []string{"X-Forwarded-Client-Cert", "By=spiffe://cluster.local/ns/default/sa/admin", "X-Jwt-Payload", "forged"}
		for _, tc := range []struct {
			name    string
			path    string
			headers []string
			want    int
		}{
			{"right claim", "/claims", append([]string{"Authorization", good}, spoof...), http.StatusOK},
			{"token signed by another key", "/claims", []string{"Authorization", sign(other, "admins")}, http.StatusUnauthorized},
			{"garbage token", "/claims", []string{"Authorization", "Bearer not.a.token"}, http.StatusUnauthorized},
			{"no token", "/claims", nil, http.StatusForbidden},
			{"wrong claim", "/claims", []string{"Authorization", sign(key, "users")}, http.StatusForbidden},
			{"open path, spoofed headers", "/open", spoof, http.StatusOK},
		} {
			req, _ := http.NewRequestWithContext(ctx, "GET", transport.url+tc.path, nil)
			for i := 0; i+1 < len(tc.headers); i += 2 {
				req.Header.Add(tc.headers[i], tc.headers[i+1])
			}
			before := rec.count()
			resp, err := c.Do(req)
			if err != nil {
				t.Errorf("%s, %s: %v", transport.name, tc.name, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s, %s: status %d, want %d", transport.name, tc.name, resp.StatusCode, tc.want)
			}
			if wa := resp.Header.Get("WWW-Authenticate"); (tc.want == http.StatusUnauthorized) != strings.HasPrefix(wa, "Bearer") {
				t.Errorf("%s, %s: WWW-Authenticate %q", transport.name, tc.name, wa)
			}
			if tc.want != http.StatusOK {
				if rec.count() != before {
					t.Errorf("%s, %s: a refused request reached the handler", transport.name, tc.name)
				}
				continue
			}
			h := rec.last().header
			if v := h.Values("X-Forwarded-Client-Cert"); len(v) > 0 {
				t.Errorf("%s, %s: the handler saw X-Forwarded-Client-Cert %q", transport.name, tc.name, v)
			}
			if v := h.Values("Authorization"); len(v) > 0 {
				t.Errorf("%s, %s: the handler saw the consumed token", transport.name, tc.name)
			}
			payload := h.Values("X-Jwt-Payload")
			if tc.path == "/open" {
				if len(payload) > 0 {
					t.Errorf("%s, %s: the handler saw a spoofed payload header %q", transport.name, tc.name, payload)
				}
				continue
			}
			if len(payload) != 1 {
				t.Errorf("%s, %s: X-Jwt-Payload = %q, want the one verified payload", transport.name, tc.name, payload)
				continue
			}
			claims, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(payload[0], "="))
			if err != nil || !strings.Contains(string(claims), `"group":"admins"`) {
				t.Errorf("%s, %s: X-Jwt-Payload = %q (%s), want the verified payload", transport.name, tc.name, payload[0], claims)
			}
		}
	}
}

// TestHTTPServerRegistration: the HTTP server's endpoint is in the control
// plane's EDS while it serves and leaves it on Shutdown, before the
// server stops.
func TestHTTPServerRegistration(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "PERMISSIVE"))
	srv, addr, _ := m.startWeb(t)
	const cluster = "outbound|8080||greeter.default.svc.cluster.local"
	waitFor(ctx, t, "the endpoint in EDS", func() error {
		if got := endpoints(t, m.controlPlane, cluster); !slices.Contains(got, addr) {
			return fmt.Errorf("EDS %s = %v, want %s in it", cluster, got, addr)
		}
		return nil
	})
	serving(ctx, t, httpClient(t, nil, false), "http://"+addr+"/hello")
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}
	waitFor(ctx, t, "the endpoint leaving EDS", func() error {
		if got := endpoints(t, m.controlPlane, cluster); slices.Contains(got, addr) {
			return fmt.Errorf("EDS %s = %v, still holds %s", cluster, got, addr)
		}
		return nil
	})
	if _, err := get(httpClient(t, nil, false), "http://"+addr+"/hello"); err == nil {
		t.Errorf("the server still answers after Shutdown")
	}
}
