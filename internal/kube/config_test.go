package kube

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	clientnetworking "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/config"
)

// runConfig runs a ConfigSource until the test ends and returns the last
// delivery.
func runConfig(t *testing.T, f *fakes) func() (*config.Set, int, error) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu    sync.Mutex
		set   *config.Set
		err   error
		calls int
	)
	done := make(chan error, 1)
	go func() {
		done <- NewConfigSource(f.clients, Options{Debounce: 10 * time.Millisecond}).Run(ctx, func(s *config.Set, e error) {
			mu.Lock()
			defer mu.Unlock()
			set, err, calls = s, e, calls+1
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	return func() (*config.Set, int, error) {
		mu.Lock()
		defer mu.Unlock()
		return set, calls, err
	}
}

func virtualService(name string, weights ...int32) *clientnetworking.VirtualService {
	vs := &clientnetworking.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	route := &networking.HTTPRoute{}
	for i, w := range weights {
		route.Route = append(route.Route, &networking.HTTPRouteDestination{
			Destination: &networking.Destination{Host: "reviews", Subset: []string{"v1", "v2"}[i]},
			Weight:      w,
		})
	}
	vs.Spec.Hosts = []string{"reviews"}
	vs.Spec.Http = []*networking.HTTPRoute{route}
	return vs
}

func destinationRule() *clientnetworking.DestinationRule {
	dr := &clientnetworking.DestinationRule{ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "default"}}
	dr.Spec.Host = "reviews"
	dr.Spec.Subsets = []*networking.Subset{
		{Name: "v1", Labels: map[string]string{"version": "v1"}},
		{Name: "v2", Labels: map[string]string{"version": "v2"}},
	}
	return dr
}

func weights(set *config.Set) []int32 {
	if set == nil || len(set.VirtualServices) != 1 {
		return nil
	}
	var out []int32
	for _, r := range set.VirtualServices[0].Spec.GetHttp()[0].GetRoute() {
		out = append(out, r.GetWeight())
	}
	return out
}

// TestConfigSource drives the Istio informers through adds, updates and
// deletes and checks the sets delivered, including that an invalid
// resource keeps the whole new set out with an error naming it and its
// field, and that auto-registered WorkloadEntries are not configuration.
func TestConfigSource(t *testing.T) {
	ctx := testContext(t)
	f := newFakes()
	last := runConfig(t, f)
	waitFor(ctx, t, "first delivery", func() bool { _, n, _ := last(); return n > 0 })
	if set, _, err := last(); err != nil || set.Len() != 0 {
		t.Fatalf("first delivery = %v resources, %v; want an empty set", set.Len(), err)
	}
	f.waitWatches(ctx, t, 8)

	vsAPI := f.istio.NetworkingV1().VirtualServices("default")
	if _, err := f.istio.NetworkingV1().DestinationRules("default").Create(ctx, destinationRule(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := vsAPI.Create(ctx, virtualService("reviews", 90, 10), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "VirtualService added", func() bool {
		set, _, err := last()
		return err == nil && len(set.DestinationRules) == 1 && slicesEqual(weights(set), []int32{90, 10})
	})
	set, _, _ := last()
	if got, want := set.VirtualServices[0].File, "k8s:VirtualService/default/reviews"; got != want {
		t.Errorf("VirtualService file = %q, want %q", got, want)
	}

	if _, err := vsAPI.Update(ctx, virtualService("reviews", 50, 50), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "weights updated", func() bool {
		set, _, err := last()
		return err == nil && slicesEqual(weights(set), []int32{50, 50})
	})

	// An unimplemented field in one resource: the whole set is refused,
	// and the error names the resource and the field.
	bad := virtualService("ratings", 100)
	bad.Spec.Hosts = []string{"ratings"}
	bad.Spec.Http[0].Route[0].Destination = &networking.Destination{Host: "ratings"}
	bad.Spec.Http[0].Mirror = &networking.Destination{Host: "ratings"}
	if _, err := vsAPI.Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "invalid resource reported", func() bool { _, _, err := last(); return err != nil })
	_, _, err := last()
	if msg := err.Error(); !strings.Contains(msg, "k8s:VirtualService/default/ratings") || !strings.Contains(msg, "spec.http[0].mirror") {
		t.Errorf("load error = %q, want it to name k8s:VirtualService/default/ratings and spec.http[0].mirror", msg)
	}

	if err := vsAPI.Delete(ctx, "ratings", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "invalid resource deleted", func() bool {
		set, _, err := last()
		return err == nil && slicesEqual(weights(set), []int32{50, 50})
	})

	// Auto-registered WorkloadEntries are the Store's, not configuration;
	// other WorkloadEntries are.
	for _, we := range []*clientnetworking.WorkloadEntry{
		{ObjectMeta: metav1.ObjectMeta{Name: "auto", Namespace: "default", Labels: map[string]string{LabelAutoRegistered: "true"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "static", Namespace: "default"}},
	} {
		we.Spec.Address = "10.0.0.1"
		if _, err := f.istio.NetworkingV1().WorkloadEntries("default").Create(ctx, we, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := vsAPI.Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "VirtualService deleted", func() bool {
		set, _, err := last()
		return err == nil && len(set.VirtualServices) == 0 && len(set.WorkloadEntries) == 1
	})
	if set, _, _ := last(); set.WorkloadEntries[0].Name != "static" {
		t.Errorf("WorkloadEntries = %s, want only the static one", set.WorkloadEntries[0].Name)
	}
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRenderTLSMode pins a limit of reading typed custom resources: a proto3
// enum at its zero value cannot be told from an omitted one, so a
// DestinationRule's explicit "tls: {mode: DISABLE}" renders as a tls block
// without a mode, which the loader refuses (plaintext is never implied).
func TestRenderTLSMode(t *testing.T) {
	for _, c := range []struct {
		mode    networking.ClientTLSSettings_TLSmode
		wantErr string
	}{
		{networking.ClientTLSSettings_ISTIO_MUTUAL, ""},
		{networking.ClientTLSSettings_DISABLE, "k8s:DestinationRule/default/reviews:1: DestinationRule default/reviews: spec.trafficPolicy.tls.mode: required"},
	} {
		dr := destinationRule()
		dr.Spec.TrafficPolicy = &networking.TrafficPolicy{Tls: &networking.ClientTLSSettings{Mode: c.mode}}
		name, data, err := document{config.KindDestinationRule, "networking.istio.io/v1", dr.ObjectMeta, &dr.Spec}.render()
		if err != nil {
			t.Fatal(err)
		}
		_, err = config.Load(map[string][]byte{name: data})
		if got := fmt.Sprint(err); (c.wantErr == "" && err != nil) || !strings.Contains(got, c.wantErr) {
			t.Errorf("mode %v: config.Load(%s) = %v, want %q", c.mode, data, err, c.wantErr)
		}
	}
}
