package xdsserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	v3lrsgrpc "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/registrationpb"
)

// Owner secrets of the workloads in these tests.
var (
	victimOwner   = []byte("the victim workload's secret")
	attackerOwner = []byte("the attacker's own secret....")
)

// secureConn dials s's secure port at addr as the workload with SPIFFE
// path path ("" for no certificate).
func secureConn(ctx context.Context, t *testing.T, s *Server, addr, path string) *grpc.ClientConn {
	t.Helper()
	var cert *tls.Certificate
	if path != "" {
		cert = workloadCert(t, s.ca, path)
	}
	cc, err := dialer(addr, s.CARootPEM())(ctx, cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// registrationsByKey returns the registrations s holds, by key, with
// their labels.
func registrationsByKey(s *Server) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, r := range s.ConfigDump().Registrations {
		out[fmt.Sprintf("%s/%s/%s:%d", r.Namespace, r.Service, r.Address, r.Port)] = r.Labels
	}
	return out
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := grpcstatus.Code(err); got != want {
		t.Errorf("%s = %v, want code %v", what, err, want)
	}
}

// TestRegistrationCannotTakeAnotherWorkloadsEndpoint guards against the
// "policy stripped" attack: in an open mesh, a registration of a victim's
// exact namespace/service/address:port by anyone else — another owner
// secret or none — is refused while the victim's endpoint lives or waits
// out its grace, so the victim keeps its labels (which select its
// policies); the victim itself takes its endpoint back after a reconnect.
func TestRegistrationCannotTakeAnotherWorkloadsEndpoint(t *testing.T) {
	ctx := testContext(t)
	s, cc := start(t, WithRegistrationGrace(time.Minute))
	victim := &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: 9080, Labels: map[string]string{"version": "v1", "app": "reviews"}}
	vctx, breakVictim := context.WithCancel(ctx)
	if _, err := registerAs(vctx, t, cc, victimOwner, victim); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{"default/reviews/127.0.0.1:9080": {"version": "v1", "app": "reviews"}}
	stolen := &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: 9080, Labels: map[string]string{"version": "evil"}}
	attempt := func(when string) {
		t.Helper()
		_, err := registerAs(ctx, t, cc, attackerOwner, stolen)
		wantCode(t, "Register(victim's key, another owner) "+when, err, codes.PermissionDenied)
		_, err = registerAs(ctx, t, cc, nil, stolen)
		wantCode(t, "Register(victim's key, no owner secret) "+when, err, codes.PermissionDenied)
		if diff := cmp.Diff(registrationsByKey(s), want); diff != "" {
			t.Errorf("registrations %s (-got +want):\n%s", when, diff)
		}
	}
	attempt("while the victim is registered")

	breakVictim() // the victim's stream breaks: its endpoint waits out the grace
	waitFor(ctx, t, func() bool { return len(s.peerSnapshot()) == 0 })
	attempt("during the victim's grace")

	// The victim reconnects, with its own secret, and takes its endpoint
	// back.
	stream, err := registerAs(ctx, t, cc, victimOwner, victim)
	if err != nil {
		t.Fatalf("Register(victim, after a reconnect) = %v, want success", err)
	}
	stream.CloseSend() // a clean deregistration: the endpoint leaves at once
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("Recv() after CloseSend = %v, want io.EOF", err)
	}
	waitFor(ctx, t, func() bool { return len(s.ConfigDump().Registrations) == 0 })
	if _, err := registerAs(ctx, t, cc, attackerOwner, stolen); err != nil {
		t.Errorf("Register(a key nobody holds any more) = %v, want success", err)
	}
}

// TestRegistrationCannotTakeAnotherServicesAddress guards against "deny
// all by registration": registering another service at the address and
// port of a registered or configured endpoint is refused, and the
// victim's server listener stays as it was.
func TestRegistrationCannotTakeAnotherServicesAddress(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	if err := writeTestFile(dir, "ratings.yaml", `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  ports: [{number: 9090, name: grpc, protocol: GRPC}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.2}]
`); err != nil {
		t.Fatal(err)
	}
	s, cc := start(t, WithConfigDir(dir))
	if _, err := registerAs(ctx, t, cc, victimOwner, &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: 9080}); err != nil {
		t.Fatal(err)
	}
	name := "grpc/server?xds.resource.listening_address=127.0.0.1:9080"
	var before proto.Message
	waitFor(ctx, t, func() bool { before = s.caches[resource.ListenerType].GetResources()[name]; return before != nil })

	for _, ep := range []*registrationpb.Endpoint{
		{Service: "zzz", Namespace: "evil", Address: "127.0.0.1", Port: 9080},
		{Service: "reviews", Namespace: "evil", Address: "127.0.0.1", Port: 9080},
		{Service: "zzz", Namespace: "evil", Address: "127.0.0.2", Port: 9090},
	} {
		_, err := registerAs(ctx, t, cc, attackerOwner, ep)
		wantCode(t, fmt.Sprintf("Register(%s/%s at %s:%d)", ep.Namespace, ep.Service, ep.Address, ep.Port), err, codes.PermissionDenied)
	}
	s.rebuild()
	if after := s.caches[resource.ListenerType].GetResources()[name]; !proto.Equal(before, after) {
		t.Errorf("the victim's server listener changed after refused registrations:\nbefore %v\nafter  %v", before, after)
	}
	// The same workload may serve two services on one port.
	if _, err := registerAs(ctx, t, cc, victimOwner, &registrationpb.Endpoint{Service: "details", Address: "127.0.0.1", Port: 9080}); err != nil {
		t.Errorf("Register(the owner's second service on its own port) = %v, want success", err)
	}
}

// TestIdentityServesOnlyItsService guards against "any workload
// certificate serves any service of its namespace": with no binding in
// the configuration, an identity registers only the service named as its
// service account, in its own namespace.
func TestIdentityServesOnlyItsService(t *testing.T) {
	ctx := testContext(t)
	s, _ := startClosed(t, WithDataDir(t.TempDir()))
	addr := serveSecure(t, s)
	for i, tc := range []struct {
		path, service, namespace string
		want                     codes.Code
	}{
		{"/ns/default/sa/reviews", "reviews", "default", codes.OK},
		{"/ns/default/sa/batch", "reviews", "default", codes.PermissionDenied},
		{"/ns/default/sa/reviews", "ratings", "default", codes.PermissionDenied},
		{"/ns/shop/sa/reviews", "reviews", "default", codes.PermissionDenied},
		{"/ns/shop/sa/reviews", "reviews", "shop", codes.OK},
	} {
		cc := secureConn(ctx, t, s, addr, tc.path)
		ep := &registrationpb.Endpoint{Service: tc.service, Namespace: tc.namespace, Address: "127.0.0.1", Port: uint32(9080 + i)}
		_, err := register(ctx, t, cc, ep)
		wantCode(t, fmt.Sprintf("Register(%s/%s) as %s", tc.namespace, tc.service, tc.path), err, tc.want)
	}
	if diff := cmp.Diff(identitiesByKey(s), map[string]string{
		"default/reviews/127.0.0.1:9080": "spiffe://cluster.local/ns/default/sa/reviews",
		"shop/reviews/127.0.0.1:9084":    "spiffe://cluster.local/ns/shop/sa/reviews",
	}); diff != "" {
		t.Errorf("registered identities (-got +want):\n%s", diff)
	}
}

func identitiesByKey(s *Server) map[string]string {
	out := map[string]string{}
	for _, r := range s.ConfigDump().Registrations {
		out[fmt.Sprintf("%s/%s/%s:%d", r.Namespace, r.Service, r.Address, r.Port)] = r.Identity
	}
	return out
}

// TestAnonymousCannotJoinIdentifiedService guards against "automatic
// mTLS switched off for everyone": even in an open mesh, an anonymous
// registration into a service with identified endpoints is refused, so
// the service's cluster keeps mTLS to exactly its identity.
func TestAnonymousCannotJoinIdentifiedService(t *testing.T) {
	ctx := testContext(t)
	s, plain := start(t, WithDataDir(t.TempDir()))
	addr := serveSecure(t, s)
	cc := secureConn(ctx, t, s, addr, "/ns/default/sa/reviews")
	if _, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: 9080}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cc   *grpc.ClientConn
	}{{"plaintext", plain}, {"TLS without a certificate", secureConn(ctx, t, s, addr, "")}} {
		_, err := registerAs(ctx, t, tc.cc, attackerOwner, &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: 9081})
		wantCode(t, "Register(reviews, anonymous over "+tc.name+")", err, codes.PermissionDenied)
	}
	s.rebuild()
	if got := clusterSANs(t, s, "outbound|9080||reviews.default.svc.cluster.local"); !cmp.Equal(got, []string{"spiffe://cluster.local/ns/default/sa/reviews"}) {
		t.Errorf("reviews cluster SANs = %v, want only the identified endpoint's", got)
	}
}

// TestOversizedRegistrationRefused guards against oversized
// registrations: a locality of megabytes, too many parts, too many
// labels and an oversized message are refused with InvalidArgument, and
// nothing is registered.
func TestOversizedRegistrationRefused(t *testing.T) {
	ctx := testContext(t)
	s, cc := start(t)
	many := map[string]string{}
	for i := range maxLabels + 1 {
		many[fmt.Sprintf("l%d", i)] = "v"
	}
	big := map[string]string{}
	for i := range 60 {
		big[fmt.Sprintf("label-%d", i)] = strings.Repeat("v", 63)
		big[fmt.Sprintf("example.com/%s-%d", strings.Repeat("k", 200), i)] = "v"
	}
	for _, tc := range []struct {
		name string
		ep   *registrationpb.Endpoint
	}{
		{"2.5 MB locality", &registrationpb.Endpoint{Locality: strings.Repeat("x", 5<<19)}},
		{"four locality parts", &registrationpb.Endpoint{Locality: "a/b/c/d"}},
		{"a control byte in the locality", &registrationpb.Endpoint{Locality: "eu\x00/a"}},
		{"65 labels", &registrationpb.Endpoint{Labels: many}},
		{"a 16 KiB message", &registrationpb.Endpoint{Labels: big}},
	} {
		tc.ep.Service, tc.ep.Address, tc.ep.Port = "reviews", "127.0.0.1", 9080
		_, err := register(ctx, t, cc, tc.ep)
		wantCode(t, "Register("+tc.name+")", err, codes.InvalidArgument)
	}
	if n := len(s.ConfigDump().Registrations); n != 0 {
		t.Errorf("%d registrations after refused ones, want 0", n)
	}
}

// TestRegistrationLimits guards against registration floods: one peer
// holds at most PerPeer registrations, the mesh at most Total, and a
// peer opens at most Burst registration streams at once.
func TestRegistrationLimits(t *testing.T) {
	ctx := testContext(t)
	s, plain := start(t, WithDataDir(t.TempDir()), WithRegistrationLimits(RegistrationLimits{PerPeer: 5, Total: 8, Rate: 1000, Burst: 1000}))
	addr := serveSecure(t, s)
	for i := range 6 {
		_, err := register(ctx, t, plain, &registrationpb.Endpoint{Service: "flood", Address: "127.0.0.1", Port: uint32(10000 + i)})
		want := codes.OK
		if i == 5 {
			want = codes.ResourceExhausted
		}
		wantCode(t, fmt.Sprintf("anonymous registration %d of one peer", i+1), err, want)
	}
	cc := secureConn(ctx, t, s, addr, "/ns/default/sa/reviews")
	for i := range 4 {
		_, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: uint32(11000 + i)})
		want := codes.OK
		if i == 3 {
			want = codes.ResourceExhausted
		}
		wantCode(t, fmt.Sprintf("registration %d of another peer, with %d in the mesh", i+1, 5+i), err, want)
	}

	s2, plain2 := start(t, WithRegistrationLimits(RegistrationLimits{Rate: 0.001, Burst: 3}))
	for i := range 4 {
		stream, err := register(ctx, t, plain2, &registrationpb.Endpoint{Service: "flood", Address: "127.0.0.1", Port: uint32(12000 + i)})
		want := codes.OK
		if i == 3 {
			want = codes.ResourceExhausted
		}
		wantCode(t, fmt.Sprintf("registration stream %d in a burst of 3", i+1), err, want)
		if err == nil {
			stream.CloseSend()
		}
	}
	_ = s2
}

// TestRegistrationFloodIsBounded measures what a flood of registrations
// from one anonymous peer costs with the default limits: at most
// DefaultRegistrationsPerPeer are taken, the heap stays small, and a new
// service registered meanwhile by another workload still appears.
// docs/RELIABILITY.md quotes the figures it logs.
func TestRegistrationFloodIsBounded(t *testing.T) {
	ctx := testContext(t)
	s, cc := start(t, WithDataDir(t.TempDir()))
	addr := serveSecure(t, s)
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	const attempts, workers = 10000, 50
	var mu sync.Mutex
	codesSeen := map[codes.Code]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < attempts; i += workers {
				stream, err := registrationpb.NewRegistrationClient(cc).Register(ctx)
				if err != nil {
					continue
				}
				ep := &registrationpb.Endpoint{Service: fmt.Sprintf("flood-%d", i), Address: "127.0.0.1", Port: uint32(20000 + i%40000), ServicePort: 9080}
				stream.Send(&registrationpb.RegisterRequest{Endpoint: ep, OwnerSecret: attackerOwner})
				_, err = stream.Recv()
				mu.Lock()
				codesSeen[grpcstatus.Code(err)]++
				mu.Unlock()
			}
		}()
	}
	// Meanwhile a legitimate workload registers a new service.
	legit := secureConn(ctx, t, s, addr, "/ns/default/sa/ratings")
	begin := time.Now()
	if _, err := register(ctx, t, legit, &registrationpb.Endpoint{Service: "ratings", Address: "127.0.0.2", Port: 9080}); err != nil {
		t.Fatalf("Register(ratings) during the flood = %v", err)
	}
	waitFor(ctx, t, func() bool {
		_, ok := s.caches[resource.ListenerType].GetResources()["ratings:9080"]
		return ok
	})
	appeared := time.Since(begin)
	wg.Wait()
	flood := time.Since(start)
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	t.Logf("%d registration attempts from one peer in %v: %v; the mesh holds %d registrations; heap %.1f MiB -> %.1f MiB; a new service appeared %v after it registered",
		attempts, flood.Round(time.Millisecond), codesSeen, len(s.ConfigDump().Registrations),
		float64(m0.HeapInuse)/(1<<20), float64(m1.HeapInuse)/(1<<20), appeared.Round(time.Millisecond))
	if n := codesSeen[codes.OK]; n > DefaultRegistrationsPerPeer {
		t.Errorf("%d registrations of one peer accepted, want at most %d", n, DefaultRegistrationsPerPeer)
	}
	if n := len(s.ConfigDump().Registrations); n > DefaultRegistrationsPerPeer+1 {
		t.Errorf("the mesh holds %d registrations after the flood, want at most %d", n, DefaultRegistrationsPerPeer+1)
	}
}

// TestUpdateFloodEndsStream guards against a flood of endpoint changes on
// one registration stream: beyond the update limit the stream ends with
// ResourceExhausted.
func TestUpdateFloodEndsStream(t *testing.T) {
	ctx := testContext(t)
	_, cc := start(t)
	ep := &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: 9080}
	stream, err := register(ctx, t, cc, ep)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		upd := proto.Clone(ep).(*registrationpb.Endpoint)
		upd.Labels = map[string]string{"n": fmt.Sprint(i)}
		if err := stream.Send(&registrationpb.RegisterRequest{Endpoint: upd}); err != nil {
			break // the server ended the stream; Recv says why
		}
		if i > 1000 {
			break
		}
	}
	_, err = stream.Recv()
	wantCode(t, "Recv() after a flood of updates", err, codes.ResourceExhausted)
}

// adsStream opens a state-of-the-world ADS stream on cc and sends one
// EDS and one RDS request as node.
func adsStream(ctx context.Context, t *testing.T, cc *grpc.ClientConn, node *v3corepb.Node) v3discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	stream, err := v3discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{resource.EndpointType, resource.RouteType} {
		if err := stream.Send(&v3discoverypb.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: []string{"x"}}); err != nil {
			t.Fatal(err)
		}
	}
	return stream
}

// localityNode is a node with a locality and labels of its own.
func localityNode(i int) *v3corepb.Node {
	return &v3corepb.Node{Id: fmt.Sprintf("node-%d", i), Locality: &v3corepb.Locality{Region: fmt.Sprintf("r%d", i)}}
}

// TestNodeChangeEndsStream guards against a flood of distinct nodes on
// one ADS stream, each of which would cost a per-client view: a request
// naming another node than the stream's first ends the stream.
func TestNodeChangeEndsStream(t *testing.T) {
	ctx := testContext(t)
	s, cc := start(t)
	stream := adsStream(ctx, t, cc, localityNode(1))
	if err := stream.Send(&v3discoverypb.DiscoveryRequest{Node: localityNode(2), TypeUrl: resource.EndpointType, ResourceNames: []string{"y"}}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			wantCode(t, "Recv() after a node change", err, codes.InvalidArgument)
			break
		}
	}
	waitFor(ctx, t, func() bool { return s.eds.views() == 0 && s.rds.views() == 0 })
}

// TestClientViewsLeaveWithTheirStreams guards against per-client caches
// that outlive their clients: every distinct client view lives while a
// stream needs it, and goes with the last; beyond the cap a new view is
// refused.
func TestClientViewsLeaveWithTheirStreams(t *testing.T) {
	ctx := testContext(t)
	s, cc := start(t)
	s.eds.maxViews = 20
	var cancels []context.CancelFunc
	for i := range 20 {
		sctx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		stream := adsStream(sctx, t, cc, localityNode(i))
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("stream %d: Recv() = %v", i, err)
		}
	}
	if n := s.eds.views(); n != 20 {
		t.Errorf("EDS views with 20 streams of distinct localities = %d, want 20", n)
	}
	refused := adsStream(ctx, t, cc, localityNode(99))
	for {
		if _, err := refused.Recv(); err != nil {
			wantCode(t, "Recv() on a stream beyond the view cap", err, codes.ResourceExhausted)
			break
		}
	}
	for _, cancel := range cancels {
		cancel()
	}
	waitFor(ctx, t, func() bool { return s.eds.views() == 0 })
}

// TestSecurePortXDSNeedsIdentity: on the secure port, xDS and load
// reports need a verified workload certificate; without one the stream
// is refused as Unauthenticated.
func TestSecurePortXDSNeedsIdentity(t *testing.T) {
	ctx := testContext(t)
	s, _ := start(t, WithDataDir(t.TempDir()))
	addr := serveSecure(t, s)
	anon := secureConn(ctx, t, s, addr, "")
	stream := adsStream(ctx, t, anon, &v3corepb.Node{Id: "anonymous"})
	_, err := stream.Recv()
	wantCode(t, "ADS Recv() without a certificate", err, codes.Unauthenticated)
	lrs, err := v3lrsgrpc.NewLoadReportingServiceClient(anon).StreamLoadStats(ctx)
	if err == nil {
		_, err = lrs.Recv()
	}
	wantCode(t, "LRS Recv() without a certificate", err, codes.Unauthenticated)

	id := secureConn(ctx, t, s, addr, "/ns/default/sa/reviews")
	if _, err := adsStream(ctx, t, id, &v3corepb.Node{Id: "identified"}).Recv(); err != nil {
		t.Errorf("ADS Recv() with a workload certificate = %v, want a response", err)
	}
}

// TestUnservedServiceIsForgotten guards against a registration that
// shadows a name for ever: a registered service port stays defined for
// knownTTL after its last endpoint left, then its listener goes.
func TestUnservedServiceIsForgotten(t *testing.T) {
	ctx := testContext(t)
	old := knownTTL
	knownTTL = 300 * time.Millisecond
	t.Cleanup(func() { knownTTL = old })
	s, cc := start(t)
	stream, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "payments", Namespace: "internal", Address: "127.0.0.1", Port: 9999, ServicePort: 443})
	if err != nil {
		t.Fatal(err)
	}
	has := func() bool {
		_, ok := s.caches[resource.ListenerType].GetResources()["payments.internal:443"]
		return ok
	}
	waitFor(ctx, t, has)
	stream.CloseSend()
	stream.Recv()
	waitFor(ctx, t, func() bool { return len(s.ConfigDump().Registrations) == 0 })
	if !has() {
		t.Error("the listener left with the last endpoint; want it kept for knownTTL")
	}
	waitFor(ctx, t, func() bool { return !has() })
}

// TestInsecureRegistrationIsReported: an open mesh says so on
// /debug/config_dump and /metrics; a closed one too.
func TestInsecureRegistrationIsReported(t *testing.T) {
	for _, open := range []bool{false, true} {
		var s *Server
		if open {
			s, _ = start(t)
		} else {
			s, _ = startClosed(t)
		}
		if got := s.ConfigDump().Security.InsecureRegistration; got != open {
			t.Errorf("ConfigDump().Security.InsecureRegistration = %v, want %v", got, open)
		}
		srv := httptest.NewServer(s.AdminHandler())
		resp, err := srv.Client().Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		want := "trellis_insecure_registration 0"
		if open {
			want = "trellis_insecure_registration 1"
		}
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics does not hold %q", want)
		}
	}
}

// peerSnapshot returns the live registrations by peer, for tests.
func (s *Server) peerSnapshot() map[string]int {
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	return maps.Clone(s.peerRegs)
}

// TestConfigurationBindsServicesToIdentities: a ServiceEntry's
// subjectAltNames, or its WorkloadEntries' serviceAccounts, bind the
// service to those identities: they may register it, the identity named
// after the service no longer may, nor may anonymous workloads of an open
// mesh.
func TestConfigurationBindsServicesToIdentities(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	if err := writeTestFile(dir, "mesh.yaml", `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  resolution: STATIC
  subjectAltNames: ["spiffe://cluster.local/ns/default/sa/bookinfo-reviews"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  ports: [{number: 9090, name: grpc, protocol: GRPC}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-vm, namespace: default}
spec:
  address: 127.0.0.5
  labels: {app: ratings}
  serviceAccount: bookinfo-ratings
`); err != nil {
		t.Fatal(err)
	}
	s, plain := start(t, WithConfigDir(dir), WithDataDir(t.TempDir()))
	addr := serveSecure(t, s)
	for i, tc := range []struct {
		path, service string
		address       string
		want          codes.Code
	}{
		{"/ns/default/sa/bookinfo-reviews", "reviews", "127.0.0.1", codes.OK},
		{"/ns/default/sa/reviews", "reviews", "127.0.0.1", codes.PermissionDenied},
		{"", "reviews", "127.0.0.1", codes.PermissionDenied},
		{"/ns/default/sa/bookinfo-ratings", "ratings", "127.0.0.1", codes.OK},
		{"/ns/default/sa/ratings", "ratings", "127.0.0.1", codes.PermissionDenied},
		// The WorkloadEntry's own address belongs to its identity.
		{"/ns/default/sa/bookinfo-ratings", "ratings", "127.0.0.5", codes.OK},
		{"/ns/default/sa/bookinfo-reviews", "reviews", "127.0.0.5", codes.PermissionDenied},
	} {
		cc := plain
		if tc.path != "" {
			cc = secureConn(ctx, t, s, addr, tc.path)
		}
		port := uint32(9100 + i)
		if tc.address == "127.0.0.5" {
			port = 9090
		}
		ep := &registrationpb.Endpoint{Service: tc.service, Address: tc.address, Port: port}
		_, err := registerAs(ctx, t, cc, attackerOwner, ep)
		wantCode(t, fmt.Sprintf("Register(%s at %s:%d) as %q", tc.service, tc.address, port, tc.path), err, tc.want)
	}
}
