package recycle

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/stats"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
)

const testTimeout = 20 * time.Second

func TestRegistered(t *testing.T) {
	b := balancer.Get(Name)
	if b == nil {
		t.Fatalf("balancer.Get(%q) = nil, want the recycle builder", Name)
	}
	if got := b.Name(); got != "trellis_recycle" {
		t.Errorf("Name() = %q, want %q", got, "trellis_recycle")
	}
}

// TestRecyclesSequential: 100 sequential RPCs with maxRequestsPerConnection
// 10 all succeed, over at least 9 connections, none of which carries more
// than 10 + slack RPCs.
//
// The slack is the RPCs picked onto a connection while its replacement
// connects (make-before-break): one sequential RPC on loopback takes about
// as long as a TCP and HTTP/2 handshake, so a few. The server answers each
// RPC after 1ms here, longer than a loopback handshake, so that the slack is
// small; 3 allows for a loaded machine.
func TestRecyclesSequential(t *testing.T) {
	const (
		limit = 10
		rpcs  = 100
		slack = 3
	)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	b := startBackend(t)
	b.delay.Store(int64(time.Millisecond))
	client, _ := dial(t, []*backend{b}, limit, "round_robin")
	for i := range rpcs {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
			t.Fatalf("RPC %d: SayHello() = %v, want success", i, err)
		}
	}
	perConn := b.rpcsPerConn()
	t.Logf("RPCs per connection: %v", perConn)
	if len(perConn) < rpcs/(limit+1) {
		t.Errorf("server accepted %d connections, want at least %d", len(perConn), rpcs/(limit+1))
	}
	for i, n := range perConn {
		if n > limit+slack {
			t.Errorf("connection %d carried %d RPCs, want at most %d + %d", i, n, limit, slack)
		}
	}
	b.waitConnsClosed(ctx, t, len(perConn)-1)
}

// TestRecyclesUnderLoad: 8 workers send 400 RPCs of 2ms each with
// maxRequestsPerConnection 20: connections are replaced while RPCs are in
// flight on them, and none fails, as the old ones drain. The replaced
// connections are closed once drained.
func TestRecyclesUnderLoad(t *testing.T) {
	const (
		limit     = 20
		workers   = 8
		perWorker = 50
	)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	// Pick never returns a connection that has been shut down.
	var shutPicks atomic.Int64
	testPicked = func(c *conn) {
		if c.shut.Load() {
			shutPicks.Add(1)
		}
	}
	defer func() { testPicked = nil }()
	b := startBackend(t)
	b.delay.Store(int64(2 * time.Millisecond))
	client, _ := dial(t, []*backend{b}, limit, "round_robin")
	var failures atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
					failures.Add(1)
					t.Errorf("SayHello() = %v, want success", err)
				}
			}
		})
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d RPCs failed, want 0", n, workers*perWorker)
	}
	if n := shutPicks.Load(); n != 0 {
		t.Errorf("Pick returned a connection already shut down %d times, want 0", n)
	}
	perConn := b.rpcsPerConn()
	t.Logf("RPCs per connection: %v", perConn)
	// Each connection carries the limit plus what the workers send while
	// its replacement connects: with 8 in flight, at most about one
	// round of them per RPC time.
	if want := workers * perWorker / (2 * limit); len(perConn) < want {
		t.Errorf("server accepted %d connections, want at least %d", len(perConn), want)
	}
	total := 0
	for _, n := range perConn {
		total += n
	}
	if total < workers*perWorker {
		t.Errorf("server saw %d RPCs, want at least %d", total, workers*perWorker)
	}
	b.waitConnsClosed(ctx, t, len(perConn)-1)
}

// TestRecyclesEachBackend: with round_robin over three backends, traffic
// spreads evenly while each backend's connections are recycled.
func TestRecyclesEachBackend(t *testing.T) {
	const (
		limit = 5
		rpcs  = 300
	)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	backends := []*backend{startBackend(t), startBackend(t), startBackend(t)}
	client, _ := dial(t, backends, limit, "round_robin")
	got := map[string]int{}
	for i := range rpcs {
		reply, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"})
		if err != nil {
			t.Fatalf("RPC %d: SayHello() = %v, want success", i, err)
		}
		got[reply.GetInstance()]++
	}
	for _, b := range backends {
		// Round robin: a third each, give or take the RPCs before every
		// backend was READY.
		if n := got[b.addr]; n < rpcs/3-20 {
			t.Errorf("backend %s answered %d of %d RPCs, want about %d", b.addr, n, rpcs, rpcs/3)
		}
		if n, want := len(b.rpcsPerConn()), rpcs/3/(2*limit); n < want {
			t.Errorf("backend %s accepted %d connections, want at least %d", b.addr, n, want)
		}
	}
}

// TestReplacementFails: when the backend stops accepting connections, RPCs
// go on over the connection it has, replacements are attempted with
// backoff, not in a loop, and succeed once it accepts again.
func TestReplacementFails(t *testing.T) {
	defer func(base, maxBackoff time.Duration) { retryBackoffBase, retryBackoffMax = base, maxBackoff }(retryBackoffBase, retryBackoffMax)
	retryBackoffBase, retryBackoffMax = 10*time.Millisecond, 40*time.Millisecond
	const limit = 5
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	b := startBackend(t)
	client, dials := dial(t, []*backend{b}, limit, "round_robin")
	if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
		t.Fatalf("SayHello() = %v, want success", err)
	}
	b.stopAccepting(t)

	start := time.Now()
	rpcs := 0
	// Until a few replacements have been tried and refused.
	for dials.Load() < 5 {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
			t.Fatalf("SayHello() = %v after %d RPCs with the backend refusing connections, want success", err, rpcs)
		}
		rpcs++
	}
	// And some more.
	for range 200 {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
			t.Fatalf("SayHello() = %v with the backend refusing connections, want success", err)
		}
	}
	elapsed := time.Since(start)
	// One attempt at most every 8ms (10ms - 20% jitter), plus the first.
	n := dials.Load()
	if limit := 2 + int64(elapsed/(8*time.Millisecond)); n > limit {
		t.Errorf("%d dials in %v with the backend refusing connections, want at most %d: one per backoff", n, elapsed, limit)
	}
	if got := b.rpcsPerConn(); len(got) != 1 {
		t.Errorf("RPCs per connection = %v, want one connection", got)
	}

	// Accepting again: the next attempt replaces the connection.
	b.startAccepting(t)
	for len(b.rpcsPerConn()) < 2 {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"}); err != nil {
			t.Fatalf("SayHello() = %v waiting for a replacement connection, want success", err)
		}
	}
	b.waitConnsClosed(ctx, t, 1)
}

// TestHealthFollowsReplacements: with client-side health checking, the
// child's health listener follows each replacement connection: a backend
// that turns NOT_SERVING after several replacements is avoided, and picked
// again when SERVING.
func TestHealthFollowsReplacements(t *testing.T) {
	const limit = 3
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	backends := []*backend{startBackend(t), startBackend(t)}
	client, _ := dialConfig(t, backends, fmt.Sprintf(`{
		"loadBalancingConfig":[{"trellis_recycle":{"maxRequestsPerConnection":%d,"childPolicy":[{"round_robin":{}}]}}],
		"healthCheckConfig":{"serviceName":""}}`, limit))
	bad := backends[0]
	got := map[string]int{}
	for range 60 {
		reply, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"})
		if err != nil {
			t.Fatalf("SayHello() = %v, want success", err)
		}
		got[reply.GetInstance()]++
	}
	if n := len(bad.rpcsPerConn()); n < 3 {
		t.Fatalf("backend accepted %d connections for %d RPCs, want at least 3", n, got[bad.addr])
	}

	bad.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	for streak := 0; streak < 20; {
		reply, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"})
		if err != nil {
			t.Fatalf("SayHello() = %v waiting for the NOT_SERVING backend to be avoided, want success", err)
		}
		if reply.GetInstance() == bad.addr {
			streak = 0
		} else {
			streak++
		}
	}
	bad.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for {
		reply, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "t"})
		if err != nil {
			t.Fatalf("SayHello() = %v waiting for the SERVING backend to come back, want success", err)
		}
		if reply.GetInstance() == bad.addr {
			break
		}
	}
}

// backend is a greeter server on loopback that counts the RPCs on each of
// its connections.
type backend struct {
	addr   string
	srv    *grpc.Server
	health *health.Server
	delay  atomic.Int64 // before each answer, a time.Duration

	mu    sync.Mutex
	lis   net.Listener
	conns []*serverConn // in order of acceptance
}

type serverConn struct {
	rpcs   atomic.Int64
	closed atomic.Bool
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	b := &backend{addr: lis.Addr().String(), lis: lis, health: health.NewServer()}
	b.srv = grpc.NewServer(
		grpc.StatsHandler(b),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if d := time.Duration(b.delay.Load()); d > 0 {
				timer := time.NewTimer(d)
				defer timer.Stop()
				select {
				case <-timer.C:
				case <-ctx.Done():
				}
			}
			return h(ctx, req)
		}),
	)
	greeterpb.RegisterGreeterServer(b.srv, &greeter.Server{Version: "v1", Instance: b.addr})
	healthpb.RegisterHealthServer(b.srv, b.health)
	go b.srv.Serve(lis)
	t.Cleanup(b.srv.Stop)
	return b
}

// stopAccepting closes the listener: the connections accepted keep
// serving, new ones are refused.
func (b *backend) stopAccepting(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.lis.Close(); err != nil {
		t.Fatalf("closing the listener: %v", err)
	}
}

// startAccepting listens again on the same address.
func (b *backend) startAccepting(t *testing.T) {
	t.Helper()
	lis, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatalf("net.Listen(%q) = %v", b.addr, err)
	}
	b.mu.Lock()
	b.lis = lis
	b.mu.Unlock()
	go b.srv.Serve(lis)
}

// rpcsPerConn returns the number of RPCs each connection carried, in order
// of acceptance.
func (b *backend) rpcsPerConn() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n []int
	for _, c := range b.conns {
		n = append(n, int(c.rpcs.Load()))
	}
	return n
}

// waitConnsClosed waits until at least n connections are closed: the
// client closes a replaced connection once drained.
func (b *backend) waitConnsClosed(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	for {
		closed := 0
		b.mu.Lock()
		for _, c := range b.conns {
			if c.closed.Load() {
				closed++
			}
		}
		b.mu.Unlock()
		if closed >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d connections closed, want at least %d: replaced connections closed once drained", closed, n)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

type connKey struct{}

func (b *backend) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	c := &serverConn{}
	b.mu.Lock()
	b.conns = append(b.conns, c)
	b.mu.Unlock()
	return context.WithValue(ctx, connKey{}, c)
}

func (b *backend) HandleConn(ctx context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnEnd); ok {
		if c, ok := ctx.Value(connKey{}).(*serverConn); ok {
			c.closed.Store(true)
		}
	}
}

func (b *backend) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if c, ok := ctx.Value(connKey{}).(*serverConn); ok && info.FullMethodName == greeterpb.Greeter_SayHello_FullMethodName {
		c.rpcs.Add(1)
	}
	return ctx
}

func (b *backend) HandleRPC(context.Context, stats.RPCStats) {}

// dial connects to the backends through a manual resolver, with
// trellis_recycle over child in the default service config. It returns a
// count of the client's connection attempts.
func dial(t *testing.T, backends []*backend, maxRequests int, child string) (greeterpb.GreeterClient, *atomic.Int64) {
	t.Helper()
	return dialConfig(t, backends, fmt.Sprintf(`{"loadBalancingConfig":[{"trellis_recycle":{
		"maxRequestsPerConnection":%d,"childPolicy":[{%q:{}}]}}]}`, maxRequests, child))
}

func dialConfig(t *testing.T, backends []*backend, serviceConfig string) (greeterpb.GreeterClient, *atomic.Int64) {
	t.Helper()
	r := manual.NewBuilderWithScheme("recycle-test")
	var s resolver.State
	for _, b := range backends {
		s.Endpoints = append(s.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: b.addr}}})
	}
	r.InitialState(s)
	dials := &atomic.Int64{}
	var d net.Dialer
	cc, err := grpc.NewClient(r.Scheme()+":///greeter",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, "tcp", addr)
		}),
	)
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return greeterpb.NewGreeterClient(cc), dials
}
