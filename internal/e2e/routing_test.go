package e2e

import (
	"fmt"
	"math"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/mesh"
)

const subsetsYAML = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: greeter
spec:
  host: greeter
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
`

func routesYAML(v1, v2 int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: greeter
spec:
  hosts:
  - greeter
  http:
  - name: canary-header
    match:
    - headers:
        x-canary:
          exact: "true"
    route:
    - destination:
        host: greeter
        subset: v2
  - name: split
    route:
    - destination:
        host: greeter
        subset: v1
      weight: %d
    - destination:
        host: greeter
        subset: v2
      weight: %d
`, v1, v2)
}

const (
	v1Cluster = "outbound|9080|v1|greeter.default.svc.cluster.local"
	v2Cluster = "outbound|9080|v2|greeter.default.svc.cluster.local"
)

// share returns the percentage of replies from version v.
func (tl tally) share(v string) float64 {
	total := 0
	for _, n := range tl.versions {
		total += n
	}
	if total == 0 {
		return math.NaN()
	}
	return 100 * float64(tl.versions[v]) / float64(total)
}

// TestRouting runs the foundation scenario end to end: a control plane with a
// config directory, greeter servers v1, v1, v2 registering themselves, and a
// mesh.Dial client.
func TestRouting(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	writeFile(t, dir, "subsets.yaml", subsetsYAML)
	writeFile(t, dir, "routes.yaml", routesYAML(80, 20))
	cp := startControlPlane(t, dir)

	a := startGreeter(t, cp.addr, "v1")
	b := startGreeter(t, cp.addr, "v1")
	c := startGreeter(t, cp.addr, "v2")
	waitFor(ctx, t, "three endpoints in EDS", func() error {
		if got := len(endpoints(t, cp, v1Cluster)) + len(endpoints(t, cp, v2Cluster)); got != 3 {
			return fmt.Errorf("%d endpoints, want 3", got)
		}
		return nil
	})

	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr))
	if err != nil {
		t.Fatalf("mesh.Dial() = %v", err)
	}
	defer cc.Close()
	waitFor(ctx, t, "all three instances answering", func() error {
		tl := send(ctx, cc, 60)
		if len(tl.instances) != 3 {
			return fmt.Errorf("instances %v (errors %d, last %v)", tl.instances, tl.errors, tl.lastErr)
		}
		return nil
	})

	t.Run("weighted split 80/20", func(t *testing.T) {
		tl := send(ctx, cc, 2000)
		if tl.errors > 0 {
			t.Fatalf("%d RPCs failed, last: %v", tl.errors, tl.lastErr)
		}
		if got := tl.share("v2"); math.Abs(got-20) > 5 {
			t.Errorf("v2 share = %.1f%%, want 20±5%% (%v)", got, tl.versions)
		}
		// Round robin inside the v1 subset spreads over both v1 servers.
		if na, nb := tl.instances[a.addr], tl.instances[b.addr]; na < 400 || nb < 400 {
			t.Errorf("v1 instances got %d and %d RPCs, want each ≥ 400 of ~1600", na, nb)
		}
	})

	t.Run("header match", func(t *testing.T) {
		tl := send(ctx, cc, 200, "x-canary", "true")
		if tl.versions["v2"] != 200 {
			t.Errorf("with x-canary: true, versions = %v (errors %d: %v), want all 200 on v2", tl.versions, tl.errors, tl.lastErr)
		}
	})

	t.Run("editing the file moves the split", func(t *testing.T) {
		start := time.Now()
		writeFile(t, dir, "routes.yaml", routesYAML(0, 100))
		waitFor(ctx, t, "all traffic on v2", func() error {
			if tl := send(ctx, cc, 50); tl.versions["v2"] != 50 {
				return fmt.Errorf("versions %v", tl.versions)
			}
			return nil
		})
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("split moved after %v, want within 2s", d)
		}
		writeFile(t, dir, "routes.yaml", routesYAML(50, 50))
		waitFor(ctx, t, "traffic back on v1", func() error {
			if tl := send(ctx, cc, 100); tl.versions["v1"] < 25 {
				return fmt.Errorf("versions %v", tl.versions)
			}
			return nil
		})
	})

	t.Run("broken file keeps the last good config", func(t *testing.T) {
		before := cp.ConfigDump().Config.Build
		writeFile(t, dir, "routes.yaml", strings.Replace(routesYAML(50, 50), "weight: 50\n", "weight: 40\n", 1))
		waitFor(ctx, t, "the load error on the admin endpoint", func() error {
			if errs := cp.ConfigDump().Config.LastErrors; len(errs) == 0 {
				return fmt.Errorf("no error yet")
			}
			return nil
		})
		errs := cp.ConfigDump().Config.LastErrors
		want := filepath.Join(dir, "routes.yaml") + ":1: VirtualService default/greeter: spec.http[1].route: weights sum to 90, want 100"
		if !slices.Contains(errs, want) {
			t.Errorf("config dump errors = %q, want to contain %q", errs, want)
		}
		if after := cp.ConfigDump().Config.Build; after != before {
			t.Errorf("a rejected file triggered a rebuild (build %d → %d)", before, after)
		}
		tl := send(ctx, cc, 400)
		if tl.errors > 0 || math.Abs(tl.share("v2")-50) > 10 {
			t.Errorf("after a broken file, versions = %v, errors = %d; want the 50/50 split kept", tl.versions, tl.errors)
		}
		if tl := send(ctx, cc, 50, "x-canary", "true"); tl.versions["v2"] != 50 {
			t.Errorf("after a broken file, header route versions = %v, want all on v2", tl.versions)
		}
		writeFile(t, dir, "routes.yaml", routesYAML(50, 50))
		waitFor(ctx, t, "the error to clear", func() error {
			if errs := cp.ConfigDump().Config.LastErrors; len(errs) != 0 {
				return fmt.Errorf("errors %q", errs)
			}
			return nil
		})
	})

	t.Run("shutting a server down removes it from EDS", func(t *testing.T) {
		if err := b.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown() = %v", err)
		}
		waitFor(ctx, t, "the endpoint to leave EDS", func() error {
			if eps := endpoints(t, cp, v1Cluster); len(eps) != 1 || eps[0] != a.addr {
				return fmt.Errorf("v1 endpoints %v, want [%s]", eps, a.addr)
			}
			return nil
		})
		tl := send(ctx, cc, 300)
		if tl.errors > 0 {
			t.Errorf("%d RPCs failed after shutdown, last: %v", tl.errors, tl.lastErr)
		}
		if tl.instances[b.addr] > 0 {
			t.Errorf("%d RPCs reached the stopped server", tl.instances[b.addr])
		}
		if tl.instances[a.addr] == 0 || tl.instances[c.addr] == 0 {
			t.Errorf("instances = %v, want traffic on both remaining servers", tl.instances)
		}
	})
}

// TestStandardGRPCClient dials through the control plane with plain grpc-go
// and a hand-written bootstrap file: a separate program with no Trellis code
// (testdata/plainclient), since grpc-go reads GRPC_XDS_BOOTSTRAP when it
// initialises. The service balances with Trellis's own LB policies, which
// that client lacks: it must fall back to round robin, not reject the
// cluster.
func TestStandardGRPCClient(t *testing.T) {
	ctx := testContext(t)
	bin := filepath.Join(t.TempDir(), "plainclient")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./testdata/plainclient").CombinedOutput(); err != nil {
		t.Fatalf("go build plainclient: %v\n%s", err, out)
	}
	deps, err := exec.CommandContext(ctx, "go", "list", "-deps", "./testdata/plainclient").CombinedOutput()
	if err != nil || !strings.Contains(string(deps), "google.golang.org/grpc/xds\n") {
		t.Fatalf("go list -deps plainclient: %v\n%s", err, deps)
	}
	if strings.Contains(string(deps), "trellis/mesh") || strings.Contains(string(deps), "trellis/balancer") {
		t.Fatalf("plainclient links Trellis client code:\n%s", grep(string(deps), "trellis"))
	}
	dir := t.TempDir()
	writeFile(t, dir, "dr.yaml", `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    outlierDetection: {consecutive5xxErrors: 3}
`)
	cp := startControlPlane(t, dir)
	startGreeter(t, cp.addr, "v1")
	waitFor(ctx, t, "the endpoint in EDS", func() error {
		if eps := endpoints(t, cp, "outbound|9080||greeter.default.svc.cluster.local"); len(eps) != 1 {
			return fmt.Errorf("endpoints %v", eps)
		}
		return nil
	})
	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "plain-grpc-client"}
}`, cp.addr)
	path := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := os.WriteFile(path, []byte(bootstrap), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "-target", "greeter:9080", "-n", "20")
	cmd.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("plain grpc-go client: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "plain client: 20 replies from v1") {
		t.Fatalf("plain grpc-go client output:\n%s\nwant \"plain client: 20 replies from v1\"", out)
	}
	// The client has gone; its ACKs and NACKs stay counted.
	rec := httptest.NewRecorder()
	cp.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/metrics", nil))
	metrics := rec.Body.String()
	for _, want := range []string{`trellis_xds_acks_total{type="LDS"}`, `trellis_xds_acks_total{type="CDS"}`, `trellis_xds_acks_total{type="EDS"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %s:\n%s", want, grep(metrics, "trellis_xds"))
		}
	}
	if strings.Contains(metrics, "trellis_xds_nacks_total{") {
		t.Errorf("/metrics counts NACKs from a standard client:\n%s", grep(metrics, "trellis_xds"))
	}
}

func grep(s, substr string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
