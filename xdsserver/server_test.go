package xdsserver

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/registrationpb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// start runs an open-mesh Server (WithInsecureRegistration, since most
// tests register endpoints without identities) on loopback and returns a
// plaintext client connection to it.
func start(t *testing.T, opts ...Option) (*Server, *grpc.ClientConn) {
	t.Helper()
	return startClosed(t, append([]Option{WithInsecureRegistration()}, opts...)...)
}

// startClosed is start without opening the mesh: registrations need an
// identity, as by default.
func startClosed(t *testing.T, opts ...Option) (*Server, *grpc.ClientConn) {
	t.Helper()
	s, err := New(opts...)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve() = %v, want ErrServerClosed", err)
		}
	})
	return s, cc
}

// testOwner is the owner secret of the one workload most tests register
// as, as internal/register sends it for a process.
var testOwner = []byte("the workload of the xdsserver tests")

// register opens a registration stream for ep, as the workload testOwner,
// and waits for the answer.
func register(ctx context.Context, t *testing.T, cc *grpc.ClientConn, ep *registrationpb.Endpoint) (registrationpb.Registration_RegisterClient, error) {
	t.Helper()
	return registerAs(ctx, t, cc, testOwner, ep)
}

// registerAs is register as the workload with owner secret owner (nil
// for none).
func registerAs(ctx context.Context, t *testing.T, cc *grpc.ClientConn, owner []byte, ep *registrationpb.Endpoint) (registrationpb.Registration_RegisterClient, error) {
	t.Helper()
	stream, err := registrationpb.NewRegistrationClient(cc).Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&registrationpb.RegisterRequest{Endpoint: ep, OwnerSecret: owner}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	return stream, err
}

func TestRegistrationValidation(t *testing.T) {
	ctx := testContext(t)
	_, cc := start(t)
	good := func() *registrationpb.Endpoint {
		return &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: 9080}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*registrationpb.Endpoint)
		want   string
	}{
		{"bad service name", func(e *registrationpb.Endpoint) { e.Service = "Reviews_1" }, `service: "Reviews_1" is not a valid name`},
		{"bad namespace", func(e *registrationpb.Endpoint) { e.Namespace = "a.b" }, `namespace: "a.b" is not a valid name`},
		{"hostname address", func(e *registrationpb.Endpoint) { e.Address = "reviews.local" }, `address "reviews.local" is not an IP address`},
		{"port zero", func(e *registrationpb.Endpoint) { e.Port = 0 }, "port 0 is not between 1 and 65535"},
		{"port too large", func(e *registrationpb.Endpoint) { e.Port = 70000 }, "port 70000 is not between 1 and 65535"},
		{"service port too large", func(e *registrationpb.Endpoint) { e.ServicePort = 70000 }, "service port 70000"},
		{"bad label", func(e *registrationpb.Endpoint) { e.Labels = map[string]string{"version": "v 1"} }, "is not a valid label value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := good()
			tc.mutate(ep)
			_, err := register(ctx, t, cc, ep)
			if grpcstatus.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Register(%v) = %v, want InvalidArgument containing %q", ep, err, tc.want)
			}
		})
	}
	if _, err := register(ctx, t, cc, good()); err != nil {
		t.Errorf("Register(valid endpoint) = %v, want success", err)
	}
}

// ads is a raw ADS client, as an xDS client other than grpc-go would be.
type ads struct {
	t      *testing.T
	stream v3discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient
}

func (a *ads) send(req *v3discoverypb.DiscoveryRequest) {
	a.t.Helper()
	req.Node = &v3corepb.Node{Id: "raw-client"}
	if err := a.stream.Send(req); err != nil {
		a.t.Fatal(err)
	}
}

func (a *ads) recv() *v3discoverypb.DiscoveryResponse {
	a.t.Helper()
	resp, err := a.stream.Recv()
	if err != nil {
		a.t.Fatal(err)
	}
	return resp
}

// TestNACKIsCountedAndReported: a client that rejects a response shows up in
// metrics and in the config dump with its reason.
func TestNACKIsCountedAndReported(t *testing.T) {
	ctx := testContext(t)
	s, cc := start(t)
	if _, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: 9080}); err != nil {
		t.Fatal(err)
	}
	stream, err := v3discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := &ads{t: t, stream: stream}
	waitFor(ctx, t, func() bool { return s.caches[resource.ListenerType].GetResources()["reviews:9080"] != nil })
	a.send(&v3discoverypb.DiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNames: []string{"reviews:9080"}})
	resp := a.recv()
	if len(resp.GetResources()) != 1 {
		t.Fatalf("LDS response has %d resources, want 1", len(resp.GetResources()))
	}
	a.send(&v3discoverypb.DiscoveryRequest{
		TypeUrl: resource.ListenerType, ResourceNames: []string{"reviews:9080"},
		ResponseNonce: resp.GetNonce(), VersionInfo: "",
		ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: "listener reviews:9080: unsupported filter"},
	})
	waitFor(ctx, t, func() bool {
		for _, c := range s.ConfigDump().Clients {
			if ts := c.Types["LDS"]; c.Node == "raw-client" && ts != nil && ts.Nacks == 1 && ts.LastNack == "listener reviews:9080: unsupported filter" {
				return true
			}
		}
		return false
	})
	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/metrics", nil))
	if !strings.Contains(rec.Body.String(), `trellis_xds_nacks_total{reason="unsupported",type="LDS"} 1`) {
		t.Errorf("/metrics lacks the NACK count:\n%s", rec.Body.String())
	}
}

func waitFor(ctx context.Context, t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met before the deadline")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestDeltaPushesOnlyWhatChanged: over delta ADS, a new endpoint of one
// service pushes that service's EDS resource and nothing else.
func TestDeltaPushesOnlyWhatChanged(t *testing.T) {
	ctx := testContext(t)
	_, cc := start(t)
	for _, svc := range []string{"reviews", "ratings"} {
		if _, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: svc, Address: "127.0.0.1", Port: 9080}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := v3discoverypb.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reviews := "outbound|9080||reviews.default.svc.cluster.local"
	ratings := "outbound|9080||ratings.default.svc.cluster.local"
	if err := stream.Send(&v3discoverypb.DeltaDiscoveryRequest{
		Node: &v3corepb.Node{Id: "delta-client"}, TypeUrl: resource.EndpointType,
		ResourceNamesSubscribe: []string{reviews, ratings},
	}); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for len(got) < 2 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetResources() {
			got[r.GetName()] = r.GetVersion()
		}
		stream.Send(&v3discoverypb.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: resp.GetNonce()})
	}
	if _, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.2", Port: 9080}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != reviews {
		var names []string
		for _, r := range resp.GetResources() {
			names = append(names, r.GetName())
		}
		t.Fatalf("delta push carried %v, want only %s", names, reviews)
	}
	if v := resp.GetResources()[0].GetVersion(); v == got[reviews] {
		t.Errorf("changed resource kept version %q", v)
	}
}

func TestAdminEndpoints(t *testing.T) {
	s, _ := start(t)
	h := s.AdminHandler()
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/healthz", 200, "ok"},
		{"/readyz", 200, "ok"},
		{"/metrics", 200, "trellis_xds_streams"},
		{"/debug/config_dump", 200, `"resources"`},
		{"/nope", 404, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost"+tc.path, nil))
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("GET %s = %d %.80q, want %d containing %q", tc.path, rec.Code, rec.Body.String(), tc.code, tc.body)
		}
	}
	s.Close()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/readyz", nil))
	if rec.Code != 503 {
		t.Errorf("GET /readyz after Close = %d, want 503", rec.Code)
	}
}

func TestNewRejectsBadConfigDir(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(WithConfigDir(dir + "/missing")); err == nil {
		t.Error("New(missing dir) = nil error, want one")
	}
	bad := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: [x], bogus: 1}\n"
	if err := writeTestFile(dir, "x.yaml", bad); err != nil {
		t.Fatal(err)
	}
	_, err := New(WithConfigDir(dir))
	if want := "x.yaml:1: VirtualService default/x: spec.bogus: unknown field"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("New(bad dir) = %v, want error containing %q", err, want)
	}
}

func TestRegistrationStreamEOFDeregisters(t *testing.T) {
	ctx := testContext(t)
	s, cc := start(t, WithRegistrationGrace(time.Hour))
	stream, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: 9080})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.ConfigDump().Registrations); n != 1 {
		t.Fatalf("registrations = %d, want 1", n)
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("Recv() after CloseSend = %v, want EOF", err)
	}
	if n := len(s.ConfigDump().Registrations); n != 0 {
		t.Errorf("after a clean close, registrations = %d, want 0 at once (grace is an hour)", n)
	}
}

const greeterEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter}
spec:
  hosts: [greeter]
  resolution: STATIC
  ports: [{number: 9080, name: grpc}]
`

// TestWarmupWithholdsColdEmptyEndpoints: a control plane that has just
// started does not publish an endpoint list that has never had an
// endpoint (clients would drop their cached endpoints), but does publish
// one that has just emptied, and publishes everything once warm.
func TestWarmupWithholdsColdEmptyEndpoints(t *testing.T) {
	ctx := testContext(t)
	cluster := "outbound|9080||greeter.default.svc.cluster.local"
	published := func(s *Server) bool {
		_, ok := s.caches[resource.EndpointType].GetResources()[cluster]
		return ok
	}
	dir := t.TempDir()
	if err := writeTestFile(dir, "se.yaml", greeterEntry); err != nil {
		t.Fatal(err)
	}

	warm, _ := start(t, WithConfigDir(dir), WithWarmup(-1))
	if !published(warm) {
		t.Error("without warm-up, the empty endpoint list is not published")
	}

	cold, cc := start(t, WithConfigDir(dir), WithWarmup(time.Hour))
	if published(cold) {
		t.Fatal("during warm-up, a never-populated endpoint list is published")
	}
	if _, ok := cold.caches[resource.ClusterType].GetResources()[cluster]; !ok {
		t.Error("during warm-up, the cluster itself is withheld too; want only its endpoints")
	}
	stream, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "greeter", Address: "127.0.0.1", Port: 9080})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool { return published(cold) })
	stream.CloseSend()
	stream.Recv()
	waitFor(ctx, t, func() bool {
		cla, ok := cold.caches[resource.EndpointType].GetResources()[cluster]
		return ok && len(cla.(*v3endpointpb.ClusterLoadAssignment).GetEndpoints()) == 0
	})

	short, _ := start(t, WithConfigDir(dir), WithWarmup(100*time.Millisecond))
	waitFor(ctx, t, func() bool { return published(short) })
}

// TestNACKLoopIsSlowed: a client that rejects every response is not sent
// the same resources again in a tight loop: from the second consecutive
// NACK the server backs off, and an ACK resets it.
func TestNACKLoopIsSlowed(t *testing.T) {
	ctx := testContext(t)
	s, cc := start(t)
	if _, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: 9080}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool { return s.caches[resource.ListenerType].GetResources()["reviews:9080"] != nil })
	stream, err := v3discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := &ads{t: t, stream: stream}
	a.send(&v3discoverypb.DiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNames: []string{"reviews:9080"}})
	resp := a.recv()
	start := time.Now()
	responses := 0
	for time.Since(start) < 1500*time.Millisecond {
		a.send(&v3discoverypb.DiscoveryRequest{
			TypeUrl: resource.ListenerType, ResourceNames: []string{"reviews:9080"}, ResponseNonce: resp.GetNonce(),
			ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: "rejected by the test"},
		})
		resp = a.recv()
		responses++
	}
	// Without backoff this loop turns thousands of times; with it, the
	// waits (0, 100ms, 200ms, 400ms, 800ms, ...) allow a handful.
	if responses > 10 {
		t.Errorf("%d responses to NACKs in 1.5s, want the server to back off", responses)
	}
	t.Logf("%d responses to NACKs in 1.5s", responses)
	for _, c := range s.ConfigDump().Clients {
		if ts := c.Types["LDS"]; c.Node == "raw-client" && ts.ConsecutiveNacks < 3 {
			t.Errorf("consecutive NACKs = %d, want the whole run counted", ts.ConsecutiveNacks)
		}
	}
}

func TestNACKBackoff(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{0, 0}, {1, 0}, {2, 100 * time.Millisecond}, {3, 200 * time.Millisecond}, {4, 400 * time.Millisecond}, {10, 5 * time.Second}, {1000, 5 * time.Second}} {
		if got := nackBackoff(tc.n); got != tc.want {
			t.Errorf("nackBackoff(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}
