package registry

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func ep(addr string, labels map[string]string) Endpoint {
	return Endpoint{Service: "reviews", Namespace: "default", Address: addr, Port: 9080, Labels: labels}
}

func keys(r *Registry) []string {
	var out []string
	for _, e := range r.Endpoints() {
		out = append(out, e.Key())
	}
	return out
}

// waitChange waits for the next onChange call.
func waitChange(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no change notification within 10s")
	}
}

func TestCleanReleaseRemovesAtOnce(t *testing.T) {
	var changes atomic.Int32
	r := New(time.Hour, func() { changes.Add(1) })
	defer r.Close()
	l := r.Add(ep("10.0.0.1", nil))
	if diff := cmp.Diff(keys(r), []string{"default/reviews/10.0.0.1:9080"}); diff != "" {
		t.Fatalf("after Add, keys (-got +want):\n%s", diff)
	}
	l.Release(true)
	l.Release(true) // idempotent
	if got := keys(r); len(got) != 0 {
		t.Errorf("after a clean Release, keys = %v, want none", got)
	}
	if got := changes.Load(); got != 2 {
		t.Errorf("onChange called %d times, want 2 (add, remove)", got)
	}
}

func TestBrokenLeaseLeavesAfterGrace(t *testing.T) {
	ch := make(chan struct{}, 10)
	r := New(50*time.Millisecond, func() { ch <- struct{}{} })
	defer r.Close()
	l := r.Add(ep("10.0.0.1", nil))
	waitChange(t, ch)
	l.Release(false)
	if got := keys(r); len(got) != 1 {
		t.Fatalf("right after a broken lease, keys = %v, want the endpoint kept for the grace period", got)
	}
	waitChange(t, ch)
	if got := keys(r); len(got) != 0 {
		t.Errorf("after the grace period, keys = %v, want none", got)
	}
}

func TestReRegistrationWithinGraceKeepsEndpoint(t *testing.T) {
	// Capture the grace timer instead of waiting for it.
	var expire func()
	afterFunc = func(_ time.Duration, f func()) interface{ Stop() bool } {
		expire = f
		return stopper{}
	}
	t.Cleanup(func() {
		afterFunc = func(d time.Duration, f func()) interface{ Stop() bool } { return time.AfterFunc(d, f) }
	})
	r := New(time.Hour, nil)
	defer r.Close()
	l := r.Add(ep("10.0.0.1", map[string]string{"version": "v1"}))
	l.Release(false)
	l2 := r.Add(ep("10.0.0.1", map[string]string{"version": "v2"}))
	// The first lease's timer fires although it was stopped (a timer's
	// function may already be running when Stop is called): it must not
	// remove the endpoint that registered again.
	expire()
	got := r.Endpoints()
	if len(got) != 1 || got[0].Labels["version"] != "v2" {
		t.Fatalf("endpoints = %+v, want the re-registered endpoint with version v2", got)
	}
	l2.Release(true)
	if got := keys(r); len(got) != 0 {
		t.Errorf("after a clean release, keys = %v, want none", got)
	}
}

type stopper struct{}

func (stopper) Stop() bool { return false }

func TestTwoLeasesOneEndpoint(t *testing.T) {
	r := New(time.Hour, nil)
	defer r.Close()
	l1 := r.Add(ep("10.0.0.1", nil))
	l2 := r.Add(ep("10.0.0.1", nil))
	l1.Release(true)
	if got := keys(r); len(got) != 1 {
		t.Fatalf("with one lease left, keys = %v, want the endpoint", got)
	}
	l2.Release(true)
	if got := keys(r); len(got) != 0 {
		t.Errorf("with no lease left, keys = %v, want none", got)
	}
}

func TestUpdateAndIsolation(t *testing.T) {
	r := New(time.Hour, nil)
	defer r.Close()
	labels := map[string]string{"version": "v1"}
	l := r.Add(ep("10.0.0.1", labels))
	labels["version"] = "mutated"
	if got := r.Endpoints()[0].Labels["version"]; got != "v1" {
		t.Errorf("registry shares the caller's label map: version = %q, want v1", got)
	}
	l.Update(map[string]string{"version": "v3"}, "us/east")
	e := r.Endpoints()[0]
	if e.Labels["version"] != "v3" || e.Locality != "us/east" {
		t.Errorf("after Update, endpoint = %+v, want version v3 in us/east", e)
	}
	e.Labels["version"] = "mutated"
	if got := r.Endpoints()[0].Labels["version"]; got != "v3" {
		t.Errorf("Endpoints returns shared label maps: version = %q, want v3", got)
	}
}

func TestReleaseAfterCloseRemovesAtOnce(t *testing.T) {
	r := New(time.Hour, nil)
	l := r.Add(ep("10.0.0.1", nil))
	r.Close()
	l.Release(false)
	if got := keys(r); len(got) != 0 {
		t.Errorf("after Close, a broken lease left keys = %v, want none", got)
	}
}

// TestIdentityFollowsTheRegistration: an endpoint's identity is the one of
// its latest registration, and an update of labels keeps it.
func TestIdentityFollowsTheRegistration(t *testing.T) {
	r := New(time.Second, nil)
	defer r.Close()
	ep := Endpoint{Service: "reviews", Namespace: "default", Address: "127.0.0.1", Port: 9080, Identity: "spiffe://cluster.local/ns/default/sa/reviews"}
	l := r.Add(ep)
	l.Update(map[string]string{"version": "v2"}, "")
	if got := r.Endpoints(); len(got) != 1 || got[0].Identity != ep.Identity {
		t.Fatalf("Endpoints() = %+v, want one endpoint with Identity %q", got, ep.Identity)
	}
	ep.Identity = ""
	r.Add(ep)
	if got := r.Endpoints(); len(got) != 1 || got[0].Identity != "" {
		t.Errorf("Endpoints() after a registration without certificate = %+v, want no Identity", got)
	}
}
