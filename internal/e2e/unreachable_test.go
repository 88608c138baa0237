package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/trellismesh/trellis/mesh"
)

// TestHTTPClientAvoidsUnreachableEndpoint: an endpoint that refuses
// connections but is still in EDS (a static endpoint whose process died)
// is kept out of the HTTP client's picks for a backoff after its first
// refused connection, as grpc-go keeps a failed subchannel out of its
// picks — so even with retries off almost no request fails.
func TestHTTPClientAvoidsUnreachableEndpoint(t *testing.T) {
	ctx := testContext(t)
	var ports []int
	var servers []*http.Server
	for _, v := range []string{"v1", "v2"} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &http.Server{Handler: (&behaviour{}).handler(v, lis.Addr().String())}
		go s.Serve(lis)
		t.Cleanup(func() { s.Close() })
		servers = append(servers, s)
		ports = append(ports, lis.Addr().(*net.TCPAddr).Port)
	}
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web]
  resolution: STATIC
  ports: [{number: 8080, name: http}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: %d}}
  - {address: 127.0.0.1, ports: {http: %d}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: web}}]
`, ports[0], ports[1]))
	cp := startControlPlane(t, dir)
	tr := mesh.NewTransport(mesh.WithControlPlane(cp.addr), mesh.WithMeshOnly())
	defer tr.Close()
	client := &http.Client{Transport: tr}
	get := func() error {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://web:8080/", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}
	waitFor(ctx, t, "web answering", get)
	servers[0].Close() // refuses connections from now on; still in EDS
	failed := 0
	const n = 300
	for range n {
		if get() != nil {
			failed++
		}
	}
	t.Logf("%d of %d requests failed after one of two endpoints died (retries off)", failed, n)
	if failed > 5 {
		t.Errorf("%d of %d requests failed, want a handful: the dead endpoint keeps being picked", failed, n)
	}
}
