package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellismesh/trellis/internal/etcdstore/etcdtest"
	"github.com/trellismesh/trellis/internal/registry"
)

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want Location
		err  bool
	}{
		{uri: "etcd://127.0.0.1:2379", want: Location{Endpoints: []string{"127.0.0.1:2379"}, Prefix: "/trellis"}},
		{uri: "etcd://a:1,b:2/mesh/prod/", want: Location{Endpoints: []string{"a:1", "b:2"}, Prefix: "/mesh/prod"}},
		{uri: "etcd://[::1]:2379/", want: Location{Endpoints: []string{"[::1]:2379"}, Prefix: "/trellis"}},
		{uri: "memory", err: true},
		{uri: "http://127.0.0.1:2379", err: true},
		{uri: "etcd://", err: true},
		{uri: "etcd://127.0.0.1", err: true},
		{uri: "etcd://127.0.0.1:x", err: true},
		{uri: "etcd://a:1,,b:2", err: true},
		{uri: "etcd://a:1//x", err: true},
	} {
		got, err := ParseURI(tc.uri)
		if tc.err {
			if !errors.Is(err, ErrBadURI) || !strings.Contains(err.Error(), tc.uri) {
				t.Errorf("ParseURI(%q) = %v, want an ErrBadURI naming the URI", tc.uri, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseURI(%q) = %v", tc.uri, err)
			continue
		}
		if diff := cmp.Diff(got, tc.want); diff != "" {
			t.Errorf("ParseURI(%q) (-got +want):\n%s", tc.uri, diff)
		}
		if again, err := ParseURI(got.String()); err != nil || !cmp.Equal(again, got) {
			t.Errorf("ParseURI(%q) = %v, %v; want the same Location back", got.String(), again, err)
		}
	}
}

// replica is a Store with its own connection, as a control-plane replica
// has.
type replica struct {
	*Store
	c       *Client
	changes atomic.Int64
	mu      sync.Mutex
	seen    []int // len(Endpoints()) at each change
}

func openReplica(ctx context.Context, t *testing.T, endpoint string, grace time.Duration) *replica {
	t.Helper()
	loc, err := ParseURI("etcd://" + endpoint)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(loc)
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{c: c}
	var ready atomic.Bool
	st, err := c.OpenStore(ctx, StoreOptions{Grace: grace, OnChange: func() {
		r.changes.Add(1)
		if ready.Load() {
			n := len(r.Endpoints())
			r.mu.Lock()
			r.seen = append(r.seen, n)
			r.mu.Unlock()
		}
	}})
	if err != nil {
		c.Close()
		t.Fatalf("OpenStore() = %v", err)
	}
	r.Store = st
	ready.Store(true)
	t.Cleanup(r.kill)
	return r
}

// kill stops the replica without deregistering anything, as a crash
// would (as far as etcd can tell).
func (r *replica) kill() {
	r.Store.Close()
	r.c.Close()
}

func (r *replica) get(key string) (registry.Endpoint, bool) {
	for _, ep := range r.Endpoints() {
		if ep.Key() == key {
			return ep, true
		}
	}
	return registry.Endpoint{}, false
}

func (r *replica) has(key string) bool {
	_, ok := r.get(key)
	return ok
}

func (r *replica) leaseID() clientv3.LeaseID {
	r.Store.mu.Lock()
	defer r.Store.mu.Unlock()
	return r.Store.lease
}

func endpoint(addr string) registry.Endpoint {
	return registry.Endpoint{Service: "reviews", Namespace: "default", Address: addr, Port: 9080, ServicePort: 9080,
		Labels: map[string]string{"version": "v1"}, Locality: "eu/a", Identity: "spiffe://cluster.local/ns/default/sa/reviews",
		Owner: "spiffe://cluster.local/ns/default/sa/reviews"}
}

// keyLease returns the lease of a registration key in etcd, and whether
// the key exists.
func keyLease(ctx context.Context, t *testing.T, cli *clientv3.Client, key string) (clientv3.LeaseID, bool) {
	t.Helper()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0, false
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease), true
}

// leaseExpired reports whether etcd no longer knows the lease.
func leaseExpired(ctx context.Context, t *testing.T, cli *clientv3.Client, id clientv3.LeaseID) bool {
	t.Helper()
	resp, err := cli.TimeToLive(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return resp.TTL == -1
}

// TestRegistrationsAreSharedBetweenReplicas: what a workload registers
// through replica A is served by replica B, with its labels, locality and
// identity, updates included; a clean deregistration leaves B at once.
func TestRegistrationsAreSharedBetweenReplicas(t *testing.T) {
	ctx := testContext(t)
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	a := openReplica(ctx, t, srv.Endpoint(), time.Minute)
	b := openReplica(ctx, t, srv.Endpoint(), time.Minute)
	ep := endpoint("10.0.0.1")

	l := a.Add(ep)
	waitFor(ctx, t, "B sees A's registration", func() bool { return b.has(ep.Key()) })
	if got, _ := b.get(ep.Key()); !cmp.Equal(got, ep) {
		t.Errorf("B's endpoint (-got +want):\n%s", cmp.Diff(got, ep))
	}
	key := "/trellis/registrations/default/reviews/10.0.0.1:9080"
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("Get(%s) = %v, %v; want the registration", key, resp, err)
	}
	var rec map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil || rec["identity"] != ep.Identity || rec["locality"] != "eu/a" {
		t.Errorf("value of %s = %s (%v); want JSON with the identity and locality", key, resp.Kvs[0].Value, err)
	}
	if id := clientv3.LeaseID(resp.Kvs[0].Lease); id != a.leaseID() {
		t.Errorf("%s is on lease %x, want A's lease %x", key, id, a.leaseID())
	}
	if ttl := a.TTL(); ttl != 60 {
		t.Errorf("TTL() = %d, want the grace, 60 s", ttl)
	}

	l.Update(map[string]string{"version": "v2"}, "eu/b")
	waitFor(ctx, t, "B sees the update", func() bool {
		got, _ := b.get(ep.Key())
		return got.Labels["version"] == "v2" && got.Locality == "eu/b"
	})

	l.Release(true)
	if a.has(ep.Key()) {
		t.Error("A still serves a cleanly released endpoint")
	}
	// The grace is a minute: leaving now is the clean deregistration.
	waitFor(ctx, t, "B drops the deregistered endpoint", func() bool { return !b.has(ep.Key()) })
	if _, ok := keyLease(ctx, t, cli, key); ok {
		t.Errorf("%s is still in etcd after a clean release", key)
	}
}

// TestBrokenRegistrationLeavesAfterGrace: an endpoint whose stream broke
// stays for the grace period, then leaves every replica; registering
// again within the grace keeps it.
func TestBrokenRegistrationLeavesAfterGrace(t *testing.T) {
	ctx := testContext(t)
	srv := etcdtest.Start(t)
	const grace = 2 * time.Second
	a := openReplica(ctx, t, srv.Endpoint(), grace)
	b := openReplica(ctx, t, srv.Endpoint(), time.Minute)
	back, lost := endpoint("10.0.0.1"), endpoint("10.0.0.2")
	lBack, lLost := a.Add(back), a.Add(lost)
	waitFor(ctx, t, "B sees both", func() bool { return b.has(back.Key()) && b.has(lost.Key()) })

	lBack.Release(false)
	start := time.Now()
	lLost.Release(false)
	again := a.Add(back) // the workload reconnects within the grace
	defer again.Release(true)
	if !b.has(lost.Key()) || !a.has(lost.Key()) {
		t.Fatal("an endpoint whose stream just broke left before its grace")
	}
	waitFor(ctx, t, "the lost endpoint leaves B", func() bool { return !b.has(lost.Key()) })
	took := time.Since(start)
	t.Logf("a broken registration left the other replica %v after its stream broke (grace %v)", took.Round(time.Millisecond), grace)
	if took < grace {
		t.Errorf("the lost endpoint left after %v, before the grace of %v", took, grace)
	}
	if !b.has(back.Key()) || !a.has(back.Key()) {
		t.Error("an endpoint that registered again within the grace left with the grace")
	}
}

// TestDeadReplicaRegistrationsExpireWithItsLease: a replica that dies
// takes its registrations with it when its lease expires (one TTL, not at
// once), except a workload that has registered again through another
// replica: its key is on that replica's lease now.
func TestDeadReplicaRegistrationsExpireWithItsLease(t *testing.T) {
	ctx := testContext(t)
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	const grace = 3 * time.Second
	a := openReplica(ctx, t, srv.Endpoint(), grace)
	b := openReplica(ctx, t, srv.Endpoint(), grace)
	orphan, moved := endpoint("10.0.0.1"), endpoint("10.0.0.2")
	a.Add(orphan)
	a.Add(moved)
	waitFor(ctx, t, "B sees A's registrations", func() bool { return b.has(orphan.Key()) && b.has(moved.Key()) })
	leaseA := a.leaseID()

	died := time.Now()
	a.kill()
	// The workload of moved notices and registers through B.
	lMoved := b.Add(moved)
	defer lMoved.Release(true)
	waitFor(ctx, t, "A's orphaned endpoint leaves B", func() bool { return !b.has(orphan.Key()) })
	took := time.Since(died)
	t.Logf("a dead replica's endpoint left the other replica %v after it died (lease TTL %v)", took.Round(time.Millisecond), grace)
	// The lease was renewed at most a third of its TTL (plus the
	// client's 500 ms send tick) before the replica died.
	if took < grace/2 {
		t.Errorf("the dead replica's endpoint left after %v, well before its lease TTL %v: was the lease revoked?", took, grace)
	}
	waitFor(ctx, t, "A's lease expires", func() bool { return leaseExpired(ctx, t, cli, leaseA) })
	if !b.has(moved.Key()) {
		t.Fatal("an endpoint that registered again through B left with A's lease")
	}
	if id, ok := keyLease(ctx, t, cli, "/trellis/registrations/default/reviews/10.0.0.2:9080"); !ok || id != b.leaseID() {
		t.Errorf("the moved registration is on lease %x (exists %v), want B's %x", id, ok, b.leaseID())
	}
}

// TestReleaseDoesNotDeleteAnotherReplicasRegistration: a replica's clean
// release or grace expiry deletes the key only while it is on that
// replica's lease.
func TestReleaseDoesNotDeleteAnotherReplicasRegistration(t *testing.T) {
	ctx := testContext(t)
	srv := etcdtest.Start(t)
	a := openReplica(ctx, t, srv.Endpoint(), time.Minute)
	b := openReplica(ctx, t, srv.Endpoint(), time.Minute)
	ep := endpoint("10.0.0.1")
	lA := a.Add(ep)
	waitFor(ctx, t, "B sees it", func() bool { return b.has(ep.Key()) })
	lB := b.Add(ep) // the workload moved to B; A has not noticed yet
	defer lB.Release(true)
	marker := endpoint("10.0.0.9")
	lm := a.Add(marker)
	waitFor(ctx, t, "B sees the marker", func() bool { return b.has(marker.Key()) })
	lA.Release(true) // A's old stream closes
	lm.Release(true) // written after A's delete attempt
	waitFor(ctx, t, "the marker leaves B", func() bool { return !b.has(marker.Key()) })
	if !b.has(ep.Key()) || !a.has(ep.Key()) {
		t.Error("A's release deleted the registration B holds")
	}
}

// TestEtcdRestartLosesNothing: while etcd is away (longer than the lease
// TTL), both replicas keep serving what they had and A takes a new
// registration; when etcd is back, A's lease is granted again, every
// registration is written again, and B serves them all. The old lease
// expiring afterwards removes nothing.
func TestEtcdRestartLosesNothing(t *testing.T) {
	ctx := testContext(t)
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	const grace = 2 * time.Second
	a := openReplica(ctx, t, srv.Endpoint(), grace)
	b := openReplica(ctx, t, srv.Endpoint(), grace)
	before, during := endpoint("10.0.0.1"), endpoint("10.0.0.2")
	defer a.Add(before).Release(true)
	waitFor(ctx, t, "B sees the first registration", func() bool { return b.has(before.Key()) })
	oldLease := a.leaseID()
	b.mu.Lock()
	b.seen = nil
	b.mu.Unlock()
	changesBefore := b.changes.Load()

	stopping := time.Now()
	srv.Stop(t) // graceful: open streams may be served up to 7 s more
	down := time.Now()
	t.Logf("etcd took %v to stop", down.Sub(stopping).Round(time.Millisecond))
	defer a.Add(during).Release(true)
	if !a.has(during.Key()) {
		t.Error("a registration made while etcd is away is not served by its replica")
	}
	// A gives its lease up once etcd has not answered for a TTL.
	waitFor(ctx, t, "A notices its lease is gone", func() bool { return a.leaseID() == 0 })
	outage := time.Since(down)
	for name, r := range map[string]*replica{"A": a, "B": b} {
		if !r.has(before.Key()) {
			t.Errorf("replica %s dropped an endpoint while etcd was away", name)
		}
	}
	srv.Restart(t)
	waitFor(ctx, t, "B sees the registration made during the outage", func() bool { return b.has(during.Key()) && b.has(before.Key()) })
	t.Logf("etcd away %v (lease TTL %v); B saw the outage's registration %v after etcd was back", outage.Round(time.Millisecond), grace, (time.Since(down) - outage).Round(time.Millisecond))
	waitFor(ctx, t, "A has a lease again", func() bool { return a.leaseID() != 0 })
	newLease := a.leaseID()
	for _, ep := range []registry.Endpoint{before, during} {
		key := "/trellis/registrations/default/reviews/" + ep.Address + ":9080"
		waitFor(ctx, t, key+" on A's lease", func() bool {
			id, ok := keyLease(ctx, t, cli, key)
			return ok && id == newLease
		})
	}
	if newLease == oldLease {
		// etcd extended the lease when it restarted and A renewed it.
		t.Logf("A renewed its lease after the outage")
	} else {
		// A lease granted anew: the old one expires with nothing on it.
		t.Logf("A was granted a new lease after the outage")
		waitFor(ctx, t, "the old lease expires", func() bool { return leaseExpired(ctx, t, cli, oldLease) })
	}
	// A TTL later, nothing has left.
	renewed := time.Now()
	waitFor(ctx, t, "a TTL passes", func() bool { return time.Since(renewed) > 2*grace })
	if !b.has(before.Key()) || !b.has(during.Key()) {
		t.Error("registrations left after etcd came back")
	}
	b.mu.Lock()
	seen := slices.Clone(b.seen)
	b.mu.Unlock()
	t.Logf("B's endpoint-set changes during and after the outage: %d, sizes %v", b.changes.Load()-changesBefore, seen)
	if slices.Min(append(seen, 1)) < 1 {
		t.Errorf("B's endpoint set sizes through the outage = %v; it must never lose the first endpoint", seen)
	}
}

// TestLostLeaseIsGrantedAgain: if a replica's lease disappears (it
// expired while etcd could not be reached, or was revoked), the replica
// takes a new one and writes its registrations again.
func TestLostLeaseIsGrantedAgain(t *testing.T) {
	ctx := testContext(t)
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	a := openReplica(ctx, t, srv.Endpoint(), 2*time.Second)
	b := openReplica(ctx, t, srv.Endpoint(), 2*time.Second)
	ep := endpoint("10.0.0.1")
	defer a.Add(ep).Release(true)
	key := "/trellis/registrations/default/reviews/10.0.0.1:9080"
	waitFor(ctx, t, "B sees it", func() bool { return b.has(ep.Key()) })
	old := a.leaseID()
	if _, err := cli.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the registration is written again on a new lease", func() bool {
		id, ok := keyLease(ctx, t, cli, key)
		return ok && id != old && id == a.leaseID()
	})
	waitFor(ctx, t, "B serves it", func() bool { return b.has(ep.Key()) })
}

// TestOpenStoreFailsWithoutEtcd: with no etcd to talk to, OpenStore fails
// when its context ends, naming the store.
func TestOpenStoreFailsWithoutEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	srv.Stop(t)
	loc, _ := ParseURI("etcd://" + srv.Endpoint() + "/x")
	c, err := Dial(loc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := c.OpenStore(ctx, StoreOptions{})
	if err == nil {
		st.Close()
		t.Fatal("OpenStore() with etcd down = nil error")
	}
	if !strings.Contains(err.Error(), loc.String()) {
		t.Errorf("OpenStore() = %v; want the error to name %s", err, loc)
	}
}
