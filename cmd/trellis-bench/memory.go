package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/internal/register"
	"github.com/trellismesh/trellis/internal/registrationpb"
	"github.com/trellismesh/trellis/mesh"
)

const (
	memTargets   = 10
	memEndpoints = 10
)

// footprint is the heap in use and RSS of this process at one point.
type footprint struct{ heap, rss float64 }

func measureFootprint() footprint {
	h, r := memNow()
	return footprint{float64(h), float64(r)}
}

// memory measures M4's footprint: the growth of a fresh child process's
// heap in use and RSS as it dials 10 targets of 10 endpoints each with
// mesh.Dial (plaintext, the control plane in another child process),
// against the same with 10 grpc-go round-robin channels over the same 100
// servers (in this process), and the cost of each target past the first.
func memory(ctx context.Context, cfg config) ([]row, error) {
	var done cleanups
	defer func() { done.run() }()
	cp, err := startControlPlane(ctx, childArgs{Addr: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	done.add(cp.stop)

	addrs := make([][]string, memTargets)
	for t := range memTargets {
		for range memEndpoints {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			srv := grpc.NewServer()
			greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: "v1", Instance: lis.Addr().String()})
			go srv.Serve(lis)
			done.add(srv.Stop)
			addr := lis.Addr().(*net.TCPAddr)
			addrs[t] = append(addrs[t], addr.String())
			conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, err
			}
			reg := register.Start(conn, &registrationpb.Endpoint{
				Service: "mem" + strconv.Itoa(t), Address: "127.0.0.1", Port: uint32(addr.Port), ServicePort: 9080,
			}, slog.New(slog.DiscardHandler))
			done.add(func() {
				sctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				reg.Stop(sctx)
			})
		}
	}

	cfg.logf("M4: %d endpoints registered", memTargets*memEndpoints)
	var runs [2][]footprints // plain, mesh
	for range cfg.reps {
		for i, v := range []string{"plain", "mesh"} {
			f, err := runFootprint(ctx, childArgs{Variant: v, ControlPlane: cp.addr, Endpoints: addrs})
			if err != nil {
				return nil, fmt.Errorf("M4 %s: %w", v, err)
			}
			runs[i] = append(runs[i], f)
		}
	}
	med := func(i int, f func(footprints) float64) float64 {
		var xs []float64
		for _, r := range runs[i] {
			xs = append(xs, f(r))
		}
		return median(xs)
	}
	heap10 := func(f footprints) float64 { return (f[2].heap - f[0].heap) / mib }
	rss10 := func(f footprints) float64 { return (f[2].rss - f[0].rss) / mib }
	perTarget := func(f footprints) float64 { return (f[2].heap - f[1].heap) / (memTargets - 1) / kib }
	return []row{
		{name: "M4 heap, 10 targets x 10 endpoints MiB", plain: med(0, heap10), mesh: med(1, heap10), kind: delta, limit: 5, target: "≤ +5 MiB"},
		{name: "M4 RSS, 10 targets x 10 endpoints MiB", plain: med(0, rss10), mesh: med(1, rss10), kind: delta, limit: 5, target: "≤ +5 MiB"},
		{name: "M4 heap per target past the first KiB", plain: med(0, perTarget), mesh: med(1, perTarget), kind: delta, limit: 64, target: "≤ +64 KiB"},
	}, nil
}

const mib, kib = 1 << 20, 1 << 10

// footprints are a process's footprint before any channel, with one
// target and with all targets.
type footprints [3]footprint

// footprintChild dials each target of a.Endpoints in turn, plain or mesh,
// until all its endpoints have answered, and measures this (fresh)
// process's footprint before, after the first target and after the last.
func footprintChild(a childArgs) (footprints, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var f footprints
	f[0] = measureFootprint()
	for t, eps := range a.Endpoints {
		var cc *grpc.ClientConn
		var err error
		if a.Variant == "mesh" {
			cc, err = mesh.Dial("mem"+strconv.Itoa(t)+":9080", mesh.WithControlPlane(a.ControlPlane))
		} else {
			r := manual.NewBuilderWithScheme("bench" + strconv.Itoa(t))
			var addrs []resolver.Address
			for _, e := range eps {
				addrs = append(addrs, resolver.Address{Addr: e})
			}
			r.InitialState(resolver.State{Addresses: addrs})
			cc, err = grpc.NewClient(r.Scheme()+":///mem"+strconv.Itoa(t), grpc.WithResolvers(r),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
		}
		if err != nil {
			return f, err
		}
		defer cc.Close()
		c := greeterpb.NewGreeterClient(cc)
		seen := map[string]bool{}
		for i := 0; len(seen) < len(eps); i++ {
			r, err := c.SayHello(ctx, &greeterpb.HelloRequest{Name: "mem"}, grpc.WaitForReady(true))
			if err != nil {
				return f, fmt.Errorf("target %d: after %d calls, %d endpoints seen: %w", t, i, len(seen), err)
			}
			seen[r.GetInstance()] = true
		}
		if t == 0 {
			f[1] = measureFootprint()
		}
	}
	f[2] = measureFootprint()
	return f, nil
}

// runFootprint runs footprintChild in a child process.
func runFootprint(ctx context.Context, a childArgs) (footprints, error) {
	a.Mode = "footprint"
	var f footprints
	c, err := startChild(ctx, a)
	if err != nil {
		return f, err
	}
	defer c.stop()
	fs, err := c.readLine("footprint")
	if err != nil {
		return f, err
	}
	if len(fs) != 6 {
		return f, fmt.Errorf("footprint line %q", fs)
	}
	for i := range 3 {
		f[i].heap, _ = strconv.ParseFloat(fs[2*i], 64)
		f[i].rss, _ = strconv.ParseFloat(fs[2*i+1], 64)
	}
	return f, nil
}
