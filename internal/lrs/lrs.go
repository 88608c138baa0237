// Package lrs reports the load of a client's calls to a control plane over
// the xDS load reporting service (envoy.service.load_stats.v3), as grpc-go
// does for its xDS clusters (gRFC A27). Trellis's HTTP client uses it so that
// the control plane sees HTTP traffic exactly as it sees gRPC traffic.
//
// Per cluster and locality a Reporter counts the requests issued,
// succeeded, failed and in progress, and — what grpc-go does not report —
// the latency of finished requests as the load metric "latency_ms" (the sum
// over the interval, with the number of requests it covers).
//
//	r, _ := lrs.New(lrs.Config{Server: "127.0.0.1:15010", Node: node})
//	defer r.Close()
//	call := r.Start("outbound|9080||reviews.default.svc.cluster.local", "")
//	// ... send the request ...
//	call.Done(lrs.Succeeded)
package lrs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3lrsgrpc "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellismesh/trellis/internal/backoff"
	"github.com/trellismesh/trellis/internal/replicas"
)

// LatencyMetric is the name of the load metric carrying request latency in
// milliseconds.
const LatencyMetric = "latency_ms"

// Test knobs. retryBackoff spaces the re-openings of a failed stream: from
// 100 ms, doubling, at most 5 s, each delay between half and all of that.
var (
	timeNow      = time.Now
	retryBackoff = backoff.Exponential{Config: grpcbackoff.Config{
		BaseDelay: 100 * time.Millisecond, Multiplier: 2, Jitter: 0.5, MaxDelay: 5 * time.Second,
	}, Capped: true}
)

// Config configures a Reporter.
type Config struct {
	// Server is the control plane address ("host:port", several replicas
	// "a:15010,b:15010" — see package replicas — or any gRPC target).
	// Required.
	Server string
	// Node identifies the client; it is sent on the first request of each
	// stream. The control plane attributes the load to the workload its
	// metadata names (SERVICE, NAMESPACE, VERSION). The Reporter keeps a
	// copy. If nil, an empty node.
	Node *v3corepb.Node
	// DialOptions are used to dial Server. If empty, the connection is
	// plaintext; if not, they must include transport credentials.
	DialOptions []grpc.DialOption
	// Logger receives the Reporter's logs. If nil, it logs nothing.
	Logger *slog.Logger
}

// Outcome is how a call ended.
type Outcome int

const (
	// Succeeded counts the call in total_successful_requests.
	Succeeded Outcome = iota
	// Failed counts the call in total_error_requests.
	Failed
)

// Reporter counts calls and reports them to the control plane every
// interval the control plane asks for. It is safe for concurrent use; the
// methods of a nil *Reporter do nothing. New does no I/O: the Reporter
// connects when the first call starts.
type Reporter struct {
	cfg  Config
	log  *slog.Logger
	node *v3corepb.Node

	stats sync.Map // key → *counters

	startOnce sync.Once
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	mu        sync.Mutex
	cc        *grpc.ClientConn // set by the first Start
	closed    bool
}

type key struct{ cluster, locality string }

// counters are one cluster's and locality's load since the last report.
type counters struct {
	issued, succeeded, failed atomic.Uint64
	inProgress                atomic.Int64
	latencyUs, latencyCount   atomic.Uint64
}

// New returns a Reporter for the control plane cfg.Server. It does not
// block and does no I/O.
func New(cfg Config) (*Reporter, error) {
	if cfg.Server == "" {
		return nil, errors.New("lrs: no control plane address")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	node := &v3corepb.Node{}
	if cfg.Node != nil {
		node = proto.Clone(cfg.Node).(*v3corepb.Node)
	}
	node.ClientFeatures = append(node.ClientFeatures, "envoy.lrs.supports_send_all_clusters")
	r := &Reporter{cfg: cfg, log: log.With("controlPlane", cfg.Server), node: node}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Call is a call in progress; end it with Done.
type Call struct {
	c     *counters
	start time.Time
	once  sync.Once
}

// Start records a call issued to an endpoint of cluster in locality
// ("region/zone/subzone", may be empty). It never blocks.
func (r *Reporter) Start(cluster, locality string) *Call {
	if r == nil {
		return nil
	}
	r.startOnce.Do(r.run)
	v, ok := r.stats.Load(key{cluster, locality})
	if !ok {
		v, _ = r.stats.LoadOrStore(key{cluster, locality}, new(counters))
	}
	c := v.(*counters)
	c.issued.Add(1)
	c.inProgress.Add(1)
	return &Call{c: c, start: timeNow()}
}

// Done records the end of the call and its latency. Calls after the first
// do nothing, as do calls on a nil *Call.
func (c *Call) Done(o Outcome) {
	if c == nil {
		return
	}
	c.once.Do(func() {
		c.c.inProgress.Add(-1)
		if o == Failed {
			c.c.failed.Add(1)
		} else {
			c.c.succeeded.Add(1)
		}
		c.c.latencyUs.Add(uint64(max(timeNow().Sub(c.start).Microseconds(), 0)))
		c.c.latencyCount.Add(1)
	})
}

// Close stops reporting: it ends the stream and the connection, and waits
// for them. Load not yet reported is lost. It is idempotent.
func (r *Reporter) Close() error {
	if r == nil {
		return nil
	}
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		cc := r.cc
		r.mu.Unlock()
		r.cancel()
		r.wg.Wait()
		if cc != nil {
			cc.Close()
		}
	})
	return nil
}

// run connects and starts the reporting loop.
func (r *Reporter) run() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	opts := r.cfg.DialOptions
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	var cc *grpc.ClientConn
	target, err := replicas.Target(r.cfg.Server)
	if err == nil {
		cc, err = grpc.NewClient(target, opts...)
	}
	if err != nil {
		r.log.Warn("load reporting disabled", "error", err)
		return
	}
	r.cc = cc
	r.wg.Add(1)
	go r.loop(cc)
}

// loop runs streams, re-opened with jittered exponential backoff, until
// Close.
func (r *Reporter) loop(cc *grpc.ClientConn) {
	defer r.wg.Done()
	client := v3lrsgrpc.NewLoadReportingServiceClient(cc)
	retries := 0
	for {
		reported, err := r.stream(client)
		if r.ctx.Err() != nil {
			return
		}
		if reported {
			retries = 0
		}
		r.log.Debug("load reporting stream ended", "error", err)
		t := time.NewTimer(retryBackoff.Backoff(retries))
		retries++
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			return
		}
	}
}

// stream runs one LRS stream: it sends the node, learns the interval and
// the clusters to report, and reports until the stream fails. It reports
// whether the control plane answered.
func (r *Reporter) stream(client v3lrsgrpc.LoadReportingServiceClient) (bool, error) {
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	st, err := client.StreamLoadStats(ctx)
	if err != nil {
		return false, err
	}
	if err := st.Send(&v3lrsgrpc.LoadStatsRequest{Node: r.node}); err != nil {
		return false, err
	}
	resp, err := st.Recv()
	if err != nil {
		return false, err
	}
	interval, clusters, err := settings(resp)
	if err != nil {
		return false, err
	}
	// Later responses may change the settings; a failed receive ends the
	// stream.
	updates := make(chan *v3lrsgrpc.LoadStatsResponse, 1)
	recvErr := make(chan error, 1)
	go func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case updates <- resp:
			case <-ctx.Done():
				recvErr <- ctx.Err()
				return
			}
		}
	}()
	defer func() { cancel(); <-recvErr }()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	last := timeNow()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err := <-recvErr:
			recvErr <- err // for the deferred receive
			return true, err
		case resp := <-updates:
			iv, cl, err := settings(resp)
			if err != nil {
				return true, err
			}
			if iv != interval {
				interval = iv
				tick.Reset(interval)
			}
			clusters = cl
		case <-tick.C:
			now := timeNow()
			stats := r.collect(clusters, now.Sub(last))
			last = now
			if len(stats) == 0 {
				continue
			}
			if err := st.Send(&v3lrsgrpc.LoadStatsRequest{ClusterStats: stats}); err != nil {
				return true, err
			}
		}
	}
}

// settings reads a response: the reporting interval and the clusters to
// report (nil: all).
func settings(resp *v3lrsgrpc.LoadStatsResponse) (time.Duration, map[string]bool, error) {
	iv := resp.GetLoadReportingInterval()
	if err := iv.CheckValid(); err != nil || iv.AsDuration() <= 0 {
		return 0, nil, fmt.Errorf("lrs: invalid load_reporting_interval %v", iv)
	}
	if resp.GetSendAllClusters() {
		return iv.AsDuration(), nil, nil
	}
	clusters := map[string]bool{}
	for _, c := range resp.GetClusters() {
		clusters[c] = true
	}
	return iv.AsDuration(), clusters, nil
}

// collect takes the load since the last report, resetting the counters
// (in-progress counts excepted). clusters nil means all.
func (r *Reporter) collect(clusters map[string]bool, interval time.Duration) []*v3endpointpb.ClusterStats {
	byCluster := map[string]*v3endpointpb.ClusterStats{}
	var out []*v3endpointpb.ClusterStats
	r.stats.Range(func(k, v any) bool {
		kk, c := k.(key), v.(*counters)
		if clusters != nil && !clusters[kk.cluster] {
			return true
		}
		issued, succeeded, failed := c.issued.Swap(0), c.succeeded.Swap(0), c.failed.Swap(0)
		inProgress := c.inProgress.Load()
		latUs, latN := c.latencyUs.Swap(0), c.latencyCount.Swap(0)
		if issued == 0 && succeeded == 0 && failed == 0 && inProgress <= 0 {
			return true
		}
		cs := byCluster[kk.cluster]
		if cs == nil {
			cs = &v3endpointpb.ClusterStats{
				ClusterName:        kk.cluster,
				ClusterServiceName: kk.cluster,
				LoadReportInterval: durationpb.New(interval),
			}
			byCluster[kk.cluster] = cs
			out = append(out, cs)
		}
		ls := &v3endpointpb.UpstreamLocalityStats{
			Locality:                localityOf(kk.locality),
			TotalSuccessfulRequests: succeeded,
			TotalErrorRequests:      failed,
			TotalIssuedRequests:     issued,
			TotalRequestsInProgress: uint64(max(inProgress, 0)),
		}
		if latN > 0 {
			ls.LoadMetricStats = []*v3endpointpb.EndpointLoadMetricStats{{
				MetricName:                    LatencyMetric,
				NumRequestsFinishedWithMetric: latN,
				TotalMetricValue:              float64(latUs) / 1000,
			}}
		}
		cs.UpstreamLocalityStats = append(cs.UpstreamLocalityStats, ls)
		return true
	})
	return out
}

// localityOf parses "region/zone/subzone".
func localityOf(s string) *v3corepb.Locality {
	parts := strings.SplitN(s, "/", 3)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	return &v3corepb.Locality{Region: parts[0], Zone: parts[1], SubZone: parts[2]}
}

// HTTPOutcome classifies an HTTP attempt as Envoy's load reports do: Failed
// for a request that got no response or a 5xx, Succeeded otherwise.
func HTTPOutcome(resp *http.Response, err error) Outcome {
	if err != nil || resp == nil || resp.StatusCode >= 500 {
		return Failed
	}
	return Succeeded
}
