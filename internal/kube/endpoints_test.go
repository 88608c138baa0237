package kube

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellismesh/trellis/internal/registry"
)

func runEndpoints(t *testing.T, f *fakes) func() ([]registry.Endpoint, int) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu    sync.Mutex
		eps   []registry.Endpoint
		calls int
	)
	done := make(chan error, 1)
	go func() {
		done <- NewEndpointSource(f.clients, Options{Debounce: 10 * time.Millisecond, TrustDomain: "example.org"}).Run(ctx, func(e []registry.Endpoint) {
			mu.Lock()
			defer mu.Unlock()
			eps, calls = e, calls+1
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	return func() ([]registry.Endpoint, int) {
		mu.Lock()
		defer mu.Unlock()
		return eps, calls
	}
}

func ptr[T any](v T) *T { return &v }

// Objects of a "reviews" Service: port "grpc" 9080 targeting 8080.
func reviewsService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "default"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "grpc", Port: 9080, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP, AppProtocol: ptr("grpc")},
		}},
	}
}

func reviewsPod(name, version string, mtls bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": "reviews", "version": version}},
		Spec:       corev1.PodSpec{ServiceAccountName: "reviews", NodeName: "node-1"},
	}
	if mtls {
		p.Labels[labelTLSMode] = "istio"
	}
	return p
}

func sliceEndpoint(addr, pod string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: pod},
		NodeName:   ptr("node-1"),
		Zone:       ptr("zone-a"),
	}
}

func reviewsSlice(eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: "reviews-abc", Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("grpc"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

// TestEndpointSource drives the Service, EndpointSlice, Pod and Node
// informers through adds, updates and deletes: only ready endpoints are
// delivered, with the Service port, the Pod's labels, the Node's locality,
// and an identity for Pods marked for mTLS.
func TestEndpointSource(t *testing.T) {
	ctx := testContext(t)
	f := newFakes()
	last := runEndpoints(t, f)
	waitFor(ctx, t, "first delivery", func() bool { _, n := last(); return n > 0 })
	f.waitWatches(ctx, t, 4)

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{labelRegion: "eu-west", labelZone: "eu-west-1a"}}}
	if _, err := f.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*corev1.Pod{reviewsPod("reviews-v1", "v1", false), reviewsPod("reviews-v2", "v2", true), reviewsPod("reviews-v3", "v3", false)} {
		if _, err := f.kube.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.kube.CoreV1().Services("default").Create(ctx, reviewsService(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	slices := f.kube.DiscoveryV1().EndpointSlices("default")
	if _, err := slices.Create(ctx, reviewsSlice(
		sliceEndpoint("10.0.0.1", "reviews-v1", true),
		sliceEndpoint("10.0.0.2", "reviews-v2", true),
		sliceEndpoint("10.0.0.3", "reviews-v3", false), // not ready: left out
	), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []registry.Endpoint{
		{Service: "reviews", Namespace: "default", Address: "10.0.0.1", Port: 8080, ServicePort: 9080,
			Labels: map[string]string{"app": "reviews", "version": "v1"}, Locality: "eu-west/eu-west-1a"},
		{Service: "reviews", Namespace: "default", Address: "10.0.0.2", Port: 8080, ServicePort: 9080,
			Labels:   map[string]string{"app": "reviews", "version": "v2", labelTLSMode: "istio"},
			Locality: "eu-west/eu-west-1a", Identity: "spiffe://example.org/ns/default/sa/reviews"},
	}
	waitFor(ctx, t, "ready endpoints delivered", func() bool { got, _ := last(); return cmp.Equal(got, want) })

	// Scale up: the third endpoint becomes ready.
	if _, err := slices.Update(ctx, reviewsSlice(
		sliceEndpoint("10.0.0.1", "reviews-v1", true),
		sliceEndpoint("10.0.0.2", "reviews-v2", true),
		sliceEndpoint("10.0.0.3", "reviews-v3", true),
	), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "slice update delivered", func() bool { got, _ := last(); return len(got) == 3 })
	if got, _ := last(); got[2].Address != "10.0.0.3" || got[2].Labels["version"] != "v3" {
		t.Errorf("third endpoint = %+v, want 10.0.0.3 with version v3", got[2])
	}

	// The Service goes: so do its endpoints, though the slice lingers.
	if err := f.kube.CoreV1().Services("default").Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "service deletion delivered", func() bool { got, _ := last(); return len(got) == 0 })
}

// TestEndpointBuilder covers the slices the informer test does not.
func TestEndpointBuilder(t *testing.T) {
	svc := reviewsService()
	b := endpointBuilder{
		trustDomain: "cluster.local",
		service: func(ns, name string) *corev1.Service {
			if ns == "default" && name == "reviews" {
				return svc
			}
			return nil
		},
		pod:  func(ns, name string) *corev1.Pod { return nil },
		node: func(name string) *corev1.Node { return nil },
	}
	unknownReady := reviewsSlice(discoveryv1.Endpoint{Addresses: []string{"10.0.0.9"}, Zone: ptr("z")})
	fqdn := reviewsSlice(discoveryv1.Endpoint{Addresses: []string{"reviews.example.com"}})
	fqdn.AddressType = discoveryv1.AddressTypeFQDN
	udp := reviewsSlice(discoveryv1.Endpoint{Addresses: []string{"10.0.0.8"}})
	udp.Ports[0].Protocol = ptr(corev1.ProtocolUDP)
	otherPort := reviewsSlice(discoveryv1.Endpoint{Addresses: []string{"10.0.0.7"}})
	otherPort.Ports[0].Name = ptr("metrics")
	noService := reviewsSlice(discoveryv1.Endpoint{Addresses: []string{"10.0.0.6"}})
	noService.Labels[discoveryv1.LabelServiceName] = "gone"
	got := b.build([]*discoveryv1.EndpointSlice{unknownReady, fqdn, udp, otherPort, noService})
	want := []registry.Endpoint{{Service: "reviews", Namespace: "default", Address: "10.0.0.9", Port: 8080, ServicePort: 9080, Locality: "/z"}} // no region known
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("build() (-got +want):\n%s", diff)
	}
}
