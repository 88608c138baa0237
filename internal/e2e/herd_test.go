package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/xdsclient"
	"github.com/trellismesh/trellis/xdsserver"
)

const herdRoutes = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter}
spec:
  hosts: [greeter]
  resolution: STATIC
  ports: [{number: 9080, name: grpc}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - match: [{headers: {x-generation: {exact: "%d"}}}]
    route: [{destination: {host: greeter}}]
  - route: [{destination: {host: greeter}}]
`

// TestReconnectHerdIsAdmitted: 500 xDS clients reconnecting at once to a
// restarted control plane are admitted at its admission rate (the rest
// back off with jitter and retry), and every one of them converges on the
// configuration changed after the restart.
func TestReconnectHerdIsAdmitted(t *testing.T) {
	// Longer than testTimeout: 500 clients connect twice, at 50 a second.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", fmt.Sprintf(herdRoutes, 1))
	start := func() (*xdsserver.Server, func()) {
		srv, err := xdsserver.New(xdsserver.WithConfigDir(dir), xdsserver.WithStreamAdmission(50, 50), xdsserver.WithInsecureRegistration())
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(l) }()
		var once sync.Once
		stop := func() {
			once.Do(func() {
				srv.Close()
				if err := <-done; !errors.Is(err, xdsserver.ErrServerClosed) {
					t.Errorf("Serve() = %v", err)
				}
			})
		}
		t.Cleanup(stop)
		return srv, stop
	}
	_, stop := start()

	const n = 500
	var mu sync.Mutex
	generation := map[int]string{} // client → the x-generation its routes carry
	for i := range n {
		c, err := xdsclient.New(xdsclient.Config{Server: addr, BackoffMin: 50 * time.Millisecond, BackoffMax: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cancel := c.Watch(resource.RouteType, "greeter.default.svc.cluster.local:9080", xdsclient.WatcherFuncs{UpdateFunc: func(m proto.Message) {
			g := routeGeneration(m.(*v3routepb.RouteConfiguration))
			mu.Lock()
			generation[i] = g
			mu.Unlock()
		}})
		t.Cleanup(cancel)
	}
	converged := func(want string) error {
		mu.Lock()
		defer mu.Unlock()
		k := 0
		for _, g := range generation {
			if g == want {
				k++
			}
		}
		if k < n {
			return fmt.Errorf("%d of %d clients have generation %s", k, n, want)
		}
		return nil
	}
	waitFor(ctx, t, "the herd's first configuration", func() error { return converged("1") })

	stop()
	srv, _ := start()
	began := time.Now()
	writeFile(t, dir, "mesh.yaml", fmt.Sprintf(herdRoutes, 2))
	waitFor(ctx, t, "every client to reconnect and converge", func() error { return converged("2") })
	took := time.Since(began)

	rec := httptest.NewRecorder()
	srv.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/metrics", nil))
	m := regexp.MustCompile(`(?m)^trellis_xds_streams_rejected_total (\d+)`).FindStringSubmatch(rec.Body.String())
	rejected := 0
	if m != nil {
		rejected, _ = strconv.Atoi(m[1])
	}
	t.Logf("%d clients reconverged %v after the restart; %d streams turned away by admission", n, took.Round(time.Millisecond), rejected)
	if rejected == 0 {
		t.Errorf("no stream was turned away: the admission limit (50/s, burst 50) did not act on %d reconnecting clients", n)
	}
}

// routeGeneration returns the x-generation value the first route matches.
func routeGeneration(rc *v3routepb.RouteConfiguration) string {
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			for _, h := range r.GetMatch().GetHeaders() {
				if h.GetName() == "x-generation" {
					return h.GetStringMatch().GetExact()
				}
			}
		}
	}
	return ""
}
