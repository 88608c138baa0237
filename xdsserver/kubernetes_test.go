package xdsserver

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	networking "istio.io/api/networking/v1alpha3"
	clientnetworking "istio.io/client-go/pkg/apis/networking/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/trellismesh/trellis/internal/kube"
	"github.com/trellismesh/trellis/internal/registrationpb"
)

func init() {
	// The fake clientsets cannot stream a list over a watch (WatchList),
	// and the Istio informers do not say so; informers list, then watch.
	os.Setenv("KUBE_FEATURE_WatchListClient", "false")
}

// kubeFakes are fake clientsets counting the watches informers opened: the
// fake API server does not replay what changed between an informer's list
// and its watch, so tests change objects only once every watch is open.
type kubeFakes struct {
	kube    *k8sfake.Clientset
	istio   *istiofake.Clientset
	watches atomic.Int32
	clients *kube.Clients
}

// watchesPerServer is how many watches a Server with WithKubernetes opens:
// 8 Istio kinds, Services, EndpointSlices, Pods, Nodes, and the Store's
// WorkloadEntries.
const watchesPerServer = 13

func newKubeFakes() *kubeFakes {
	f := &kubeFakes{kube: k8sfake.NewClientset(), istio: istiofake.NewSimpleClientset()}
	counted := func(tracker k8stesting.ObjectTracker) k8stesting.WatchReactionFunc {
		return func(a k8stesting.Action) (bool, watch.Interface, error) {
			w, err := tracker.Watch(a.GetResource(), a.GetNamespace())
			if err != nil {
				return false, nil, err
			}
			f.watches.Add(1)
			return true, w, nil
		}
	}
	f.kube.PrependWatchReactor("*", counted(f.kube.Tracker()))
	f.istio.PrependWatchReactor("*", counted(f.istio.Tracker()))
	f.clients = &kube.Clients{Kube: f.kube, Istio: f.istio}
	return f
}

func (f *kubeFakes) waitWatches(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	waitFor(ctx, t, func() bool { return int(f.watches.Load()) >= n })
}

func ptr[T any](v T) *T { return &v }

// mustCreate fails the test on the error of an API call:
// mustCreate(t)(client.Create(...)).
func mustCreate(t *testing.T) func(any, error) {
	return func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

const (
	reviewsHost    = "reviews.default.svc.cluster.local"
	reviewsCluster = "outbound|9080||" + reviewsHost
)

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

func podEndpoint(addr, pod string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: pod},
	}
}

// createReviews creates the reviews Service (port 9080 "grpc" to 8080), Pods
// reviews-v1 (10.0.0.1), reviews-v2 (10.0.0.2, not ready) and reviews-v2b,
// and a slice with the first two.
func createReviews(ctx context.Context, t *testing.T, f *kubeFakes) {
	t.Helper()
	for _, p := range [][2]string{{"reviews-v1", "v1"}, {"reviews-v2", "v2"}, {"reviews-v2b", "v2"}} {
		mustCreate(t)(f.kube.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p[0], Namespace: "default", Labels: map[string]string{"app": "reviews", "version": p[1]}},
		}, metav1.CreateOptions{}))
	}
	mustCreate(t)(f.kube.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "default"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "grpc", Port: 9080, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
		}},
	}, metav1.CreateOptions{}))
	mustCreate(t)(f.kube.DiscoveryV1().EndpointSlices("default").Create(ctx, reviewsSlice(
		podEndpoint("10.0.0.1", "reviews-v1", true),
		podEndpoint("10.0.0.2", "reviews-v2", false),
	), metav1.CreateOptions{}))
}

func reviewsRule() *clientnetworking.DestinationRule {
	dr := &clientnetworking.DestinationRule{ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "default"}}
	dr.Spec.Host = "reviews"
	dr.Spec.Subsets = []*networking.Subset{
		{Name: "v1", Labels: map[string]string{"version": "v1"}},
		{Name: "v2", Labels: map[string]string{"version": "v2"}},
	}
	return dr
}

func reviewsRoute(name, host string, w1, w2 int32) *clientnetworking.VirtualService {
	vs := &clientnetworking.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	vs.Spec.Hosts = []string{host}
	vs.Spec.Http = []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{
		{Destination: &networking.Destination{Host: "reviews", Subset: "v1"}, Weight: w1},
		{Destination: &networking.Destination{Host: "reviews", Subset: "v2"}, Weight: w2},
	}}}
	return vs
}

// servedNames returns the names of the served resources of a type.
func servedNames(s *Server, typeURL string) []string {
	var out []string
	for name := range s.caches[typeURL].GetResources() {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// TestKubernetesServiceEndpoints runs a Server on fake clientsets: a
// Service with an EndpointSlice and Pods becomes the listener, route,
// cluster and endpoints a ServiceEntry would, with only ready endpoints and
// subsets selecting on the Pods' version label; scaling the slice and
// deleting the Service are reflected.
func TestKubernetesServiceEndpoints(t *testing.T) {
	ctx := testContext(t)
	f := newKubeFakes()
	s, _ := start(t, withKubeClients(f.clients, "xds-0"), WithWarmup(-1))
	f.waitWatches(ctx, t, watchesPerServer)
	mustCreate(t)(f.istio.NetworkingV1().DestinationRules("default").Create(ctx, reviewsRule(), metav1.CreateOptions{}))
	createReviews(ctx, t, f)

	v1, v2 := "outbound|9080|v1|"+reviewsHost, "outbound|9080|v2|"+reviewsHost
	want := map[string][]string{reviewsCluster: {"10.0.0.1:8080"}, v1: {"10.0.0.1:8080"}, v2: nil}
	waitFor(ctx, t, func() bool { return cmp.Equal(s.ConfigDump().Endpoints, want, cmpEmpty) })
	for _, c := range []struct {
		typeURL string
		want    []string
	}{
		{resource.ListenerType, []string{"reviews.default.svc.cluster.local:9080", "reviews.default:9080", "reviews:9080"}},
		{resource.RouteType, []string{reviewsHost + ":9080"}},
		{resource.ClusterType, []string{reviewsCluster, v1, v2}},
	} {
		got := servedNames(s, c.typeURL)
		for _, name := range c.want {
			if !slices.Contains(got, name) {
				t.Errorf("served %s = %v, want it to include %s", c.typeURL, got, name)
			}
		}
	}

	// Scale up: reviews-v2b joins, reviews-v2 becomes ready.
	_, err := f.kube.DiscoveryV1().EndpointSlices("default").Update(ctx, reviewsSlice(
		podEndpoint("10.0.0.1", "reviews-v1", true),
		podEndpoint("10.0.0.2", "reviews-v2", true),
		podEndpoint("10.0.0.3", "reviews-v2b", true),
	), metav1.UpdateOptions{})
	mustCreate(t)(0, err)
	want = map[string][]string{
		reviewsCluster: {"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"},
		v1:             {"10.0.0.1:8080"},
		v2:             {"10.0.0.2:8080", "10.0.0.3:8080"},
	}
	waitFor(ctx, t, func() bool { return cmp.Equal(s.ConfigDump().Endpoints, want, cmpEmpty) })

	// The Service goes: its endpoints go (the service stays defined, with
	// none, so clients fail fast).
	if err := f.kube.CoreV1().Services("default").Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want = map[string][]string{reviewsCluster: nil, v1: nil, v2: nil}
	waitFor(ctx, t, func() bool { return cmp.Equal(s.ConfigDump().Endpoints, want, cmpEmpty) })
}

// cmpEmpty makes nil and empty endpoint lists equal.
var cmpEmpty = cmp.Comparer(func(a, b []string) bool { return slices.Equal(a, b) })

// weightsOf returns the weighted clusters of the first route of the route
// configuration, as "cluster=weight".
func weightsOf(s *Server, name string) []string {
	r, ok := s.caches[resource.RouteType].GetResources()[name]
	if !ok {
		return nil
	}
	vhs := r.(*v3routepb.RouteConfiguration).GetVirtualHosts()
	if len(vhs) == 0 || len(vhs[0].GetRoutes()) == 0 {
		return nil
	}
	ra := vhs[0].GetRoutes()[0].GetRoute()
	if c := ra.GetCluster(); c != "" {
		return []string{c}
	}
	var out []string
	for _, wc := range ra.GetWeightedClusters().GetClusters() {
		out = append(out, fmt.Sprintf("%s=%d", wc.GetName(), wc.GetWeight().GetValue()))
	}
	return out
}

// TestKubernetesRoutes: a VirtualService custom resource added, updated and
// deleted changes the routes; an invalid one keeps the last good
// configuration and the error names the resource and the field.
func TestKubernetesRoutes(t *testing.T) {
	ctx := testContext(t)
	f := newKubeFakes()
	s, _ := start(t, withKubeClients(f.clients, "xds-0"), WithWarmup(-1))
	f.waitWatches(ctx, t, watchesPerServer)
	createReviews(ctx, t, f)
	dr := f.istio.NetworkingV1().DestinationRules("default")
	vs := f.istio.NetworkingV1().VirtualServices("default")
	mustCreate(t)(dr.Create(ctx, reviewsRule(), metav1.CreateOptions{}))
	mustCreate(t)(vs.Create(ctx, reviewsRoute("reviews", "reviews", 90, 10), metav1.CreateOptions{}))

	route := reviewsHost + ":9080"
	v1, v2 := "outbound|9080|v1|"+reviewsHost, "outbound|9080|v2|"+reviewsHost
	waitFor(ctx, t, func() bool { return slices.Equal(weightsOf(s, route), []string{v1 + "=90", v2 + "=10"}) })

	mustCreate(t)(vs.Update(ctx, reviewsRoute("reviews", "reviews", 20, 80), metav1.UpdateOptions{}))
	waitFor(ctx, t, func() bool { return slices.Equal(weightsOf(s, route), []string{v1 + "=20", v2 + "=80"}) })

	bad := reviewsRoute("mirror", "ratings", 50, 50)
	bad.Spec.Http[0].Mirror = &networking.Destination{Host: "reviews"}
	mustCreate(t)(vs.Create(ctx, bad, metav1.CreateOptions{}))
	waitFor(ctx, t, func() bool { return !s.ConfigDump().Config.Valid })
	d := s.ConfigDump()
	if len(d.Config.LastErrors) == 0 || !strings.Contains(d.Config.LastErrors[0], "k8s:VirtualService/default/mirror") ||
		!strings.Contains(d.Config.LastErrors[0], "spec.http[0].mirror") {
		t.Errorf("load errors = %q, want the resource k8s:VirtualService/default/mirror and its field spec.http[0].mirror named", d.Config.LastErrors)
	}
	if d.Config.Source != "kubernetes" || d.Config.Resources != 2 {
		t.Errorf("config in force: source %q, %d resources; want kubernetes, the last good 2", d.Config.Source, d.Config.Resources)
	}
	if got := weightsOf(s, route); !slices.Equal(got, []string{v1 + "=20", v2 + "=80"}) {
		t.Errorf("routes after an invalid resource = %v, want the last good ones", got)
	}

	if err := vs.Delete(ctx, "mirror", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := vs.Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool {
		return s.ConfigDump().Config.Valid && slices.Equal(weightsOf(s, route), []string{reviewsCluster})
	})
}

// TestKubernetesRegistration: a workload registering over the registration
// API becomes a WorkloadEntry, which another replica serves too; a clean
// deregistration deletes it.
func TestKubernetesRegistration(t *testing.T) {
	ctx := testContext(t)
	f := newKubeFakes()
	a, cc := start(t, withKubeClients(f.clients, "xds-0"), WithWarmup(-1))
	b, _ := start(t, withKubeClients(f.clients, "xds-1"), WithWarmup(-1))
	f.waitWatches(ctx, t, 2*watchesPerServer)

	stream, err := register(ctx, t, cc, &registrationpb.Endpoint{
		Service: "ratings", Namespace: "default", Address: "10.1.0.1", Port: 8080, ServicePort: 9080,
		Labels: map[string]string{"version": "v1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	name := "ratings-10-1-0-1-8080"
	we, err := f.istio.NetworkingV1().WorkloadEntries("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("WorkloadEntry %s after registering: %v", name, err)
	}
	if we.Labels[kube.LabelAutoRegistered] != "true" || we.Annotations[kube.AnnotationRegisteredBy] != "xds-0" ||
		we.Spec.GetAddress() != "10.1.0.1" || we.Spec.GetLabels()["version"] != "v1" {
		t.Errorf("WorkloadEntry = %v %v %v, want auto-registered by xds-0 for 10.1.0.1 version v1", we.Labels, we.Annotations, &we.Spec)
	}
	cluster := "outbound|9080||ratings.default.svc.cluster.local"
	for i, s := range []*Server{a, b} {
		waitFor(ctx, t, func() bool { return slices.Equal(s.ConfigDump().Endpoints[cluster], []string{"10.1.0.1:8080"}) })
		if regs := s.ConfigDump().Registrations; len(regs) != 1 || regs[0].Address != "10.1.0.1" {
			t.Errorf("replica %d registrations = %+v, want the one endpoint", i, regs)
		}
	}

	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool {
		_, err := f.istio.NetworkingV1().WorkloadEntries("default").Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	for _, s := range []*Server{a, b} {
		waitFor(ctx, t, func() bool { return len(s.ConfigDump().Endpoints[cluster]) == 0 })
	}
}
