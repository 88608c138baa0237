package e2e

import (
	"errors"
	"fmt"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

// serveOn starts a control plane on a fixed address and returns a stop
// function that closes it and waits for Serve to return.
func serveOn(t *testing.T, addr, dir string) (*xdsserver.Server, func()) {
	t.Helper()
	srv, err := xdsserver.New(xdsserver.WithRegistrationGrace(testTimeout), xdsserver.WithConfigDir(dir), xdsserver.WithInsecureRegistration())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		srv.Close()
		if err := <-done; !errors.Is(err, xdsserver.ErrServerClosed) {
			t.Errorf("Serve() = %v, want ErrServerClosed", err)
		}
	}
	t.Cleanup(stop)
	return srv, stop
}

// TestControlPlaneRestart kills the control plane under a serving mesh and
// starts a new one, with the same configuration and no registrations, in
// its place: clients keep routing on their cached configuration meanwhile
// and right after the restart, and servers register again with it.
// (Servers usually re-register before grpc-go's ADS stream reconnects; the
// rule that a restarted control plane withholds the empty endpoint lists
// it starts with is proven in xdsserver's TestWarmupWithholdsColdEmptyEndpoints.)
func TestControlPlaneRestart(t *testing.T) {
	ctx := testContext(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()

	// The service is defined by a ServiceEntry, so a restarted control
	// plane knows it at once, without endpoints until servers return.
	dir := t.TempDir()
	writeFile(t, dir, "se.yaml", `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter}
spec:
  hosts: [greeter]
  resolution: STATIC
  ports: [{number: 9080, name: grpc}]
`)
	first, stopFirst := serveOn(t, addr, dir)
	cp := &controlPlane{Server: first, addr: addr}
	g := startGreeter(t, addr, "v1")
	cluster := "outbound|9080||greeter.default.svc.cluster.local"
	waitFor(ctx, t, "the endpoint in EDS", func() error {
		if eps := endpoints(t, cp, cluster); len(eps) != 1 {
			return fmt.Errorf("endpoints %v", eps)
		}
		return nil
	})
	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if tl := send(ctx, cc, 20); tl.errors > 0 {
		t.Fatalf("before the restart: %d errors, last %v", tl.errors, tl.lastErr)
	}

	stopFirst()
	if tl := send(ctx, cc, 100); tl.errors > 0 || tl.instances[g.addr] != 100 {
		t.Errorf("with the control plane down: instances %v, %d errors (%v); want all 100 served from cache", tl.instances, tl.errors, tl.lastErr)
	}

	second, _ := serveOn(t, addr, dir)
	cp = &controlPlane{Server: second, addr: addr}
	if tl := send(ctx, cc, 200); tl.errors > 0 {
		t.Errorf("right after the restart: %d of 200 calls failed (%v)", tl.errors, tl.lastErr)
	}
	waitFor(ctx, t, "the server to register with the new control plane", func() error {
		if eps := endpoints(t, cp, cluster); len(eps) != 1 || eps[0] != g.addr {
			return fmt.Errorf("endpoints %v, want [%s]", eps, g.addr)
		}
		return nil
	})
	waitFor(ctx, t, "the client to reconnect", func() error {
		for _, c := range cp.ConfigDump().Clients {
			if c.Types["EDS"] != nil && c.Types["EDS"].Acks > 0 {
				return nil
			}
		}
		return fmt.Errorf("clients %+v", cp.ConfigDump().Clients)
	})
	if tl := send(ctx, cc, 100); tl.errors > 0 {
		t.Errorf("after the restart: %d errors, last %v", tl.errors, tl.lastErr)
	}
}

// TestNoEndpointsFailsFast: when every instance of a service has gone, RPCs
// fail at once with UNAVAILABLE rather than hang until their deadline.
func TestNoEndpointsFailsFast(t *testing.T) {
	ctx := testContext(t)
	cp := startControlPlane(t, "")
	g := startGreeter(t, cp.addr, "v1")
	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	waitFor(ctx, t, "the greeter to answer", func() error {
		if tl := send(ctx, cc, 1); tl.errors > 0 {
			return tl.lastErr
		}
		return nil
	})
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the endpoint to leave EDS", func() error {
		if eps := endpoints(t, cp, "outbound|9080||greeter.default.svc.cluster.local"); len(eps) != 0 {
			return fmt.Errorf("endpoints %v", eps)
		}
		return nil
	})
	if _, ok := cp.ConfigDump().Endpoints["outbound|9080||greeter.default.svc.cluster.local"]; !ok {
		t.Fatal("the service's cluster left with its last endpoint; want it kept, empty")
	}
	waitFor(ctx, t, "RPCs to fail fast", func() error {
		tl := send(ctx, cc, 1) // each RPC has a 5s deadline
		if code := status.Code(tl.lastErr); code != codes.Unavailable {
			return fmt.Errorf("RPC error %v, want UNAVAILABLE", tl.lastErr)
		}
		return nil
	})
}
