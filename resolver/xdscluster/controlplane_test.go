package xdscluster

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trellismesh/trellis/internal/registrationpb"
	"github.com/trellismesh/trellis/internal/xdsclient"
	"github.com/trellismesh/trellis/xdsserver"
)

const (
	greeterCluster = "outbound|9080||greeter.default.svc.cluster.local"
	greeterEntry   = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter}
spec:
  hosts: [greeter]
  resolution: STATIC
  ports: [{number: 9080, name: http}]
`
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startControlPlane runs the Trellis control plane with a config directory
// holding config, and returns an xdsclient.Client connected to it.
func startControlPlane(t *testing.T, config string) (addr string, c *xdsclient.Client) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := xdsserver.New(xdsserver.WithConfigDir(dir), xdsserver.WithWarmup(-1), xdsserver.WithInsecureRegistration())
	if err != nil {
		t.Fatalf("xdsserver.New() = %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, xdsserver.ErrServerClosed) {
			t.Errorf("Serve() = %v, want ErrServerClosed", err)
		}
	})
	c, err = xdsclient.New(xdsclient.Config{Server: lis.Addr().String(), ResourceTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() }) // runs before the server's cleanup
	return lis.Addr().String(), c
}

// watch watches cluster and returns the channel of its States; the watch
// ends at cleanup.
func watch(t *testing.T, c *xdsclient.Client, cluster string) <-chan *State {
	t.Helper()
	ch := make(chan *State, 100)
	cancel := Watch(c, cluster, func(s *State) {
		select {
		case ch <- s:
		default:
			t.Errorf("Watch(%s): too many States", cluster)
		}
	})
	t.Cleanup(cancel)
	return ch
}

// waitState returns the first State from ch that ok accepts.
func waitState(ctx context.Context, t *testing.T, ch <-chan *State, what string, ok func(*State) bool) *State {
	t.Helper()
	var last *State
	for {
		select {
		case s := <-ch:
			if ok(s) {
				return s
			}
			last = s
		case <-ctx.Done():
			t.Fatalf("waiting for %s: last State %+v", what, last)
		}
	}
}

// TestDestinationRules: the State of a cluster carries the traffic policy
// of its DestinationRule as the control plane translates it.
func TestDestinationRules(t *testing.T) {
	static := greeterEntry + "  endpoints: [{address: 10.0.0.1}, {address: 10.0.0.2}]\n"
	eps := []Endpoint{
		{Address: "10.0.0.1:9080", Weight: 1, Locality: "//", LocalityWeight: 2},
		{Address: "10.0.0.2:9080", Weight: 1, Locality: "//", LocalityWeight: 2},
	}
	rr := LBConfig{Policy: RoundRobin}
	for _, tc := range []struct {
		name   string
		policy string // the DestinationRule's trafficPolicy, in YAML flow style
		want   State
	}{
		{"no rule", "", State{LB: rr}},
		{"ROUND_ROBIN", "{loadBalancer: {simple: ROUND_ROBIN}}", State{LB: rr}},
		{"LEAST_REQUEST", "{loadBalancer: {simple: LEAST_REQUEST}}", State{LB: LBConfig{Policy: LeastRequest, ChoiceCount: 2}}},
		{"RANDOM", "{loadBalancer: {simple: RANDOM}}", State{LB: LBConfig{Policy: Random}}},
		{"consistentHash", "{loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}}}",
			State{LB: LBConfig{Policy: RingHash, MinRingSize: 2048}}},
		{"outlierDetection", "{outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 15s, maxEjectionPercent: 50, minHealthPercent: 25}}",
			State{LB: rr, Outlier: &OutlierConfig{ConsecutiveErrors: 3, ConsecutiveGatewayErrors: 2, Interval: time.Second, BaseEjectionTime: 15 * time.Second, MaxEjectionPercent: 50, MinHealthPercent: 25}}},
		{"outlierDetection defaults", "{outlierDetection: {}, loadBalancer: {simple: LEAST_REQUEST}}",
			State{LB: LBConfig{Policy: LeastRequest, ChoiceCount: 2}, Outlier: &OutlierConfig{ConsecutiveErrors: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 10}}},
		{"connectionPool", "{connectionPool: {http: {http2MaxRequests: 100, maxRequestsPerConnection: 10}}, loadBalancer: {simple: RANDOM}}",
			State{LB: LBConfig{Policy: Random, MaxRequestsPerConnection: 10}, MaxRequests: 100}},
		{"ISTIO_MUTUAL", "{tls: {mode: ISTIO_MUTUAL}}",
			State{LB: rr, TLS: &TLSConfig{SANs: []string{"spiffe://cluster.local/trellis/no-known-identity"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			config := static
			if tc.policy != "" {
				config += "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: greeter}\nspec:\n  host: greeter\n  trafficPolicy: " + tc.policy + "\n"
			}
			_, c := startControlPlane(t, config)
			got := waitState(ctx, t, watch(t, c, greeterCluster), "the cluster", func(*State) bool { return true })
			want := tc.want
			want.Name, want.Endpoints = greeterCluster, eps
			if diff := cmp.Diff(got, &want); diff != "" {
				t.Errorf("State (-got +want):\n%s", diff)
			}
		})
	}
}

// register registers ep with the control plane at addr; closing the
// returned stream's send side deregisters it.
func register(ctx context.Context, t *testing.T, addr string, ep *registrationpb.Endpoint) registrationpb.Registration_RegisterClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	stream, err := registrationpb.NewRegistrationClient(cc).Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&registrationpb.RegisterRequest{Endpoint: ep}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Register(%v) = %v", ep, err)
	}
	return stream
}

func addresses(s *State) []string {
	var out []string
	for _, ep := range s.Endpoints {
		out = append(out, ep.Address)
	}
	return out
}

// TestEndpointChanges: endpoints that register and leave appear in and
// disappear from the State, which is new each time.
func TestEndpointChanges(t *testing.T) {
	ctx := testContext(t)
	addr, c := startControlPlane(t, greeterEntry)
	ch := watch(t, c, greeterCluster)
	has := func(want ...string) func(*State) bool {
		return func(s *State) bool { return s.Err == nil && cmp.Equal(addresses(s), want, cmpEmpty) }
	}
	first := waitState(ctx, t, ch, "no endpoints", has())
	reg := register(ctx, t, addr, &registrationpb.Endpoint{Service: "greeter", Address: "127.0.0.1", Port: 9080, Locality: "r/z"})
	s := waitState(ctx, t, ch, "the registered endpoint", has("127.0.0.1:9080"))
	if diff := cmp.Diff(s.Endpoints, []Endpoint{{Address: "127.0.0.1:9080", Weight: 1, Locality: "r/z/", LocalityWeight: 1}}); diff != "" {
		t.Errorf("Endpoints (-got +want):\n%s", diff)
	}
	register(ctx, t, addr, &registrationpb.Endpoint{Service: "greeter", Address: "127.0.0.2", Port: 9080, Locality: "r/z"})
	waitState(ctx, t, ch, "both endpoints", has("127.0.0.1:9080", "127.0.0.2:9080"))
	if err := reg.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitState(ctx, t, ch, "the endpoint left", has("127.0.0.2:9080"))
	if len(first.Endpoints) != 0 {
		t.Errorf("the first State changed: Endpoints = %v, want none", first.Endpoints)
	}
}

var cmpEmpty = cmp.Comparer(func(a, b []string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return cmp.Equal(a, b)
})

// TestMissingCluster: a cluster the control plane does not have gets a
// State whose Err is ErrNotFound; one that exists does not.
func TestMissingCluster(t *testing.T) {
	ctx := testContext(t)
	_, c := startControlPlane(t, greeterEntry)
	s := waitState(ctx, t, watch(t, c, "outbound|9999||nope.default.svc.cluster.local"), "the missing cluster", func(*State) bool { return true })
	if !errors.Is(s.Err, ErrNotFound) {
		t.Errorf("State.Err of a missing cluster = %v, want ErrNotFound", s.Err)
	}
	if s.Name != "outbound|9999||nope.default.svc.cluster.local" || s.Endpoints != nil || s.TLS != nil {
		t.Errorf("State of a missing cluster = %+v, want only Name and Err", s)
	}
	if s := waitState(ctx, t, watch(t, c, greeterCluster), "the cluster", func(*State) bool { return true }); s.Err != nil {
		t.Errorf("State.Err of %s = %v, want nil", greeterCluster, s.Err)
	}
}

// TestCancel: after cancel, no State arrives even when the cluster changes.
func TestCancel(t *testing.T) {
	ctx := testContext(t)
	addr, c := startControlPlane(t, greeterEntry)
	ch := make(chan *State, 100)
	cancel := Watch(c, greeterCluster, func(s *State) { ch <- s })
	waitState(ctx, t, ch, "the cluster", func(*State) bool { return true })
	cancel()
	cancel() // idempotent
	// A second watch sees the change, the cancelled one must not.
	other := watch(t, c, greeterCluster)
	register(ctx, t, addr, &registrationpb.Endpoint{Service: "greeter", Address: "127.0.0.1", Port: 9080})
	waitState(ctx, t, other, "the registered endpoint", func(s *State) bool { return len(s.Endpoints) == 1 })
	select {
	case s := <-ch:
		t.Errorf("cancelled watch got State %+v", s)
	default:
	}
}

// TestEndpointTLSFromControlPlane: the control plane's per-endpoint TLS
// reaches the State as the HTTP client needs it. Under automatic mTLS the
// endpoint with a serviceAccount is reached over TLS with exactly its
// identity and the one without is plaintext, the cluster keeping its TLS;
// under ISTIO_MUTUAL neither is plaintext.
func TestEndpointTLSFromControlPlane(t *testing.T) {
	entries := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter}
spec:
  hosts: [greeter]
  resolution: STATIC
  ports: [{number: 9080, name: http}]
  endpoints:
  - {address: 10.0.0.1, serviceAccount: greeter}
  - {address: 10.0.0.2}
`
	id := "spiffe://cluster.local/ns/default/sa/greeter"
	for _, tc := range []struct {
		name string
		dr   string
		want []Endpoint
	}{
		{"automatic", "", []Endpoint{
			{Address: "10.0.0.1:9080", Weight: 1, Locality: "//", LocalityWeight: 2, Identity: id},
			{Address: "10.0.0.2:9080", Weight: 1, Locality: "//", LocalityWeight: 2, Plaintext: true},
		}},
		{"ISTIO_MUTUAL", "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: greeter}\nspec: {host: greeter, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n", []Endpoint{
			{Address: "10.0.0.1:9080", Weight: 1, Locality: "//", LocalityWeight: 2, Identity: id},
			{Address: "10.0.0.2:9080", Weight: 1, Locality: "//", LocalityWeight: 2},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			_, c := startControlPlane(t, entries+tc.dr)
			got := waitState(ctx, t, watch(t, c, greeterCluster), "the cluster", func(*State) bool { return true })
			if diff := cmp.Diff(got.TLS, &TLSConfig{SANs: []string{id}}); diff != "" {
				t.Errorf("State.TLS (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(got.Endpoints, tc.want); diff != "" {
				t.Errorf("State.Endpoints (-got +want):\n%s", diff)
			}
		})
	}
}
