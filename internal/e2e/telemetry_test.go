package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/telemetry"
)

// sink is an in-memory OpenTelemetry SDK: a manual metric reader and a
// span recorder.
type sink struct {
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	mp     *sdkmetric.MeterProvider
	tp     *sdktrace.TracerProvider
}

func newSink(t *testing.T) *sink {
	s := &sink{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder()}
	s.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.spans))
	t.Cleanup(func() {
		s.mp.Shutdown(context.Background())
		s.tp.Shutdown(context.Background())
	})
	return s
}

func (s *sink) option() mesh.WorkloadOption {
	return mesh.WithTelemetry(telemetry.WithMeterProvider(s.mp), telemetry.WithTracerProvider(s.tp))
}

var off = mesh.WithTelemetry(telemetry.Disabled())

// point is one data point: its attributes and its count (histograms) or
// value (sums).
type point struct {
	attrs map[string]string
	n     int64
}

// points returns the data points of the metric name.
func (s *sink) points(t *testing.T, name string) []point {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect() = %v", err)
	}
	var out []point
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					out = append(out, point{attrsOf(dp.Attributes), int64(dp.Count)})
				}
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					out = append(out, point{attrsOf(dp.Attributes), int64(dp.Count)})
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out = append(out, point{attrsOf(dp.Attributes), dp.Value})
				}
			}
		}
	}
	return out
}

func attrsOf(set attribute.Set) map[string]string {
	m := map[string]string{}
	for _, kv := range set.ToSlice() {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

// sum adds the points of name whose attributes include want, grouped by
// the attribute by ("" for no grouping).
func (s *sink) sum(t *testing.T, name string, want map[string]string, by string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
next:
	for _, p := range s.points(t, name) {
		for k, v := range want {
			if p.attrs[k] != v {
				continue next
			}
		}
		out[p.attrs[by]] += p.n
	}
	return out
}

// linked checks that every client span of the trace recorder client has a
// server span in server with it as parent.
func linked(client, server *sink, clientName string) error {
	servers := map[trace.SpanID]bool{}
	for _, s := range server.spans.Ended() {
		if s.SpanKind() == trace.SpanKindServer {
			servers[s.Parent().SpanID()] = s.Parent().TraceID().IsValid()
		}
	}
	n := 0
	for _, s := range client.spans.Ended() {
		if s.Name() != clientName {
			continue
		}
		n++
		if !servers[s.SpanContext().SpanID()] {
			return fmt.Errorf("client span %s %s has no server span child", s.Name(), s.SpanContext().SpanID())
		}
	}
	if n == 0 {
		return fmt.Errorf("no client span %q", clientName)
	}
	return nil
}

const clientID = "spiffe://cluster.local/ns/default/sa/client"

// TestTelemetryGRPC sends N calls across an 80/20 split and checks that
// the client's per-version counts add up to N and match the replies, that
// the servers count the same, that a denial shows on both sides with its
// attributes, and that every client span has its server span as child.
func TestTelemetryGRPC(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, subsetsYAML+"---\n"+routesYAML(80, 20)+`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-flagged, namespace: default}
spec:
  action: DENY
  rules:
  - when: [{key: "request.headers[x-deny]", values: ["1"]}]
`)
	srvSink := newSink(t)
	startGreeter(t, m.addr, "v1", serverOpts(m.as("greeter-token"), srvSink.option())...)
	startGreeter(t, m.addr, "v2", serverOpts(m.as("greeter-token"), srvSink.option())...)

	warm, err := mesh.Dial("greeter:9080", dialOpts(m.as("client-token"), off)...)
	if err != nil {
		t.Fatal(err)
	}
	defer warm.Close()
	waitFor(ctx, t, "both versions answering and the policy in force", func() error {
		tl := send(ctx, warm, 20)
		if tl.errors > 0 || tl.versions["v1"] == 0 || tl.versions["v2"] == 0 {
			return fmt.Errorf("%+v", tl)
		}
		if tl := send(ctx, warm, 1, "x-deny", "1"); status.Code(tl.lastErr) != codes.PermissionDenied {
			return fmt.Errorf("flagged call: %v, want PermissionDenied", tl.lastErr)
		}
		return nil
	})

	cliSink := newSink(t)
	cc, err := mesh.Dial("greeter:9080", dialOpts(m.as("client-token"), mesh.WithService("frontend", "v7"), cliSink.option())...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	const n = 200
	tl := send(ctx, cc, n)
	if tl.errors > 0 {
		t.Fatalf("%d of %d calls failed; last: %v", tl.errors, n, tl.lastErr)
	}
	byVersion := cliSink.sum(t, "rpc.client.duration", map[string]string{"rpc.grpc.status_code": "0", "rpc.system": "grpc", "rpc.service": "trellis.examples.greeter.v1.Greeter", "rpc.method": "SayHello", "destination_service": "greeter:9080", "source_app": "frontend", "source_version": "v7"}, "destination_version")
	want := map[string]int64{"v1": int64(tl.versions["v1"]), "v2": int64(tl.versions["v2"])}
	if diff := cmp.Diff(byVersion, want); diff != "" {
		t.Errorf("rpc.client.duration counts by destination_version (-got +want):\n%s", diff)
	}
	if got := byVersion["v1"] + byVersion["v2"]; got != n {
		t.Errorf("rpc.client.duration counts add up to %d, want %d", got, n)
	}
	served := srvSink.sum(t, "rpc.server.duration", map[string]string{"rpc.grpc.status_code": "0", "source_app": "frontend", "source_principal": clientID, "destination_app": "greeter"}, "destination_version")
	if diff := cmp.Diff(served, want); diff != "" {
		t.Errorf("rpc.server.duration counts by destination_version (-got +want):\n%s", diff)
	}

	// A denial.
	if tl := send(ctx, cc, 1, "x-deny", "1"); status.Code(tl.lastErr) != codes.PermissionDenied {
		t.Fatalf("flagged call: %v, want PermissionDenied", tl.lastErr)
	}
	if got := cliSink.sum(t, "rpc.client.duration", map[string]string{"rpc.grpc.status_code": "7"}, ""); got[""] != 1 {
		t.Errorf("client PERMISSION_DENIED count = %d, want 1", got[""])
	}
	denials := srvSink.sum(t, telemetry.MetricDenials, map[string]string{"reason": "denied", "protocol": "grpc", "source_app": "frontend", "source_principal": clientID, "rpc.method": "SayHello"}, "")
	if denials[""] != 1 {
		t.Errorf("%s{reason=denied, source_app=frontend} = %d, want 1", telemetry.MetricDenials, denials[""])
	}
	if got := srvSink.sum(t, telemetry.MetricDenials, map[string]string{"source_app": "frontend"}, "reason"); got[""] != 0 || len(got) != 1 {
		t.Errorf("denials by reason = %v, want only denied (admitted calls are not denials)", got)
	}
	if got := cliSink.sum(t, telemetry.MetricAttempts, map[string]string{"destination_service": "greeter:9080"}, ""); got[""] != n+1 {
		t.Errorf("%s = %d, want %d (no retries)", telemetry.MetricAttempts, got[""], n+1)
	}

	if err := linked(cliSink, srvSink, "trellis.examples.greeter.v1.Greeter/SayHello"); err != nil {
		t.Error(err)
	}
}

// TestTelemetryHTTP checks a retried request (its retry counted, a span
// per attempt, each attempt's server span its child), a denial and a
// fault injection through the mesh's HTTP client and server.
func TestTelemetryHTTP(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{headers: {x-fault: {exact: "1"}}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: web}}]
  - retries: {attempts: 2, retryOn: "5xx"}
    route: [{destination: {host: web}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"]}}]
`)
	var flaky atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/flaky" && flaky.Add(1) == 1 {
			http.Error(w, "once", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	srvSink := newSink(t)
	srv, err := mesh.NewHTTPServer(h, httpServerOpts(m.as("web-token"), mesh.WithService("web", "v1"), mesh.WithServicePort(8080), srvSink.option())...)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close(); <-done })

	get := func(c *http.Client, path string, headers ...string) (int, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://web:8080"+path, nil)
		if err != nil {
			return 0, err
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	warm := mesh.NewTransport(transportOpts(m.as("client-token"), mesh.WithMeshOnly(), off)...)
	t.Cleanup(func() { warm.Close() })
	waitFor(ctx, t, "web answering and the policy in force", func() error {
		if code, err := get(&http.Client{Transport: warm}, "/hello"); code != http.StatusOK {
			return fmt.Errorf("/hello: %d %v", code, err)
		}
		if code, err := get(&http.Client{Transport: warm}, "/admin"); code != http.StatusForbidden {
			return fmt.Errorf("/admin: %d %v", code, err)
		}
		return nil
	})

	cliSink := newSink(t)
	tr := mesh.NewTransport(transportOpts(m.as("client-token"), mesh.WithMeshOnly(), mesh.WithService("frontend", "v7"), cliSink.option())...)
	t.Cleanup(func() { tr.Close() })
	c := &http.Client{Transport: tr}
	for _, tc := range []struct {
		path    string
		headers []string
		want    int
	}{
		{"/flaky", nil, http.StatusOK},
		{"/admin", nil, http.StatusForbidden},
		{"/hello", []string{"x-fault", "1"}, http.StatusTeapot},
	} {
		if code, err := get(c, tc.path, tc.headers...); code != tc.want {
			t.Fatalf("GET %s = %d, %v, want %d", tc.path, code, err, tc.want)
		}
	}

	retries := cliSink.sum(t, telemetry.MetricRetries, map[string]string{"destination_service": "web:8080", "http.response.status_code": "200", "destination_app": "web", "destination_version": "v1", "source_app": "frontend"}, "")
	if retries[""] != 1 {
		t.Errorf("%s{destination_service=web:8080, status 200} = %d, want 1", telemetry.MetricRetries, retries[""])
	}
	attempts := cliSink.sum(t, telemetry.MetricAttempts, map[string]string{"destination_service": "web:8080"}, "http.response.status_code")
	if diff := cmp.Diff(attempts, map[string]int64{"503": 1, "200": 1, "403": 1}); diff != "" {
		t.Errorf("%s by status (-got +want):\n%s", telemetry.MetricAttempts, diff)
	}
	denials := srvSink.sum(t, telemetry.MetricDenials, map[string]string{"reason": "denied", "protocol": "http", "source_app": "frontend", "source_principal": clientID, "destination_app": "web"}, "")
	if denials[""] != 1 {
		t.Errorf("%s{reason=denied, protocol=http, source_app=frontend} = %d, want 1", telemetry.MetricDenials, denials[""])
	}
	faults := cliSink.sum(t, telemetry.MetricEvents, map[string]string{"event": telemetry.EventFaultAbort, "destination_service": "web:8080"}, "")
	if faults[""] != 1 {
		t.Errorf("%s{event=fault_abort} = %d, want 1", telemetry.MetricEvents, faults[""])
	}
	byCode := cliSink.sum(t, "http.client.request.duration", map[string]string{"http.request.method": "GET", "server.address": "web"}, "http.response.status_code")
	if diff := cmp.Diff(byCode, map[string]int64{"200": 1, "403": 1, "418": 1}); diff != "" {
		t.Errorf("http.client.request.duration by status (-got +want):\n%s", diff)
	}

	// The retried call: one client span, two attempt spans under it, and a
	// server span under each attempt.
	var call trace.SpanContext
	attemptSpans := map[trace.SpanID]string{}
	for _, s := range cliSink.spans.Ended() {
		if s.Name() == "GET" && strings.HasSuffix(attrValue(s, "url.full"), "/flaky") {
			call = s.SpanContext()
		}
	}
	if !call.IsValid() {
		t.Fatal("no client span for GET /flaky")
	}
	for _, s := range cliSink.spans.Ended() {
		if strings.HasPrefix(s.Name(), "attempt ") && s.Parent().SpanID() == call.SpanID() {
			attemptSpans[s.SpanContext().SpanID()] = s.Name()
		}
	}
	var names []string
	for _, n := range attemptSpans {
		names = append(names, n)
	}
	sort.Strings(names)
	if diff := cmp.Diff(names, []string{"attempt 1", "attempt 2"}); diff != "" {
		t.Errorf("attempt spans of GET /flaky (-got +want):\n%s", diff)
	}
	waitFor(ctx, t, "a server span under each attempt", func() error {
		under := 0
		for _, s := range srvSink.spans.Ended() {
			if s.SpanKind() == trace.SpanKindServer && s.Parent().TraceID() == call.TraceID() && attemptSpans[s.Parent().SpanID()] != "" {
				under++
			}
		}
		if under != 2 {
			return fmt.Errorf("%d server spans under the attempts, want 2", under)
		}
		return nil
	})
}

func attrValue(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// BenchmarkTelemetry measures a mesh gRPC call with telemetry off, with
// the default global (no-op) providers, and on (an SDK recording metrics
// and sampling every span), client and server both; the ratio on/off is
// the overhead.
func BenchmarkTelemetry(b *testing.B) {
	cp := startControlPlane(b, "")
	for _, mode := range []string{"off", "default", "on"} {
		b.Run(mode, func(b *testing.B) {
			opt := off
			if mode == "default" {
				opt = mesh.WithTelemetry()
			}
			if mode == "on" {
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
				b.Cleanup(func() { mp.Shutdown(context.Background()); tp.Shutdown(context.Background()) })
				opt = mesh.WithTelemetry(telemetry.WithMeterProvider(mp), telemetry.WithTracerProvider(tp))
			}
			svc := "bench-" + mode
			startGreeter(b, cp.addr, "v1", mesh.WithService(svc, "v1"), opt)
			cc, err := mesh.Dial(svc+":9080", mesh.WithControlPlane(cp.addr), opt)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { cc.Close() })
			c := greeterpb.NewGreeterClient(cc)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			b.Cleanup(cancel)
			for {
				if _, err := c.SayHello(ctx, &greeterpb.HelloRequest{Name: "b"}); err == nil {
					break
				} else if ctx.Err() != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.SayHello(ctx, &greeterpb.HelloRequest{Name: "b"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
