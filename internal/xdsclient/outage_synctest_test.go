package xdsclient

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	v3server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// memListener is a net.Listener of in-memory connections (net.Pipe), so
// that a gRPC server and its clients can live in a synctest bubble. While
// it is down, dialing it fails as a refused TCP connection does.
type memListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *memListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15010} }

func (l *memListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// memControlPlane serves ADS from go-control-plane's linear caches, as
// xdsserver does, on a memListener.
type memControlPlane struct {
	caches map[string]*cache.LinearCache
	stop   func()
}

func startMemControlPlane(t *testing.T, lis *memListener, resources map[string]map[string]proto.Message) *memControlPlane {
	t.Helper()
	cp := &memControlPlane{caches: map[string]*cache.LinearCache{}}
	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cache.Cache{},
	}
	for _, url := range typeOrder {
		cp.caches[url] = cache.NewLinearCache(url, cache.WithLogger(discardLogger{}))
		mux.Caches[url] = cp.caches[url]
		for name, m := range resources[url] {
			if err := cp.caches[url].UpdateResource(name, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer()
	v3discoverypb.RegisterAggregatedDiscoveryServiceServer(gs, v3server.NewServer(ctx, mux, nil))
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	var once sync.Once
	cp.stop = func() {
		once.Do(func() {
			cancel()
			gs.Stop() // before the listener closes, so that Serve returns nil
			lis.Close()
			if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				t.Errorf("Serve() = %v", err)
			}
		})
	}
	return cp
}

// TestDayLongOutageInVirtualTime: the HTTP path's xDS client, whose control
// plane is dead for 24 hours (virtual time, in a synctest bubble: the
// whole run takes a moment), keeps every cached resource — no watcher is
// told a resource is gone or in error — keeps trying to reconnect within
// its backoff bounds the whole day, neither giving up nor hammering, and
// takes the configuration of the control plane that comes back.
func TestDayLongOutageInVirtualTime(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { dayLongOutage(t, m.delta) })
		})
	}
}

func dayLongOutage(t *testing.T, delta bool) {
	const (
		lds, rds, cds = "greeter:9080", "greeter-route", "greeter-cluster"
		backoffMin    = 100 * time.Millisecond
		backoffMax    = 30 * time.Second
		outage        = 24 * time.Hour
	)
	resources := map[string]map[string]proto.Message{
		resource.ListenerType: {lds: apiListener(lds, rds)},
		resource.RouteType:    {rds: routeConfig(rds, cds)},
		resource.ClusterType:  {cds: edsCluster(cds, time.Second)},
		resource.EndpointType: {cds: endpoints(cds, "10.0.0.1")},
	}
	lis := newMemListener()
	cp := startMemControlPlane(t, lis, resources)

	var dials atomic.Int64
	var mu sync.Mutex
	current := lis
	c, err := New(Config{
		Server: "passthrough:///control-plane",
		DialOptions: []grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				dials.Add(1)
				mu.Lock()
				l := current
				mu.Unlock()
				return l.dial(ctx)
			}),
		},
		Delta:      delta,
		BackoffMin: backoffMin,
		BackoffMax: backoffMax,
	})
	if err != nil {
		t.Fatal(err)
	}
	recs := map[string]*recorder{}
	for url, byName := range resources {
		for name := range byName {
			r := newRecorder()
			recs[url] = r
			defer c.Watch(url, name, r)()
		}
	}
	time.Sleep(time.Second)
	synctest.Wait()
	for url, r := range recs {
		if n := r.count("update"); n != 1 {
			t.Fatalf("%s: %d updates before the outage, want 1: %v", url, n, r.all())
		}
	}

	cp.stop()
	dials.Store(0)
	time.Sleep(outage)
	synctest.Wait()
	// Watchers hear of the broken connection (as ambient errors, grpc-go's
	// term) but never that a resource is gone, and a new watch is served
	// the cached resource at once.
	for url, r := range recs {
		if n := r.count("notfound"); n > 0 {
			t.Errorf("%s: the watcher was told %d times that the resource does not exist", url, n)
		}
		if n := r.count("update"); n != 1 {
			t.Errorf("%s: %d updates, want the one from before the outage", url, n)
		}
		late := newRecorder()
		cancel := c.Watch(url, firstName(resources[url]), late)
		synctest.Wait()
		if got := late.all(); len(got) == 0 || got[0].kind != "update" || !proto.Equal(got[0].msg, resources[url][firstName(resources[url])]) {
			t.Errorf("%s: a new watch after %v of outage got %v, want the cached resource", url, outage, got)
		}
		cancel()
	}
	// Between one attempt per BackoffMax and one per BackoffMin, and in
	// practice close to the first: the delay grows to its cap and stays.
	n := dials.Load()
	most, least := int64(outage/(backoffMax/2))+50, int64(outage/backoffMax)/2
	t.Logf("%d connection attempts in %v of outage (%.1f s apart on average)", n, outage, outage.Seconds()/float64(n))
	if n < least || n > most {
		t.Errorf("%d connection attempts in %v, want between %d and %d", n, outage, least, most)
	}

	// The control plane comes back with a new endpoint.
	resources[resource.EndpointType][cds] = endpoints(cds, "10.0.0.2")
	back := newMemListener()
	mu.Lock()
	current = back
	mu.Unlock()
	cp = startMemControlPlane(t, back, resources)
	back0 := time.Now()
	dials.Store(0)
	newEndpoint := func() bool {
		for _, e := range recs[resource.EndpointType].all() {
			if e.kind == "update" {
				if a := addresses(e.msg.(*v3endpointpb.ClusterLoadAssignment)); len(a) == 1 && a[0] == "10.0.0.2:9080" {
					return true
				}
			}
		}
		return false
	}
	for !newEndpoint() && time.Since(back0) < 10*time.Minute {
		time.Sleep(time.Second)
		synctest.Wait()
	}
	if !newEndpoint() {
		t.Errorf("the control plane came back but the new endpoint did not arrive in %v (%d dials; last events %v)", time.Since(back0), dials.Load(), lastN(recs[resource.EndpointType].all(), 3))
	}
	took := time.Since(back0)
	t.Logf("the control plane's new configuration arrived %v after it came back", took)
	// The next stream attempt comes within BackoffMax; the connection
	// under it within grpc-go's own reconnect backoff (at most 120 s, ±20 %).
	if limit := backoffMax + 144*time.Second; took > limit {
		t.Errorf("the new configuration arrived %v after the control plane came back, want within %v", took, limit)
	}
	c.Close()
	cp.stop()
}

// firstName returns a name of m (the test's maps hold one).
func firstName(m map[string]proto.Message) string {
	for name := range m {
		return name
	}
	return ""
}

func lastN(e []event, n int) []event { return e[max(0, len(e)-n):] }
