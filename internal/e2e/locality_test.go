package e2e

import (
	"fmt"
	"testing"

	"google.golang.org/grpc"

	"github.com/trellismesh/trellis/mesh"
)

// TestLocalityFailover: a client is served by its own locality, moves to
// the next-nearest locality only when its own has no healthy endpoint, and
// to a remote region only when the nearer ones have none either.
func TestLocalityFailover(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	writeFile(t, dir, "dr.yaml", `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy:
    loadBalancer:
      localityLbSetting: {enabled: true}
`)
	cp := startControlPlane(t, dir)
	local := startGreeter(t, cp.addr, "v1", mesh.WithLocality("us-east/a/1"))
	zone := startGreeter(t, cp.addr, "v1", mesh.WithLocality("us-east/b/1"))
	remote := startGreeter(t, cp.addr, "v1", mesh.WithLocality("eu/a/1"))
	waitFor(ctx, t, "three endpoints in EDS", func() error {
		if eps := endpoints(t, cp, "outbound|9080||greeter.default.svc.cluster.local"); len(eps) != 3 {
			return fmt.Errorf("endpoints %v", eps)
		}
		return nil
	})

	// A client that says nothing of its locality uses every endpoint.
	anywhere, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer anywhere.Close()
	waitFor(ctx, t, "a locality-less client to reach all three", func() error {
		if tl := send(ctx, anywhere, 30); len(tl.instances) != 3 {
			return fmt.Errorf("instances %v", tl.instances)
		}
		return nil
	})

	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr), mesh.WithLocality("us-east/a/1"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	only := func(g *greeterServer) func() error {
		return func() error {
			tl := send(ctx, cc, 50)
			if tl.instances[g.addr] != 50 {
				return fmt.Errorf("instances %v (errors %d, last %v), want all 50 on %s", tl.instances, tl.errors, tl.lastErr, g.addr)
			}
			return nil
		}
	}
	waitFor(ctx, t, "traffic on the local endpoint", only(local))
	if err := only(local)(); err != nil {
		t.Errorf("with the local endpoint healthy: %v", err)
	}

	// The local endpoint dies without deregistering: it stays in EDS for
	// the grace period, but it is not healthy.
	local.Close()
	waitFor(ctx, t, "failover to the same region", only(zone))
	for range 3 {
		if err := only(zone)(); err != nil {
			t.Errorf("after the local endpoint died: %v (the remote region must not be used)", err)
		}
	}

	if err := zone.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "failover to the remote region", only(remote))
}

// TestSourceLabelsRouteByClient: a route with sourceLabels applies to the
// clients that carry those labels and to no other.
func TestSourceLabelsRouteByClient(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", subsetsYAML+`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - match: [{sourceLabels: {app: frontend, track: canary}}]
    route: [{destination: {host: greeter, subset: v2}}]
  - route: [{destination: {host: greeter, subset: v1}}]
`)
	cp := startControlPlane(t, dir)
	startGreeter(t, cp.addr, "v1")
	startGreeter(t, cp.addr, "v2")
	canary, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr),
		mesh.WithService("frontend", "v7"), mesh.WithLabels(map[string]string{"track": "canary"}))
	if err != nil {
		t.Fatal(err)
	}
	defer canary.Close()
	stable, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr), mesh.WithService("frontend", "v7"))
	if err != nil {
		t.Fatal(err)
	}
	defer stable.Close()
	anonymous, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer anonymous.Close()
	for _, c := range []struct {
		name    string
		cc      grpc.ClientConnInterface
		version string
	}{{"frontend on the canary track", canary, "v2"}, {"frontend", stable, "v1"}, {"a client without labels", anonymous, "v1"}} {
		waitFor(ctx, t, c.name+" routed to "+c.version, func() error {
			if tl := send(ctx, c.cc, 40); tl.versions[c.version] != 40 {
				return fmt.Errorf("versions %v (errors %d, %v)", tl.versions, tl.errors, tl.lastErr)
			}
			return nil
		})
	}
}
