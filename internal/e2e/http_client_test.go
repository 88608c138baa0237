package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/mesh"
)

// TestHTTPClientPassesThroughOutsideMesh: requests to hosts outside the
// mesh go out untouched, unless the transport is mesh-only.
func TestHTTPClientPassesThroughOutsideMesh(t *testing.T) {
	cp := startControlPlane(t, "")
	outside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "outside "+r.URL.Path)
	}))
	defer outside.Close()

	client := mesh.HTTPClient(mesh.WithControlPlane(cp.addr))
	defer client.Transport.(*mesh.Transport).Close()
	resp, err := client.Get(outside.URL + "/x")
	if err != nil {
		t.Fatalf("Get(outside) = %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "outside /x" {
		t.Errorf("Get(outside) body = %q, want %q", body, "outside /x")
	}

	strict := mesh.HTTPClient(mesh.WithControlPlane(cp.addr), mesh.WithMeshOnly())
	defer strict.Transport.(*mesh.Transport).Close()
	if _, err := strict.Get(outside.URL + "/x"); err == nil || !strings.Contains(err.Error(), "not a mesh host") {
		t.Errorf("mesh-only Get(outside) = %v, want a not-a-mesh-host error", err)
	}
}

// TestHTTPClientSurvivesControlPlaneRestart: the HTTP client keeps routing
// on its cached configuration while the control plane is down and across
// its restart; not one request fails.
func TestHTTPClientSurvivesControlPlaneRestart(t *testing.T) {
	ctx := testContext(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	dir := t.TempDir()
	writeFile(t, dir, "se.yaml", `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hello}
spec:
  hosts: [hello]
  resolution: STATIC
  ports: [{number: 9080, name: http}]
`)
	_, stopFirst := serveOn(t, addr, dir)
	b := &behaviour{}
	slis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := mesh.NewHTTPServer(b.handler("v1", slis.Addr().String()), mesh.WithControlPlane(addr), mesh.WithService("hello", "v1"), mesh.WithServicePort(9080))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(slis) }()
	t.Cleanup(func() { srv.Close(); <-done })

	client := mesh.HTTPClient(mesh.WithControlPlane(addr), mesh.WithMeshOnly())
	defer client.Transport.(*mesh.Transport).Close()
	get := func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://hello:9080/", nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	}
	waitFor(ctx, t, "the service answering", func() error { return get(ctx) })
	count := func(n int) (failed int, last error) {
		for range n {
			if err := get(ctx); err != nil {
				failed, last = failed+1, err
			}
		}
		return failed, last
	}
	stopFirst()
	if f, err := count(100); f > 0 {
		t.Errorf("with the control plane down: %d of 100 requests failed (%v)", f, err)
	}
	serveOn(t, addr, dir)
	if f, err := count(200); f > 0 {
		t.Errorf("across the restart: %d of 200 requests failed (%v)", f, err)
	}
}
