package e2e

import (
	"fmt"
	"testing"

	"github.com/trellismesh/trellis/mesh"
)

// TestHalfOpenControlPlaneLink: when the link to the control plane goes
// silent (a black hole: no FIN, no RST, no bytes), clients keep serving
// on their cached configuration — gRPC and HTTP alike — and once the link
// works again, or is replaced after a reset, they follow configuration
// changes again.
func TestHalfOpenControlPlaneLink(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testContext(t)
			m := startSecureMesh(t, scenario{yaml: subsets + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  http:
  - route: [{destination: {host: {{host}}, subset: v1}}]
`}.config(p.host))
			p.serve(t, m, "v1", &behaviour{})
			p.serve(t, m, "v2", &behaviour{})
			proxy := startFaultProxy(t, m.addr)
			// The client reaches the control plane only through the proxy.
			call := p.client(t, m, clientOpts(m.as("client-token"), mesh.WithControlPlane(proxy.addr()))...)
			ready(ctx, t, call)

			proxy.setBlackhole(true)
			if o, v, last := callMany(ctx, call, 100); o[ok] != 100 || v["v1"] != 100 {
				t.Errorf("with the control-plane link black-holed: outcomes %v, versions %v (%v); want 100 ok on v1 from cache", o, v, last.err)
			}

			// A change made while the link is silent arrives once it is
			// working again, possibly through a new connection.
			writeFile(t, m.dir, "mesh.yaml", scenario{yaml: subsets + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  http:
  - route: [{destination: {host: {{host}}, subset: v2}}]
`}.config(p.host))
			if o, v, last := callMany(ctx, call, 50); o[ok] != 50 || v["v1"] != 50 {
				t.Errorf("still black-holed after a change: outcomes %v, versions %v (%v); want the cached route to v1", o, v, last.err)
			}
			proxy.setBlackhole(false)
			proxy.cut() // the silent connections are dead to both ends; replace them
			waitFor(ctx, t, "the change to arrive after the link recovers", func() error {
				if o, v, last := callMany(ctx, call, 20); v["v2"] != 20 {
					return fmt.Errorf("outcomes %v, versions %v (%v)", o, v, last.err)
				}
				return nil
			})
		})
	}
}
