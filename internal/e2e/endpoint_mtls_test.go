package e2e

import (
	"context"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/internal/mtls"
	"github.com/trellismesh/trellis/mesh"
)

// plainGRPC is a plaintext gRPC greeter outside the mesh, counting the
// calls it serves and the Authorization values it receives.
type plainGRPC struct {
	addr string
	mu   sync.Mutex
	auth []string
}

func startPlainGRPC(t *testing.T) *plainGRPC {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &plainGRPC{addr: lis.Addr().String()}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		p.mu.Lock()
		p.auth = append(p.auth, md.Get("authorization")...)
		p.mu.Unlock()
		return h(ctx, req)
	}))
	greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: "plain", Instance: p.addr})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("plain gRPC Serve() = %v", err)
		}
	})
	return p
}

// slicesCount counts the elements of s equal to v.
func slicesCount(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

func (p *peers) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ids)
}

func (p *plainGRPC) calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.auth)
}

// startPlainHTTP serves rec in plaintext outside the mesh and returns its
// address.
func startPlainHTTP(t *testing.T, rec *recorder) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rec, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("plain HTTP Serve() = %v", err)
		}
	})
	return lis.Addr().String()
}

// greeterEntry is the ServiceEntry of greeter on port, listing one
// endpoint without identity at addr ("ip:port"); registered greeters join
// it. tls, if not empty, is the DestinationRule's trafficPolicy.tls.
func greeterEntry(t *testing.T, port int, addr, tls string) string {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter, namespace: default}
spec:
  hosts: [greeter]
  resolution: STATIC
  ports: [{number: %d, name: grpc}]
  endpoints: [{address: %s, ports: {grpc: %s}}]
`, port, host, p)
	if tls != "" {
		yaml += "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: greeter, namespace: default}\nspec:\n  host: greeter\n  trafficPolicy: {tls: " + tls + "}\n"
	}
	return yaml
}

// TestIdentitylessEndpointKeepsMTLSForOthers guards against one endpoint
// without an identity switching mutual TLS off for a whole service (and so
// receiving every client's plaintext requests, Authorization headers and
// all). Two greeters with the greeter identity and one plaintext server
// listed in the ServiceEntry serve one service. The identity-bearing
// greeters are always called over mutual TLS (their handlers see the
// caller's SPIFFE ID). The plaintext server gets plaintext HTTP requests
// under automatic mTLS only, as Istio's auto mTLS sends them, and nothing
// under ISTIO_MUTUAL; gRPC clients (grpc-go's xDS credentials, which apply
// one transport socket per cluster) never reach it in either mode: their
// TLS handshake with it fails.
func TestIdentitylessEndpointKeepsMTLSForOthers(t *testing.T) {
	const calls = 30
	for _, mode := range []struct {
		name string
		tls  string
	}{{"automatic", ""}, {"ISTIO_MUTUAL", "{mode: ISTIO_MUTUAL}"}} {
		auto := mode.tls == ""
		t.Run("gRPC/"+mode.name, func(t *testing.T) {
			ctx := testContext(t)
			plain := startPlainGRPC(t)
			m := startSecureMesh(t, greeterEntry(t, 9080, plain.addr, mode.tls))
			_, seen1 := m.startSecureGreeter(t)
			_, seen2 := m.startSecureGreeter(t)
			waitFor(ctx, t, "three endpoints in EDS", func() error {
				if eps := endpoints(t, m.controlPlane, "outbound|9080||greeter.default.svc.cluster.local"); len(eps) != 3 {
					return fmt.Errorf("endpoints %v", eps)
				}
				return nil
			})
			client := m.dial(t, dialOpts(m.as("client-token"))...)
			waitFor(ctx, t, "both greeters answering over mTLS", func() error {
				_, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "warm-up"})
				if err == nil && (len(seen1.all()) == 0 || len(seen2.all()) == 0) {
					err = errors.New("not both called yet")
				}
				return err
			})
			before := len(seen1.all()) + len(seen2.all())
			actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer secret")
			for i := range calls {
				cctx, cancel := context.WithTimeout(actx, 5*time.Second)
				_, err := client.SayHello(cctx, &greeterpb.HelloRequest{Name: "x"})
				cancel()
				if err != nil {
					t.Errorf("call %d: SayHello() = %v, want the mTLS greeters to answer", i, err)
				}
			}
			for _, seen := range []*peers{seen1, seen2} {
				ids := seen.all()
				if n := len(ids) - slicesCount(ids, clientID); n > 0 {
					t.Errorf("a greeter with an identity saw %d of its %d callers other than %q (over mTLS): %q", n, len(ids), clientID, ids)
				}
			}
			if got := len(seen1.all()) + len(seen2.all()) - before; got != calls {
				t.Errorf("the mTLS greeters served %d of %d calls, want all", got, calls)
			}
			if n := plain.calls(); n != 0 {
				t.Errorf("the endpoint without identity served %d gRPC calls, want none (the cluster's mTLS applies to it, and fails)", n)
			}
		})
		t.Run("HTTP/"+mode.name, func(t *testing.T) {
			ctx := testContext(t)
			plainRec := &recorder{}
			plainAddr := startPlainHTTP(t, plainRec)
			m := startSecureMesh(t, greeterEntry(t, 8080, plainAddr, mode.tls))
			_, _, rec1 := m.startWeb(t)
			_, _, rec2 := m.startWeb(t)
			waitFor(ctx, t, "three endpoints in EDS", func() error {
				if eps := endpoints(t, m.controlPlane, "outbound|8080||greeter.default.svc.cluster.local"); len(eps) != 3 {
					return fmt.Errorf("endpoints %v", eps)
				}
				return nil
			})
			client := mesh.HTTPClient(transportOpts(m.as("client-token"), mesh.WithMeshOnly())...)
			t.Cleanup(func() { client.Transport.(*mesh.Transport).Close() })
			send := func() (int, error) {
				req, err := http.NewRequestWithContext(ctx, "GET", "http://greeter:8080/x", nil)
				if err != nil {
					return 0, err
				}
				req.Header.Set("Authorization", "Bearer secret")
				resp, err := client.Do(req)
				if err != nil {
					return 0, err
				}
				defer resp.Body.Close()
				io.Copy(io.Discard, resp.Body)
				return resp.StatusCode, nil
			}
			waitFor(ctx, t, "both greeters answering over mTLS", func() error {
				code, err := send()
				if err == nil && code != http.StatusOK {
					err = fmt.Errorf("status %d", code)
				}
				if err == nil && (rec1.count() == 0 || rec2.count() == 0) {
					err = errors.New("not both called yet")
				}
				return err
			})
			before := rec1.count() + rec2.count() + plainRec.count()
			var failed int
			var lastErr error
			for range calls {
				if code, err := send(); err != nil || code != http.StatusOK {
					failed, lastErr = failed+1, fmt.Errorf("status %d, %v", code, err)
				}
			}
			for _, rec := range []*recorder{rec1, rec2} {
				var ids []string
				for _, r := range rec.all() {
					ids = append(ids, r.peer)
				}
				if n := len(ids) - slicesCount(ids, clientID); n > 0 {
					t.Errorf("a greeter with an identity saw %d of its %d callers other than %q (over mTLS): %q", n, len(ids), clientID, ids)
				}
			}
			plainN := plainRec.count()
			served := rec1.count() + rec2.count() + plainN - before
			t.Logf("%s: %d requests: %d to the mTLS greeters, %d in plaintext to the endpoint without identity, %d failed", mode.name, calls, served-plainN, plainN, failed)
			switch {
			case auto && plainN == 0:
				t.Errorf("automatic mTLS: the endpoint without identity served no plaintext request, want its share (as Istio's auto mTLS)")
			case !auto && plainN != 0:
				t.Errorf("ISTIO_MUTUAL: the endpoint without identity served %d plaintext requests, want none", plainN)
			}
			for _, r := range plainRec.all() {
				if r.peer != "plaintext" {
					t.Errorf("the endpoint without identity saw peer %q, want plaintext", r.peer)
				}
			}
			if failed > 0 || served != calls {
				t.Errorf("%d of %d requests failed (last: %v), %d served; want every request served (retried past the endpoint that refuses mTLS)", failed, calls, lastErr, served)
			}
		})
	}
}

// TestPinnedSubjectAltNameMismatchFailsCall guards against a client
// trusting any mesh certificate when the DestinationRule pins the server
// identities: with subjectAltNames naming another identity, calls to the
// greeter (whose certificate says greeter) fail on gRPC and HTTP and its
// handlers see nothing; pinning the greeter's own identity works.
func TestPinnedSubjectAltNameMismatchFailsCall(t *testing.T) {
	dr := func(host, san string) string {
		return fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: greeter, namespace: default}\nspec:\n  host: %s\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: [%q]}}\n", host, san)
	}
	for _, tc := range []struct {
		san  string
		want bool // the call succeeds
	}{
		{"spiffe://cluster.local/ns/default/sa/other", false},
		{webID, true},
	} {
		t.Run("gRPC/"+tc.san, func(t *testing.T) {
			ctx := testContext(t)
			m := startSecureMesh(t, dr("greeter", tc.san))
			_, seen := m.startSecureGreeter(t)
			waitFor(ctx, t, "the endpoint in EDS", func() error {
				if eps := endpoints(t, m.controlPlane, "outbound|9080||greeter.default.svc.cluster.local"); len(eps) != 1 {
					return fmt.Errorf("endpoints %v", eps)
				}
				return nil
			})
			client := m.dial(t, dialOpts(m.as("client-token"))...)
			if tc.want {
				answering(ctx, t, client)
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if _, err := client.SayHello(cctx, &greeterpb.HelloRequest{}); err == nil {
				t.Errorf("SayHello() to a greeter outside the pinned subjectAltNames succeeded")
			}
			if n := len(seen.all()); n != 0 {
				t.Errorf("the greeter served %d calls, want none", n)
			}
		})
		t.Run("HTTP/"+tc.san, func(t *testing.T) {
			ctx := testContext(t)
			m := startSecureMesh(t, dr("greeter", tc.san))
			_, _, rec := m.startWeb(t)
			waitFor(ctx, t, "the endpoint in EDS", func() error {
				if eps := endpoints(t, m.controlPlane, "outbound|8080||greeter.default.svc.cluster.local"); len(eps) != 1 {
					return fmt.Errorf("endpoints %v", eps)
				}
				return nil
			})
			client := mesh.HTTPClient(transportOpts(m.as("client-token"), mesh.WithMeshOnly())...)
			t.Cleanup(func() { client.Transport.(*mesh.Transport).Close() })
			client.Timeout = 5 * time.Second
			if tc.want {
				serving(ctx, t, client, "http://greeter:8080/x")
				return
			}
			if code, err := get(client, "http://greeter:8080/x"); err == nil || !strings.Contains(err.Error(), "subjectAltNames") {
				t.Errorf("GET to a greeter outside the pinned subjectAltNames = %d, %v; want an error naming the subjectAltNames", code, err)
			}
			if n := rec.count(); n != 0 {
				t.Errorf("the greeter served %d requests, want none", n)
			}
		})
	}
}

// TestEndpointAddressServedByAnotherIdentityIsRefused guards against an
// endpoint's address being served by another identity the cluster
// accepts: the ServiceEntry says the endpoint at one address is the
// client service account, while the server there presents the greeter's
// certificate (which the cluster accepts for its other endpoint, a
// registered greeter). The mesh HTTP client verifies each endpoint's own
// identity, so that server never gets a request; they all go to the
// registered greeter. (grpc-go's xDS credentials check only the cluster's
// list, so gRPC is not covered by this.)
func TestEndpointAddressServedByAnotherIdentityIsRefused(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, "")
	impostor := &recorder{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: impostor, TLSConfig: mtls.ServerConfig(m.caIdentity(t, "greeter-token"), nil), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(lis, "", "") }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("impostor ServeTLS() = %v", err)
		}
	})
	host, port, _ := net.SplitHostPort(lis.Addr().String())
	writeFile(t, m.dir, "mesh.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter, namespace: default}
spec:
  hosts: [greeter]
  resolution: STATIC
  ports: [{number: 8080, name: http}]
  endpoints: [{address: %s, ports: {http: %s}, serviceAccount: client}]
`, host, port))
	_, _, rec := m.startWeb(t)
	waitFor(ctx, t, "both endpoints in EDS", func() error {
		if eps := endpoints(t, m.controlPlane, "outbound|8080||greeter.default.svc.cluster.local"); len(eps) != 2 {
			return fmt.Errorf("endpoints %v", eps)
		}
		return nil
	})
	client := mesh.HTTPClient(transportOpts(m.as("client-token"), mesh.WithMeshOnly())...)
	t.Cleanup(func() { client.Transport.(*mesh.Transport).Close() })
	client.Timeout = 5 * time.Second
	serving(ctx, t, client, "http://greeter:8080/x")
	for i := range 20 {
		if code, err := get(client, "http://greeter:8080/x"); err != nil || code != http.StatusOK {
			t.Errorf("request %d: GET = %d, %v; want 200 from the registered greeter", i, code, err)
		}
	}
	if n := impostor.count(); n != 0 {
		t.Errorf("the server presenting another identity than its endpoint's served %d requests, want none", n)
	}
	if rec.count() < 21 {
		t.Errorf("the registered greeter served %d requests, want all 21", rec.count())
	}
}
