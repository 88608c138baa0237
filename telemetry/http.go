package telemetry

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/trellismesh/trellis/internal/mtls"
)

// Handler returns h measured and traced: a server span per request (its
// parent from the request's trace context), the HTTP server metrics, the
// access log, and the local workload in the response's PeerHeader. Put it
// outside any policy handler, so that it sees refused requests.
func (t *Telemetry) Handler(h http.Handler) http.Handler {
	if t == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !t.Active() {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		ctx := t.cfg.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		state := &callState{}
		t.setPeer(state, r.Header.Get(PeerHeader))
		ctx = context.WithValue(ctx, callKey{}, state)
		base := func() []attribute.KeyValue {
			return []attribute.KeyValue{attribute.String("http.request.method", r.Method)}
		}
		ctx, span := t.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer))
		if span.IsRecording() {
			span.SetAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path), attribute.String("server.address", r.Host))
		}
		active := t.httpSets.get(httpKey{server: true, active: true, method: r.Method}, base)
		t.httpServerActive.Add(ctx, 1, active.add...)
		if t.peerMD != "" {
			w.Header().Set(PeerHeader, t.peerMD)
		}
		rw := &responseWriter{ResponseWriter: w}
		h.ServeHTTP(rw, r.WithContext(ctx))
		d := time.Since(start)
		code := rw.code
		if code == 0 {
			code = http.StatusOK
		}
		peer, _, _, principal, _ := state.snapshot()
		if principal == "" {
			principal = t.httpPrincipal(r)
		}
		kv := func() []attribute.KeyValue {
			kv := append(base(), attribute.Int("http.response.status_code", code))
			if principal != "" {
				kv = append(kv, attribute.String("source_principal", principal))
			}
			kv = peer.attrs(kv, "source_")
			return t.cfg.workload.attrs(kv, "destination_")
		}
		set := t.httpSets.get(httpKey{server: true, method: r.Method, code: code, principal: principal, peer: peer}, kv)
		t.httpServerDuration.Record(ctx, d.Seconds(), set.rec...)
		t.httpServerRespSize.Record(ctx, rw.n, set.rec...)
		if r.ContentLength > 0 {
			t.httpServerReqSize.Record(ctx, r.ContentLength, set.rec...)
		}
		t.httpServerActive.Add(ctx, -1, active.add...)
		if !state.admitted.Load() && t.guarded.Load() {
			if reason := httpRefusal(code); reason != "" {
				t.denials.Add(ctx, 1, metric.WithAttributes(append(kv(), attribute.String("reason", reason), attribute.String("protocol", "http"))...))
			}
		}
		if span.IsRecording() {
			span.SetAttributes(attribute.Int("http.response.status_code", code))
			if code >= 500 {
				span.SetStatus(otelcodes.Error, strconv.Itoa(code))
			}
		}
		span.End()
		t.log.record(ctx, &entry{
			start: start, duration: d, kind: "server", protocol: "http", method: r.Method, path: r.URL.Path,
			status: strconv.Itoa(code), failed: code >= 400, principal: principal,
			source: peer, dest: t.cfg.workload, host: r.Host, traceID: traceID(span),
		})
	})
}

// httpKey is what decides the attributes of an HTTP measurement.
type httpKey struct {
	server, active bool
	method, host   string
	code           int
	errType        string
	cluster        string
	principal      string
	peer           Workload
}

func httpRefusal(code int) string {
	switch code {
	case http.StatusForbidden:
		return "denied"
	case http.StatusUnauthorized:
		return "unauthenticated"
	case http.StatusServiceUnavailable:
		return "not_serving"
	case http.StatusBadRequest:
		return "invalid_request"
	}
	return ""
}

func (t *Telemetry) httpPrincipal(r *http.Request) string {
	if t.cfg.principal != nil {
		if id, ok := t.cfg.principal(r.Context()); ok {
			return id
		}
	}
	if r.TLS != nil {
		if id, err := mtls.PeerID(*r.TLS); err == nil {
			return id.String()
		}
	}
	return ""
}

// Admitted marks requests that reach h as admitted by the server's
// policy, and records their caller's identity (see WithPeerIdentity). Put
// it between the policy handler and the application's handler; with it,
// requests the policy refuses (403, 401, 503 before h) are counted in
// MetricDenials.
func (t *Telemetry) Admitted(h http.Handler) http.Handler {
	if t == nil {
		return h
	}
	t.guarded.Store(true)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := stateOf(r.Context()); s != nil {
			s.admitted.Store(true)
			if p := t.httpPrincipal(r); p != "" {
				s.mu.Lock()
				s.principal = p
				s.mu.Unlock()
			}
		}
		h.ServeHTTP(w, r)
	})
}

// responseWriter records the status and the body size. Unwrap lets
// http.ResponseController reach the writer's Flush, Hijack and deadlines.
type responseWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (w *responseWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *responseWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if w.code == 0 {
			w.code = http.StatusOK
		}
		f.Flush()
	}
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Transport returns rt measured and traced: a client span per request,
// the trace context and the local workload sent with it, the HTTP client
// metrics and the access log. Retrying transports below it call
// StartAttempt for each attempt.
func (t *Telemetry) Transport(rt http.RoundTripper) http.RoundTripper {
	if t == nil {
		return rt
	}
	return RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
		return t.RoundTrip(req, rt.RoundTrip)
	})
}

// RoundTripperFunc adapts a function to an http.RoundTripper.
type RoundTripperFunc func(*http.Request) (*http.Response, error)

// RoundTrip calls f(req).
func (f RoundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// RoundTrip sends req with next, measured and traced as Transport does.
func (t *Telemetry) RoundTrip(req *http.Request, next func(*http.Request) (*http.Response, error)) (*http.Response, error) {
	if !t.Active() {
		return next(req)
	}
	start := time.Now()
	state := &callState{}
	ctx := context.WithValue(req.Context(), callKey{}, state)
	host := req.URL.Host
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	base := func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("http.request.method", req.Method), attribute.String("server.address", name), attribute.String("destination_service", host)}
	}
	ctx, span := t.tracer.Start(ctx, req.Method, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(append(base(), attribute.String("url.full", req.URL.Redacted()))...)
	}
	active := t.httpSets.get(httpKey{active: true, method: req.Method, host: host}, base)
	t.httpClientActive.Add(ctx, 1, active.add...)
	out := req.Clone(ctx)
	t.cfg.propagator.Inject(ctx, propagation.HeaderCarrier(out.Header))
	if t.peerMD != "" {
		out.Header.Set(PeerHeader, t.peerMD)
	}
	resp, err := next(out)
	d := time.Since(start)
	if resp != nil {
		t.setPeer(state, resp.Header.Get(PeerHeader))
	}
	peer, upstream, cluster, _, _ := state.snapshot()
	code := 0
	errType := ""
	if resp != nil {
		code = resp.StatusCode
	} else if err != nil {
		errType = errorType(ctx, err)
	}
	kv := func() []attribute.KeyValue {
		kv := base()
		if code != 0 {
			kv = append(kv, attribute.Int("http.response.status_code", code))
		} else if errType != "" {
			kv = append(kv, attribute.String("error.type", errType))
		}
		if cluster != "" {
			kv = append(kv, attribute.String("destination_cluster", cluster))
		}
		kv = t.cfg.workload.attrs(kv, "source_")
		return peer.attrs(kv, "destination_")
	}
	set := t.httpSets.get(httpKey{method: req.Method, host: host, code: code, errType: errType, cluster: cluster, peer: peer}, kv)
	t.httpClientDuration.Record(ctx, d.Seconds(), set.rec...)
	t.httpClientActive.Add(ctx, -1, active.add...)
	n := int(state.attempts.Load())
	if n > 1 {
		t.retries.Add(ctx, int64(n-1), set.add...)
	}
	if span.IsRecording() {
		if code != 0 {
			span.SetAttributes(attribute.Int("http.response.status_code", code))
		}
		if n > 0 {
			span.SetAttributes(attribute.Int("trellis.attempts", n))
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(otelcodes.Error, err.Error())
		} else if code >= 400 {
			span.SetStatus(otelcodes.Error, strconv.Itoa(code))
		}
	}
	span.End()
	status := strconv.Itoa(code)
	if err != nil {
		status = "error: " + err.Error()
	}
	t.log.record(ctx, &entry{
		start: start, duration: d, kind: "client", protocol: "http", method: req.Method, path: req.URL.Path,
		status: status, failed: err != nil || code >= 400, upstream: upstream, attempts: n,
		source: t.cfg.workload, dest: peer, host: host, traceID: traceID(span),
	})
	return resp, err
}

func errorType(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return "canceled"
	}
	return "transport"
}

// StartAttempt starts attempt n of the HTTP call of req's context (made
// through Transport or RoundTrip) to the endpoint upstream of the cluster
// named: a child span of the call's, whose trace context it puts in
// req's headers (req must be the attempt's own clone). The returned
// function ends the attempt; call it with the attempt's response or error.
func (t *Telemetry) StartAttempt(req *http.Request, n int, upstream, cluster string) func(*http.Response, error) {
	if !t.Active() {
		return func(*http.Response, error) {}
	}
	ctx := req.Context()
	if s := stateOf(ctx); s != nil {
		s.attempts.Add(1)
		s.mu.Lock()
		s.upstream, s.cluster = upstream, cluster
		s.mu.Unlock()
	}
	ctx, span := t.tracer.Start(ctx, "attempt "+strconv.Itoa(n), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.Int("trellis.attempt", n),
		attribute.String("network.peer.address", upstream),
		attribute.String("destination_cluster", cluster),
	))
	t.cfg.propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	return func(resp *http.Response, err error) {
		kv := []attribute.KeyValue{attribute.String("http.request.method", req.Method), attribute.String("destination_service", req.Host), attribute.String("destination_cluster", cluster)}
		if resp != nil {
			kv = append(kv, attribute.Int("http.response.status_code", resp.StatusCode))
			span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
			if resp.StatusCode >= 500 {
				span.SetStatus(otelcodes.Error, strconv.Itoa(resp.StatusCode))
			}
		}
		if err != nil {
			kv = append(kv, attribute.String("error.type", errorType(ctx, err)))
			span.RecordError(err)
			span.SetStatus(otelcodes.Error, err.Error())
		}
		t.attempts.Add(ctx, 1, metric.WithAttributes(kv...))
		span.End()
	}
}
