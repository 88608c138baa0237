package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

// browserPath finds Chromium: $TRELLIS_CHROMIUM, else chromium or
// chromium-browser on the PATH. Without one the test skips, or fails when
// TRELLIS_REQUIRE_BROWSER=1 (as CI sets it).
func browserPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TRELLIS_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium found (install Debian's chromium: apt-get install -y chromium, or set TRELLIS_CHROMIUM)"
	if os.Getenv("TRELLIS_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + "; TRELLIS_REQUIRE_BROWSER=1 requires it")
	}
	t.Skip(msg)
	return ""
}

// artifactsDir is where a failing browser test leaves its screenshot:
// $TRELLIS_ARTIFACTS, else a directory under the system's temporary
// directory that outlives the test.
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("TRELLIS_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "trellis-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("artifacts directory: %v", err)
	}
	return dir
}

// TestDashboardShowsLiveGraph loads /dashboard in headless Chromium while a
// gRPC and an HTTP client of workload frontend call their services through
// the mesh: the page's graph must show both edges with non-zero rates, the
// services with their endpoints and versions, the clients in sync, and a
// configuration error once a broken file lands in the config directory. A
// failure leaves a screenshot (its path is logged).
func TestDashboardShowsLiveGraph(t *testing.T) {
	chromium := browserPath(t)
	ctx := testContext(t)
	dir := t.TempDir()
	writeFile(t, dir, "greeter.yaml", `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  subsets:
  - {name: v1, labels: {version: v1}}
`)
	const token = "dashboard-token"
	cp := startControlPlane(t, dir, xdsserver.WithAdminToken(token), xdsserver.WithLoadReportingInterval(500*time.Millisecond))
	startGreeter(t, cp.addr, "v1")
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs, err := mesh.NewHTTPServer((&behaviour{}).handler("v1", hlis.Addr().String()),
		mesh.WithControlPlane(cp.addr), mesh.WithService("hello", "v1"), mesh.WithServicePort(9080))
	if err != nil {
		t.Fatal(err)
	}
	hdone := make(chan error, 1)
	go func() { hdone <- hs.Serve(hlis) }()
	t.Cleanup(func() {
		hs.Close()
		if err := <-hdone; !errors.Is(err, mesh.ErrServerClosed) {
			t.Errorf("Serve() = %v, want mesh.ErrServerClosed", err)
		}
	})

	client := []mesh.WorkloadOption{mesh.WithControlPlane(cp.addr), mesh.WithService("frontend", "v1")}
	cc, err := mesh.Dial("greeter:9080", dialOpts(client)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	tr := mesh.NewTransport(transportOpts(client, mesh.WithMeshOnly())...)
	t.Cleanup(func() { tr.Close() })

	// Traffic flows, paced by a ticker, for the whole test.
	tctx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { stopTraffic(); wg.Wait() })
	wg.Go(func() {
		gc := greeterpb.NewGreeterClient(cc)
		hc := &http.Client{Transport: tr}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tctx.Done():
				return
			case <-tick.C:
			}
			rctx, cancel := context.WithTimeout(tctx, 5*time.Second)
			gc.SayHello(rctx, &greeterpb.HelloRequest{Name: "dashboard"})
			if req, err := http.NewRequestWithContext(rctx, "GET", "http://hello:9080/hello", nil); err == nil {
				if resp, err := hc.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			cancel()
		}
	})

	admin := httptest.NewServer(cp.AdminHandler())
	t.Cleanup(admin.Close)

	// The browser outlives the test's context by a little, to take the
	// screenshot of a test that ran out of time.
	browserCtx, cancelBrowserCtx := context.WithTimeout(context.WithoutCancel(ctx), testTimeout+30*time.Second)
	t.Cleanup(cancelBrowserCtx)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(browserCtx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1100))...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", chromium, err)
	}
	t.Cleanup(func() { // runs before the browser is closed
		if !t.Failed() {
			return
		}
		sctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // 100: PNG
		if err != nil {
			t.Logf("screenshot failed: %v", err)
			return
		}
		path := filepath.Join(artifactsDir(t), fmt.Sprintf("dashboard-%s.png", time.Now().Format("20060102-150405.000")))
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Logf("saving screenshot: %v", err)
			return
		}
		t.Logf("screenshot of the dashboard: %s", path)
	})

	if err := chromedp.Do(bctx, chromedp.Navigate(admin.URL+"/dashboard?token="+token)); err != nil {
		t.Fatalf("loading the dashboard: %v", err)
	}
	// evaluate runs expr in the page and decodes its JSON result into out.
	evaluate := func(expr string, out any) error {
		ectx, cancel := context.WithTimeout(bctx, 5*time.Second)
		defer cancel()
		raw, err := chromedp.Run(ectx, chromedp.Evaluate[string]("JSON.stringify("+expr+")"))
		if err != nil {
			return err
		}
		return json.Unmarshal([]byte(raw), out)
	}
	browserPoll := func(what string, cond func() error) {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			err := cond()
			if err == nil {
				return
			}
			select {
			case <-pctx.Done():
				t.Fatalf("waiting for the dashboard to show %s: %v", what, err)
			case <-tick.C:
			}
		}
	}

	var href string
	if err := evaluate("location.href", &href); err != nil || href != admin.URL+"/dashboard" {
		t.Errorf("address after login = %q (%v), want %q: the token must leave the address bar", href, err, admin.URL+"/dashboard")
	}

	type pageEdge struct {
		Source, Destination, Label string
		RPS                        float64
	}
	browserPoll("both edges with non-zero rates", func() error {
		var edges []pageEdge
		err := evaluate(`[...document.querySelectorAll("#graph [data-edge]")].map(e => ({
			source: e.dataset.source, destination: e.dataset.destination, rps: Number(e.dataset.rps),
			label: e.querySelector("text").textContent}))`, &edges)
		if err != nil {
			return err
		}
		for _, dst := range []string{"greeter.default.svc.cluster.local", "hello.default.svc.cluster.local"} {
			found := false
			for _, e := range edges {
				if e.Source == "frontend.default.svc.cluster.local" && e.Destination == dst {
					found = true
					if e.RPS <= 0 || !strings.Contains(e.Label, "rps") {
						return fmt.Errorf("edge to %s = %+v, want a non-zero rate on its label", dst, e)
					}
				}
			}
			if !found {
				return fmt.Errorf("no edge frontend -> %s among %+v", dst, edges)
			}
		}
		return nil
	})

	browserPoll("the services, their endpoints and versions, and synced clients", func() error {
		var page struct {
			Services []string
			Clients  []string
		}
		err := evaluate(`({
			services: [...document.querySelectorAll("#services tbody tr")].map(r => r.innerText),
			clients: [...document.querySelectorAll("#clients tbody tr")].map(r => r.innerText)})`, &page)
		if err != nil {
			return err
		}
		services := strings.Join(page.Services, "\n")
		for _, want := range []string{"greeter", "hello", "v1", "127.0.0.1:"} {
			if !strings.Contains(services, want) {
				return fmt.Errorf("services table %q lacks %q", services, want)
			}
		}
		if len(page.Clients) == 0 || !strings.Contains(strings.Join(page.Clients, "\n"), "SYNCED") {
			return fmt.Errorf("clients table = %q, want SYNCED clients", page.Clients)
		}
		return nil
	})

	writeFile(t, dir, "broken.yaml", `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: [greeter]
  notAField: true
`)
	browserPoll("the configuration error", func() error {
		var errs []string
		if err := evaluate(`[...document.querySelectorAll("#config-errors li")].map(li => li.textContent)`, &errs); err != nil {
			return err
		}
		for _, e := range errs {
			if strings.Contains(e, "broken.yaml") && strings.Contains(e, "notAField") {
				return nil
			}
		}
		return fmt.Errorf("configuration errors on the page = %q, want one naming broken.yaml and notAField", errs)
	})
}
