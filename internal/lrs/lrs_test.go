package lrs

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3lrsgrpc "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// lrsServer is a real LRS server on loopback that records what it is
// sent.
type lrsServer struct {
	v3lrsgrpc.UnimplementedLoadReportingServiceServer
	interval time.Duration

	mu      sync.Mutex
	nodes   []*v3corepb.Node
	reports []*v3endpointpb.ClusterStats
	streams int
	kick    chan struct{} // closed: end the current stream
}

func (l *lrsServer) StreamLoadStats(st v3lrsgrpc.LoadReportingService_StreamLoadStatsServer) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.nodes = append(l.nodes, req.GetNode())
	l.streams++
	kick := l.kick
	l.mu.Unlock()
	if err := st.Send(&v3lrsgrpc.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: durationpb.New(l.interval)}); err != nil {
		return err
	}
	reqs := make(chan *v3lrsgrpc.LoadStatsRequest)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- req:
			case <-st.Context().Done():
				return
			}
		}
	}()
	for {
		select {
		case req := <-reqs:
			l.mu.Lock()
			l.reports = append(l.reports, req.GetClusterStats()...)
			l.mu.Unlock()
		case err := <-errc:
			return err
		case <-kick:
			return errors.New("kicked by the test")
		}
	}
}

// totals sums what was reported for cluster.
func (l *lrsServer) totals(cluster string) (issued, ok, failed, latencyN uint64, latencyMs float64, locs []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, cs := range l.reports {
		if cs.GetClusterName() != cluster {
			continue
		}
		for _, ls := range cs.GetUpstreamLocalityStats() {
			issued += ls.GetTotalIssuedRequests()
			ok += ls.GetTotalSuccessfulRequests()
			failed += ls.GetTotalErrorRequests()
			loc := ls.GetLocality()
			if s := loc.GetRegion() + "/" + loc.GetZone() + "/" + loc.GetSubZone(); !slices.Contains(locs, s) {
				locs = append(locs, s)
			}
			for _, m := range ls.GetLoadMetricStats() {
				if m.GetMetricName() == LatencyMetric {
					latencyN += m.GetNumRequestsFinishedWithMetric()
					latencyMs += m.GetTotalMetricValue()
				}
			}
		}
	}
	slices.Sort(locs)
	return
}

func startLRS(t *testing.T) (*lrsServer, string) {
	t.Helper()
	l := &lrsServer{interval: 50 * time.Millisecond, kick: make(chan struct{})}
	g := grpc.NewServer()
	v3lrsgrpc.RegisterLoadReportingServiceServer(g, l)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return l, lis.Addr().String()
}

func poll(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: timed out", what)
		case <-tick.C:
		}
	}
}

// TestReporterReports: calls are reported per cluster and locality with
// their outcome and latency, the node carries the send-all-clusters
// feature, and a broken stream is re-opened without losing later load.
func TestReporterReports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, addr := startLRS(t)
	r, err := New(Config{Server: addr, Node: &v3corepb.Node{Id: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const cluster = "outbound|9080||greeter.default.svc.cluster.local"
	for i := range 10 {
		c := r.Start(cluster, []string{"", "eu/a/1"}[i%2])
		if i < 7 {
			c.Done(Succeeded)
		} else {
			c.Done(Failed)
		}
		c.Done(Failed) // a second Done does nothing
	}
	inFlight := r.Start(cluster, "")
	poll(ctx, t, "10 reported calls", func() bool {
		issued, ok, failed, n, _, _ := srv.totals(cluster)
		return issued == 11 && ok == 7 && failed == 3 && n == 10
	})
	_, _, _, _, _, locs := srv.totals(cluster)
	if diff := cmp.Diff(locs, []string{"//", "eu/a/1"}); diff != "" {
		t.Errorf("reported localities (-got +want):\n%s", diff)
	}
	srv.mu.Lock()
	node := srv.nodes[0]
	var inProgress uint64
	for _, cs := range srv.reports {
		for _, ls := range cs.GetUpstreamLocalityStats() {
			inProgress = max(inProgress, ls.GetTotalRequestsInProgress())
		}
	}
	srv.mu.Unlock()
	if node.GetId() != "n1" || !slices.Contains(node.GetClientFeatures(), "envoy.lrs.supports_send_all_clusters") {
		t.Errorf("node = %v, want id n1 with envoy.lrs.supports_send_all_clusters", node)
	}
	if inProgress != 1 {
		t.Errorf("in-progress requests reported = %d, want 1", inProgress)
	}
	inFlight.Done(Succeeded)

	srv.mu.Lock()
	close(srv.kick) // break the stream; the reporter opens another
	srv.kick = make(chan struct{})
	srv.mu.Unlock()
	poll(ctx, t, "a second stream", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.streams >= 2
	})
	r.Start(cluster, "").Done(Succeeded)
	poll(ctx, t, "the call after the new stream", func() bool {
		_, ok, _, _, _, _ := srv.totals(cluster)
		return ok >= 9
	})
}

// TestNilReporter: a nil Reporter and its nil Calls do nothing.
func TestNilReporter(t *testing.T) {
	var r *Reporter
	r.Start("c", "").Done(Failed)
	if err := r.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New(Config{}) = nil error, want one for the missing address")
	}
}

// TestCloseWithoutCalls: a Reporter never used does not connect, and Close
// is idempotent.
func TestCloseWithoutCalls(t *testing.T) {
	r, err := New(Config{Server: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	r.Close()
	r.Start("c", "").Done(Succeeded) // after Close: counted, never sent
	if r.cc != nil {
		t.Error("a closed Reporter connected")
	}
}

func TestHTTPOutcome(t *testing.T) {
	for _, tc := range []struct {
		resp *http.Response
		err  error
		want Outcome
	}{
		{&http.Response{StatusCode: 200}, nil, Succeeded},
		{&http.Response{StatusCode: 404}, nil, Succeeded},
		{&http.Response{StatusCode: 503}, nil, Failed},
		{nil, errors.New("reset"), Failed},
	} {
		if got := HTTPOutcome(tc.resp, tc.err); got != tc.want {
			t.Errorf("HTTPOutcome(%v, %v) = %v, want %v", tc.resp, tc.err, got, tc.want)
		}
	}
}
