package xdsclient

import (
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
)

// TestDeletion: in state of the world a listener missing from an LDS
// response is deleted, while a route configuration missing from an RDS
// response is not; in delta, removed_resources delete.
func TestDeletion(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testContext(t)
			f := startFake(t, "", map[string]map[string]proto.Message{
				resource.ListenerType: {"a": apiListener("a", "r1"), "b": apiListener("b", "r2")},
				resource.RouteType:    {"r1": routeConfig("r1", "c1"), "r2": routeConfig("r2", "c2")},
			})
			c := newClient(t, Config{Server: f.addr, Delta: mode.delta})
			rec := map[string]*recorder{}
			for _, w := range []struct{ typ, name string }{
				{resource.ListenerType, "a"}, {resource.ListenerType, "b"},
				{resource.RouteType, "r1"}, {resource.RouteType, "r2"},
			} {
				rec[w.name] = newRecorder()
				defer c.Watch(w.typ, w.name, rec[w.name])()
				rec[w.name].waitUpdate(ctx, t, w.name, nil)
			}

			if err := f.caches[resource.ListenerType].DeleteResource("b"); err != nil {
				t.Fatal(err)
			}
			rec["b"].wait(ctx, t, "NotFound of the deleted listener", func(e event) bool { return e.kind == "notfound" })
			if err := f.caches[resource.RouteType].UpdateResource("r1", routeConfig("r1", "c3")); err != nil {
				t.Fatal(err)
			}
			rec["r1"].waitUpdate(ctx, t, "the new r1", func(m proto.Message) bool {
				return m.(*v3routepb.RouteConfiguration).GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster() == "c3"
			})
			flush(ctx, t, c)
			for name, want := range map[string][]string{"a": {"update"}, "b": {"update", "notfound"}, "r1": {"update", "update"}, "r2": {"update"}} {
				var got []string
				for _, e := range rec[name].all() {
					got = append(got, e.kind)
				}
				if diff := cmp.Diff(got, want); diff != "" {
					t.Errorf("events of %s (-got +want):\n%s", name, diff)
				}
			}
			if st := status(c, resource.ListenerType, "b"); !st.NotFound || st.Resource != nil {
				t.Errorf("Status of the deleted listener = %+v, want NotFound and no resource", st)
			}

			// It comes back.
			if err := f.caches[resource.ListenerType].UpdateResource("b", apiListener("b", "r2")); err != nil {
				t.Fatal(err)
			}
			rec["b"].waitUpdate(ctx, t, "the listener back", nil)
		})
	}
}

func status(c *Client, typeURL, name string) ResourceStatus {
	for _, r := range c.Status().Resources {
		if r.TypeURL == typeURL && r.Name == name {
			return r
		}
	}
	return ResourceStatus{}
}

// TestDoesNotExistTimer: a resource that never comes is not found after
// ResourceTimeout of connected time, and never while the control plane is
// unreachable.
func TestDoesNotExistTimer(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for _, mode := range modes {
		t.Run(mode.name+"/connected", func(t *testing.T) {
			ctx := testContext(t)
			f := startFake(t, "", map[string]map[string]proto.Message{
				resource.EndpointType: {"present": endpoints("present", "10.0.0.1")},
			})
			c := newClient(t, Config{Server: f.addr, Delta: mode.delta, ResourceTimeout: timeout})
			present, absent := newRecorder(), newRecorder()
			defer c.Watch(resource.EndpointType, "present", present)()
			start := time.Now()
			defer c.Watch(resource.EndpointType, "absent", absent)()
			absent.wait(ctx, t, "NotFound", func(e event) bool { return e.kind == "notfound" })
			if d := time.Since(start); d < timeout {
				t.Errorf("NotFound after %v, want after ResourceTimeout %v", d, timeout)
			}
			present.waitUpdate(ctx, t, "present", nil)
			// It is created later: the watch still gets it.
			if err := f.caches[resource.EndpointType].UpdateResource("absent", endpoints("absent", "10.0.0.2")); err != nil {
				t.Fatal(err)
			}
			absent.waitUpdate(ctx, t, "the resource once created", nil)
			flush(ctx, t, c)
			if n := present.count("notfound"); n != 0 {
				t.Errorf("the present resource got %d NotFound, want 0", n)
			}
		})

		t.Run(mode.name+"/unreachable", func(t *testing.T) {
			ctx := testContext(t)
			addr := freeAddr(t)
			c := newClient(t, Config{Server: addr, Delta: mode.delta, ResourceTimeout: timeout, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
			w := newRecorder()
			start := time.Now()
			defer c.Watch(resource.ClusterType, "absent", w)()
			// Connection errors keep coming while the control plane is
			// away, for several timeouts, and no NotFound among them.
			for i := 0; i < 3 || time.Since(start) < 3*timeout; i++ {
				e := w.wait(ctx, t, "a connection error", func(event) bool { return true })
				if e.kind != "error" || !strings.Contains(e.err.Error(), addr) {
					t.Fatalf("while unreachable, got %v, want connection errors only", e)
				}
			}
			startFake(t, addr, nil)
			w.wait(ctx, t, "NotFound once connected", func(e event) bool { return e.kind == "notfound" })
		})

		t.Run(mode.name+"/disconnected-before-expiry", func(t *testing.T) {
			ctx := testContext(t)
			const long = 2 * time.Second
			f := startFake(t, "", nil)
			c := newClient(t, Config{Server: f.addr, Delta: mode.delta, ResourceTimeout: long, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
			w := newRecorder()
			start := time.Now()
			defer c.Watch(resource.ClusterType, "absent", w)()
			waitFor(ctx, t, "the subscription at the server", func() bool { return slices.Contains(f.subscribed(resource.ClusterType), "absent") })
			f.stop()
			if time.Since(start) >= long {
				t.Skip("the machine is too slow to stop the server before the timer")
			}
			for time.Since(start) < long+long/2 {
				e := w.wait(ctx, t, "a connection error", func(event) bool { return true })
				if e.kind != "error" {
					t.Fatalf("after the control plane stopped, got %v, want connection errors only", e)
				}
			}
		})
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestNACK: a response with a valid and an invalid cluster applies the
// valid one, rejects the other with a request naming it, and keeps the
// last good version of the rejected one.
func TestNACK(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testContext(t)
			f := startFake(t, "", map[string]map[string]proto.Message{
				resource.ClusterType: {"good": edsCluster("good", time.Second), "bad": edsCluster("bad", time.Second)},
			})
			c := newClient(t, Config{Server: f.addr, Delta: mode.delta})
			good, bad := newRecorder(), newRecorder()
			defer c.Watch(resource.ClusterType, "good", good)()
			defer c.Watch(resource.ClusterType, "bad", bad)()
			good.waitUpdate(ctx, t, "good v1", nil)
			oldBad := bad.waitUpdate(ctx, t, "bad v1", nil)
			oldVersion := status(c, resource.ClusterType, "bad").Version

			invalid := edsCluster("bad", time.Second)
			invalid.LbPolicy = 99
			if err := f.caches[resource.ClusterType].UpdateResources(map[string]types.Resource{
				"good": edsCluster("good", 2*time.Second), "bad": invalid,
			}, nil); err != nil {
				t.Fatal(err)
			}
			good.waitUpdate(ctx, t, "good v2", func(m proto.Message) bool {
				return m.(*v3clusterpb.Cluster).GetConnectTimeout().AsDuration() == 2*time.Second
			})
			e := bad.wait(ctx, t, "the rejection", func(e event) bool { return e.kind == "error" })
			if !strings.Contains(e.err.Error(), `cluster "bad"`) || !strings.Contains(e.err.Error(), "LbPolicy") {
				t.Errorf("Error(%v), want it to name cluster \"bad\" and LbPolicy", e.err)
			}
			var nack request
			waitFor(ctx, t, "the NACK at the server", func() bool {
				for _, r := range f.allRequests() {
					if r.nack {
						nack = r
						return true
					}
				}
				return false
			})
			if !strings.Contains(nack.errorDetail, `cluster "bad"`) || strings.Contains(nack.errorDetail, `"good"`) {
				t.Errorf("NACK error_detail = %q, want it to name cluster \"bad\" only", nack.errorDetail)
			}
			if nack.nonce == "" {
				t.Error("NACK has no response_nonce")
			}
			if !mode.delta {
				f.mu.Lock()
				rejected, ok := f.responses[nack.nonce]
				f.mu.Unlock()
				if !ok || nack.version == rejected || nack.version == "" {
					t.Errorf("NACK version_info = %q for the response of version %q, want the previous accepted version", nack.version, rejected)
				}
			}
			st := status(c, resource.ClusterType, "bad")
			if !proto.Equal(st.Resource, oldBad) || st.Version != oldVersion || st.Err == nil {
				t.Errorf("Status(bad) = %+v, want the last good version %q and the error", st, oldVersion)
			}
			if st := status(c, resource.ClusterType, "good"); st.Err != nil || st.Resource.(*v3clusterpb.Cluster).GetConnectTimeout().AsDuration() != 2*time.Second {
				t.Errorf("Status(good) = %+v, want v2 and no error", st)
			}

			// A fixed version is accepted again.
			if err := f.caches[resource.ClusterType].UpdateResource("bad", edsCluster("bad", 3*time.Second)); err != nil {
				t.Fatal(err)
			}
			bad.waitUpdate(ctx, t, "bad v3", nil)
			flush(ctx, t, c)
			if st := status(c, resource.ClusterType, "bad"); st.Err != nil {
				t.Errorf("Status(bad).Err = %v after a good version, want nil", st.Err)
			}
			if n := bad.count("notfound") + good.count("notfound"); n != 0 {
				t.Errorf("%d NotFound, want none", n)
			}
		})
	}
}

// TestSharedSubscription: watchers of one resource share one subscription;
// cancelling one keeps the other; cancelling the last unsubscribes.
func TestSharedSubscription(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testContext(t)
			f := startFake(t, "", map[string]map[string]proto.Message{
				resource.ListenerType: {"a": apiListener("a", "r1"), "b": apiListener("b", "r1")},
			})
			c := newClient(t, Config{Server: f.addr, Delta: mode.delta})
			w1, w2, w3, other := newRecorder(), newRecorder(), newRecorder(), newRecorder()
			cancel1 := c.Watch(resource.ListenerType, "a", w1)
			cancel2 := c.Watch(resource.ListenerType, "a", w2)
			defer c.Watch(resource.ListenerType, "b", other)()
			w1.waitUpdate(ctx, t, "a for w1", nil)
			w2.waitUpdate(ctx, t, "a for w2", nil)
			other.waitUpdate(ctx, t, "b", nil)
			if diff := cmp.Diff(f.subscribed(resource.ListenerType), []string{"a", "b"}); diff != "" {
				t.Errorf("server subscriptions (-got +want):\n%s", diff)
			}
			if mode.delta {
				n := 0
				for _, r := range f.allRequests() {
					n += len(slices.DeleteFunc(slices.Clone(r.subscribe), func(s string) bool { return s != "a" }))
				}
				if n != 1 {
					t.Errorf("\"a\" was subscribed %d times, want 1", n)
				}
			}
			// A new watcher of a cached resource gets it at once, without
			// a new request (once the ACKs of what came before are in).
			waitFor(ctx, t, "every response answered", f.acked)
			before := len(f.allRequests())
			cancel3 := c.Watch(resource.ListenerType, "a", w3)
			w3.waitUpdate(ctx, t, "a for w3", nil)
			if after := len(f.allRequests()); after != before {
				t.Errorf("a third watcher made %d requests, want 0", after-before)
			}
			cancel3()

			cancel1()
			cancel1() // idempotent
			if err := f.caches[resource.ListenerType].UpdateResource("a", apiListener("a", "r2")); err != nil {
				t.Fatal(err)
			}
			w2.waitUpdate(ctx, t, "a v2 for the remaining watcher", func(m proto.Message) bool {
				return m.(*v3listenerpb.Listener).GetName() == "a" && status(c, resource.ListenerType, "a").Watchers == 1
			})
			flush(ctx, t, c)
			if n := w1.count("update"); n != 1 {
				t.Errorf("the cancelled watcher got %d updates, want 1 (before cancel)", n)
			}
			if diff := cmp.Diff(f.subscribed(resource.ListenerType), []string{"a", "b"}); diff != "" {
				t.Errorf("server subscriptions with one watcher left (-got +want):\n%s", diff)
			}

			cancel2()
			waitFor(ctx, t, "the unsubscription at the server", func() bool {
				return slices.Equal(f.subscribed(resource.ListenerType), []string{"b"})
			})
			if st := status(c, resource.ListenerType, "a"); st.Name != "" {
				t.Errorf("Status still has %+v after its last watcher left", st)
			}
		})
	}
}

// TestClose: Close with open watches ends every goroutine (goleak checks
// in TestMain), is idempotent, and makes later watches do nothing.
func TestClose(t *testing.T) {
	ctx := testContext(t)
	f := startFake(t, "", map[string]map[string]proto.Message{resource.ClusterType: {"a": edsCluster("a", time.Second)}})
	c, err := New(Config{Server: f.addr})
	if err != nil {
		t.Fatal(err)
	}
	w := newRecorder()
	c.Watch(resource.ClusterType, "a", w)
	c.Watch(resource.ClusterType, "absent", newRecorder())
	w.waitUpdate(ctx, t, "a", nil)
	c.Close()
	c.Close()
	cancel := c.Watch(resource.ClusterType, "a", w)
	cancel()

	// A Client never watched never dials.
	idle, err := New(Config{Server: f.addr})
	if err != nil {
		t.Fatal(err)
	}
	idle.Close()
	if _, err := New(Config{}); err == nil {
		t.Error("New(Config{}) = nil error, want one for the missing Server")
	}
}

func TestBackoff(t *testing.T) {
	c := &Client{cfg: Config{BackoffMin: 100 * time.Millisecond, BackoffMax: 30 * time.Second}}
	for n := range 80 {
		want := min(c.cfg.BackoffMin<<min(n, 20), c.cfg.BackoffMax)
		for range 20 {
			if d := c.backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
}

func TestUnknownType(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t, Config{Server: freeAddr(t)})
	w := newRecorder()
	defer c.Watch("type.googleapis.com/nope", "x", w)()
	e := w.wait(ctx, t, "the error", func(event) bool { return true })
	if e.kind != "error" || !strings.Contains(e.err.Error(), "unknown resource type") {
		t.Errorf("Watch(unknown type) delivered %v, want ErrUnknownType", e)
	}
}

// TestReconnectKeepsCache: after the stream breaks, cached resources are
// requested again (in delta with their versions as
// initial_resource_versions), not dropped, and updates flow again.
func TestReconnectKeepsCache(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testContext(t)
			res := map[string]map[string]proto.Message{resource.ClusterType: {"a": edsCluster("a", time.Second)}}
			f := startFake(t, "", res)
			c := newClient(t, Config{Server: f.addr, Delta: mode.delta, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
			w := newRecorder()
			defer c.Watch(resource.ClusterType, "a", w)()
			w.waitUpdate(ctx, t, "a", nil)
			version := status(c, resource.ClusterType, "a").Version

			f.stop()
			waitFor(ctx, t, "the disconnection", func() bool { return !c.Status().Connected })
			f2 := startFake(t, f.addr, res)
			waitFor(ctx, t, "the resubscription", func() bool { return slices.Equal(f2.subscribed(resource.ClusterType), []string{"a"}) })
			if mode.delta {
				f2.mu.Lock()
				got := f2.initial[resource.ClusterType]
				f2.mu.Unlock()
				if diff := cmp.Diff(got, map[string]string{"a": version}); diff != "" {
					t.Errorf("initial_resource_versions (-got +want):\n%s", diff)
				}
			}
			if err := f2.caches[resource.ClusterType].UpdateResource("a", edsCluster("a", 2*time.Second)); err != nil {
				t.Fatal(err)
			}
			w.waitUpdate(ctx, t, "a v2 from the new server", func(m proto.Message) bool {
				return m.(*v3clusterpb.Cluster).GetConnectTimeout().AsDuration() == 2*time.Second
			})
			flush(ctx, t, c)
			if n := w.count("notfound"); n != 0 {
				t.Errorf("%d NotFound across the reconnection, want none", n)
			}
		})
	}
}

// TestResubscribe: a resource unsubscribed and subscribed again at once is
// delivered again, not left to its does-not-exist timer.
func TestResubscribe(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testContext(t)
			f := startFake(t, "", map[string]map[string]proto.Message{resource.ClusterType: {"a": edsCluster("a", time.Second)}})
			c := newClient(t, Config{Server: f.addr, Delta: mode.delta, ResourceTimeout: 5 * time.Second})
			for i := range 20 {
				w := newRecorder()
				cancel := c.Watch(resource.ClusterType, "a", w)
				e := w.wait(ctx, t, "a", func(event) bool { return true })
				if e.kind != "update" {
					t.Fatalf("watch %d: got %v, want an update", i, e)
				}
				cancel()
			}
		})
	}
}

// TestOnResponseCountsRejections: OnResponse hears, per response, how many
// resources were accepted and how many rejected (NACKed).
func TestOnResponseCountsRejections(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testContext(t)
			invalid := edsCluster("bad", time.Second)
			invalid.LbPolicy = 99
			f := startFake(t, "", map[string]map[string]proto.Message{
				resource.ClusterType: {"good": edsCluster("good", time.Second), "bad": invalid},
			})
			var mu sync.Mutex
			got := map[string][2]int{}
			c := newClient(t, Config{Server: f.addr, Delta: mode.delta, OnResponse: func(kind string, accepted, rejected int) {
				mu.Lock()
				defer mu.Unlock()
				n := got[kind]
				got[kind] = [2]int{n[0] + accepted, n[1] + rejected}
			}})
			good, bad := newRecorder(), newRecorder()
			defer c.Watch(resource.ClusterType, "good", good)()
			defer c.Watch(resource.ClusterType, "bad", bad)()
			good.waitUpdate(ctx, t, "good", nil)
			bad.wait(ctx, t, "the rejection", func(e event) bool { return e.kind == "error" })
			mu.Lock()
			defer mu.Unlock()
			if n := got["CDS"]; n[0] < 1 || n[1] < 1 || len(got) != 1 {
				t.Errorf("OnResponse counts = %v, want CDS with the good cluster accepted and the bad one rejected", got)
			}
		})
	}
}
