package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	meshconfig "github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/translate"
)

// M9 compares what one endpoint change costs the control plane and each
// client when every client subscribes to the endpoints of many services:
// Trellis's per-resource versions (state of the world and delta) against
// go-control-plane's snapshot cache, the usual way to build a control plane
// on it, where any change makes a new snapshot version and every client is
// sent again every endpoint list it subscribes to.

// m9Services is how many services each M9 client subscribes to.
const m9Services = 50

// m9Config returns the services, each with one endpoint, plus extra endpoints
// for the service that changes.
func m9Config(extra int) string {
	var b strings.Builder
	for j := range m9Services {
		ports := []string{fmt.Sprintf("{address: 127.0.0.1, ports: {grpc: %d}}", basePort+j)}
		if j == 0 {
			for k := 1; k <= extra; k++ {
				ports = append(ports, fmt.Sprintf("{address: 127.0.0.2, ports: {grpc: %d}}", basePort+1000+k))
			}
		}
		fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc%d, namespace: default}
spec:
  hosts: [svc%d]
  resolution: STATIC
  ports: [{number: 9080, name: grpc}]
  endpoints: [%s]
---
`, j, j, strings.Join(ports, ", "))
	}
	return b.String()
}

func m9Names() []string {
	names := make([]string, m9Services)
	for j := range names {
		names[j] = fmt.Sprintf("outbound|9080||svc%d.default.svc.cluster.local", j)
	}
	return names
}

// m9Variant is one way of serving and subscribing.
type m9Variant struct {
	name     string
	snapshot bool // the control plane uses a snapshot cache
	delta    bool // clients use incremental xDS
}

// m9Result is what one variant cost per change.
type m9Result struct {
	bytesPerClient float64 // payload bytes each client received per change
	cpuPerChange   float64 // control-plane CPU per change, ms
	lastClient     float64 // ms from the change to the last client having it
}

func deltaCost(ctx context.Context, cfg config) ([]row, error) {
	variants := []m9Variant{
		{name: "snapshot", snapshot: true},
		{name: "sotw"},
		{name: "delta", delta: true},
	}
	results := map[string]m9Result{}
	for _, v := range variants {
		r, err := m9Run(ctx, cfg, v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
		cfg.logf("M9 %s: %.0f B per client, %.2f ms CPU, last client %.0f ms per change", v.name, r.bytesPerClient, r.cpuPerChange, r.lastClient)
		results[v.name] = r
	}
	snap, sotw, delta := results["snapshot"], results["sotw"], results["delta"]
	n := cfg.clients
	name := func(s string) string { return fmt.Sprintf(s, n, m9Services) }
	return []row{
		{name: name("M9 N=%d K=%d bytes/client/change SotW"), plain: snap.bytesPerClient, mesh: sotw.bytesPerClient, kind: ratio},
		{name: name("M9 N=%d K=%d bytes/client/change delta"), plain: snap.bytesPerClient, mesh: delta.bytesPerClient, kind: ratio},
		{name: name("M9 N=%d K=%d CP CPU ms/change SotW"), plain: snap.cpuPerChange, mesh: sotw.cpuPerChange, kind: ratio},
		{name: name("M9 N=%d K=%d CP CPU ms/change delta"), plain: snap.cpuPerChange, mesh: delta.cpuPerChange, kind: ratio},
		{name: name("M9 N=%d K=%d last client ms SotW"), plain: snap.lastClient, mesh: sotw.lastClient, kind: ratio},
	}, nil
}

// m9Run starts a control plane child for v, connects cfg.clients raw ADS
// subscribers to the endpoints of m9Services services, and makes
// cfg.changes endpoint changes to one service.
func m9Run(ctx context.Context, cfg config, v m9Variant) (m9Result, error) {
	var done cleanups
	defer func() { done.run() }()
	dir, err := os.MkdirTemp("", "trellis-bench-m9-")
	if err != nil {
		return m9Result{}, err
	}
	done.add(func() { os.RemoveAll(dir) })
	if err := writeAtomic(dir, "services.yaml", m9Config(0)); err != nil {
		return m9Result{}, err
	}
	cp, err := startControlPlane(ctx, childArgs{Addr: "127.0.0.1:0", ConfigDir: dir, Snapshot: v.snapshot})
	if err != nil {
		return m9Result{}, err
	}
	done.add(cp.stop)

	n := cfg.clients
	conv := &convergence{got: make([]atomic.Int64, n)}
	var received atomic.Int64
	first := make([]atomic.Bool, n)
	var firstLeft atomic.Int64
	firstLeft.Store(int64(n))
	allFirst := make(chan struct{})
	// Clients share a few connections, as many processes' streams would
	// share the control plane's CPU; each stream is its own node.
	const conns = 8
	var ccs []*grpc.ClientConn
	for range conns {
		cc, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithStatsHandler(byteCounter{&received}))
		if err != nil {
			return m9Result{}, err
		}
		done.add(func() { cc.Close() })
		ccs = append(ccs, cc)
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	done.add(func() { cancel(); wg.Wait() })
	conv.expect(basePort) // every service's first endpoint: the initial state
	names := m9Names()
	for i := range n {
		onCLA := func(cla *v3endpointpb.ClusterLoadAssignment) {
			conv.update(i, cla)
		}
		onResponse := func() {
			if first[i].CompareAndSwap(false, true) && firstLeft.Add(-1) == 0 {
				close(allFirst)
			}
		}
		node := &v3corepb.Node{Id: "m9-" + strconv.Itoa(i), Cluster: "bench"}
		ads := v3discoverypb.NewAggregatedDiscoveryServiceClient(ccs[i%conns])
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Like any xDS client, retry with jittered backoff: the
			// control plane admits a limited rate of new streams.
			for sctx.Err() == nil {
				var err error
				if v.delta {
					err = deltaSubscriber(sctx, ads, node, names, onCLA, onResponse)
				} else {
					err = sotwSubscriber(sctx, ads, node, names, onCLA, onResponse)
				}
				if sctx.Err() != nil {
					return
				}
				if status.Code(err) != codes.Unavailable {
					cfg.logf("M9 %s client %d: %v", v.name, i, err)
				}
				select {
				case <-sctx.Done():
				case <-time.After(time.Duration(200+rand.IntN(800)) * time.Millisecond):
				}
			}
		}()
	}
	if err := wait(ctx, allFirst, "the first configuration at every M9 client"); err != nil {
		return m9Result{}, err
	}
	// Let the initial burst settle before measuring.
	time.Sleep(200 * time.Millisecond)

	var res m9Result
	var bytes, cpu, last []float64
	for k := 1; k <= cfg.changes; k++ {
		ch := conv.expect(basePort + 1000 + k)
		b0 := received.Load()
		cpu0, err := cp.cpu()
		if err != nil {
			return res, err
		}
		t0 := time.Now()
		if err := writeAtomic(dir, "services.yaml", m9Config(k)); err != nil {
			return res, err
		}
		if err := wait(ctx, ch, fmt.Sprintf("M9 change %d at every client", k)); err != nil {
			return res, err
		}
		d := conv.delays(t0)
		// Responses still in flight to clients that already converged are
		// part of the change's cost; give them a moment.
		time.Sleep(100 * time.Millisecond)
		cpu1, err := cp.cpu()
		if err != nil {
			return res, err
		}
		bytes = append(bytes, float64(received.Load()-b0)/float64(n))
		cpu = append(cpu, millis(cpu1-cpu0))
		last = append(last, millis(d[len(d)-1]))
	}
	res.bytesPerClient, res.cpuPerChange, res.lastClient = median(bytes), median(cpu), median(last)
	return res, nil
}

// sotwSubscriber subscribes to names over a state-of-the-world ADS stream
// and ACKs every response.
func sotwSubscriber(ctx context.Context, ads v3discoverypb.AggregatedDiscoveryServiceClient, node *v3corepb.Node,
	names []string, onCLA func(*v3endpointpb.ClusterLoadAssignment), onResponse func()) error {
	stream, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&v3discoverypb.DiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNames: names}); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		for _, a := range resp.GetResources() {
			if err := decodeCLA(a, onCLA); err != nil {
				return err
			}
		}
		onResponse()
		if err := stream.Send(&v3discoverypb.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: names,
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
	}
}

// deltaSubscriber subscribes to names over an incremental ADS stream and
// ACKs every response.
func deltaSubscriber(ctx context.Context, ads v3discoverypb.AggregatedDiscoveryServiceClient, node *v3corepb.Node,
	names []string, onCLA func(*v3endpointpb.ClusterLoadAssignment), onResponse func()) error {
	stream, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&v3discoverypb.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: names}); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		for _, r := range resp.GetResources() {
			if err := decodeCLA(r.GetResource(), onCLA); err != nil {
				return err
			}
		}
		onResponse()
		if err := stream.Send(&v3discoverypb.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
	}
}

func decodeCLA(a *anypb.Any, f func(*v3endpointpb.ClusterLoadAssignment)) error {
	cla := &v3endpointpb.ClusterLoadAssignment{}
	if err := a.UnmarshalTo(cla); err != nil {
		return err
	}
	f(cla)
	return nil
}

// oneNode maps every client to the same snapshot.
type oneNode struct{}

func (oneNode) ID(*v3corepb.Node) string { return "all" }

// serveSnapshot registers on srv an ADS server answering from go-control-plane's
// snapshot cache with the endpoints of the configuration in dir, making a new
// snapshot version whenever the directory changes: the baseline M9 compares
// with. It runs until ctx ends.
func serveSnapshot(ctx context.Context, dir string, srv *grpc.Server) error {
	snaps := cachev3.NewSnapshotCache(false, oneNode{}, nil)
	version := 0
	load := func() error {
		set, err := meshconfig.LoadDir(dir)
		if err != nil {
			return err
		}
		res := translate.Build(set, nil, translate.Options{})
		eds := make([]types.Resource, 0, len(res.Endpoints))
		for _, cla := range res.Endpoints {
			eds = append(eds, cla)
		}
		version++
		snap, err := cachev3.NewSnapshot(strconv.Itoa(version), map[resourcev3.Type][]types.Resource{resourcev3.EndpointType: eds})
		if err != nil {
			return err
		}
		return snaps.SetSnapshot(ctx, oneNode{}.ID(nil), snap)
	}
	if err := load(); err != nil {
		return err
	}
	v3discoverypb.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(ctx, snaps, nil))
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return err
	}
	go func() {
		defer w.Close()
		var timer <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.Events:
				timer = time.After(100 * time.Millisecond) // as xdsserver debounces
			case <-timer:
				if err := load(); err != nil {
					fmt.Fprintln(os.Stderr, "snapshot control plane:", err)
				}
			}
		}
	}()
	return nil
}
