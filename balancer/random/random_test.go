package random

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/serviceconfig"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
)

const testTimeout = 20 * time.Second

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		json    string
		want    serviceconfig.LoadBalancingConfig
		wantErr string
	}{
		{name: "empty object", json: `{}`, want: &Config{}},
		{name: "empty object with spaces", json: " { } ", want: &Config{}},
		{name: "null", json: `null`, want: &Config{}},
		{name: "nothing", json: ``, want: &Config{}},
		{name: "unknown field", json: `{"choiceCount":2}`, wantErr: `random: config {"choiceCount":2}: must be an empty JSON object: json: unknown field "choiceCount"`},
		{name: "list", json: `[]`, wantErr: `random: config []: must be an empty JSON object`},
		{name: "string", json: `"random"`, wantErr: `random: config "random": must be an empty JSON object`},
		{name: "two objects", json: `{} {}`, wantErr: `random: config {} {}: must be a single JSON object`},
		{name: "broken", json: `{`, wantErr: `random: config {: must be an empty JSON object`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := builder{}.ParseConfig(json.RawMessage(tc.json))
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("ParseConfig(%s) = %v, want error starting with %q", tc.json, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig(%s) = %v, want no error", tc.json, err)
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("ParseConfig(%s) mismatch (-got +want):\n%s", tc.json, diff)
			}
		})
	}
}

func TestRegistered(t *testing.T) {
	b := balancer.Get(Name)
	if b == nil {
		t.Fatalf("balancer.Get(%q) = nil, want the random builder", Name)
	}
	if got := b.Name(); got != "trellis_random" {
		t.Errorf("Name() = %q, want %q", got, "trellis_random")
	}
}

// TestSpreadsEvenly sends 3000 RPCs over three backends: each gets its
// third, within a band of 10 standard deviations.
func TestSpreadsEvenly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	backends := startBackends(t, 3)
	client := dial(t, backends)
	waitForAll(ctx, t, client, backends)

	const rpcs = 3000
	got := countReplies(ctx, t, client, rpcs)
	for _, b := range backends {
		// Expected 1000 each; the standard deviation is about 26.
		if n := got[b.addr]; n < 750 || n > 1250 {
			t.Errorf("backend %s answered %d of %d RPCs, want 750..1250 (all: %v)", b.addr, n, rpcs, got)
		}
	}
}

// TestSkipsStoppedBackend stops one of three backends: once the client has
// noticed, every RPC succeeds on the other two, both of which keep getting
// about half.
func TestSkipsStoppedBackend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	backends := startBackends(t, 3)
	client := dial(t, backends)
	waitForAll(ctx, t, client, backends)

	backends[0].srv.Stop()
	// RPCs already on their way to the stopped server may fail until the
	// client sees the connection close; wait for a run of successes.
	for streak := 0; streak < 50; {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("no run of successful RPCs after stopping %s: %v", backends[0].addr, err)
			}
			streak = 0
			continue
		}
		streak++
	}

	const rpcs = 600
	got := countReplies(ctx, t, client, rpcs)
	if n := got[backends[0].addr]; n != 0 {
		t.Errorf("stopped backend answered %d RPCs", n)
	}
	for _, b := range backends[1:] {
		// Expected 300 each; the standard deviation is about 12.
		if n := got[b.addr]; n < 200 || n > 400 {
			t.Errorf("backend %s answered %d of %d RPCs, want 200..400 (all: %v)", b.addr, n, rpcs, got)
		}
	}
}

type backend struct {
	addr string
	srv  *grpc.Server
}

// startBackends starts n greeter servers on loopback, each answering with
// its address as Instance.
func startBackends(t *testing.T, n int) []*backend {
	t.Helper()
	var backends []*backend
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("net.Listen() = %v", err)
		}
		b := &backend{addr: lis.Addr().String()}
		b.srv = grpc.NewServer()
		greeterpb.RegisterGreeterServer(b.srv, &greeter.Server{Version: "v1", Instance: b.addr})
		go b.srv.Serve(lis)
		t.Cleanup(b.srv.Stop)
		backends = append(backends, b)
	}
	return backends
}

// dial connects to the backends through a manual resolver, with trellis_random
// selected by the default service config.
func dial(t *testing.T, backends []*backend) greeterpb.GreeterClient {
	t.Helper()
	var endpoints []resolver.Endpoint
	for _, b := range backends {
		endpoints = append(endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: b.addr}}})
	}
	r := manual.NewBuilderWithScheme("random-test")
	r.InitialState(resolver.State{Endpoints: endpoints})
	cc, err := grpc.NewClient(r.Scheme()+":///greeter",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"trellis_random":{}}]}`),
	)
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return greeterpb.NewGreeterClient(cc)
}

// waitForAll sends RPCs until every backend has answered one.
func waitForAll(ctx context.Context, t *testing.T, client greeterpb.GreeterClient, backends []*backend) {
	t.Helper()
	seen := map[string]bool{}
	for len(seen) < len(backends) {
		reply, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"})
		if err != nil {
			t.Fatalf("SayHello() = %v while waiting for all backends (seen %v)", err, seen)
		}
		seen[reply.GetInstance()] = true
	}
}

// countReplies sends n RPCs, all of which must succeed, and counts the
// replies per instance.
func countReplies(ctx context.Context, t *testing.T, client greeterpb.GreeterClient, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		reply, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"})
		if err != nil {
			t.Fatalf("SayHello() #%d = %v", i, err)
		}
		got[reply.GetInstance()]++
	}
	return got
}
