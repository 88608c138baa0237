// Command quickstart runs a whole Trellis mesh in one process and moves a
// canary release: a control plane configured by Istio YAML, three greeter
// servers (v1, v1 and v2) that register themselves with it, and a client that
// reaches them through mesh.Dial.
//
//	go run ./examples/quickstart
//
// It prints the share of traffic each version receives with the initial 90/10
// split, after rewriting the YAML to 50/50 (the control plane reloads it while
// everything keeps serving), and for requests carrying the header
// "x-canary: true", which all go to v2. examples/canary runs the same mesh as
// separate processes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

func main() {
	rpcs := flag.Int("rpcs", 1000, "RPCs to send for each measurement")
	timeout := flag.Duration("timeout", 20*time.Second, "how long to wait for the mesh to converge at each step")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, *rpcs, *timeout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run starts the mesh, writes the measurements to w and stops everything
// again. Every wait for the mesh to converge gives up after timeout.
func run(ctx context.Context, w io.Writer, rpcs int, timeout time.Duration) (err error) {
	if rpcs <= 0 {
		return fmt.Errorf("rpcs = %d, want a positive number", rpcs)
	}

	// Whatever starts below is stopped on return, last started first.
	var stops []func(context.Context) error
	defer func() {
		// Shut down gracefully even if ctx was cancelled, but not for ever.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, stop := range slices.Backward(stops) {
			err = errors.Join(err, stop(sctx))
		}
	}()

	// 1. The configuration: a directory of Istio YAML.
	dir, err := os.MkdirTemp("", "trellis-quickstart-")
	if err != nil {
		return err
	}
	stops = append(stops, func(context.Context) error { return os.RemoveAll(dir) })
	if err := writeFile(dir, "destinationrule.yaml", destinationRule); err != nil {
		return err
	}
	if err := writeFile(dir, "virtualservice.yaml", virtualService(90, 10)); err != nil {
		return err
	}

	// 2. The control plane. It loads the directory, watches it for changes
	// and serves xDS (to clients) and registrations (from servers) on one
	// port.
	// This example's workloads have no identities, so the mesh is opened
	// to registrations without a credential (examples/secure has
	// identities and leaves it closed).
	cp, err := xdsserver.New(xdsserver.WithConfigDir(dir), xdsserver.WithInsecureRegistration())
	if err != nil {
		return err
	}
	cpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cp.Close()
		return err
	}
	cpAddr := cpLis.Addr().String()
	stops = append(stops, serve(cp, cpLis))
	fmt.Fprintf(w, "control plane  %s, watching %s\n", cpAddr, dir)

	// 3. Three greeter servers: two instances of v1, one of v2.
	var instances []string
	for _, version := range []string{"v1", "v1", "v2"} {
		addr, stop, err := startGreeter(cpAddr, version)
		if err != nil {
			return err
		}
		stops = append(stops, stop)
		instances = append(instances, version+" "+addr)
	}
	fmt.Fprintf(w, "greeters       %s\n", strings.Join(instances, ", "))

	// 4. The client: mesh.Dial where you would call grpc.NewClient. It does
	// not block; the connection fetches routes and endpoints from the
	// control plane in the background.
	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cpAddr))
	if err != nil {
		return err
	}
	defer cc.Close()
	client := greeterpb.NewGreeterClient(cc)

	// 5. Wait until all three instances answer. Until the servers have
	// registered and the client has its configuration, RPCs fail or reach
	// only some instances; poll, but not for ever.
	start := time.Now()
	seen := map[string]bool{}
	err = waitFor(ctx, timeout, "all three greeter instances to answer", func(ctx context.Context) error {
		for range 20 {
			reply, err := sayHello(ctx, client)
			if err != nil {
				return err
			}
			seen[reply.GetInstance()] = true
		}
		if len(seen) < 3 {
			return fmt.Errorf("%d of 3 answered", len(seen))
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "client         mesh.Dial(\"greeter:9080\"): 3 instances answering after %v\n\n", since(start))

	// 6. Measure the canary split.
	fmt.Fprintf(w, "%-16s %7s %7s\n", fmt.Sprintf("%d RPCs each", rpcs), "v1", "v2")
	s, err := share(ctx, client, rpcs)
	if err != nil {
		return err
	}
	printRow(w, "canary 90/10", s, "")

	// 7. Move the canary: rewrite the VirtualService. The control plane
	// notices, reloads the directory and pushes the new route to every
	// client; nothing restarts.
	edited := time.Now()
	if err := writeFile(dir, "virtualservice.yaml", virtualService(50, 50)); err != nil {
		return err
	}
	// ConfigDump tells whether the control plane took the edit. A file it
	// rejects leaves the last good configuration in force, and says why.
	err = waitFor(ctx, timeout, "the control plane to reload the configuration", func(context.Context) error {
		st := cp.ConfigDump().Config
		if len(st.LastErrors) > 0 {
			return fmt.Errorf("configuration rejected: %s", strings.Join(st.LastErrors, "; "))
		}
		if !st.LoadedAt.After(edited) {
			return errors.New("not reloaded yet")
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The client applies the new route when it arrives over xDS: watch its
	// traffic until v2 gets clearly more than the old 10%.
	err = waitFor(ctx, timeout, "the client to follow the new split", func(ctx context.Context) error {
		s, err := share(ctx, client, 100)
		if err != nil {
			return err
		}
		if s["v2"] < 30 {
			return fmt.Errorf("v2 gets %.0f%%, want about 50%%", s["v2"])
		}
		return nil
	})
	if err != nil {
		return err
	}
	took := since(edited)
	if s, err = share(ctx, client, rpcs); err != nil {
		return err
	}
	printRow(w, "canary 50/50", s, fmt.Sprintf("(in force %v after the edit)", took))

	// 8. The header route: "x-canary: true" (gRPC metadata) selects v2
	// whatever the weights.
	canaryCtx := metadata.AppendToOutgoingContext(ctx, "x-canary", "true")
	if s, err = share(canaryCtx, client, rpcs); err != nil {
		return err
	}
	printRow(w, "x-canary: true", s, "")
	return nil
}

// startGreeter starts a greeter server of the given version on a free
// loopback port. It registers with the control plane as service "greeter"
// with the label version=<version>, which the DestinationRule's subsets
// select.
func startGreeter(controlPlane, version string) (addr string, stop func(context.Context) error, err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv, err := mesh.NewServer(
		mesh.WithControlPlane(controlPlane),
		mesh.WithService("greeter", version),
		// Clients dial greeter:9080, whatever port each instance listens on.
		mesh.WithServicePort(9080),
	)
	if err != nil {
		lis.Close()
		return "", nil, err
	}
	addr = lis.Addr().String()
	greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: version, Instance: addr})
	return addr, serve(srv, lis), nil
}

// server is the lifecycle that xdsserver.Server and mesh.Server share with
// net/http's Server.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// serve runs srv on lis in the background. The function it returns shuts
// srv down (deregistering a mesh.Server first, so that clients stop picking
// it), waits for Serve to return and reports Serve's error unless it is the
// expected "server closed".
func serve(srv server, lis net.Listener) func(context.Context) error {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	return func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		if serr := <-done; !errors.Is(serr, xdsserver.ErrServerClosed) && !errors.Is(serr, mesh.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	}
}

// sayHello sends one RPC, bounded in time.
func sayHello(ctx context.Context, client greeterpb.GreeterClient) (*greeterpb.HelloReply, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return client.SayHello(ctx, &greeterpb.HelloRequest{Name: "quickstart"})
}

// share sends n RPCs and returns the percentage of replies from each
// version.
func share(ctx context.Context, client greeterpb.GreeterClient, n int) (map[string]float64, error) {
	pct := map[string]float64{}
	for i := range n {
		reply, err := sayHello(ctx, client)
		if err != nil {
			return nil, fmt.Errorf("rpc %d of %d: %w", i+1, n, err)
		}
		pct[reply.GetVersion()] += 100 / float64(n)
	}
	return pct, nil
}

func printRow(w io.Writer, label string, pct map[string]float64, note string) {
	line := fmt.Sprintf("%-16s %6.1f%% %6.1f%%  %s", label, pct["v1"], pct["v2"], note)
	fmt.Fprintln(w, strings.TrimRight(line, " "))
}

// waitFor calls poll every 50ms until it returns nil. It gives up with
// poll's last error after timeout, or when ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, what string, poll func(context.Context) error) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := poll(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: gave up after %v: %w", what, since(start), err)
		case <-tick.C:
		}
	}
}

// writeFile replaces dir/name atomically (write, then rename), as editors and
// Kubernetes do, so the control plane never reads half a file.
func writeFile(dir, name, content string) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }
