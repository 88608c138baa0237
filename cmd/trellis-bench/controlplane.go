package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/register"
	"github.com/trellismesh/trellis/internal/registrationpb"
	"github.com/trellismesh/trellis/internal/xdsclient"
)

const (
	convService = "conv"
	convCluster = "outbound|9080||conv.default.svc.cluster.local"
	basePort    = 20000
	restartPort = 29999
)

// serviceEntry defines the service with static endpoints on ports.
func serviceEntry(ports ...int) string {
	var eps []string
	for _, p := range ports {
		eps = append(eps, fmt.Sprintf("{address: 127.0.0.1, ports: {grpc: %d}}", p))
	}
	return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: conv, namespace: default}
spec:
  hosts: [conv]
  resolution: STATIC
  ports: [{number: 9080, name: grpc}]
  endpoints: [` + strings.Join(eps, ", ") + `]
`
}

func writeAtomic(dir, name, content string) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// byteCounter counts the payload bytes a client receives.
type byteCounter struct{ n *atomic.Int64 }

func (b byteCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (b byteCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if p, ok := s.(*stats.InPayload); ok {
		b.n.Add(int64(p.WireLength))
	}
}
func (b byteCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (b byteCounter) HandleConn(context.Context, stats.ConnStats)                       {}

// convergence tracks when each client first holds an endpoint on a port.
type convergence struct {
	want      atomic.Uint32
	got       []atomic.Int64 // unix ns; 0 while not yet
	remaining atomic.Int64
	done      atomic.Pointer[chan struct{}]
}

// expect resets the tracker to wait for port and returns the channel
// closed when every client has it.
func (c *convergence) expect(port int) chan struct{} {
	for i := range c.got {
		c.got[i].Store(0)
	}
	ch := make(chan struct{})
	c.remaining.Store(int64(len(c.got)))
	c.done.Store(&ch)
	c.want.Store(uint32(port))
	return ch
}

func (c *convergence) update(i int, m proto.Message) {
	cla, ok := m.(*v3endpointpb.ClusterLoadAssignment)
	if !ok {
		return
	}
	want := c.want.Load()
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if e.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue() == want {
				if c.got[i].CompareAndSwap(0, time.Now().UnixNano()) && c.remaining.Add(-1) == 0 {
					close(*c.done.Load())
				}
				return
			}
		}
	}
}

// delays returns each client's delay from t0, sorted.
func (c *convergence) delays(t0 time.Time) []time.Duration {
	d := make([]time.Duration, len(c.got))
	for i := range c.got {
		d[i] = time.Duration(c.got[i].Load() - t0.UnixNano())
	}
	slices.Sort(d)
	return d
}

func wait(ctx context.Context, ch chan struct{}, what string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
	}
}

// controlPlane measures M6 and M7 with cfg.clients lightweight xDS
// clients (internal/xdsclient, state of the world, one ADS stream each)
// against a control plane in a child process.
func controlPlane(ctx context.Context, cfg config) ([]row, error) {
	var done cleanups
	defer func() { done.run() }()
	dir, err := os.MkdirTemp("", "trellis-bench-cp-")
	if err != nil {
		return nil, err
	}
	done.add(func() { os.RemoveAll(dir) })
	if err := writeAtomic(dir, "se.yaml", serviceEntry(basePort)); err != nil {
		return nil, err
	}
	cp, err := startControlPlane(ctx, childArgs{Addr: "127.0.0.1:0", ConfigDir: dir})
	if err != nil {
		return nil, err
	}
	done.add(func() { cp.stop() })
	heap0, rss0, err := cp.mem()
	if err != nil {
		return nil, err
	}

	n := cfg.clients
	conv := &convergence{got: make([]atomic.Int64, n)}
	var received atomic.Int64
	all := conv.expect(basePort)
	for i := range n {
		c, err := xdsclient.New(xdsclient.Config{
			Server: cp.addr,
			Node:   &v3corepb.Node{Id: "bench-" + strconv.Itoa(i), Cluster: "bench"},
			DialOptions: []grpc.DialOption{
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithStatsHandler(byteCounter{&received}),
			},
		})
		if err != nil {
			return nil, err
		}
		done.add(func() { c.Close() })
		c.Watch(resourcev3.ListenerType, convService+":9080", xdsclient.WatcherFuncs{})
		c.Watch(resourcev3.RouteType, "conv.default.svc.cluster.local:9080", xdsclient.WatcherFuncs{})
		c.Watch(resourcev3.ClusterType, convCluster, xdsclient.WatcherFuncs{})
		c.Watch(resourcev3.EndpointType, convCluster, xdsclient.WatcherFuncs{UpdateFunc: func(m proto.Message) { conv.update(i, m) }})
	}
	if err := wait(ctx, all, "the first configuration at every client"); err != nil {
		return nil, err
	}
	cfg.logf("M6: %d clients have the first configuration", n)
	heap1, rss1, err := cp.mem()
	if err != nil {
		return nil, err
	}

	// M6: register a new endpoint, cfg.changes times.
	var (
		perClient []time.Duration
		last      []float64
		bytes     []float64
	)
	for k := 1; k <= cfg.changes; k++ {
		port := basePort + k
		ch := conv.expect(port)
		b0 := received.Load()
		conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		reg := register.Start(conn, &registrationpb.Endpoint{Service: convService, Address: "127.0.0.1", Port: uint32(port), ServicePort: 9080}, slog.New(slog.DiscardHandler))
		done.add(func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			reg.Stop(sctx)
		})
		if err := wait(ctx, ch, fmt.Sprintf("change %d at every client", k)); err != nil {
			return nil, err
		}
		d := conv.delays(t0)
		perClient = append(perClient, d...)
		last = append(last, millis(d[len(d)-1]))
		bytes = append(bytes, float64(received.Load()-b0)/float64(n))
		cfg.logf("M6: change %d: last client after %s", k, d[len(d)-1])
	}
	slices.Sort(perClient)

	// M7: the control plane dies and a new one starts on the same address
	// with one more static endpoint; time until every client has it.
	cp.kill()
	if err := writeAtomic(dir, "se.yaml", serviceEntry(basePort, restartPort)); err != nil {
		return nil, err
	}
	ch := conv.expect(restartPort)
	tStart := time.Now()
	cp2, err := startControlPlane(ctx, childArgs{Addr: cp.addr, ConfigDir: dir})
	if err != nil {
		return nil, fmt.Errorf("restarting the control plane on %s: %w", cp.addr, err)
	}
	done.add(cp2.stop)
	if err := wait(ctx, ch, "every client to reconverge after the restart"); err != nil {
		return nil, err
	}
	reconverge := conv.delays(tStart)
	cfg.logf("M7: reconverged")

	const kib = 1 << 10
	name := func(s string) string { return fmt.Sprintf(s, n) }
	nan := math.NaN()
	return []row{
		{name: name("M6 N=%d change → client p50 ms"), plain: nan, mesh: millis(percentile(perClient, 50)), kind: value},
		{name: name("M6 N=%d change → client p99 ms"), plain: nan, mesh: millis(percentile(perClient, 99)), kind: value, limit: 100, target: "≤ 100 (N=1000)"},
		{name: name("M6 N=%d change → last client ms"), plain: nan, mesh: median(last), kind: value},
		{name: "M6 bytes received per client per change", plain: nan, mesh: median(bytes), kind: value, limit: 2048, target: "≤ 2048"},
		{name: name("M7 N=%d CP heap per client KiB"), plain: nan, mesh: (float64(heap1) - float64(heap0)) / float64(n) / kib, kind: value, limit: 100, target: "≤ 100 KiB"},
		{name: name("M7 N=%d CP RSS per client KiB"), plain: nan, mesh: (float64(rss1) - float64(rss0)) / float64(n) / kib, kind: value},
		{name: name("M7 N=%d restart → all reconverged s"), plain: nan, mesh: reconverge[len(reconverge)-1].Seconds(), kind: value, limit: 5, target: "≤ 5 s (N=1000)"},
	}, nil
}
