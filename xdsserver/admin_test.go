package xdsserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// serveAdmin serves s.AdminHandler() with a real http.Server on lis (a
// loopback listener if nil) and returns its address.
func serveAdmin(t *testing.T, s *Server, lis net.Listener) string {
	t.Helper()
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	hs := &http.Server{Handler: s.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			t.Errorf("admin Shutdown() = %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("admin Serve() = %v, want http.ErrServerClosed", err)
		}
	})
	return lis.Addr().String()
}

// rawResponse is what a raw admin request got back.
type rawResponse struct {
	code   int
	header http.Header
	body   string
}

// rawRequest writes request (with its blank line) on a new connection to
// addr, byte for byte, and reads the response.
func rawRequest(t *testing.T, addr, request string) rawResponse {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	method, _, _ := strings.Cut(request, " ")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response to %q: %v", request, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rawResponse{resp.StatusCode, resp.Header, string(body)}
}

// revealingPaths are the admin paths that reveal something: every one is
// refused to a foreign Host without a token.
var revealingPaths = []string{
	"/debug/config_dump", "/debug/config_dump?client=x", "/debug/clients", "/debug/registry",
	"/debug/ca", "/debug/graph", "/dashboard", "/dashboard?token=x", "/dashboard/app.js", "/metrics",
}

// TestAdminRefusesForeignHostWithoutToken is DNS rebinding: a page on
// attacker.example, whose name the attacker re-points at 127.0.0.1,
// reads the admin port as its own origin. Without a token the admin
// endpoint must answer a request only if it is addressed to a loopback
// name or address, and reveal nothing (403, a fixed body) otherwise.
func TestAdminRefusesForeignHostWithoutToken(t *testing.T) {
	s, err := New(WithDataDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := serveAdmin(t, s, nil)
	_, port, _ := net.SplitHostPort(addr)

	for _, tc := range []struct {
		name    string
		request string // %s: the path
	}{
		{"foreign name with port", "GET %s HTTP/1.1\r\nHost: attacker.example:" + port + "\r\n\r\n"},
		{"foreign name", "GET %s HTTP/1.1\r\nHost: attacker.example\r\n\r\n"},
		{"loopback address as a subdomain", "GET %s HTTP/1.1\r\nHost: 127.0.0.1.nip.io:" + port + "\r\n\r\n"},
		{"localhost as a subdomain", "GET %s HTTP/1.1\r\nHost: localhost.attacker.example\r\n\r\n"},
		{"name ending in localhost", "GET %s HTTP/1.1\r\nHost: evillocalhost:" + port + "\r\n\r\n"},
		{"loopback address with a trailing dot", "GET %s HTTP/1.1\r\nHost: 127.0.0.1.:" + port + "\r\n\r\n"},
		{"private address", "GET %s HTTP/1.1\r\nHost: 10.0.0.1:" + port + "\r\n\r\n"},
		{"unspecified address", "GET %s HTTP/1.1\r\nHost: 0.0.0.0:" + port + "\r\n\r\n"},
		{"IPv6 address not loopback", "GET %s HTTP/1.1\r\nHost: [::2]:" + port + "\r\n\r\n"},
		{"loopback address with a bad port", "GET %s HTTP/1.1\r\nHost: 127.0.0.1:x\r\n\r\n"},
		{"no Host over HTTP/1.0", "GET %s HTTP/1.0\r\n\r\n"},
		{"empty Host over HTTP/1.0", "GET %s HTTP/1.0\r\nHost: \r\n\r\n"},
		{"absolute-form target of another host", "GET http://attacker.example:" + port + "%s HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\n\r\n"},
		{"HEAD with a foreign name", "HEAD %s HTTP/1.1\r\nHost: attacker.example\r\n\r\n"},
	} {
		for _, path := range revealingPaths {
			got := rawRequest(t, addr, fmt.Sprintf(tc.request, path))
			if got.code != http.StatusForbidden {
				t.Errorf("%s: %s = %d, want 403", tc.name, path, got.code)
				continue
			}
			if want := "forbidden\n"; !strings.HasPrefix(tc.request, "HEAD") && got.body != want {
				t.Errorf("%s: %s body = %q, want %q", tc.name, path, got.body, want)
			}
			if c := got.header.Get("Set-Cookie"); c != "" {
				t.Errorf("%s: %s set a cookie %q", tc.name, path, c)
			}
		}
	}

	// Requests addressed to loopback are served.
	for _, tc := range []struct {
		name    string
		request string
	}{
		{"the bound address", "GET %s HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"},
		{"loopback address without port", "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"},
		{"another address of 127/8", "GET %s HTTP/1.1\r\nHost: 127.3.2.1:" + port + "\r\n\r\n"},
		{"localhost", "GET %s HTTP/1.1\r\nHost: localhost:" + port + "\r\n\r\n"},
		{"localhost in capitals", "GET %s HTTP/1.1\r\nHost: LocalHost\r\n\r\n"},
		{"IPv6 loopback", "GET %s HTTP/1.1\r\nHost: [::1]:" + port + "\r\n\r\n"},
		{"IPv6 loopback without port", "GET %s HTTP/1.1\r\nHost: [::1]\r\n\r\n"},
		{"HTTP/1.0 with a loopback Host", "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"},
		// RFC 9112 §3.2.2: an absolute-form target's authority replaces the Host.
		{"absolute-form target of loopback", "GET http://127.0.0.1:" + port + "%s HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\n\r\n"},
	} {
		for _, path := range []string{"/debug/config_dump", "/dashboard", "/metrics"} {
			if got := rawRequest(t, addr, fmt.Sprintf(tc.request, path)); got.code != http.StatusOK {
				t.Errorf("%s: %s = %d %q, want 200", tc.name, path, got.code, got.body)
			}
		}
	}
	if got := scrapeRaw(t, addr)[`trellis_admin_refused_total{reason="host"}`]; got == 0 {
		t.Errorf("trellis_admin_refused_total{reason=\"host\"} = 0, want the refusals counted")
	}
}

// scrapeRaw scrapes /metrics of the admin endpoint at addr.
func scrapeRaw(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	got := rawRequest(t, addr, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
	if got.code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", got.code)
	}
	out := map[string]float64{}
	for line := range strings.Lines(got.body) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err == nil {
			out[name] = v
		}
	}
	return out
}

// TestAdminHealthOpenToAnyHost: /healthz and /readyz reveal only that the
// server is up and ready, and Kubernetes probes address them to the pod
// IP: they answer any Host.
func TestAdminHealthOpenToAnyHost(t *testing.T) {
	ctx := testContext(t)
	s, _ := start(t)
	addr := serveAdmin(t, s, nil)
	waitFor(ctx, t, func() bool {
		return rawRequest(t, addr, "GET /readyz HTTP/1.1\r\nHost: 10.1.2.3:15014\r\n\r\n").code == http.StatusOK
	})
	if got := rawRequest(t, addr, "GET /healthz HTTP/1.1\r\nHost: 10.1.2.3:15014\r\n\r\n"); got.code != http.StatusOK || got.body != "ok\n" {
		t.Errorf("GET /healthz with a pod IP Host = %d %q, want 200 ok", got.code, got.body)
	}
}

// nonLoopbackAddr returns an address of this host that is not loopback,
// or skips the test.
func nonLoopbackAddr(t *testing.T) net.IP {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("no interface addresses: %v", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
			return n.IP
		}
	}
	t.Skip("this host has no non-loopback IPv4 address")
	return nil
}

// TestAdminRefusesNonLoopbackConnectionWithoutToken: a library caller
// that serves AdminHandler on a non-loopback address and forgets the
// token does not expose /debug/: without a token, a connection accepted
// on a non-loopback address is refused whatever Host it claims, while a
// loopback connection to the same wildcard listener is served.
func TestAdminRefusesNonLoopbackConnectionWithoutToken(t *testing.T) {
	ip := nonLoopbackAddr(t)
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lis, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := serveAdmin(t, s, lis)
	_, port, _ := net.SplitHostPort(addr)
	external := net.JoinHostPort(ip.String(), port)
	for _, path := range revealingPaths {
		got := rawRequest(t, external, "GET "+path+" HTTP/1.1\r\nHost: localhost:"+port+"\r\n\r\n")
		if got.code != http.StatusForbidden || got.body != "forbidden\n" {
			t.Errorf("GET %s over %s with Host localhost = %d %q, want 403 forbidden", path, external, got.code, got.body)
		}
	}
	if got := rawRequest(t, external, "GET /healthz HTTP/1.1\r\nHost: "+external+"\r\n\r\n"); got.code != http.StatusOK {
		t.Errorf("GET /healthz over %s = %d, want 200", external, got.code)
	}
	local := net.JoinHostPort("127.0.0.1", port)
	if got := rawRequest(t, local, "GET /debug/config_dump HTTP/1.1\r\nHost: "+local+"\r\n\r\n"); got.code != http.StatusOK {
		t.Errorf("GET /debug/config_dump over %s = %d, want 200", local, got.code)
	}
	if got := scrapeRaw(t, local)[`trellis_admin_refused_total{reason="connection"}`]; got == 0 {
		t.Errorf("trellis_admin_refused_total{reason=\"connection\"} = 0, want the refusals counted")
	}
}

// TestAdminTokenProtectsWhateverTheHost: with a token, the token decides,
// for any Host and any connection; a prefix, an extension, another scheme
// or a token in the query are not the token.
func TestAdminTokenProtectsWhateverTheHost(t *testing.T) {
	s, err := New(WithAdminToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := serveAdmin(t, s, nil)
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", http.StatusUnauthorized},
		{"Authorization: Bearer s3cre\r\n", http.StatusUnauthorized},
		{"Authorization: Bearer s3cretX\r\n", http.StatusUnauthorized},
		{"Authorization: Bearer  s3cret\r\n", http.StatusUnauthorized},
		{"Authorization: Basic s3cret\r\n", http.StatusUnauthorized},
		{"Authorization: s3cret\r\n", http.StatusUnauthorized},
		{"Authorization: Bearer\r\n", http.StatusUnauthorized},
		{"Cookie: " + adminCookie + "=s3cret\r\n", http.StatusUnauthorized}, // the cookie holds a session, not the token
		{"Authorization: Bearer s3cret\r\n", http.StatusOK},
		{"Authorization: bearer s3cret\r\n", http.StatusOK}, // RFC 9110 §11.1: the scheme is case-insensitive
	} {
		for _, host := range []string{"attacker.example", addr} {
			for _, path := range []string{"/debug/config_dump", "/debug/registry", "/debug/graph", "/dashboard/app.js"} {
				got := rawRequest(t, addr, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n"+tc.auth+"\r\n")
				if got.code != tc.want {
					t.Errorf("GET %s, Host %s, %q = %d, want %d", path, host, tc.auth, got.code, tc.want)
				}
			}
		}
	}
	if got := rawRequest(t, addr, "GET /debug/config_dump?token=s3cret HTTP/1.1\r\nHost: localhost\r\n\r\n"); got.code != http.StatusUnauthorized {
		t.Errorf("GET /debug/config_dump?token=s3cret = %d, want 401: only /dashboard takes a token in the query", got.code)
	}
	// Without WithMetricsBehindToken, /metrics stays open to Prometheus.
	if got := rawRequest(t, addr, "GET /metrics HTTP/1.1\r\nHost: 10.1.2.3:15014\r\n\r\n"); got.code != http.StatusOK {
		t.Errorf("GET /metrics with a token set but not asked for = %d, want 200", got.code)
	}
}

// TestMetricsBehindTokenWhenAsked: WithMetricsBehindToken puts /metrics
// behind the admin token (health stays open); it needs a token.
func TestMetricsBehindTokenWhenAsked(t *testing.T) {
	if _, err := New(WithMetricsBehindToken()); err == nil || !strings.Contains(err.Error(), "WithAdminToken") {
		t.Errorf("New(WithMetricsBehindToken()) = %v, want an error asking for WithAdminToken", err)
	}
	s, err := New(WithAdminToken("s3cret"), WithMetricsBehindToken())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := serveAdmin(t, s, nil)
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", http.StatusUnauthorized},
		{"Authorization: Bearer wrong\r\n", http.StatusUnauthorized},
		{"Authorization: Bearer s3cret\r\n", http.StatusOK},
	} {
		got := rawRequest(t, addr, "GET /metrics HTTP/1.1\r\nHost: "+addr+"\r\n"+tc.auth+"\r\n")
		if got.code != tc.want {
			t.Errorf("GET /metrics with %q = %d, want %d", tc.auth, got.code, tc.want)
		}
		if tc.want == http.StatusOK && !strings.Contains(got.body, "trellis_xds_streams") {
			t.Errorf("GET /metrics with the token: body without trellis_xds_streams")
		}
		if tc.want != http.StatusOK && (strings.Contains(got.body, "trellis_") || got.header.Get("WWW-Authenticate") == "") {
			t.Errorf("GET /metrics with %q: header %v, body %q; want a Bearer challenge and no metrics", tc.auth, got.header, got.body)
		}
	}
	if got := rawRequest(t, addr, "GET /healthz HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); got.code != http.StatusOK {
		t.Errorf("GET /healthz = %d, want 200 without a token", got.code)
	}
}

// login opens /dashboard?token= on the admin endpoint at base with c and
// returns the response, without following the redirect.
func login(t *testing.T, c *http.Client, base, token string) *http.Response {
	t.Helper()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Get(base + "/dashboard?token=" + token + "&view=graph")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestDashboardCookieSecureOverTLS: served over TLS, the dashboard's
// cookie is Secure (a browser never sends it over plaintext); over
// plaintext it cannot be. Both ways it is HttpOnly, SameSite=Strict,
// expires after dashboardSession, and the login redirects to a URL without
// the token, uncached.
func TestDashboardCookieSecureOverTLS(t *testing.T) {
	s, err := New(WithAdminToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	overTLS := httptest.NewUnstartedServer(s.AdminHandler())
	overTLS.EnableHTTP2 = true
	overTLS.StartTLS()
	defer overTLS.Close()
	plain := httptest.NewServer(s.AdminHandler())
	defer plain.Close()

	for _, tc := range []struct {
		name   string
		srv    *httptest.Server
		secure bool
	}{
		{"TLS", overTLS, true},
		{"plaintext", plain, false},
	} {
		resp := login(t, tc.srv.Client(), tc.srv.URL, "s3cret")
		if tc.secure && resp.TLS == nil {
			t.Fatalf("%s: the login was not over TLS", tc.name)
		}
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dashboard" {
			t.Errorf("%s: login = %d to %q, want 303 to /dashboard (the token leaves the URL)", tc.name, resp.StatusCode, resp.Header.Get("Location"))
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s: login Cache-Control = %q, want no-store", tc.name, got)
		}
		if got := resp.Header.Get("Referrer-Policy"); got != "no-referrer" {
			t.Errorf("%s: login Referrer-Policy = %q, want no-referrer", tc.name, got)
		}
		cookies := resp.Cookies()
		if len(cookies) != 1 {
			t.Fatalf("%s: cookies = %v, want one", tc.name, cookies)
		}
		c := cookies[0]
		if c.Name != adminCookie || c.Secure != tc.secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != int(dashboardSession/time.Second) {
			t.Errorf("%s: cookie = %+v, want %s, Secure %v, HttpOnly, SameSite=Strict, Path /, Max-Age %d", tc.name, c, adminCookie, tc.secure, int(dashboardSession/time.Second))
		}
	}
}

// TestDashboardCookieDoesNotCarryTheToken: the cookie is sent to every
// port of the host (cookies ignore ports), so it holds a session that
// expires, derived from the token, not the token: it is refused once
// expired, when forged, or when the token changed.
func TestDashboardCookieDoesNotCarryTheToken(t *testing.T) {
	s, err := New(WithAdminToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := serveAdmin(t, s, nil)
	base := "http://" + addr
	resp := login(t, &http.Client{Timeout: 10 * time.Second}, base, "s3cret")
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("login cookies = %v, want one", cookies)
	}
	if v := cookies[0].Value; strings.Contains(v, "s3cret") {
		t.Errorf("cookie value %q contains the token", v)
	}
	get := func(value string) int {
		return rawRequest(t, addr, "GET /debug/config_dump HTTP/1.1\r\nHost: "+addr+"\r\nCookie: "+adminCookie+"="+value+"\r\n\r\n").code
	}
	if code := get(cookies[0].Value); code != http.StatusOK {
		t.Fatalf("GET /debug/config_dump with the session = %d, want 200", code)
	}
	now := time.Now()
	valid := newSession("s3cret", now.Add(time.Hour))
	for _, tc := range []struct {
		name, value string
	}{
		{"expired", newSession("s3cret", now.Add(-time.Second))},
		{"another token's", newSession("other", now.Add(time.Hour))},
		{"expiry moved", strings.Replace(valid, strconv.FormatInt(now.Add(time.Hour).Unix(), 10), strconv.FormatInt(now.Add(100*time.Hour).Unix(), 10), 1)},
		{"MAC cut", valid[:len(valid)-1]},
		{"the bare token", "s3cret"},
		{"empty", ""},
		{"garbage", "v1.x.y"},
	} {
		if code := get(tc.value); code != http.StatusUnauthorized {
			t.Errorf("GET /debug/config_dump with a session cookie %s (%q) = %d, want 401", tc.name, tc.value, code)
		}
	}
}

// TestAdminAllowsNoCrossOriginReadsOrWrites: the admin endpoint sends no
// CORS headers (another origin's page cannot read it), answers only GET
// and HEAD (nothing to forge a POST against: it changes nothing), and
// marks its responses nosniff and uncached.
func TestAdminAllowsNoCrossOriginReadsOrWrites(t *testing.T) {
	s, err := New(WithAdminToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := serveAdmin(t, s, nil)
	for _, path := range append(revealingPaths, "/healthz", "/readyz") {
		for _, method := range []string{"GET", "OPTIONS", "POST", "PUT", "DELETE"} {
			got := rawRequest(t, addr, method+" "+path+" HTTP/1.1\r\nHost: "+addr+"\r\nOrigin: http://attacker.example\r\n"+
				"Access-Control-Request-Method: POST\r\nAuthorization: Bearer s3cret\r\nContent-Length: 0\r\n\r\n")
			for k := range got.header {
				if strings.HasPrefix(k, "Access-Control-") {
					t.Errorf("%s %s: response header %s: %q, want no CORS headers", method, path, k, got.header.Get(k))
				}
			}
			if method != "GET" && got.code != http.StatusMethodNotAllowed {
				t.Errorf("%s %s = %d, want 405", method, path, got.code)
			}
		}
	}
	for _, path := range []string{"/debug/config_dump", "/debug/graph", "/metrics"} {
		got := rawRequest(t, addr, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\nAuthorization: Bearer s3cret\r\n\r\n")
		if got.header.Get("X-Content-Type-Options") != "nosniff" || got.header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s headers %v, want X-Content-Type-Options: nosniff and Cache-Control: no-store", path, got.header)
		}
	}
}

// TestLoopbackHostAcceptsOnlyLoopbackNames: the Host check accepts what
// only this machine can be, and nothing a DNS name could make look like
// it.
func TestLoopbackHostAcceptsOnlyLoopbackNames(t *testing.T) {
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.1:15014", true},
		{"127.255.255.254:1", true},
		{"localhost", true},
		{"LOCALHOST:15014", true},
		{"localhost:", true},
		{"[::1]", true},
		{"[::1]:15014", true},
		{"[0:0:0:0:0:0:0:1]:15014", true},
		{"[::ffff:127.0.0.1]:15014", true},
		{"", false},
		{":15014", false},
		{"::1", false}, // IPv6 without brackets is no Host
		{"[::1%25lo]:15014", false},
		{"[127.0.0.1]", false},
		{"127.0.0.1.", false},
		{"localhost.", false},
		{"a.localhost", false},
		{"localhost.attacker.example", false},
		{"127.0.0.1.nip.io", false},
		{"127.1", false},
		{"0x7f000001", false},
		{"2130706433", false},
		{"0177.0.0.1", false},
		{"128.0.0.1", false},
		{"0.0.0.0", false},
		{"[::]:15014", false},
		{"127.0.0.1:15014:1", false},
		{"127.0.0.1:-1", false},
		{"127.0.0.1:80x", false},
		{"[::1]x", false},
		{"attacker.example", false},
	} {
		if got := loopbackHost(tc.host); got != tc.want {
			t.Errorf("loopbackHost(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}
