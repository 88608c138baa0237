package kube

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/registry"
)

func openStore(t *testing.T, f *fakes, replica string, grace time.Duration) *Store {
	s := OpenStore(f.clients, Options{Replica: replica}, grace, nil)
	t.Cleanup(s.Close)
	return s
}

var reviewsEndpoint = registry.Endpoint{
	Service: "reviews", Namespace: "default", Address: "10.0.0.1", Port: 8080, ServicePort: 9080,
	Labels: map[string]string{"version": "v1"}, Locality: "eu/eu-1",
	Identity: "spiffe://cluster.local/ns/default/sa/reviews",
	Owner:    "spiffe://cluster.local/ns/default/sa/reviews",
}

func (f *fakes) entry(ctx context.Context, t *testing.T, name string) (map[string]string, bool) {
	t.Helper()
	we, err := f.istio.NetworkingV1().WorkloadEntries("default").Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return we.Annotations, true
}

// TestStoreSharesRegistrations: a registration is a WorkloadEntry both
// replicas serve; a clean release deletes it.
func TestStoreSharesRegistrations(t *testing.T) {
	ctx := testContext(t)
	f := newFakes()
	a := openStore(t, f, "xds-a", time.Minute)
	b := openStore(t, f, "xds-b", time.Minute)
	f.waitWatches(ctx, t, 2)

	lease := a.Add(reviewsEndpoint)
	name := EntryName(reviewsEndpoint)
	if name != "reviews-10-0-0-1-8080" {
		t.Errorf("EntryName() = %q, want reviews-10-0-0-1-8080", name)
	}
	we, err := f.istio.NetworkingV1().WorkloadEntries("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("WorkloadEntry after Add: %v", err)
	}
	if got := we.Annotations[AnnotationRegisteredBy]; got != "xds-a" {
		t.Errorf("registered-by = %q, want xds-a", got)
	}
	if got := we.Spec.GetServiceAccount(); got != "reviews" {
		t.Errorf("serviceAccount = %q, want reviews", got)
	}
	for _, s := range []*Store{a, b} {
		waitFor(ctx, t, "both replicas see the entry", func() bool {
			return cmp.Equal(s.Endpoints(), []registry.Endpoint{reviewsEndpoint})
		})
	}

	lease.Update(map[string]string{"version": "v2"}, "eu/eu-2")
	waitFor(ctx, t, "the other replica sees the update", func() bool {
		eps := b.Endpoints()
		return len(eps) == 1 && eps[0].Labels["version"] == "v2" && eps[0].Locality == "eu/eu-2"
	})

	lease.Release(true)
	if _, ok := f.entry(ctx, t, name); ok {
		t.Error("WorkloadEntry still there after a clean release")
	}
	waitFor(ctx, t, "both replicas drop the entry", func() bool { return len(a.Endpoints())+len(b.Endpoints()) == 0 })
}

// TestStoreGraceAndTakeover: a broken registration is marked disconnected
// and deleted after the grace period; but not if, meanwhile, the workload
// registered with another replica, which now owns the entry.
func TestStoreGraceAndTakeover(t *testing.T) {
	ctx := testContext(t)
	f := newFakes()
	const grace = 200 * time.Millisecond
	a := openStore(t, f, "xds-a", grace)
	b := openStore(t, f, "xds-b", grace)
	name := EntryName(reviewsEndpoint)

	// Broken stream, nobody re-registers: gone after the grace period.
	a.Add(reviewsEndpoint).Release(false)
	if ann, ok := f.entry(ctx, t, name); !ok || ann[AnnotationDisconnectedAt] == "" {
		t.Fatalf("entry after a broken stream = %v, %v; want it kept, marked disconnected", ann, ok)
	}
	waitFor(ctx, t, "entry deleted after the grace period", func() bool { _, ok := f.entry(ctx, t, name); return !ok })

	// Broken at a, re-registered at b within the grace period: a's expiry
	// must leave b's entry alone.
	la := a.Add(reviewsEndpoint)
	lb := b.Add(reviewsEndpoint)
	la.Release(false)
	waitFor(ctx, t, "a's grace period over", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.entries) == 0
	})
	ann, ok := f.entry(ctx, t, name)
	if !ok || ann[AnnotationRegisteredBy] != "xds-b" || ann[AnnotationDisconnectedAt] != "" {
		t.Fatalf("entry after a's expiry = %v, %v; want b's, connected", ann, ok)
	}
	lb.Release(true)
	if _, ok := f.entry(ctx, t, name); ok {
		t.Error("entry still there after b's clean release")
	}
}

// TestStoreSweep: the entries a replica held when it closed are marked
// disconnected, and another replica deletes them after twice the grace
// period.
func TestStoreSweep(t *testing.T) {
	ctx := testContext(t)
	f := newFakes()
	const grace = 100 * time.Millisecond
	a := OpenStore(f.clients, Options{Replica: "xds-a"}, grace, nil)
	openStore(t, f, "xds-b", grace)
	f.waitWatches(ctx, t, 2)
	a.Add(reviewsEndpoint)
	a.Close()
	a.Add(reviewsEndpoint).Release(true) // after Close: no effect on the cluster
	name := EntryName(reviewsEndpoint)
	if ann, ok := f.entry(ctx, t, name); !ok || ann[AnnotationDisconnectedAt] == "" {
		t.Fatalf("entry after Close = %v, %v; want it kept, marked disconnected", ann, ok)
	}
	waitFor(ctx, t, "entry swept by the other replica", func() bool { _, ok := f.entry(ctx, t, name); return !ok })
}

// TestStoreOrphans: entries whose replica is gone without closing — its Pod
// deleted, or its container restarted — are marked disconnected by another
// replica's sweep and then deleted; entries of a live replica are left
// alone.
func TestStoreOrphans(t *testing.T) {
	ctx := testContext(t)
	f := newFakes()
	mustCreate := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(f.kube.CoreV1().Pods("trellis-system").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "xds-live", Namespace: "trellis-system"}}, metav1.CreateOptions{}))
	eps := map[string]registry.Endpoint{}
	for i, owner := range []string{"xds-gone", "xds-live", "xds-b"} {
		ep := reviewsEndpoint
		ep.Address = fmt.Sprintf("10.0.0.%d", i+1)
		we := (&Store{replica: owner}).entry(ep, owner+"/earlier-run/1", time.Time{})
		mustCreate(f.istio.NetworkingV1().WorkloadEntries("default").Create(ctx, we, metav1.CreateOptions{}))
		eps[owner] = ep
	}
	s := OpenStore(f.clients, Options{Replica: "xds-b", ReplicaNamespace: "trellis-system"}, 100*time.Millisecond, nil)
	t.Cleanup(s.Close)
	for _, owner := range []string{"xds-gone", "xds-b"} {
		waitFor(ctx, t, "entry of "+owner+" swept", func() bool { _, ok := f.entry(ctx, t, EntryName(eps[owner])); return !ok })
	}
	if ann, ok := f.entry(ctx, t, EntryName(eps["xds-live"])); !ok || ann[AnnotationDisconnectedAt] != "" {
		t.Errorf("entry of the live replica = %v, %v; want it kept, connected", ann, ok)
	}
}
