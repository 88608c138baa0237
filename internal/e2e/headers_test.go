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

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/trellismesh/trellis/mesh"
)

// TestRepeatedHeaderMatchesJoinedValue: authorization sees a repeated
// header as its values joined with ",", as Envoy does (CVE-2020-25017):
// "x-tenant: secret" plus "x-tenant: public" is "secret,public", which an
// ALLOW on "public" does not admit, so the handler, which reads "secret",
// never runs. Over gRPC (metadata) and HTTP, through the mesh clients,
// with the policy from Istio YAML.
func TestRepeatedHeaderMatchesJoinedValue(t *testing.T) {
	const policy = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tenant-public, namespace: default}
spec:
  action: ALLOW
  rules:
  - when: [{key: "request.headers[x-tenant]", values: [public]}]
`
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testContext(t)
			m := startSecureMesh(t, policy)
			seen := &tenantsSeen{}
			seen.serve(t, m, p)
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			ready(ctx, t, call, "x-tenant", "public")
			for _, tc := range []struct {
				name    string
				headers []string
				want    string
			}{
				{"public", []string{"x-tenant", "public"}, ok},
				{"secret then public", []string{"x-tenant", "secret", "x-tenant", "public"}, denied},
				{"public then secret", []string{"x-tenant", "public", "x-tenant", "secret"}, denied},
				{"public twice", []string{"x-tenant", "public", "x-tenant", "public"}, denied},
				{"secret", []string{"x-tenant", "secret"}, denied},
				{"none", nil, denied},
			} {
				before := seen.count()
				r := call(ctx, tc.headers...)
				if r.outcome != tc.want {
					t.Errorf("%s: outcome %s (%v), want %s", tc.name, r.outcome, r.err, tc.want)
				}
				got := seen.since(before)
				if tc.want == ok {
					if len(got) != 1 || strings.Join(got[0], ",") != "public" {
						t.Errorf("%s: the handler saw x-tenant %q, want one call with [public]", tc.name, got)
					}
				} else if len(got) > 0 {
					t.Errorf("%s: the handler ran with x-tenant %q; want it never to run", tc.name, got)
				}
			}
		})
	}
}

// tenantsSeen records the x-tenant values each admitted call's handler
// saw.
type tenantsSeen struct {
	mu   sync.Mutex
	seen [][]string
}

func (s *tenantsSeen) record(vals []string) {
	s.mu.Lock()
	s.seen = append(s.seen, slices.Clone(vals))
	s.mu.Unlock()
}

func (s *tenantsSeen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

func (s *tenantsSeen) since(n int) [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen[n:])
}

// serve starts p's server (v1, its protocol's identity, and opts), recording
// behind the server's policy what the handler sees.
func (s *tenantsSeen) serve(t *testing.T, m *secureMesh, p protocol, opts ...mesh.EndpointOption) {
	t.Helper()
	if p.name == "grpc" {
		// A chained interceptor runs after the mesh's policy check, where
		// the handler would.
		rec := grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			s.record(md.Get("x-tenant"))
			return h(ctx, req)
		})
		startGreeter(t, m.addr, "v1", append(serverOpts(m.as(p.token), mesh.WithServerOptions(rec)), serverOpts(opts)...)...)
		return
	}
	inner := (&behaviour{}).handler("v1", "")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.record(r.Header.Values("X-Tenant"))
		inner.ServeHTTP(w, r)
	})
	srv, err := mesh.NewHTTPServer(h, append(httpServerOpts(m.as(p.token), mesh.WithService(p.host, "v1"), mesh.WithServicePort(9080)), httpServerOpts(opts)...)...)
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
		if err := <-done; !errors.Is(err, mesh.ErrServerClosed) {
			t.Errorf("Serve() = %v, want mesh.ErrServerClosed", err)
		}
	})
}

// TestRouteOnRepeatedHeaderMatchesJoinedValue: routing matches a repeated
// header as authorization does, on the values joined with ",": a route on
// "x-tenant: public" does not take a call carrying "secret" and "public",
// with gRPC metadata and with HTTP headers, including an http.Header that
// holds the one header under two spellings of its name.
func TestRouteOnRepeatedHeaderMatchesJoinedValue(t *testing.T) {
	const routes = subsets + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  http:
  - match: [{headers: {x-tenant: {exact: public}}}]
    route: [{destination: {host: {{host}}, subset: v2}}]
  - route: [{destination: {host: {{host}}, subset: v1}}]
`
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testContext(t)
			m := startSecureMesh(t, strings.ReplaceAll(routes, "{{host}}", p.host))
			p.serve(t, m, "v1", &behaviour{})
			p.serve(t, m, "v2", &behaviour{})
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			ready(ctx, t, call)
			waitFor(ctx, t, "the header route to v2", func() error {
				if r := call(ctx, "x-tenant", "public"); r.version != "v2" {
					return fmt.Errorf("version %q (%s: %v)", r.version, r.outcome, r.err)
				}
				return nil
			})
			for _, tc := range []struct {
				name    string
				headers []string
				want    string
			}{
				{"public", []string{"x-tenant", "public"}, "v2"},
				{"secret then public", []string{"x-tenant", "secret", "x-tenant", "public"}, "v1"},
				{"public then secret", []string{"x-tenant", "public", "x-tenant", "secret"}, "v1"},
				{"comma-separated", []string{"x-tenant", "secret,public"}, "v1"},
			} {
				if _, v, last := callMany(ctx, call, 20, tc.headers...); v[tc.want] != 20 {
					t.Errorf("%s: versions %v (last failure %v), want 20 %s", tc.name, v, last.err, tc.want)
				}
			}
		})
	}
	t.Run("http/two spellings of one name", func(t *testing.T) {
		ctx := testContext(t)
		m := startSecureMesh(t, strings.ReplaceAll(routes, "{{host}}", "hello"))
		hp := protocols[1]
		hp.serve(t, m, "v1", &behaviour{})
		hp.serve(t, m, "v2", &behaviour{})
		call := hp.client(t, m, clientOpts(m.as("client-token"))...)
		ready(ctx, t, call, "x-tenant", "public")
		tr := mesh.NewTransport(transportOpts(m.as("client-token"), mesh.WithMeshOnly())...)
		t.Cleanup(func() { tr.Close() })
		for range 20 {
			// On the wire this is two x-tenant lines, which the server joins
			// as "public,secret"; the route must see the same.
			version := getVersion(ctx, t, tr, map[string][]string{"X-Tenant": {"public"}, "x-tenant": {"secret"}})
			if version != "v1" {
				t.Fatalf("X-Tenant: public and x-tenant: secret went to %q, want v1", version)
			}
		}
	})
}

// getVersion sends GET http://hello:9080/hello with headers set on the
// map as given, and returns the version that answered.
func getVersion(ctx context.Context, t *testing.T, rt http.RoundTripper, headers map[string][]string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://hello:9080/hello", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %s %s", resp.Status, body)
	}
	for _, v := range []string{"v1", "v2"} {
		if strings.Contains(string(body), `"version":"`+v+`"`) {
			return v
		}
	}
	t.Fatalf("GET: no version in %s", body)
	return ""
}
