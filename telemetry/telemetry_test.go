package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sink is an in-memory OpenTelemetry SDK.
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
	t.Cleanup(func() { s.mp.Shutdown(context.Background()); s.tp.Shutdown(context.Background()) })
	return s
}

func (s *sink) options(w Workload, more ...Option) []Option {
	return append([]Option{WithMeterProvider(s.mp), WithTracerProvider(s.tp), WithWorkload(w)}, more...)
}

// count adds the counts (histograms) or values (sums) of name's points
// whose attributes include want.
func (s *sink) count(t *testing.T, name string, want map[string]string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	match := func(set attribute.Set) bool {
		for k, v := range want {
			if got, ok := set.Value(attribute.Key(k)); !ok || got.String() != v {
				return false
			}
		}
		return true
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					if match(dp.Attributes) {
						n += int64(dp.Count)
					}
				}
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					if match(dp.Attributes) {
						n += int64(dp.Count)
					}
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					if match(dp.Attributes) {
						n += dp.Value
					}
				}
			}
		}
	}
	return n
}

// logBuffer is an access log destination: JSON lines in a buffer, safe
// for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	text := b.buf.String()
	b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// startGRPC serves the health service with srvTel on loopback and returns
// a client connection instrumented with cliTel.
func startGRPC(t *testing.T, srvTel, cliTel *Telemetry) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(srvTel.ServerOptions()...)
	hs := health.NewServer()
	hs.SetServingStatus("reviews", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), append(cliTel.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); srv.Stop() })
	return cc
}

// TestGRPC: unary and streaming calls are measured on both sides with the
// mesh dimensions each learns from the other, the server span is the
// client span's child, and the access log records errors only.
func TestGRPC(t *testing.T) {
	ctx := testContext(t)
	cs, ss := newSink(t), newSink(t)
	var logs logBuffer
	cliTel, err := New(cs.options(Workload{Service: "frontend", Version: "v7", Namespace: "default"})...)
	if err != nil {
		t.Fatal(err)
	}
	srvTel, err := New(ss.options(Workload{Service: "reviews", Version: "v2", Namespace: "default"},
		WithAccessLog(AccessLog{Mode: AccessLogErrors, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}))...)
	if err != nil {
		t.Fatal(err)
	}
	cc := startGRPC(t, srvTel, cliTel)
	hc := healthpb.NewHealthClient(cc)
	const n = 5
	for range n {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "reviews"}); err != nil {
			t.Fatalf("Check() = %v", err)
		}
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Check(nope) = %v, want NotFound", err)
	}
	// A server stream, ended by the client.
	sctx, cancel := context.WithCancel(ctx)
	w, err := hc.Watch(sctx, &healthpb.HealthCheckRequest{Service: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatalf("Watch().Recv() = %v", err)
	}
	cancel()
	if _, err := w.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Watch().Recv() after cancel = %v, want Canceled", err)
	}

	for _, tc := range []struct {
		s    *sink
		name string
		want map[string]string
		n    int64
	}{
		{cs, "rpc.client.duration", map[string]string{"rpc.method": "Check", "rpc.grpc.status_code": "0", "source_app": "frontend", "source_version": "v7", "destination_app": "reviews", "destination_version": "v2"}, n},
		{cs, "rpc.client.duration", map[string]string{"rpc.method": "Check", "rpc.grpc.status_code": "5", "destination_app": "reviews"}, 1},
		{cs, "rpc.client.duration", map[string]string{"rpc.method": "Watch", "rpc.grpc.status_code": "1", "destination_version": "v2"}, 1},
		{cs, MetricAttempts, map[string]string{"rpc.method": "Check"}, n + 1},
		{cs, MetricRPCClientBusy, map[string]string{"rpc.method": "Check"}, 0},
		{ss, "rpc.server.duration", map[string]string{"rpc.method": "Check", "rpc.grpc.status_code": "0", "source_app": "frontend", "source_version": "v7", "destination_app": "reviews"}, n},
		{ss, "rpc.server.duration", map[string]string{"rpc.method": "Check", "rpc.grpc.status_code": "5"}, 1},
		{ss, "rpc.server.duration", map[string]string{"rpc.method": "Watch", "source_app": "frontend"}, 1},
	} {
		// The server records a canceled stream when its handler returns.
		var got int64
		for {
			if got = tc.s.count(t, tc.name, tc.want); got == tc.n || ctx.Err() != nil {
				break
			}
			runtime.Gosched()
		}
		if got != tc.n {
			t.Errorf("%s%v = %d, want %d", tc.name, tc.want, got, tc.n)
		}
	}

	// Every client span has its server span as child.
	servers := map[trace.SpanID]bool{}
	for _, s := range ss.spans.Ended() {
		servers[s.Parent().SpanID()] = true
	}
	for _, s := range cs.spans.Ended() {
		if s.SpanKind() == trace.SpanKindClient && !servers[s.SpanContext().SpanID()] {
			t.Errorf("client span %s has no server child", s.Name())
		}
	}
	// The errors: the NotFound call and the canceled stream.
	recs := logs.records(t)
	for len(recs) < 2 && ctx.Err() == nil {
		runtime.Gosched()
		recs = logs.records(t)
	}
	if len(recs) != 2 {
		t.Fatalf("errors-only access log = %v, want 2 records", recs)
	}
	for i, want := range []string{"NotFound", "Canceled"} {
		if r := recs[i]; r["status"] != want || r["kind"] != "server" || r["source"] != "ns=default&svc=frontend&ver=v7" || r["trace_id"] == nil {
			t.Errorf("access log record %d = %v, want status %s from frontend", i, r, want)
		}
	}
}

// TestAccessLog: modes and sampling of the access log.
func TestAccessLog(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      AccessLog
		failures int
		want     int
	}{
		{"off", AccessLog{}, 1, 0},
		{"on", AccessLog{Mode: AccessLogOn}, 1, 10},
		{"errors", AccessLog{Mode: AccessLogErrors}, 3, 3},
		{"sampled out", AccessLog{Mode: AccessLogOn, Sampling: 1e-12}, 1, 0},
		{"sampling above 1 is 1", AccessLog{Mode: AccessLogOn, Sampling: 7}, 1, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf logBuffer
			tc.cfg.Logger = slog.New(slog.NewJSONHandler(&buf, nil))
			l := newAccessLogger(tc.cfg)
			for i := range 10 {
				l.record(context.Background(), &entry{kind: "client", protocol: "http", status: "200", failed: i < tc.failures, attempts: 2, source: Workload{Service: "a"}})
			}
			if got := len(buf.records(t)); got != tc.want {
				t.Errorf("%+v: %d records, want %d", tc.cfg, got, tc.want)
			}
		})
	}
}

func TestWorkloadAttrs(t *testing.T) {
	w := Workload{Service: "reviews", Version: "v2", Namespace: "default"}
	got := attribute.NewSet(w.attrs(nil, "destination_")...)
	want := attribute.NewSet(attribute.String("destination_app", "reviews"), attribute.String("destination_version", "v2"), attribute.String("destination_workload_namespace", "default"))
	if !got.Equals(&want) {
		t.Errorf("attrs() = %v, want %v", got.Encoded(attribute.DefaultEncoder()), want.Encoded(attribute.DefaultEncoder()))
	}
	if kv := (Workload{Version: "v1"}).attrs(nil, "source_"); len(kv) != 1 || kv[0].Key != "source_version" {
		t.Errorf("attrs() of a workload with only a version = %v", kv)
	}
	back, ok := decodeWorkload(w.encode())
	if !ok || back != w {
		t.Errorf("decodeWorkload(encode(%v)) = %v, %v", w, back, ok)
	}
	if _, ok := decodeWorkload("%zz"); ok {
		t.Error("decodeWorkload(bad) = ok")
	}
}

// TestHTTP: the Handler and the Transport measure a request on both sides
// with each other's workload, and the server span is the client's child.
func TestHTTP(t *testing.T) {
	ctx := testContext(t)
	cs, ss := newSink(t), newSink(t)
	cliTel, err := New(cs.options(Workload{Service: "frontend"})...)
	if err != nil {
		t.Fatal(err)
	}
	srvTel, err := New(ss.options(Workload{Service: "ratings", Version: "v1"})...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(srvTel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "ok")
	})))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: cliTel.Transport(tr)}
	for _, path := range []string{"/a", "/a", "/missing"} {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if got := cs.count(t, "http.client.request.duration", map[string]string{"http.response.status_code": "200", "source_app": "frontend", "destination_app": "ratings", "destination_version": "v1"}); got != 2 {
		t.Errorf("client 200s = %d, want 2", got)
	}
	if got := ss.count(t, "http.server.request.duration", map[string]string{"http.response.status_code": "404", "source_app": "frontend", "destination_app": "ratings"}); got != 1 {
		t.Errorf("server 404s = %d, want 1", got)
	}
	if got := ss.count(t, "http.server.response.body.size", map[string]string{"http.response.status_code": "200"}); got != 2 {
		t.Errorf("server response sizes = %d, want 2", got)
	}
	parents := map[trace.SpanID]bool{}
	for _, s := range ss.spans.Ended() {
		parents[s.Parent().SpanID()] = true
	}
	for _, s := range cs.spans.Ended() {
		if !parents[s.SpanContext().SpanID()] {
			t.Errorf("client span %s has no server child", s.Name())
		}
	}
}

// TestDisabled: a nil Telemetry passes calls through.
func TestDisabled(t *testing.T) {
	tel, err := New(Disabled())
	if tel != nil || err != nil {
		t.Fatalf("New(Disabled()) = %v, %v, want nil, nil", tel, err)
	}
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	if got := tel.Handler(h); got == nil {
		t.Error("nil Telemetry's Handler = nil")
	}
	if tel.DialOptions() != nil || tel.ServerOptions() != nil {
		t.Error("nil Telemetry has options")
	}
	tel.Event(context.Background(), EventFaultAbort, "x", "y")
	tel.DryRunDecision(context.Background(), "http", "DENY", "ns/p[0]", DryRunDeny)
	_, err = tel.RoundTrip(httptest.NewRequest("GET", "http://x/", nil), func(*http.Request) (*http.Response, error) { return nil, errors.New("sent") })
	if err == nil || err.Error() != "sent" {
		t.Errorf("RoundTrip() = %v, want the next's error", err)
	}
}

// TestDryRunDecision: would-be decisions of dry-run policies are counted
// with the policy, the action, the decision, the protocol and the local
// workload as the destination.
func TestDryRunDecision(t *testing.T) {
	s := newSink(t)
	tel, err := New(s.options(Workload{Service: "reviews", Version: "v2", Namespace: "default"})...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tel.DryRunDecision(ctx, "grpc", "DENY", "default/deny-admin[0]", DryRunDeny)
	tel.DryRunDecision(ctx, "grpc", "DENY", "default/deny-admin[0]", DryRunDeny)
	tel.DryRunDecision(ctx, "http", "ALLOW", "", DryRunDeny)
	tel.DryRunDecision(ctx, "http", "AUDIT", "default/audit[0]", DryRunAudit)
	for _, tc := range []struct {
		want map[string]string
		n    int64
	}{
		{map[string]string{"policy": "default/deny-admin[0]", "action": "DENY", "decision": "deny", "protocol": "grpc", "destination_app": "reviews", "destination_version": "v2", "destination_workload_namespace": "default"}, 2},
		{map[string]string{"policy": "", "action": "ALLOW", "decision": "deny", "protocol": "http"}, 1},
		{map[string]string{"policy": "default/audit[0]", "decision": "audit"}, 1},
		{map[string]string{"decision": "allow"}, 0},
	} {
		if got := s.count(t, MetricDryRun, tc.want); got != tc.n {
			t.Errorf("%s%v = %d, want %d", MetricDryRun, tc.want, got, tc.n)
		}
	}
}
