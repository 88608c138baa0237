package xdsclient

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	v3server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// modes runs a test in state of the world and in delta.
var modes = []struct {
	name  string
	delta bool
}{{"sotw", false}, {"delta", true}}

// newClient returns a Client closed at the end of the test.
func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// event is one call of a Watcher.
type event struct {
	kind string // "update", "notfound" or "error"
	msg  proto.Message
	err  error
}

// recorder is a Watcher that records its calls.
type recorder struct {
	mu      sync.Mutex
	events  []event
	next    int // first event not yet consumed by wait
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) add(e event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) Update(m proto.Message) { r.add(event{kind: "update", msg: m}) }
func (r *recorder) NotFound()              { r.add(event{kind: "notfound"}) }
func (r *recorder) Error(err error)        { r.add(event{kind: "error", err: err}) }

// wait consumes events until one satisfies ok, and returns it.
func (r *recorder) wait(ctx context.Context, t *testing.T, what string, ok func(event) bool) event {
	t.Helper()
	for {
		r.mu.Lock()
		for r.next < len(r.events) {
			e := r.events[r.next]
			r.next++
			if ok(e) {
				r.mu.Unlock()
				return e
			}
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v; events: %v", what, ctx.Err(), r.all())
		case <-r.changed:
		}
	}
}

func (r *recorder) waitUpdate(ctx context.Context, t *testing.T, what string, ok func(proto.Message) bool) proto.Message {
	t.Helper()
	return r.wait(ctx, t, what, func(e event) bool { return e.kind == "update" && (ok == nil || ok(e.msg)) }).msg
}

func (r *recorder) all() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorder) count(kind string) int {
	n := 0
	for _, e := range r.all() {
		if e.kind == kind {
			n++
		}
	}
	return n
}

func (e event) String() string {
	switch e.kind {
	case "update":
		return "update(" + resourceName(e.msg) + ")"
	case "error":
		return "error(" + e.err.Error() + ")"
	}
	return e.kind
}

func resourceName(m proto.Message) string {
	for _, rt := range resourceTypes {
		if m.ProtoReflect().Descriptor() == rt.new().ProtoReflect().Descriptor() {
			return rt.name(m)
		}
	}
	return "?"
}

// flush waits until every callback the Client queued before it has been
// delivered: callbacks run in order, and a watch of an unknown type gets
// its Error queued at once.
func flush(ctx context.Context, t *testing.T, c *Client) {
	t.Helper()
	done := make(chan struct{})
	cancel := c.Watch("flush", "", WatcherFuncs{ErrorFunc: func(error) { close(done) }})
	defer cancel()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("flush: callbacks not delivered before the deadline")
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// fakeServer is a real go-control-plane ADS server with a LinearCache per
// type, as xdsserver has, serving exactly what a test puts in its caches and
// recording what clients ask.
type fakeServer struct {
	addr   string
	caches map[string]*cache.LinearCache
	stop   func()

	mu        sync.Mutex
	requests  []request
	responses map[string]string            // nonce → version_info (state of the world)
	subs      map[string]map[string]bool   // type → names subscribed, over all streams
	initial   map[string]map[string]string // type → initial_resource_versions of the last delta stream
}

// request is what the server saw of one DiscoveryRequest.
type request struct {
	typeURL, version, nonce string
	names                   []string // state of the world
	subscribe, unsubscribe  []string // delta
	errorDetail             string
	nack                    bool
}

// startFake starts a fakeServer on addr ("" for any loopback port).
func startFake(t *testing.T, addr string, initial map[string]map[string]proto.Message) *fakeServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	f := &fakeServer{
		caches:    map[string]*cache.LinearCache{},
		responses: map[string]string{},
		subs:      map[string]map[string]bool{},
		initial:   map[string]map[string]string{},
	}
	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cache.Cache{},
	}
	for _, url := range typeOrder {
		f.caches[url] = cache.NewLinearCache(url, cache.WithLogger(discardLogger{}))
		mux.Caches[url] = f.caches[url]
		f.subs[url] = map[string]bool{}
	}
	for url, res := range initial {
		for name, m := range res {
			if err := f.caches[url].UpdateResource(name, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cb := v3server.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *v3discoverypb.DiscoveryRequest) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.requests = append(f.requests, request{
				typeURL: r.GetTypeUrl(), version: r.GetVersionInfo(), nonce: r.GetResponseNonce(), names: r.GetResourceNames(),
				errorDetail: r.GetErrorDetail().GetMessage(), nack: r.GetErrorDetail() != nil,
			})
			s := map[string]bool{}
			for _, n := range r.GetResourceNames() {
				s[n] = true
			}
			f.subs[r.GetTypeUrl()] = s
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *v3discoverypb.DiscoveryRequest, resp *v3discoverypb.DiscoveryResponse) {
			f.mu.Lock()
			f.responses[resp.GetNonce()] = resp.GetVersionInfo()
			f.mu.Unlock()
		},
		StreamDeltaResponseFunc: func(_ int64, _ *v3discoverypb.DeltaDiscoveryRequest, resp *v3discoverypb.DeltaDiscoveryResponse) {
			f.mu.Lock()
			f.responses[resp.GetNonce()] = ""
			f.mu.Unlock()
		},
		StreamDeltaRequestFunc: func(_ int64, r *v3discoverypb.DeltaDiscoveryRequest) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.requests = append(f.requests, request{
				typeURL: r.GetTypeUrl(), nonce: r.GetResponseNonce(),
				subscribe: r.GetResourceNamesSubscribe(), unsubscribe: r.GetResourceNamesUnsubscribe(),
				errorDetail: r.GetErrorDetail().GetMessage(), nack: r.GetErrorDetail() != nil,
			})
			if r.GetInitialResourceVersions() != nil {
				f.initial[r.GetTypeUrl()] = r.GetInitialResourceVersions()
			}
			for _, n := range r.GetResourceNamesSubscribe() {
				f.subs[r.GetTypeUrl()][n] = true
			}
			for _, n := range r.GetResourceNamesUnsubscribe() {
				delete(f.subs[r.GetTypeUrl()], n)
			}
			return nil
		},
	}
	xds := v3server.NewServer(ctx, mux, cb)
	gs := grpc.NewServer()
	v3discoverypb.RegisterAggregatedDiscoveryServiceServer(gs, xds)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	var once sync.Once
	f.stop = func() {
		once.Do(func() {
			cancel()
			gs.Stop()
			if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				t.Errorf("Serve() = %v", err)
			}
		})
	}
	t.Cleanup(f.stop)
	return f
}

// acked reports whether the server has received, for every response it
// sent, a request answering it (an ACK or NACK): no request is in flight.
func (f *fakeServer) acked() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	answered := map[string]bool{}
	for _, r := range f.requests {
		answered[r.nonce] = true
	}
	for nonce := range f.responses {
		if !answered[nonce] {
			return false
		}
	}
	return true
}

// subscribed returns the names clients subscribe to for typeURL, sorted.
func (f *fakeServer) subscribed(typeURL string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.subs[typeURL] {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (f *fakeServer) allRequests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

type discardLogger struct{}

func (discardLogger) Debugf(string, ...any) {}
func (discardLogger) Infof(string, ...any)  {}
func (discardLogger) Warnf(string, ...any)  {}
func (discardLogger) Errorf(string, ...any) {}

// Resource builders.

var ads = &v3corepb.ConfigSource{ConfigSourceSpecifier: &v3corepb.ConfigSource_Ads{Ads: &v3corepb.AggregatedConfigSource{}}}

func apiListener(name, route string) *v3listenerpb.Listener {
	hcm, err := anypb.New(&v3hcmpb.HttpConnectionManager{
		RouteSpecifier: &v3hcmpb.HttpConnectionManager_Rds{Rds: &v3hcmpb.Rds{ConfigSource: ads, RouteConfigName: route}},
	})
	if err != nil {
		panic(err)
	}
	return &v3listenerpb.Listener{Name: name, ApiListener: &v3listenerpb.ApiListener{ApiListener: hcm}}
}

func routeConfig(name, cluster string) *v3routepb.RouteConfiguration {
	return &v3routepb.RouteConfiguration{Name: name, VirtualHosts: []*v3routepb.VirtualHost{{
		Name: "vh", Domains: []string{"*"},
		Routes: []*v3routepb.Route{{
			Match:  &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"}},
			Action: &v3routepb.Route_Route{Route: &v3routepb.RouteAction{ClusterSpecifier: &v3routepb.RouteAction_Cluster{Cluster: cluster}}},
		}},
	}}}
}

func edsCluster(name string, timeout time.Duration) *v3clusterpb.Cluster {
	return &v3clusterpb.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &v3clusterpb.Cluster_Type{Type: v3clusterpb.Cluster_EDS},
		EdsClusterConfig:     &v3clusterpb.Cluster_EdsClusterConfig{EdsConfig: ads},
		ConnectTimeout:       durationpb.New(timeout),
	}
}

func endpoints(name string, addrs ...string) *v3endpointpb.ClusterLoadAssignment {
	cla := &v3endpointpb.ClusterLoadAssignment{ClusterName: name}
	var lbs []*v3endpointpb.LbEndpoint
	for _, a := range addrs {
		lbs = append(lbs, &v3endpointpb.LbEndpoint{HostIdentifier: &v3endpointpb.LbEndpoint_Endpoint{Endpoint: &v3endpointpb.Endpoint{
			Address: &v3corepb.Address{Address: &v3corepb.Address_SocketAddress{SocketAddress: &v3corepb.SocketAddress{
				Address: a, PortSpecifier: &v3corepb.SocketAddress_PortValue{PortValue: 9080},
			}}},
		}}})
	}
	if lbs != nil {
		cla.Endpoints = []*v3endpointpb.LocalityLbEndpoints{{LbEndpoints: lbs}}
	}
	return cla
}

// addresses lists the endpoint addresses ("ip:port") of a CLA, sorted.
func addresses(cla *v3endpointpb.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
		}
	}
	slices.Sort(out)
	return out
}
