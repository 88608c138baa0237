package e2e

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

// testTimeout bounds every test; failures are reported well before it.
const testTimeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// controlPlane is a real xdsserver on a loopback port.
type controlPlane struct {
	*xdsserver.Server
	addr string
	dir  string
}

// startControlPlane starts an open-mesh control plane
// (WithInsecureRegistration: most tests run servers without identities)
// with the configuration directory dir, if not empty.
func startControlPlane(t testing.TB, dir string, opts ...xdsserver.Option) *controlPlane {
	t.Helper()
	return startClosedControlPlane(t, dir, append([]xdsserver.Option{xdsserver.WithInsecureRegistration()}, opts...)...)
}

// startClosedControlPlane is startControlPlane without opening the mesh:
// only identified workloads may register, as by default.
func startClosedControlPlane(t testing.TB, dir string, opts ...xdsserver.Option) *controlPlane {
	t.Helper()
	if dir != "" {
		opts = append(opts, xdsserver.WithConfigDir(dir))
	}
	srv, err := xdsserver.New(opts...)
	if err != nil {
		t.Fatalf("xdsserver.New() = %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, xdsserver.ErrServerClosed) {
			t.Errorf("Serve() = %v, want ErrServerClosed", err)
		}
	})
	return &controlPlane{Server: srv, addr: lis.Addr().String(), dir: dir}
}

// writeFile writes a config file atomically (write and rename), as editors
// and Kubernetes do.
func writeFile(t testing.TB, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// greeterServer is a mesh.Server running the example greeter.
type greeterServer struct {
	*mesh.Server
	addr string
	done chan error
}

func startGreeter(t testing.TB, cp, version string, opts ...mesh.ServerOption) *greeterServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]mesh.ServerOption{mesh.WithControlPlane(cp), mesh.WithService("greeter", version), mesh.WithServicePort(9080)}, opts...)
	srv, err := mesh.NewServer(opts...)
	if err != nil {
		t.Fatalf("mesh.NewServer() = %v", err)
	}
	greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: version, Instance: lis.Addr().String()})
	g := &greeterServer{Server: srv, addr: lis.Addr().String(), done: make(chan error, 1)}
	go func() { g.done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-g.done; !errors.Is(err, mesh.ErrServerClosed) {
			t.Errorf("Serve() = %v, want mesh.ErrServerClosed", err)
		}
	})
	return g
}

// endpoints returns the addresses in the EDS resource of a cluster.
func endpoints(t *testing.T, cp *controlPlane, cluster string) []string {
	t.Helper()
	return cp.ConfigDump().Endpoints[cluster]
}

// waitFor polls cond until it returns nil or ctx ends, then fails with the
// last error.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() error) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
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

// tally sends n RPCs and counts replies by version and by instance.
type tally struct {
	versions  map[string]int
	instances map[string]int
	errors    int
	lastErr   error
}

func send(ctx context.Context, cc grpc.ClientConnInterface, n int, md ...string) tally {
	c := greeterpb.NewGreeterClient(cc)
	tl := tally{versions: map[string]int{}, instances: map[string]int{}}
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	for range n {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := c.SayHello(rctx, &greeterpb.HelloRequest{Name: "e2e"})
		cancel()
		if err != nil {
			tl.errors++
			tl.lastErr = err
			continue
		}
		tl.versions[r.GetVersion()]++
		tl.instances[r.GetInstance()]++
	}
	return tl
}

// Options shared by several constructors (a []mesh.WorkloadOption from
// secureMesh.as, a []mesh.ClientOption or []mesh.EndpointOption a helper
// passes on) as one constructor's options, followed by more. The type
// parameter makes the compiler check that each shared option applies.

func clientOpts[S mesh.ClientOption](shared []S, more ...mesh.ClientOption) []mesh.ClientOption {
	out := make([]mesh.ClientOption, 0, len(shared)+len(more))
	for _, o := range shared {
		out = append(out, o)
	}
	return append(out, more...)
}

func dialOpts[S mesh.DialOption](shared []S, more ...mesh.DialOption) []mesh.DialOption {
	out := make([]mesh.DialOption, 0, len(shared)+len(more))
	for _, o := range shared {
		out = append(out, o)
	}
	return append(out, more...)
}

func transportOpts[S mesh.TransportOption](shared []S, more ...mesh.TransportOption) []mesh.TransportOption {
	out := make([]mesh.TransportOption, 0, len(shared)+len(more))
	for _, o := range shared {
		out = append(out, o)
	}
	return append(out, more...)
}

func serverOpts[S mesh.ServerOption](shared []S, more ...mesh.ServerOption) []mesh.ServerOption {
	out := make([]mesh.ServerOption, 0, len(shared)+len(more))
	for _, o := range shared {
		out = append(out, o)
	}
	return append(out, more...)
}

func httpServerOpts[S mesh.HTTPServerOption](shared []S, more ...mesh.HTTPServerOption) []mesh.HTTPServerOption {
	out := make([]mesh.HTTPServerOption, 0, len(shared)+len(more))
	for _, o := range shared {
		out = append(out, o)
	}
	return append(out, more...)
}
