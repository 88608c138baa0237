package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

const sayHello = "/trellis.examples.greeter.v1.Greeter/SayHello"

// meshTokens are the join tokens of a secure mesh: the greeter
// (default/greeter) and the HTTP services hello, web and kb, each running
// as the service account of its name (the control plane lets an identity
// serve only that service unless the configuration binds it to another),
// a client (default/client), a batch job of the same namespace
// (default/batch) and an intruder from another namespace (other/intruder).
var meshTokens = map[string]xdsserver.WorkloadIdentity{
	"greeter-token":  {Namespace: "default", ServiceAccount: "greeter"},
	"hello-token":    {Namespace: "default", ServiceAccount: "hello"},
	"web-token":      {Namespace: "default", ServiceAccount: "web"},
	"kb-token":       {Namespace: "default", ServiceAccount: "kb"},
	"client-token":   {Namespace: "default", ServiceAccount: "client"},
	"batch-token":    {Namespace: "default", ServiceAccount: "batch"},
	"intruder-token": {Namespace: "other", ServiceAccount: "intruder"},
}

// secureMesh is a closed mesh (registrations need identities) whose
// control plane runs its CA, with the join tokens meshTokens.
type secureMesh struct {
	*controlPlane
	secureAddr string
	bundle     string // the CA root's PEM file
}

func startSecureMesh(t testing.TB, yaml string) *secureMesh {
	t.Helper()
	dir, data := t.TempDir(), t.TempDir()
	if yaml != "" {
		writeFile(t, dir, "mesh.yaml", yaml)
	}
	cp := startClosedControlPlane(t, dir,
		xdsserver.WithDataDir(data),
		xdsserver.WithJoinTokens(meshTokens))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go cp.ServeSecure(lis) // stopped by the control plane's cleanup
	return &secureMesh{controlPlane: cp, secureAddr: lis.Addr().String(), bundle: filepath.Join(data, "root-cert.pem")}
}

// as returns the options giving a process the identity of token.
func (m *secureMesh) as(token string) []mesh.WorkloadOption {
	return []mesh.WorkloadOption{mesh.WithControlPlane(m.addr), mesh.WithJoinToken(token), mesh.WithTrustBundleFile(m.bundle), mesh.WithCAAddr(m.secureAddr)}
}

// peers records the SPIFFE IDs a server's handlers saw.
type peers struct {
	mu  sync.Mutex
	ids []string
}

func (p *peers) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	id, ok := mesh.PeerID(ctx)
	p.mu.Lock()
	if ok {
		p.ids = append(p.ids, id.String())
	} else {
		p.ids = append(p.ids, "plaintext")
	}
	p.mu.Unlock()
	return h(ctx, req)
}

func (p *peers) last() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ids) == 0 {
		return ""
	}
	return p.ids[len(p.ids)-1]
}

// startSecureGreeter runs a greeter with the greeter identity, recording
// its callers.
func (m *secureMesh) startSecureGreeter(t testing.TB) (*greeterServer, *peers) {
	t.Helper()
	p := &peers{}
	opts := serverOpts(m.as("greeter-token"), mesh.WithServerOptions(grpc.ChainUnaryInterceptor(p.intercept)))
	return startGreeter(t, m.addr, "v1", opts...), p
}

func (m *secureMesh) dial(t testing.TB, opts ...mesh.DialOption) greeterpb.GreeterClient {
	t.Helper()
	cc, err := mesh.Dial("greeter:9080", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return greeterpb.NewGreeterClient(cc)
}

// direct calls a server at addr without the mesh.
func direct(ctx context.Context, addr string, creds credentials.TransportCredentials) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer cc.Close()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = greeterpb.NewGreeterClient(cc).SayHello(cctx, &greeterpb.HelloRequest{Name: "direct"})
	return err
}

func answering(ctx context.Context, t *testing.T, c greeterpb.GreeterClient, md ...string) {
	t.Helper()
	waitFor(ctx, t, "the greeter answering", func() error {
		_, err := c.SayHello(metadata.AppendToOutgoingContext(ctx, md...), &greeterpb.HelloRequest{Name: "x"})
		return err
	})
}

const peerAuthn = `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: %s}}
`

// TestStrictMTLSRefusesPlaintext: under STRICT the greeter serves the mesh
// client over mutual TLS (and its handler sees the client's SPIFFE ID),
// and refuses a plaintext client and a TLS client without a certificate.
// A mesh client without an identity fails rather than fall back to
// plaintext.
func TestStrictMTLSRefusesPlaintext(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "STRICT"))
	g, seen := m.startSecureGreeter(t)
	client := m.dial(t, dialOpts(m.as("client-token"))...)
	answering(ctx, t, client)
	if got, want := seen.last(), "spiffe://cluster.local/ns/default/sa/client"; got != want {
		t.Errorf("the greeter saw caller %q, want %q", got, want)
	}
	if err := direct(ctx, g.addr, insecure.NewCredentials()); err == nil {
		t.Errorf("a plaintext call to a STRICT server succeeded")
	}
	roots := x509.NewCertPool()
	pem, _ := os.ReadFile(m.bundle)
	roots.AppendCertsFromPEM(pem)
	noCert := credentials.NewTLS(&tls.Config{RootCAs: roots, InsecureSkipVerify: true})
	if err := direct(ctx, g.addr, noCert); err == nil {
		t.Errorf("a TLS call without a client certificate to a STRICT server succeeded")
	}
	anon := m.dial(t, mesh.WithControlPlane(m.addr))
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := anon.SayHello(cctx, &greeterpb.HelloRequest{}); err == nil {
		t.Errorf("a mesh client without an identity reached a STRICT server")
	}
}

// TestPermissiveServesBothOnOnePort: under PERMISSIVE one port serves a
// plaintext client and a mutual-TLS client, and the handler can tell them
// apart.
func TestPermissiveServesBothOnOnePort(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "PERMISSIVE"))
	g, seen := m.startSecureGreeter(t)
	client := m.dial(t, dialOpts(m.as("client-token"))...)
	answering(ctx, t, client)
	if got, want := seen.last(), "spiffe://cluster.local/ns/default/sa/client"; got != want {
		t.Errorf("mesh client seen as %q, want %q", got, want)
	}
	waitFor(ctx, t, "a plaintext call", func() error { return direct(ctx, g.addr, insecure.NewCredentials()) })
	if got := seen.last(); got != "plaintext" {
		t.Errorf("plaintext client seen as %q, want plaintext", got)
	}
}

// TestAuthorizationPolicyAllowsAndDenies: an ALLOW policy admits only the
// client's SPIFFE ID on SayHello; a caller from another namespace is
// denied with PERMISSION_DENIED and no detail; a DENY on a header wins
// over the ALLOW.
func TestAuthorizationPolicyAllowsAndDenies(t *testing.T) {
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
    to: [{operation: {paths: ["`+sayHello+`"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug, namespace: default}
spec:
  action: DENY
  rules:
  - when: [{key: "request.headers[x-debug]", values: ["1"]}]
`)
	m.startSecureGreeter(t)
	client := m.dial(t, dialOpts(m.as("client-token"))...)
	answering(ctx, t, client)

	intruder := m.dial(t, dialOpts(m.as("intruder-token"))...)
	_, err := intruder.SayHello(ctx, &greeterpb.HelloRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("intruder's SayHello() = %v, want PERMISSION_DENIED", err)
	}
	if msg := status.Convert(err).Message(); strings.Contains(msg, "intruder") || strings.Contains(msg, "allow-client") {
		t.Errorf("the denial reveals the policy: %q", msg)
	}
	_, err = client.SayHello(metadata.AppendToOutgoingContext(ctx, "x-debug", "1"), &greeterpb.HelloRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("SayHello() with the denied header = %v, want PERMISSION_DENIED (DENY wins)", err)
	}
}

// TestRequestAuthenticationWithClaims: a JWT issued by the configured
// issuer and carrying the required claim is admitted; a token signed by
// another key is UNAUTHENTICATED; no token, or the wrong claim, is denied
// by the policy that requires them.
func TestRequestAuthenticationWithClaims(t *testing.T) {
	ctx := testContext(t)
	tk := scenarioTokens
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "PERMISSIVE")+`
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules:
  - issuer: https://issuer.example
    jwks: '`+tk.jwks+`'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-admins, namespace: default}
spec:
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]
    when: [{key: "request.auth.claims[group]", values: ["admins"]}]
`)
	m.startSecureGreeter(t)
	client := m.dial(t, dialOpts(m.as("client-token"))...)
	answering(ctx, t, client, "authorization", tk.sign("admins", false))

	for _, tc := range []struct {
		name string
		md   []string
		want codes.Code
	}{
		{"token signed by another key", []string{"authorization", tk.sign("admins", true)}, codes.Unauthenticated},
		{"garbage token", []string{"authorization", "Bearer not.a.token"}, codes.Unauthenticated},
		{"no token", nil, codes.PermissionDenied},
		{"wrong claim", []string{"authorization", tk.sign("users", false)}, codes.PermissionDenied},
		{"right claim", []string{"authorization", tk.sign("admins", false)}, codes.OK},
	} {
		_, err := client.SayHello(metadata.AppendToOutgoingContext(ctx, tc.md...), &greeterpb.HelloRequest{})
		if got := status.Code(err); got != tc.want {
			t.Errorf("%s: SayHello() = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// issued adds to serials the certificates the control plane's CA has
// issued, by SPIFFE ID, from /debug/ca (which lists unexpired ones).
func (m *secureMesh) issued(t testing.TB, serials map[string]map[string]bool) {
	t.Helper()
	rec := httptest.NewRecorder()
	m.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/debug/ca", nil))
	var dump struct {
		Issued []struct {
			ID     string `json:"spiffeId"`
			Serial string `json:"serial"`
		} `json:"issued"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &dump); err != nil {
		t.Fatalf("/debug/ca: %v", err)
	}
	for _, ic := range dump.Issued {
		if serials[ic.ID] == nil {
			serials[ic.ID] = map[string]bool{}
		}
		serials[ic.ID][ic.Serial] = true
	}
}

// TestRotationUnderTraffic: with 60-second certificates, client and server
// identities rotate several times while calls flow over STRICT mutual TLS,
// and not one call fails.
func TestRotationUnderTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 75 seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "STRICT"))
	ttl := mesh.WithCertificateTTL(time.Minute)
	// Connections live 10 seconds, so that rotated certificates are used in
	// new handshakes while calls flow; the server records the client
	// certificates it sees.
	var mu sync.Mutex
	clientCerts := map[string]bool{}
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if pr, ok := peer.FromContext(ctx); ok {
			if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
				mu.Lock()
				clientCerts[ti.State.PeerCertificates[0].SerialNumber.Text(16)] = true
				mu.Unlock()
			}
		}
		return h(ctx, req)
	}
	startGreeter(t, m.addr, "v1", serverOpts(m.as("greeter-token"), ttl, mesh.WithServerOptions(
		grpc.ChainUnaryInterceptor(record),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 10 * time.Second, MaxConnectionAgeGrace: 5 * time.Second})))...)
	client := m.dial(t, dialOpts(m.as("client-token"), ttl)...)
	answering(ctx, t, client)

	const server, caller = "spiffe://cluster.local/ns/default/sa/greeter", "spiffe://cluster.local/ns/default/sa/client"
	var calls, failed int
	var firstErr error
	serials := map[string]map[string]bool{}
	deadline := time.Now().Add(75 * time.Second)
	pace := time.NewTicker(5 * time.Millisecond) // steady traffic, 200 calls a second
	defer pace.Stop()
	for time.Now().Before(deadline) {
		<-pace.C
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := client.SayHello(cctx, &greeterpb.HelloRequest{Name: "rotation"})
		cancel()
		calls++
		if calls%200 == 0 {
			m.issued(t, serials)
		}
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	m.issued(t, serials)
	n := map[string]int{}
	for id, s := range serials {
		n[id] = len(s)
	}
	mu.Lock()
	used := len(clientCerts)
	mu.Unlock()
	t.Logf("%d calls, %d failed; certificates issued: %v; client certificates the server saw: %d", calls, failed, n, used)
	if failed > 0 {
		t.Errorf("%d of %d calls failed across certificate rotations; first: %v", failed, calls, firstErr)
	}
	if used < 2 {
		t.Errorf("the server saw %d client certificates, want at least 2 (rotated certificates used in new handshakes)", used)
	}
	if n[server] < 3 || n[caller] < 3 {
		t.Errorf("certificates issued = %v, want at least 3 each for %s and %s (two rotations)", n, server, caller)
	}
}
