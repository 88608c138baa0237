package e2e

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/trellismesh/trellis/mesh"
)

// outageDuration is how long TestControlPlaneOutage keeps the control plane
// down: a few seconds in CI; TRELLIS_OUTAGE sets it for the long run:
//
//	TRELLIS_OUTAGE=60m go test -run TestControlPlaneOutage -timeout 70m ./internal/e2e/
func outageDuration(t *testing.T) time.Duration {
	if v := os.Getenv("TRELLIS_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("TRELLIS_OUTAGE=%q: %v", v, err)
		}
		return d
	}
	return 3 * time.Second
}

// TestControlPlaneOutage: with the control plane down for the whole
// outage, gRPC and HTTP clients keep calling servers on their cached
// configuration with no failure, paced at 50 calls a second; the control
// plane comes back on the same address at the end and the clients keep
// working.
func TestControlPlaneOutage(t *testing.T) {
	outage := outageDuration(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testContext(t)
			if outage > testTimeout/2 {
				var cancel func()
				ctx, cancel = contextWithTimeout(outage + time.Minute)
				defer cancel()
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := lis.Addr().String()
			lis.Close()
			dir := t.TempDir()
			writeFile(t, dir, "se.yaml", scenario{yaml: `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  resolution: STATIC
  ports: [{number: 9080, name: http}]
`}.config(p.host))
			_, stop := serveOn(t, addr, dir)
			// Servers and clients without identities: this is about the
			// control plane, not the CA.
			if p.name == "grpc" {
				startGreeter(t, addr, "v1")
			} else {
				startHello(t, addr, &behaviour{})
			}
			call := p.client(t, &secureMesh{controlPlane: &controlPlane{addr: addr, dir: dir}}, mesh.WithControlPlane(addr))
			ready(ctx, t, call)

			stop()
			pace := time.NewTicker(20 * time.Millisecond)
			defer pace.Stop()
			deadline := time.Now().Add(outage)
			calls, failed := 0, 0
			var last result
			for time.Now().Before(deadline) {
				<-pace.C
				calls++
				if r := call(ctx); r.outcome != ok {
					failed++
					last = r
				}
			}
			t.Logf("%s: control plane down for %v: %d calls, %d failed", p.name, outage, calls, failed)
			if failed > 0 {
				t.Errorf("%d of %d calls failed with the control plane down (last: %s %v)", failed, calls, last.outcome, last.err)
			}
			serveOn(t, addr, dir)
			if o, _, last := callMany(ctx, call, 50); o[ok] != 50 {
				t.Errorf("after the control plane came back: %v (%v)", o, last.err)
			}
		})
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// startHello runs the HTTP twin of the greeter as service hello, without
// an identity.
func startHello(t *testing.T, cp string, b *behaviour) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := mesh.NewHTTPServer(b.handler("v1", lis.Addr().String()), mesh.WithControlPlane(cp), mesh.WithService("hello", "v1"), mesh.WithServicePort(9080))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, mesh.ErrServerClosed) {
			t.Errorf("Serve() = %v, want mesh.ErrServerClosed", err)
		}
	})
}
