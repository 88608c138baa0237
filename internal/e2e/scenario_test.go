package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
)

// The scenario suite runs every traffic and security scenario against a
// gRPC service and an HTTP service configured by the same YAML (the host
// name aside), through mesh.Dial and mesh.HTTPClient.

// outcome of one call, the same words for both protocols.
const (
	ok              = "ok"
	unavailable     = "unavailable"     // UNAVAILABLE, 503
	timedOut        = "timeout"         // DEADLINE_EXCEEDED, 504
	denied          = "denied"          // PERMISSION_DENIED, 403
	unauthenticated = "unauthenticated" // UNAUTHENTICATED, 401
)

// result is what a caller learns of one call.
type result struct {
	outcome  string
	version  string
	instance string
	err      error
}

// protocol runs servers and clients of one protocol.
type protocol struct {
	name string
	host string // the service name, written into the scenario's YAML
	// token is the join token of the servers' identity, whose service
	// account is named as the service.
	token string
	// serve starts a server of version v with behaviour b; stop kills it
	// abruptly.
	serve func(t *testing.T, m *secureMesh, v string, b *behaviour) (stop func())
	// client returns a caller through the mesh with the given options.
	client func(t *testing.T, m *secureMesh, opts ...mesh.ClientOption) func(ctx context.Context, headers ...string) result
}

var protocols = []protocol{
	{
		name: "grpc", host: "greeter", token: "greeter-token",
		serve: func(t *testing.T, m *secureMesh, v string, b *behaviour) func() {
			opts := serverOpts(m.as("greeter-token"), mesh.WithServerOptions(grpc.UnaryInterceptor(b.intercept)))
			g := startGreeter(t, m.addr, v, opts...)
			return func() { g.Close() }
		},
		client: func(t *testing.T, m *secureMesh, opts ...mesh.ClientOption) func(context.Context, ...string) result {
			c := m.dial(t, dialOpts(opts)...)
			return func(ctx context.Context, headers ...string) result {
				r, err := c.SayHello(metadata.AppendToOutgoingContext(ctx, headers...), &greeterpb.HelloRequest{Name: "scenario"})
				out := map[codes.Code]string{codes.OK: ok, codes.Unavailable: unavailable, codes.DeadlineExceeded: timedOut,
					codes.PermissionDenied: denied, codes.Unauthenticated: unauthenticated}[status.Code(err)]
				if out == "" {
					out = status.Code(err).String()
				}
				return result{outcome: out, version: r.GetVersion(), instance: r.GetInstance(), err: err}
			}
		},
	},
	{
		name: "http", host: "hello", token: "hello-token",
		serve: func(t *testing.T, m *secureMesh, v string, b *behaviour) func() {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			opts := httpServerOpts(m.as("hello-token"), mesh.WithService("hello", v), mesh.WithServicePort(9080))
			srv, err := mesh.NewHTTPServer(b.handler(v, lis.Addr().String()), opts...)
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
			return func() { srv.Close() }
		},
		client: func(t *testing.T, m *secureMesh, opts ...mesh.ClientOption) func(context.Context, ...string) result {
			tr := mesh.NewTransport(transportOpts(opts, mesh.WithMeshOnly())...)
			t.Cleanup(func() { tr.Close() })
			c := &http.Client{Transport: tr}
			return func(ctx context.Context, headers ...string) result {
				req, err := http.NewRequestWithContext(ctx, "GET", "http://hello:9080/hello", nil)
				if err != nil {
					return result{outcome: err.Error(), err: err}
				}
				for i := 0; i+1 < len(headers); i += 2 {
					req.Header.Add(headers[i], headers[i+1])
				}
				resp, err := c.Do(req)
				if err != nil {
					if errors.Is(err, context.DeadlineExceeded) {
						return result{outcome: timedOut, err: err}
					}
					return result{outcome: unavailable, err: err}
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				out := map[int]string{200: ok, 503: unavailable, 504: timedOut, 403: denied, 401: unauthenticated}[resp.StatusCode]
				if out == "" {
					out = resp.Status
				}
				var r struct{ Version, Instance string }
				json.Unmarshal(body, &r)
				return result{outcome: out, version: r.Version, instance: r.Instance, err: fmt.Errorf("%s: %s", resp.Status, body)}
			}
		},
	},
}

// handler serves the HTTP twin of the greeter, with the behaviour's
// faults: a failing code becomes the HTTP status gRPC maps it to.
func (b *behaviour) handler(version, instance string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := b.run(r.Context())
		switch status.Code(err) {
		case codes.OK:
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]string{"version": version, "instance": instance})
		case codes.Unavailable:
			http.Error(w, "injected", http.StatusServiceUnavailable)
		default:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}

// scenario is one behaviour of the mesh, proven on both protocols.
type scenario struct {
	name string
	yaml string // {{host}} is the host
	run  func(t *testing.T, m *secureMesh, p protocol)
}

func (s scenario) config(host string) string { return strings.ReplaceAll(s.yaml, "{{host}}", host) }

const subsets = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: {{host}}}
spec:
  host: {{host}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

// callMany makes n calls and counts outcomes and versions.
func callMany(ctx context.Context, call func(context.Context, ...string) result, n int, headers ...string) (outcomes, versions map[string]int, last result) {
	outcomes, versions = map[string]int{}, map[string]int{}
	for range n {
		r := call(ctx, headers...)
		outcomes[r.outcome]++
		if r.outcome == ok {
			versions[r.version]++
		} else {
			last = r
		}
	}
	return outcomes, versions, last
}

// ready waits until calls succeed (identities issued, servers registered,
// configuration delivered).
func ready(ctx context.Context, t *testing.T, call func(context.Context, ...string) result, headers ...string) {
	t.Helper()
	waitFor(ctx, t, "calls succeeding", func() error {
		if r := call(ctx, headers...); r.outcome != ok {
			return fmt.Errorf("%s: %v", r.outcome, r.err)
		}
		return nil
	})
}

var scenarios = []scenario{
	{
		name: "weighted split 80/20",
		yaml: subsets + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  http:
  - route:
    - {destination: {host: {{host}}, subset: v1}, weight: 80}
    - {destination: {host: {{host}}, subset: v2}, weight: 20}
`,
		run: func(t *testing.T, m *secureMesh, p protocol) {
			ctx := testContext(t)
			p.serve(t, m, "v1", &behaviour{})
			p.serve(t, m, "v2", &behaviour{})
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			waitFor(ctx, t, "both versions answering", func() error {
				if _, v, _ := callMany(ctx, call, 40); v["v1"] == 0 || v["v2"] == 0 {
					return fmt.Errorf("versions %v", v)
				}
				return nil
			})
			outcomes, versions, last := callMany(ctx, call, 1000)
			if outcomes[ok] != 1000 {
				t.Fatalf("outcomes %v, last failure %v", outcomes, last.err)
			}
			if share := float64(versions["v2"]) / 10; math.Abs(share-20) > 5 {
				t.Errorf("v2 got %.1f%% of 1000 calls, want 20±5%%", share)
			}
		},
	},
	{
		name: "header route",
		yaml: subsets + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  http:
  - match: [{headers: {x-canary: {exact: "true"}}}]
    route: [{destination: {host: {{host}}, subset: v2}}]
  - route: [{destination: {host: {{host}}, subset: v1}}]
`,
		run: func(t *testing.T, m *secureMesh, p protocol) {
			ctx := testContext(t)
			p.serve(t, m, "v1", &behaviour{})
			p.serve(t, m, "v2", &behaviour{})
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			ready(ctx, t, call, "x-canary", "true")
			ready(ctx, t, call)
			if _, v, _ := callMany(ctx, call, 100, "x-canary", "true"); v["v2"] != 100 {
				t.Errorf("with x-canary: versions %v, want 100 v2", v)
			}
			if _, v, _ := callMany(ctx, call, 100); v["v1"] != 100 {
				t.Errorf("without x-canary: versions %v, want 100 v1", v)
			}
		},
	},
	{
		name: "retries survive a killed backend",
		yaml: `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  http:
  - retries: {attempts: 3, retryOn: "unavailable,connect-failure,reset,gateway-error"}
    route: [{destination: {host: {{host}}}}]
`,
		run: func(t *testing.T, m *secureMesh, p protocol) {
			ctx := testContext(t)
			var bs []*behaviour
			var stops []func()
			for range 3 {
				b := &behaviour{}
				b.delay.Store(int64(2 * time.Millisecond))
				bs, stops = append(bs, b), append(stops, p.serve(t, m, "v1", b))
			}
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			waitFor(ctx, t, "three backends answering", func() error {
				callMany(ctx, call, 30)
				for i, b := range bs {
					if b.calls.Load() == 0 {
						return fmt.Errorf("backend %d unused", i)
					}
				}
				return nil
			})
			var failed, calls atomic.Int64
			var firstErr atomic.Value
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						calls.Add(1)
						if r := call(ctx); r.outcome != ok {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, fmt.Sprint(r.outcome, ": ", r.err))
						}
					}
				}()
			}
			waitFor(ctx, t, "load on the victim", func() error {
				if n := bs[0].calls.Load(); n < 50 {
					return fmt.Errorf("%d calls", n)
				}
				return nil
			})
			stops[0]()
			before := bs[1].calls.Load() + bs[2].calls.Load()
			waitFor(ctx, t, "load on the survivors", func() error {
				if n := bs[1].calls.Load() + bs[2].calls.Load() - before; n < 300 {
					return fmt.Errorf("%d calls since the kill", n)
				}
				return nil
			})
			close(stop)
			wg.Wait()
			if failed.Load() > 0 {
				t.Errorf("%d of %d calls failed after a backend was killed; first: %v", failed.Load(), calls.Load(), firstErr.Load())
			}
			t.Logf("%d calls, %d failed", calls.Load(), failed.Load())
		},
	},
	{
		name: "route timeout",
		yaml: `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  http:
  - timeout: 300ms
    route: [{destination: {host: {{host}}}}]
`,
		run: func(t *testing.T, m *secureMesh, p protocol) {
			ctx := testContext(t)
			b := &behaviour{}
			p.serve(t, m, "v1", b)
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			ready(ctx, t, call)
			b.delay.Store(int64(20 * time.Second))
			start := time.Now()
			r := call(ctx)
			if took := time.Since(start); r.outcome != timedOut || took > 5*time.Second {
				t.Errorf("call to a slow backend = %s after %v (%v), want timeout near 300ms", r.outcome, took, r.err)
			}
		},
	},
	{
		name: "circuit breaker fails fast",
		yaml: `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: {{host}}}
spec:
  host: {{host}}
  trafficPolicy:
    connectionPool: {http: {http2MaxRequests: 2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: {{host}}}}]
`,
		run: func(t *testing.T, m *secureMesh, p protocol) {
			ctx := testContext(t)
			b := &behaviour{}
			p.serve(t, m, "v1", b)
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			ready(ctx, t, call)
			gate := make(chan struct{})
			b.gate.Store(&gate)
			var wg sync.WaitGroup
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if r := call(ctx); r.outcome != ok {
						t.Errorf("a call within the limit = %s (%v)", r.outcome, r.err)
					}
				}()
			}
			waitFor(ctx, t, "two calls in flight", func() error {
				if n := b.inFlight.Load(); n != 2 {
					return fmt.Errorf("%d in flight", n)
				}
				return nil
			})
			start := time.Now()
			if r := call(ctx); r.outcome != unavailable || time.Since(start) > 2*time.Second {
				t.Errorf("a call beyond the limit = %s after %v, want unavailable at once", r.outcome, time.Since(start))
			}
			b.gate.Store(nil)
			close(gate)
			wg.Wait()
			if o, _, last := callMany(ctx, call, 20); o[ok] != 20 {
				t.Errorf("after the load dropped: %v (%v)", o, last.err)
			}
		},
	},
	{
		name: "outlier detection ejects a failing backend",
		yaml: `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: {{host}}}
spec:
  host: {{host}}
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: {{host}}}}]
`,
		run: func(t *testing.T, m *secureMesh, p protocol) {
			ctx := testContext(t)
			bad, good := &behaviour{}, &behaviour{}
			p.serve(t, m, "v1", bad)
			p.serve(t, m, "v1", good)
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			waitFor(ctx, t, "both backends answering", func() error {
				callMany(ctx, call, 20)
				if bad.calls.Load() == 0 || good.calls.Load() == 0 {
					return fmt.Errorf("calls %d and %d", bad.calls.Load(), good.calls.Load())
				}
				return nil
			})
			bad.failCode.Store(uint32(codes.Unavailable))
			callMany(ctx, call, 20) // the failing backend collects its consecutive errors
			before := bad.calls.Load()
			o, _, _ := callMany(ctx, call, 200)
			if n := bad.calls.Load() - before; n > 5 {
				t.Errorf("the failing backend got %d of 200 calls after ejection (outcomes %v), want ≈0", n, o)
			}
		},
	},
	{
		name: "fault abort and delay",
		yaml: `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  http:
  - match: [{headers: {x-fault: {exact: abort}}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
    retries: {attempts: 0}
    route: [{destination: {host: {{host}}}}]
  - match: [{headers: {x-fault: {exact: delay}}}]
    fault: {delay: {fixedDelay: 150ms}}
    route: [{destination: {host: {{host}}}}]
  - route: [{destination: {host: {{host}}}}]
`,
		run: func(t *testing.T, m *secureMesh, p protocol) {
			ctx := testContext(t)
			p.serve(t, m, "v1", &behaviour{})
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			ready(ctx, t, call)
			o, _, _ := callMany(ctx, call, 1000, "x-fault", "abort")
			if share := float64(o[unavailable]) / 10; math.Abs(share-50) > 8 || o[unavailable]+o[ok] != 1000 {
				t.Errorf("abort at 50%%: outcomes %v, want 50±8%% unavailable", o)
			}
			for range 3 {
				start := time.Now()
				if r := call(ctx, "x-fault", "delay"); r.outcome != ok || time.Since(start) < 150*time.Millisecond {
					t.Errorf("delayed call = %s after %v, want ok after ≥150ms", r.outcome, time.Since(start))
				}
			}
		},
	},
	{
		name: "mTLS STRICT",
		yaml: `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
`,
		run: func(t *testing.T, m *secureMesh, p protocol) {
			ctx := testContext(t)
			p.serve(t, m, "v1", &behaviour{})
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			ready(ctx, t, call)
			anon := p.client(t, m, mesh.WithControlPlane(m.addr))
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if r := anon(cctx); r.outcome == ok {
				t.Errorf("a client without an identity reached a STRICT server")
			}
		},
	},
	{
		name: "authorization denies another identity",
		yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: default}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/client"]}}]
`,
		run: func(t *testing.T, m *secureMesh, p protocol) {
			ctx := testContext(t)
			p.serve(t, m, "v1", &behaviour{})
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			ready(ctx, t, call)
			intruder := p.client(t, m, clientOpts(m.as("intruder-token"))...)
			waitFor(ctx, t, "the intruder refused", func() error {
				if r := intruder(ctx); r.outcome != denied {
					return fmt.Errorf("intruder: %s (%v)", r.outcome, r.err)
				}
				return nil
			})
		},
	},
	{
		name: "JWT claims",
		yaml: `
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules:
  - issuer: https://issuer.example
    jwks: '{{jwks}}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: admins, namespace: default}
spec:
  action: ALLOW
  rules:
  - when: [{key: "request.auth.claims[group]", values: ["admins"]}]
`,
		run: func(t *testing.T, m *secureMesh, p protocol) {
			ctx := testContext(t)
			p.serve(t, m, "v1", &behaviour{})
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			admin, user, forged := scenarioTokens.sign("admins", false), scenarioTokens.sign("users", false), scenarioTokens.sign("admins", true)
			ready(ctx, t, call, "authorization", admin)
			for _, tc := range []struct{ name, token, want string }{
				{"admin", admin, ok}, {"user", user, denied}, {"no token", "", denied}, {"forged", forged, unauthenticated},
			} {
				var h []string
				if tc.token != "" {
					h = []string{"authorization", tc.token}
				}
				if r := call(ctx, h...); r.outcome != tc.want {
					t.Errorf("%s token: %s (%v), want %s", tc.name, r.outcome, r.err, tc.want)
				}
			}
		},
	},
}

// scenarioTokens signs the JWTs of the JWT scenario.
var scenarioTokens = newTokens()

type tokens struct {
	key, other *rsa.PrivateKey
	jwks       string
}

func newTokens() *tokens {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	return &tokens{key: key, other: other, jwks: string(jwks)}
}

func (tk *tokens) sign(group string, forged bool) string {
	k := tk.key
	if forged {
		k = tk.other
	}
	s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	tok, _ := josejwt.Signed(s).Claims(josejwt.Claims{Issuer: "https://issuer.example", Subject: "alice", Expiry: josejwt.NewNumericDate(time.Now().Add(time.Hour))}).Claims(map[string]any{"group": group}).Serialize()
	return "Bearer " + tok
}

// TestScenariosOnBothProtocols runs each scenario against the gRPC and the
// HTTP service with the same configuration.
func TestScenariosOnBothProtocols(t *testing.T) {
	for _, s := range scenarios {
		for _, p := range protocols {
			t.Run(s.name+"/"+p.name, func(t *testing.T) {
				yaml := strings.ReplaceAll(s.config(p.host), "{{jwks}}", scenarioTokens.jwks)
				m := startSecureMesh(t, yaml)
				s.run(t, m, p)
			})
		}
	}
}
