package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/internal/registrationpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

// rawRegister registers ep over the plaintext port of the control plane
// at cp, with the registration wire format and nothing else, as an
// attacker on the network would, and returns the control plane's answer.
func rawRegister(ctx context.Context, t *testing.T, cp string, ep *registrationpb.Endpoint) error {
	t.Helper()
	cc, err := grpc.NewClient(cp, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	stream, err := registrationpb.NewRegistrationClient(cc).Register(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&registrationpb.RegisterRequest{Endpoint: ep, OwnerSecret: []byte("the attacker's owner secret")}); err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

// conn dials the greeter with token's identity.
func (m *secureMesh) conn(t *testing.T, token string) *grpc.ClientConn {
	t.Helper()
	cc, err := mesh.Dial("greeter:9080", dialOpts(m.as(token))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// endpointOf is the registration of a server listening on addr.
func endpointOf(t *testing.T, ns, service, addr string, labels map[string]string) *registrationpb.Endpoint {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return &registrationpb.Endpoint{Service: service, Namespace: ns, Address: host, Port: uint32(p), Labels: labels}
}

// registrationResults returns the control plane's trellis_registrations_total by result.
func registrationResults(t *testing.T, cp *controlPlane) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	cp.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/metrics", nil))
	out := map[string]float64{}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), `trellis_registrations_total{result="`)
		if !ok {
			continue
		}
		result, value, _ := strings.Cut(line, `"} `)
		out[result], _ = strconv.ParseFloat(value, 64)
	}
	return out
}

// registrations returns the registered endpoints' keys with their
// identities.
func registrations(cp *controlPlane) map[string]string {
	out := map[string]string{}
	for _, r := range cp.ConfigDump().Registrations {
		out[fmt.Sprintf("%s/%s/%s:%d", r.Namespace, r.Service, r.Address, r.Port)] = r.Identity
	}
	return out
}

const denyAdmin = `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {version: v1}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
`

// TestRegistrationCannotStripAServersPolicy guards against "policy
// stripped": a plaintext registration of a STRICT server's exact
// namespace/service/address:port with other labels, and registrations of
// it by other identities over the secure port, are all refused; the
// server keeps its identity and labels, so plaintext still cannot reach
// it and its DENY /admin* policy still holds: its handler never sees
// /admin.
func TestRegistrationCannotStripAServersPolicy(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "STRICT")+denyAdmin)
	_, addr, rec := m.startWeb(t)
	client := httpClient(t, m.mtlsConfig(t, "client-token"), false)
	serving(ctx, t, client, "https://"+addr+"/public")
	before := registrations(m.controlPlane)

	if err := rawRegister(ctx, t, m.addr, endpointOf(t, "default", "greeter", addr, map[string]string{"version": "evil"})); status.Code(err) != codes.Unauthenticated {
		t.Errorf("plaintext registration of the server's endpoint = %v, want Unauthenticated", err)
	}
	// Other identities try through the public API.
	for _, token := range []string{"client-token", "batch-token", "intruder-token"} {
		startAttacker(ctx, t, m, token, "greeter", addr)
	}
	if got := registrations(m.controlPlane); !equalMaps(got, before) {
		t.Errorf("registrations after the attacks = %v, want %v", got, before)
	}
	if code, err := get(httpClient(t, nil, false), "http://"+addr+"/admin/secret"); err == nil && code == 200 {
		t.Errorf("plaintext GET /admin/secret = %d, want refused", code)
	}
	if code, _ := get(client, "https://"+addr+"/admin/secret"); code != 403 {
		t.Errorf("mTLS GET /admin/secret = %d, want 403 from the DENY policy", code)
	}
	for _, r := range rec.all() {
		if strings.HasPrefix(r.path, "/admin") {
			t.Errorf("the handler served %s", r.path)
		}
	}
}

// startAttacker runs a mesh server with token's identity that tries to
// register as service at the address of a victim listening on victim
// (the attacker listens elsewhere and advertises the victim's address),
// and waits until the control plane has refused it.
func startAttacker(ctx context.Context, t *testing.T, m *secureMesh, token, service, victim string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(victim)
	lis, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err == nil {
		lis.Close()
		t.Fatalf("the victim's port %s is free", port)
	}
	refused := registrationResults(t, m.controlPlane)["denied"]
	srv, err := mesh.NewServer(serverOpts(m.as(token), mesh.WithService(service, "evil"), mesh.WithAdvertiseAddr(host))...)
	if err != nil {
		t.Fatal(err)
	}
	// The attacker serves on a port of its own but claims the victim's:
	// a listener that reports the victim's port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(claimedListener{Listener: l, addr: victim}) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	waitFor(ctx, t, "the control plane refusing "+token, func() error {
		if got := registrationResults(t, m.controlPlane)["denied"]; got <= refused {
			return fmt.Errorf("denied registrations = %v, want more than %v", got, refused)
		}
		return nil
	})
}

// claimedListener reports a listening address other than its own.
type claimedListener struct {
	net.Listener
	addr string
}

func (l claimedListener) Addr() net.Addr {
	a, _ := net.ResolveTCPAddr("tcp", l.addr)
	return a
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestAnotherIdentityCannotServeTheService guards against "any workload
// certificate serves any service of its namespace" and against hijacks:
// the batch identity and an anonymous plaintext registration both try to
// join greeter; both are refused, greeter's cluster accepts only the
// greeter identity, and every call of an ISTIO_MUTUAL client reaches the
// real greeter.
func TestAnotherIdentityCannotServeTheService(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "STRICT")+`
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter, namespace: default}
spec:
  host: greeter
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
`)
	g, seen := m.startSecureGreeter(t)
	client := m.conn(t, "client-token")
	answering(ctx, t, greeterpb.NewGreeterClient(client))

	batch := startGreeter(t, m.addr, "v2", serverOpts(m.as("batch-token"))...)
	waitFor(ctx, t, "the batch identity refused", func() error {
		if registrationResults(t, m.controlPlane)["denied"] < 1 {
			return errors.New("no registration denied yet")
		}
		return nil
	})
	if err := rawRegister(ctx, t, m.addr, endpointOf(t, "default", "greeter", "127.0.0.1:1", map[string]string{"version": "v1"})); status.Code(err) != codes.Unauthenticated {
		t.Errorf("anonymous plaintext registration as greeter = %v, want Unauthenticated", err)
	}
	if got, want := registrations(m.controlPlane), map[string]string{"default/greeter/" + g.addr: "spiffe://cluster.local/ns/default/sa/greeter"}; !equalMaps(got, want) {
		t.Errorf("registrations = %v, want only %v", got, want)
	}
	tl := send(ctx, client, 50)
	if tl.errors > 0 || tl.instances[g.addr] != 50 || tl.instances[batch.addr] != 0 {
		t.Errorf("50 calls reached %v with %d errors (last %v), want all at the greeter %s", tl.instances, tl.errors, tl.lastErr, g.addr)
	}
	if got, want := seen.last(), "spiffe://cluster.local/ns/default/sa/client"; got != want {
		t.Errorf("the greeter saw caller %q, want %q", got, want)
	}
}

// TestRegistrationCannotDenyAnotherServer guards against "deny-all by
// registration": an identity registering its own service at a victim's
// address and port is refused, so the victim's server listener keeps its
// policy and the victim keeps serving.
func TestRegistrationCannotDenyAnotherServer(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "STRICT"))
	g, _ := m.startSecureGreeter(t)
	client := m.conn(t, "client-token")
	answering(ctx, t, greeterpb.NewGreeterClient(client))
	// other/intruder may serve "intruder" in "other", but not on the
	// greeter's address.
	startAttacker(ctx, t, m, "intruder-token", "intruder", g.addr)
	if tl := send(ctx, client, 20); tl.errors > 0 {
		t.Errorf("%d of 20 calls to the victim failed after the attack; last: %v", tl.errors, tl.lastErr)
	}
}

// secureOnlyMesh is a closed mesh whose control plane serves only its
// secure port: no plaintext xDS or registration at all.
func startSecureOnlyMesh(t *testing.T, yaml string) *secureMesh {
	t.Helper()
	dir, data := t.TempDir(), t.TempDir()
	if yaml != "" {
		writeFile(t, dir, "mesh.yaml", yaml)
	}
	srv, err := xdsserver.New(xdsserver.WithConfigDir(dir), xdsserver.WithDataDir(data), xdsserver.WithJoinTokens(meshTokens))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeSecure(lis) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, xdsserver.ErrServerClosed) {
			t.Errorf("ServeSecure() = %v, want ErrServerClosed", err)
		}
	})
	// The plaintext address given to workloads is a port nobody serves:
	// everything must go to the secure port.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	return &secureMesh{controlPlane: &controlPlane{Server: srv, addr: deadAddr, dir: dir}, secureAddr: lis.Addr().String(), bundle: data + "/root-cert.pem"}
}

// TestSecureOnlyMesh is a secure-mode run end to end: identities for
// every workload, STRICT mTLS, registrations, xDS and load reports over
// the control plane's TLS port only (its plaintext port is not served),
// and the quickstart's weighted split and an authorization policy still
// working, for gRPC and HTTP clients.
func TestSecureOnlyMesh(t *testing.T) {
	ctx := testContext(t)
	m := startSecureOnlyMesh(t, fmt.Sprintf(peerAuthn, "STRICT")+`
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter, namespace: default}
spec:
  host: greeter
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter, namespace: default}
spec:
  hosts: [greeter]
  http:
  - route:
    - {destination: {host: greeter, subset: v1}, weight: 50}
    - {destination: {host: greeter, subset: v2}, weight: 50}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-client, namespace: default}
spec:
  selector: {matchLabels: {app: greeter}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/client"]}}]
`)
	for _, v := range []string{"v1", "v2"} {
		startGreeter(t, m.addr, v, serverOpts(m.as("greeter-token"), mesh.WithLabels(map[string]string{"app": "greeter"}))...)
	}
	client := m.conn(t, "client-token")
	answering(ctx, t, greeterpb.NewGreeterClient(client))
	waitFor(ctx, t, "both versions answering", func() error {
		tl := send(ctx, client, 40)
		if tl.versions["v1"] == 0 || tl.versions["v2"] == 0 {
			return fmt.Errorf("versions %v, errors %d (last %v)", tl.versions, tl.errors, tl.lastErr)
		}
		return nil
	})
	intruder := m.dial(t, dialOpts(m.as("intruder-token"))...)
	if _, err := intruder.SayHello(ctx, &greeterpb.HelloRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("intruder's SayHello() = %v, want PERMISSION_DENIED", err)
	}

	// The same over HTTP: a mesh HTTP server and mesh HTTP clients.
	m.startWeb(t, mesh.WithLabels(map[string]string{"app": "greeter"}))
	for _, tc := range []struct {
		token string
		want  int
	}{{"client-token", 200}, {"intruder-token", 403}} {
		hc := mesh.HTTPClient(transportOpts(m.as(tc.token))...)
		t.Cleanup(func() { hc.Transport.(*mesh.Transport).Close() })
		waitFor(ctx, t, "HTTP as "+tc.token, func() error {
			code, err := get(hc, "http://greeter:8080/hello")
			if err == nil && code != tc.want {
				err = fmt.Errorf("status %d, want %d", code, tc.want)
			}
			return err
		})
	}
	// Every xDS stream the control plane serves is from an identified
	// workload, and every registration carries an identity.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	waitFor(cctx, t, "identified clients", func() error {
		clients := m.ConfigDump().Clients
		if len(clients) == 0 {
			return errors.New("no xDS clients")
		}
		for _, c := range clients {
			if c.Identity == "" {
				return fmt.Errorf("xDS client %s has no identity", c.Node)
			}
		}
		return nil
	})
	for key, id := range registrations(m.controlPlane) {
		if id == "" {
			t.Errorf("registration %s has no identity", key)
		}
	}
}
