// Command observability runs the quickstart's mesh — a control plane, two
// greeter versions and a client — with OpenTelemetry installed: metrics
// exported for Prometheus on an admin port, traces printed to stdout, and
// access logs as JSON lines.
//
//	go run ./examples/observability
//
// It sends a few calls through an 80/20 split, prints the mesh's request
// metrics as Prometheus serves them (per destination version, with Istio's
// mesh labels), and one client → server trace.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/telemetry"
	"github.com/trellismesh/trellis/xdsserver"
)

const config = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - route:
    - {destination: {host: greeter, subset: v1}, weight: 80}
    - {destination: {host: greeter, subset: v2}, weight: 20}
`

func main() {
	calls := flag.Int("calls", 100, "calls to send")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, *calls, 20*time.Second)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "observability:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, calls int, timeout time.Duration) (err error) {
	var stops []func(context.Context) error
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, stop := range slices.Backward(stops) {
			err = errors.Join(err, stop(sctx))
		}
	}()

	// 1. OpenTelemetry: a Prometheus exporter for metrics, stdout for
	// traces (buffered here, printed at the end), JSON access logs.
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	stops = append(stops, mp.Shutdown)
	var traces bytes.Buffer
	spans, err := stdouttrace.New(stdouttrace.WithWriter(&traces), stdouttrace.WithPrettyPrint())
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	stops = append(stops, tp.Shutdown)
	var accessLog bytes.Buffer
	tel := mesh.WithTelemetry(
		telemetry.WithMeterProvider(mp),
		telemetry.WithTracerProvider(tp),
		telemetry.WithAccessLog(telemetry.AccessLog{Mode: telemetry.AccessLogOn, Logger: slog.New(slog.NewJSONHandler(&accessLog, nil))}),
	)

	// The application's admin port: Prometheus scrapes /metrics here.
	adminLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	admin := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go admin.Serve(adminLis)
	stops = append(stops, admin.Shutdown)

	// 2. The control plane and two greeter versions, with telemetry.
	dir, err := os.MkdirTemp("", "trellis-observability-")
	if err != nil {
		return err
	}
	stops = append(stops, func(context.Context) error { return os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "greeter.yaml"), []byte(config), 0o644); err != nil {
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
	for _, v := range []string{"v1", "v2"} {
		srv, err := mesh.NewServer(mesh.WithControlPlane(cpAddr), mesh.WithService("greeter", v), mesh.WithServicePort(9080), tel)
		if err != nil {
			return err
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: v, Instance: lis.Addr().String()})
		go srv.Serve(lis)
		stops = append(stops, srv.Shutdown)
	}

	// 3. The client, as service "frontend", with telemetry.
	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cpAddr), mesh.WithService("frontend", "v1"), tel)
	if err != nil {
		return err
	}
	stops = append(stops, func(context.Context) error { return cc.Close() })
	client := greeterpb.NewGreeterClient(cc)
	deadline := time.Now().Add(timeout)
	seen := map[string]bool{}
	for len(seen) < 2 {
		r, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "warm-up"})
		if err == nil {
			seen[r.GetVersion()] = true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the mesh did not converge: versions %v, last error %v", seen, err)
		}
	}
	traces.Reset()
	accessLog.Reset()
	for i := range calls {
		if _, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: fmt.Sprint(i)}); err != nil {
			return err
		}
	}

	// 4. What Prometheus scrapes: the client's call durations, by
	// destination version.
	resp, err := http.Get("http://" + adminLis.Addr().String() + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	fmt.Fprintf(w, "metrics at http://%s/metrics (client side, %d calls after warm-up):\n", adminLis.Addr(), calls)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "rpc_client_duration_milliseconds_count") {
			fmt.Fprintln(w, "  "+line)
		}
	}
	// 5. One access-log line and the first trace.
	if line, _, ok := strings.Cut(accessLog.String(), "\n"); ok {
		fmt.Fprintf(w, "\naccess log (first line):\n  %s\n", line)
	}
	fmt.Fprintf(w, "\ntraces (%d bytes of JSON spans; the first):\n", traces.Len())
	first, _, _ := strings.Cut(traces.String(), "\n}\n")
	fmt.Fprintln(w, first+"\n}")
	return nil
}
