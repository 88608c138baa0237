// Command http runs plain net/http services in a Trellis mesh, in one
// process: a control plane configured by Istio YAML, two versions of an
// HTTP "ratings" service served with mesh.NewHTTPServer (which registers
// them), and a client whose mesh.HTTPClient routes "http://ratings:8080/..."
// by the same VirtualService rules gRPC clients follow.
//
//	go run ./examples/http
//
// It prints the share of requests each version answers with a 75/25
// split, and for requests carrying "x-user: jason", which all go to v2.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

const config = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{headers: {x-user: {exact: jason}}}]
    route: [{destination: {host: ratings, subset: v2}}]
  - retries: {attempts: 2, retryOn: "5xx,connect-failure"}
    timeout: 2s
    route:
    - {destination: {host: ratings, subset: v1}, weight: 75}
    - {destination: {host: ratings, subset: v2}, weight: 25}
`

func main() {
	requests := flag.Int("requests", 400, "requests to send for each measurement")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, *requests, 20*time.Second)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "http:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, requests int, timeout time.Duration) (err error) {
	var stops []func(context.Context) error
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, stop := range slices.Backward(stops) {
			err = errors.Join(err, stop(sctx))
		}
	}()

	// 1. The control plane, with the routing YAML.
	dir, err := os.MkdirTemp("", "trellis-http-")
	if err != nil {
		return err
	}
	stops = append(stops, func(context.Context) error { return os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "ratings.yaml"), []byte(config), 0o644); err != nil {
		return err
	}
	// This example's workloads have no identities, so the mesh is opened
	// to registrations without a credential (examples/secure has
	// identities and leaves it closed).
	cp, err := xdsserver.New(xdsserver.WithConfigDir(dir), xdsserver.WithInsecureRegistration())
	if err != nil {
		return err
	}
	cpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cp.Close()
		return err
	}
	go cp.Serve(cpLis)
	stops = append(stops, func(context.Context) error { return cp.Close() })
	cpAddr := cpLis.Addr().String()
	fmt.Fprintf(w, "control plane  %s\n", cpAddr)

	// 2. Two versions of the ratings service: plain http.Handlers served
	// by mesh.NewHTTPServer, which registers each with the control plane.
	for _, version := range []string{"v1", "v2"} {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /ratings/{id}", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]string{"id": r.PathValue("id"), "stars": "4", "version": version})
		})
		srv, err := mesh.NewHTTPServer(mux, mesh.WithControlPlane(cpAddr), mesh.WithService("ratings", version), mesh.WithServicePort(8080))
		if err != nil {
			return err
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go srv.Serve(lis)
		stops = append(stops, srv.Shutdown)
		fmt.Fprintf(w, "ratings %s     %s\n", version, lis.Addr())
	}

	// 3. The client: an *http.Client whose transport is the mesh.
	client := mesh.HTTPClient(mesh.WithControlPlane(cpAddr))
	stops = append(stops, func(context.Context) error { return client.Transport.(*mesh.Transport).Close() })

	deadline := time.Now().Add(timeout)
	for {
		shares, err := measure(ctx, client, 20, "")
		if err == nil && shares["v1"] > 0 && shares["v2"] > 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the mesh did not converge: shares %v, last error %v", shares, err)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}

	fmt.Fprintf(w, "\n%-22s %6s %6s\n", fmt.Sprintf("%d requests each", requests), "v1", "v2")
	for _, m := range []struct{ label, user string }{{"split 75/25", ""}, {"x-user: jason", "jason"}} {
		shares, err := measure(ctx, client, requests, m.user)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%-22s %5.1f%% %5.1f%%\n", m.label, shares["v1"], shares["v2"])
	}
	return nil
}

// measure sends n requests and returns the share (in percent) each
// version answered.
func measure(ctx context.Context, client *http.Client, n int, user string) (map[string]float64, error) {
	counts := map[string]int{}
	for i := range n {
		req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://ratings:8080/ratings/%d", i), nil)
		if err != nil {
			return nil, err
		}
		if user != "" {
			req.Header.Set("x-user", user)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		var body struct{ Version string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s (%v)", req.URL, resp.Status, err)
		}
		counts[body.Version]++
	}
	shares := map[string]float64{}
	for v, c := range counts {
		shares[v] = 100 * float64(c) / float64(n)
	}
	return shares, nil
}
