package xdsserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3lrsgrpc "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
)

const (
	greeterHost  = "greeter.default.svc.cluster.local"
	helloHost    = "hello.default.svc.cluster.local"
	frontendHost = "frontend.default.svc.cluster.local"
)

// failing makes a test backend fail every call while set.
type failing struct{ on atomic.Bool }

func (f *failing) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if f.on.Load() {
		return nil, status.Error(codes.Internal, "injected by the test")
	}
	return h(ctx, req)
}

func (f *failing) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.on.Load() {
			http.Error(w, "injected by the test", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "hello")
	})
}

// serveLoopback runs a Server on loopback and returns its xDS address.
func serveLoopback(t *testing.T, s *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve() = %v, want ErrServerClosed", err)
		}
	})
	return lis.Addr().String()
}

// startBackends runs a gRPC greeter ("greeter") and an HTTP service
// ("hello"), both v1 on service port 9080, that fail while f says so.
func startBackends(t *testing.T, cp string, f *failing) {
	t.Helper()
	glis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs, err := mesh.NewServer(mesh.WithControlPlane(cp), mesh.WithService("greeter", "v1"), mesh.WithServicePort(9080),
		mesh.WithServerOptions(grpc.UnaryInterceptor(f.intercept)))
	if err != nil {
		t.Fatal(err)
	}
	greeterpb.RegisterGreeterServer(gs, &greeter.Server{Version: "v1", Instance: glis.Addr().String()})
	gdone := make(chan error, 1)
	go func() { gdone <- gs.Serve(glis) }()
	t.Cleanup(func() { gs.Close(); <-gdone })

	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs, err := mesh.NewHTTPServer(f.handler(), mesh.WithControlPlane(cp), mesh.WithService("hello", "v1"), mesh.WithServicePort(9080))
	if err != nil {
		t.Fatal(err)
	}
	hdone := make(chan error, 1)
	go func() { hdone <- hs.Serve(hlis) }()
	t.Cleanup(func() { hs.Close(); <-hdone })
}

// poll runs cond every 50 ms until it returns nil or ctx ends, then fails
// with the last error.
func poll(ctx context.Context, t *testing.T, what string, cond func() error) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, err)
		case <-tick.C:
		}
	}
}

func findEdge(g *Graph, source, destination string) (GraphEdge, bool) {
	for _, e := range g.Edges {
		if e.Source == source && e.Destination == destination {
			return e, true
		}
	}
	return GraphEdge{}, false
}

// TestLoadReportsMakeTheGraph: a gRPC client (grpc-go's own LRS, enabled by
// the clusters' lrs_server) and an HTTP client (mesh.Transport through
// internal/lrs), both of workload frontend v2, call their services through
// the mesh; /debug/graph shows both edges with non-zero rates and no
// errors, then errors when the backends fail. The HTTP edge carries
// latency; the gRPC edge does not.
func TestLoadReportsMakeTheGraph(t *testing.T) {
	ctx := testContext(t)
	s, err := New(WithLoadReportingInterval(200*time.Millisecond), WithAdminToken("s3cret"), WithWarmup(-1), WithInsecureRegistration())
	if err != nil {
		t.Fatal(err)
	}
	addr := serveLoopback(t, s)
	f := &failing{}
	startBackends(t, addr, f)

	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(addr), mesh.WithService("frontend", "v2"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	gc := greeterpb.NewGreeterClient(cc)
	tr := mesh.NewTransport(mesh.WithControlPlane(addr), mesh.WithService("frontend", "v2"), mesh.WithMeshOnly())
	defer tr.Close()
	hc := &http.Client{Transport: tr}
	traffic := func() {
		for range 5 {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			gc.SayHello(rctx, &greeterpb.HelloRequest{Name: "lrs"})
			if req, err := http.NewRequestWithContext(rctx, "GET", "http://hello:9080/", nil); err == nil {
				if resp, err := hc.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			cancel()
		}
	}

	admin := httptest.NewServer(s.AdminHandler())
	defer admin.Close()
	graph := func() (*Graph, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", admin.URL+"/debug/graph", nil)
		req.Header.Set("Authorization", "Bearer s3cret")
		resp, err := admin.Client().Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET /debug/graph = %s", resp.Status)
		}
		g := new(Graph)
		return g, json.NewDecoder(resp.Body).Decode(g)
	}

	poll(ctx, t, "edges with traffic and no errors", func() error {
		traffic()
		g, err := graph()
		if err != nil {
			return err
		}
		for _, dst := range []string{greeterHost, helloHost} {
			e, ok := findEdge(g, frontendHost, dst)
			if !ok {
				return fmt.Errorf("no edge %s -> %s in %+v", frontendHost, dst, g.Edges)
			}
			if e.RPS <= 0 || e.ErrorRate != 0 || e.SourceVersion != "v2" || e.Port != 9080 {
				return fmt.Errorf("edge %+v: want rps > 0, error rate 0, source version v2, port 9080", e)
			}
			if got, want := e.Cluster, "outbound|9080||"+dst; got != want {
				return fmt.Errorf("edge cluster = %q, want %q", got, want)
			}
		}
		if e, _ := findEdge(g, frontendHost, helloHost); e.LatencyMs == nil || *e.LatencyMs <= 0 {
			return fmt.Errorf("HTTP edge latency = %v, want > 0", e.LatencyMs)
		}
		if e, _ := findEdge(g, frontendHost, greeterHost); e.LatencyMs != nil {
			return fmt.Errorf("gRPC edge latency = %v, want none (grpc-go does not report it)", *e.LatencyMs)
		}
		for _, want := range []string{greeterHost, helloHost} {
			var n *GraphNode
			for i := range g.Nodes {
				if g.Nodes[i].ID == want {
					n = &g.Nodes[i]
				}
			}
			if n == nil || len(n.Endpoints) != 1 || len(n.Versions) != 1 || n.Versions[0] != "v1" || n.Client {
				return fmt.Errorf("node %s = %+v, want one v1 endpoint", want, n)
			}
		}
		return nil
	})

	f.on.Store(true)
	poll(ctx, t, "edges with errors", func() error {
		traffic()
		g, err := graph()
		if err != nil {
			return err
		}
		for _, dst := range []string{greeterHost, helloHost} {
			if e, _ := findEdge(g, frontendHost, dst); e.ErrorRate <= 0 || e.Errors == 0 {
				return fmt.Errorf("edge %s -> %s = %+v, want errors", frontendHost, dst, e)
			}
		}
		return nil
	})

	req := httptest.NewRequest("GET", "/debug/graph", nil)
	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("GET /debug/graph without the token = %d, want 401", rec.Code)
	}
}

// TestLoadStoreWindow: rates are finished requests over the sliding window
// (or the edge's age, if younger), errors over finished requests, latency
// the mean of what reports carry; an edge whose reports stopped falls to
// zero and then leaves the graph.
func TestLoadStoreWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	ls := &loadStore{interval: time.Second, now: func() time.Time { return now }, edges: map[edgeKey]*edge{}}
	src := source{id: frontendHost, service: "frontend", namespace: "default", version: "v1"}
	report := func(ok, failed uint64, latencyMs float64) []*v3endpointpb.ClusterStats {
		l := &v3endpointpb.UpstreamLocalityStats{TotalSuccessfulRequests: ok, TotalErrorRequests: failed, TotalIssuedRequests: ok + failed}
		if latencyMs > 0 {
			l.LoadMetricStats = []*v3endpointpb.EndpointLoadMetricStats{{MetricName: latencyMetric, NumRequestsFinishedWithMetric: ok + failed, TotalMetricValue: latencyMs * float64(ok+failed)}}
		}
		return []*v3endpointpb.ClusterStats{{ClusterName: "outbound|9080|v2|" + greeterHost, LoadReportInterval: durationpb.New(time.Second), UpstreamLocalityStats: []*v3endpointpb.UpstreamLocalityStats{l}}}
	}
	for range 4 { // 4 s of 9 OK and 1 failed request per second at 20 ms
		now = now.Add(time.Second)
		ls.add(src, report(9, 1, 20))
	}
	edges := ls.graphEdges(now)
	if len(edges) != 1 {
		t.Fatalf("graphEdges() = %+v, want one edge", edges)
	}
	e := edges[0]
	if e.RPS != 10 || e.ErrorRate != 0.1 || e.LatencyMs == nil || *e.LatencyMs != 20 || e.Subset != "v2" || e.Destination != greeterHost {
		t.Errorf("edge = %+v (latency %v), want 10 rps, error rate 0.1, 20 ms, subset v2 of %s", e, e.LatencyMs, greeterHost)
	}
	now = now.Add(graphWindow + time.Second) // no reports since
	if edges := ls.graphEdges(now); len(edges) != 1 || edges[0].RPS != 0 {
		t.Errorf("graphEdges() after the window = %+v, want the edge idle", edges)
	}
	now = now.Add(edgeExpiry)
	if edges := ls.graphEdges(now); len(edges) != 0 {
		t.Errorf("graphEdges() after expiry = %+v, want none", edges)
	}
}

// TestLRSStreamAnswersAndAttributes: a raw LRS client is told to send all
// clusters at the configured interval, and its load is attributed to the
// workload its node metadata names (a client without metadata to its node
// ID).
func TestLRSStreamAnswersAndAttributes(t *testing.T) {
	ctx := testContext(t)
	s, cc := start(t, WithLoadReportingInterval(1500*time.Millisecond))
	for _, tc := range []struct {
		node       *v3corepb.Node
		wantSource string
	}{
		{&v3corepb.Node{Id: "a", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"SERVICE": structpb.NewStringValue("ratings"), "NAMESPACE": structpb.NewStringValue("shop"), "VERSION": structpb.NewStringValue("v3"),
		}}}, "ratings.shop.svc.cluster.local"},
		{&v3corepb.Node{Id: "plain-grpc-client"}, "plain-grpc-client"},
	} {
		st, err := v3lrsgrpc.NewLoadReportingServiceClient(cc).StreamLoadStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&v3lrsgrpc.LoadStatsRequest{Node: tc.node}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("Recv() = %v", err)
		}
		if !resp.GetSendAllClusters() || resp.GetLoadReportingInterval().AsDuration() != 1500*time.Millisecond {
			t.Errorf("first response = %v, want send_all_clusters and a 1.5s interval", resp)
		}
		if err := st.Send(&v3lrsgrpc.LoadStatsRequest{ClusterStats: []*v3endpointpb.ClusterStats{{
			ClusterName:           "outbound|9080||" + greeterHost,
			LoadReportInterval:    durationpb.New(time.Second),
			UpstreamLocalityStats: []*v3endpointpb.UpstreamLocalityStats{{TotalSuccessfulRequests: 3, TotalIssuedRequests: 3}},
		}}}); err != nil {
			t.Fatal(err)
		}
		st.CloseSend()
		if _, err := st.Recv(); err != io.EOF {
			t.Errorf("Recv() after CloseSend = %v, want EOF", err)
		}
		poll(ctx, t, "the edge of "+tc.wantSource, func() error {
			if e, ok := findEdge(s.Graph(), tc.wantSource, greeterHost); !ok || e.Requests != 3 {
				return fmt.Errorf("edge %s -> %s = %+v, %v; want 3 requests", tc.wantSource, greeterHost, e, ok)
			}
			return nil
		})
	}
	g := s.Graph()
	for _, n := range g.Nodes {
		if n.ID == "plain-grpc-client" && !n.Client {
			t.Errorf("node %+v: want a client", n)
		}
	}
}
