package xdsserver

import (
	"cmp"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3lrsgrpc "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellismesh/trellis/internal/config"
)

// Load reporting defaults.
const (
	defaultLoadReportingInterval = time.Second
	// graphWindow is the sliding window rates are computed over (at least
	// five reporting intervals).
	graphWindow = 10 * time.Second
	// edgeExpiry is how long an edge without reports stays in the graph.
	edgeExpiry = 5 * time.Minute
	// latencyMetric is the load metric Trellis's HTTP client reports
	// latency in (internal/lrs.LatencyMetric).
	latencyMetric = "latency_ms"
)

// WithLoadReportingInterval sets how often clients report their load
// (LRS) to the Server. If zero or not given, every second.
func WithLoadReportingInterval(d time.Duration) Option {
	return optionFunc(func(o *options) { o.lrsInterval = d })
}

// registerLRS serves the load reporting service on g, creating the load
// store on the first call.
func registerLRS(g *grpc.Server, s *Server) {
	if s.loads == nil {
		s.loads = &loadStore{interval: cmp.Or(s.opts.lrsInterval, defaultLoadReportingInterval), now: time.Now, edges: map[edgeKey]*edge{}}
	}
	v3lrsgrpc.RegisterLoadReportingServiceServer(g, &lrsService{s: s})
}

// lrsService implements envoy.service.load_stats.v3.LoadReportingService:
// clients (grpc-go for every cluster with lrs_server, Trellis's HTTP client
// through internal/lrs) stream the load of each cluster since their last
// report.
type lrsService struct {
	s *Server
}

func (l *lrsService) StreamLoadStats(stream v3lrsgrpc.LoadReportingService_StreamLoadStatsServer) error {
	store := l.s.loads
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	src := sourceOf(req.GetNode())
	l.s.log.Debug("load reporting stream opened", "node", req.GetNode().GetId(), "source", src.id)
	if err := stream.Send(&v3lrsgrpc.LoadStatsResponse{
		SendAllClusters:       true,
		LoadReportingInterval: durationpb.New(store.interval),
	}); err != nil {
		return err
	}
	for {
		store.add(src, req.GetClusterStats()) // the first request may carry load too
		req, err = stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// source is the workload a load report comes from.
type source struct {
	id        string // graph node: the service's canonical host, or the node ID
	service   string
	namespace string
	version   string
}

// sourceOf identifies a client by its node metadata (SERVICE, NAMESPACE,
// VERSION, as mesh clients send them), else by its node cluster, else by
// its node ID.
func sourceOf(n *v3corepb.Node) source {
	md := n.GetMetadata().GetFields()
	src := source{
		service:   md["SERVICE"].GetStringValue(),
		namespace: cmp.Or(md["NAMESPACE"].GetStringValue(), "default"),
		version:   md["VERSION"].GetStringValue(),
	}
	src.service = cmp.Or(src.service, n.GetCluster())
	if src.service == "" {
		src.service = cmp.Or(n.GetId(), "unknown")
		src.id = src.service
		src.namespace = ""
		return src
	}
	src.id = config.CanonicalHost(src.service, src.namespace)
	return src
}

// loadStore accumulates load reports per source workload and destination
// cluster over a sliding window. It is safe for concurrent use.
type loadStore struct {
	interval time.Duration
	now      func() time.Time // the clock; a test knob

	mu    sync.Mutex
	edges map[edgeKey]*edge
}

type edgeKey struct {
	source, sourceVersion, cluster string
}

type edge struct {
	src     source
	cluster string
	samples []sample // in arrival order
	// inProgress is the last reported count of requests in flight, per
	// reporting stream would be exact; the sum of the last report is kept.
	inProgress uint64
	last       time.Time
}

// sample is one report of one cluster.
type sample struct {
	at                  time.Time
	interval            time.Duration
	succeeded, failed   uint64
	issued              uint64
	latencyMs, latencyN float64
}

func (ls *loadStore) add(src source, stats []*v3endpointpb.ClusterStats) {
	if len(stats) == 0 {
		return
	}
	now := ls.now()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, cs := range stats {
		name := cmp.Or(cs.GetClusterName(), cs.GetClusterServiceName())
		k := edgeKey{src.id, src.version, name}
		e := ls.edges[k]
		if e == nil {
			e = &edge{src: src, cluster: name}
			ls.edges[k] = e
		}
		smp := sample{at: now, interval: min(max(cs.GetLoadReportInterval().AsDuration(), 0), graphWindow)}
		var inProgress uint64
		for _, l := range cs.GetUpstreamLocalityStats() {
			smp.succeeded += l.GetTotalSuccessfulRequests()
			smp.failed += l.GetTotalErrorRequests()
			smp.issued += l.GetTotalIssuedRequests()
			inProgress += l.GetTotalRequestsInProgress()
			for _, m := range l.GetLoadMetricStats() {
				if m.GetMetricName() == latencyMetric {
					smp.latencyMs += m.GetTotalMetricValue()
					smp.latencyN += float64(m.GetNumRequestsFinishedWithMetric())
				}
			}
		}
		e.samples = append(e.samples, smp)
		e.inProgress = inProgress
		e.last = now
	}
	ls.pruneLocked(now)
}

func (ls *loadStore) pruneLocked(now time.Time) {
	for k, e := range ls.edges {
		i := 0
		for i < len(e.samples) && now.Sub(e.samples[i].at) > graphWindow {
			i++
		}
		e.samples = e.samples[i:]
		if now.Sub(e.last) > edgeExpiry {
			delete(ls.edges, k)
		}
	}
}

// GraphEdge is the traffic from a source workload to a destination cluster,
// from the clients' load reports over the last Window.
type GraphEdge struct {
	// Source is the graph node of the client: its service's canonical host
	// ("frontend.default.svc.cluster.local"), or its xDS node ID when the
	// client names no service.
	Source        string `json:"source"`
	SourceVersion string `json:"sourceVersion,omitempty"`
	// Destination is the destination service's canonical host; Port and
	// Subset complete the cluster ("outbound|port|subset|host").
	Destination string `json:"destination"`
	Port        uint32 `json:"port,omitempty"`
	Subset      string `json:"subset,omitempty"`
	Cluster     string `json:"cluster"`
	// RPS is the rate of finished requests (successful or not) per second.
	RPS float64 `json:"rps"`
	// ErrorRate is the fraction of finished requests that failed: for gRPC
	// any status but OK, for HTTP a 5xx or no response.
	ErrorRate float64 `json:"errorRate"`
	// LatencyMs is the mean latency in milliseconds, when the client reports
	// it (Trellis's HTTP client does; grpc-go does not): nil otherwise.
	LatencyMs  *float64  `json:"latencyMs"`
	Requests   uint64    `json:"requests"` // finished in the window
	Errors     uint64    `json:"errors"`   // failed in the window
	InProgress uint64    `json:"inProgress"`
	LastReport time.Time `json:"lastReport"`
}

// GraphNode is a service of the mesh, or a client that names none.
type GraphNode struct {
	ID        string          `json:"id"`
	Service   string          `json:"service"`
	Namespace string          `json:"namespace,omitempty"`
	Versions  []string        `json:"versions"`
	Endpoints []GraphEndpoint `json:"endpoints"`
	// Client is true for a node known only as a load reporter.
	Client bool `json:"client,omitempty"`
}

// GraphEndpoint is a registered endpoint of a service.
type GraphEndpoint struct {
	Address string `json:"address"` // "ip:port"
	Version string `json:"version,omitempty"`
}

// Graph is the JSON document served at /debug/graph.
type Graph struct {
	GeneratedAt time.Time `json:"generatedAt"`
	// WindowSeconds is the sliding window of the edges' rates.
	WindowSeconds float64 `json:"windowSeconds"`
	// ReportIntervalSeconds is the load reporting interval clients are
	// given.
	ReportIntervalSeconds float64     `json:"reportIntervalSeconds"`
	Nodes                 []GraphNode `json:"nodes"`
	Edges                 []GraphEdge `json:"edges"`
}

// parseCluster splits "outbound|port|subset|host".
func parseCluster(name string) (host string, port uint32, subset string) {
	parts := strings.SplitN(name, "|", 4)
	if len(parts) != 4 || parts[0] != "outbound" {
		return name, 0, ""
	}
	p, _ := strconv.ParseUint(parts[1], 10, 32)
	return parts[3], uint32(p), parts[2]
}

// edges returns the edges with their windowed rates.
func (ls *loadStore) graphEdges(now time.Time) []GraphEdge {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.pruneLocked(now)
	out := []GraphEdge{}
	for _, e := range ls.edges {
		host, port, subset := parseCluster(e.cluster)
		g := GraphEdge{
			Source: e.src.id, SourceVersion: e.src.version,
			Destination: host, Port: port, Subset: subset, Cluster: e.cluster,
			LastReport: e.last,
		}
		var latMs, latN float64
		start := now.Add(-graphWindow)
		if len(e.samples) > 0 {
			if first := e.samples[0].at.Add(-max(e.samples[0].interval, ls.interval)); first.After(start) {
				start = first // the edge is younger than the window
			}
			g.InProgress = e.inProgress
		}
		for _, s := range e.samples {
			g.Requests += s.succeeded + s.failed
			g.Errors += s.failed
			latMs += s.latencyMs
			latN += s.latencyN
		}
		span := max(now.Sub(start), ls.interval).Seconds()
		g.RPS = float64(g.Requests) / span
		if g.Requests > 0 {
			g.ErrorRate = float64(g.Errors) / float64(g.Requests)
		}
		if latN > 0 {
			v := latMs / latN
			g.LatencyMs = &v
		}
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b GraphEdge) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.SourceVersion, b.SourceVersion), cmp.Compare(a.Cluster, b.Cluster))
	})
	return out
}

// Graph returns the service graph: the services (registered endpoints and
// their versions, services with endpoint resources) and the traffic between
// workloads from the clients' load reports.
func (s *Server) Graph() *Graph {
	now := s.loads.now()
	g := &Graph{
		GeneratedAt:           now,
		WindowSeconds:         graphWindow.Seconds(),
		ReportIntervalSeconds: s.loads.interval.Seconds(),
		Edges:                 s.loads.graphEdges(now),
	}
	nodes := map[string]*GraphNode{}
	node := func(id string) *GraphNode {
		n := nodes[id]
		if n == nil {
			n = &GraphNode{ID: id, Service: id, Versions: []string{}, Endpoints: []GraphEndpoint{}}
			if name, rest, ok := strings.Cut(id, "."); ok && strings.HasSuffix(rest, "."+config.ClusterDomain) {
				n.Service, n.Namespace = name, strings.TrimSuffix(rest, "."+config.ClusterDomain)
			}
			nodes[id] = n
		}
		return n
	}
	versions := map[string]map[string]bool{}
	addVersion := func(id, v string) {
		if v == "" {
			return
		}
		if versions[id] == nil {
			versions[id] = map[string]bool{}
		}
		versions[id][v] = true
	}
	for _, e := range s.reg.Endpoints() {
		id := config.CanonicalHost(e.Service, e.Namespace)
		n := node(id)
		n.Service, n.Namespace = e.Service, e.Namespace
		n.Endpoints = append(n.Endpoints, GraphEndpoint{
			Address: e.Address + ":" + strconv.FormatUint(uint64(e.Port), 10),
			Version: e.Labels["version"],
		})
		addVersion(id, e.Labels["version"])
	}
	for name := range s.caches[resource.EndpointType].GetResources() {
		host, _, _ := parseCluster(name)
		node(host)
	}
	for _, e := range g.Edges {
		node(e.Destination)
	}
	services := maps.Clone(nodes) // what is not among them is a client only
	for _, e := range g.Edges {
		node(e.Source)
		addVersion(e.Source, e.SourceVersion)
	}
	for _, id := range slices.Sorted(maps.Keys(nodes)) {
		n := nodes[id]
		n.Client = services[id] == nil
		n.Versions = slices.Sorted(maps.Keys(versions[id]))
		if n.Versions == nil {
			n.Versions = []string{}
		}
		slices.SortFunc(n.Endpoints, func(a, b GraphEndpoint) int { return cmp.Compare(a.Address, b.Address) })
		g.Nodes = append(g.Nodes, *n)
	}
	if g.Nodes == nil {
		g.Nodes = []GraphNode{}
	}
	return g
}

// serveGraph is /debug/graph: the service graph as JSON (see Graph).
func (s *Server) serveGraph(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, s.Graph())
}
