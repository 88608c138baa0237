package telemetry

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

// ScopeName is the instrumentation scope of Trellis's meters and tracers.
const ScopeName = "github.com/trellismesh/trellis/telemetry"

// PeerHeader is the request and response header (gRPC metadata) in which
// clients and servers tell each other their workload, as Istio's metadata
// exchange does, so that both sides can label a call with the source and
// the destination. Its value is URL-query encoded: "ns=default&svc=reviews&ver=v2".
// It is informational: identities come from mutual TLS, never from it.
const PeerHeader = "x-trellis-peer"

// Workload names a workload as Istio's metric dimensions do. Empty fields
// are unknown and left out of the attributes.
type Workload struct {
	Service   string // the service name ("reviews"); Istio's *_app
	Version   string // the version label ("v2")
	Namespace string // the namespace ("default")
}

func (w Workload) encode() string {
	v := url.Values{}
	if w.Namespace != "" {
		v.Set("ns", w.Namespace)
	}
	if w.Service != "" {
		v.Set("svc", w.Service)
	}
	if w.Version != "" {
		v.Set("ver", w.Version)
	}
	return v.Encode()
}

func decodeWorkload(s string) (Workload, bool) {
	if s == "" {
		return Workload{}, false
	}
	v, err := url.ParseQuery(s)
	if err != nil {
		return Workload{}, false
	}
	return Workload{Service: v.Get("svc"), Version: v.Get("ver"), Namespace: v.Get("ns")}, true
}

// attrs appends w's attributes with the prefix "source_" or "destination_".
func (w Workload) attrs(kv []attribute.KeyValue, prefix string) []attribute.KeyValue {
	if w.Service != "" {
		kv = append(kv, attribute.String(prefix+"app", w.Service))
	}
	if w.Version != "" {
		kv = append(kv, attribute.String(prefix+"version", w.Version))
	}
	if w.Namespace != "" {
		kv = append(kv, attribute.String(prefix+"workload_namespace", w.Namespace))
	}
	return kv
}

// An Option configures New.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	meters     metric.MeterProvider
	tracers    trace.TracerProvider
	propagator propagation.TextMapPropagator
	accessLog  AccessLog
	workload   Workload
	principal  func(context.Context) (string, bool)
	disabled   bool
}

// WithMeterProvider sets the MeterProvider of the metrics. If not given,
// the global one (otel.GetMeterProvider) is used, which records nothing
// until the application installs an SDK.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.meters = mp })
}

// WithTracerProvider sets the TracerProvider of the spans. If not given,
// the global one (otel.GetTracerProvider) is used.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tracers = tp })
}

// WithPropagator sets how trace context travels in headers and gRPC
// metadata. If not given, W3C Trace Context (propagation.TraceContext).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) { c.propagator = p })
}

// WithAccessLog sets the access log. If not given, there is none.
func WithAccessLog(l AccessLog) Option {
	return optionFunc(func(c *config) { c.accessLog = l })
}

// WithWorkload names the local workload: the source of client calls and
// the destination of server calls.
func WithWorkload(w Workload) Option {
	return optionFunc(func(c *config) { c.workload = w })
}

// WithPeerIdentity sets how a server learns its caller's authenticated
// identity (a SPIFFE ID) from a call's context; mesh servers set it to
// mesh.PeerID. If not given, the identity is read from the call's mutual
// TLS certificate (gRPC peer auth info, or the HTTP request's TLS state);
// for HTTP, also when f reports none (a request refused before f could tell).
func WithPeerIdentity(f func(context.Context) (string, bool)) Option {
	return optionFunc(func(c *config) { c.principal = f })
}

// Disabled turns telemetry off: New returns a nil *Telemetry, whose
// interceptors, handlers and transports add nothing.
func Disabled() Option {
	return optionFunc(func(c *config) { c.disabled = true })
}

// Telemetry measures, traces and logs the calls of one client or server.
// It is safe for concurrent use. A nil *Telemetry is valid and does nothing.
type Telemetry struct {
	cfg    config
	tracer trace.Tracer
	peerMD string // the local workload, encoded for PeerHeader
	// peerHeader is PeerHeader: peerMD as gRPC metadata; nil if empty.
	peerHeader metadata.MD
	peerKV     []string // PeerHeader, peerMD; nil if empty
	// defaultPropagator: W3C trace context, which injects nothing
	// without a valid span context.
	defaultPropagator bool
	log               *accessLogger
	guarded           atomic.Bool // admitted interceptors are installed

	methods  sync.Map // methodKey → *rpcMethod
	nmethods atomic.Int64
	peers    sync.Map // PeerHeader value → Workload
	npeers   atomic.Int64
	rpcSets  attrCache[rpcKey]
	httpSets attrCache[httpKey]

	rpcClientDuration  metric.Float64Histogram
	rpcServerDuration  metric.Float64Histogram
	rpcClientActive    metric.Int64UpDownCounter
	rpcServerActive    metric.Int64UpDownCounter
	httpClientDuration metric.Float64Histogram
	httpServerDuration metric.Float64Histogram
	httpClientActive   metric.Int64UpDownCounter
	httpServerActive   metric.Int64UpDownCounter
	httpServerReqSize  metric.Int64Histogram
	httpServerRespSize metric.Int64Histogram
	attempts           metric.Int64Counter
	retries            metric.Int64Counter
	events             metric.Int64Counter
	denials            metric.Int64Counter
	dryRuns            metric.Int64Counter
	handshakeFailures  metric.Int64Counter
	xdsUpdates         metric.Int64Counter
	components         *grpcMetrics // grpc-go's own non-per-call metrics
	// onGlobals: the global providers and no access log, so that t is
	// idle while no SDK is installed (see Active).
	onGlobals bool
}

// Instrument names beyond OpenTelemetry's semantic conventions.
const (
	MetricAttempts      = "trellis.client.attempts"       // every attempt of a call, retries included
	MetricRetries       = "trellis.client.retries"        // attempts after the first
	MetricEvents        = "trellis.client.events"         // mesh events on the client: attribute event
	MetricDenials       = "trellis.server.policy.denials" // calls the server's policy refused: attribute reason
	MetricRPCClientBusy = "trellis.rpc.client.active_requests"
	MetricRPCServerBusy = "trellis.rpc.server.active_requests"
	// MetricDryRun counts what dry-run authorization policies (Istio's
	// istio.io/dry-run, Envoy's RBAC shadow rules) would have decided of
	// inbound calls, by attributes policy, action and decision (see
	// DryRunDecision). They are never enforced.
	MetricDryRun = "trellis.server.policy.dry_run"
	// MetricHandshakeFailures counts inbound connections whose mutual TLS
	// handshake failed, by attribute reason (see HandshakeFailed).
	MetricHandshakeFailures = "trellis.server.tls.handshake_failures"
	// MetricXDSUpdates counts the xDS resources the mesh's own xDS client
	// (the HTTP path) received, by type and result: accepted, or rejected
	// (NACKed). grpc-go's xDS client (the gRPC path) reports the same as
	// grpc.xds_client.resource_updates_valid and _invalid, through
	// ComponentMetrics.
	MetricXDSUpdates = "trellis.xds_client.resource_updates"
)

// Client events, the values of the attribute "event" of MetricEvents.
const (
	EventCircuitBreaker = "circuit_breaker_open" // a call refused by the cluster's circuit breaker (max requests)
	EventFaultAbort     = "fault_abort"          // a call aborted by fault injection
	EventNoHealthy      = "no_healthy_upstream"  // no endpoint to send to
	EventEjection       = "outlier_ejection"     // an endpoint ejected by outlier detection
	EventRateLimited    = "local_rate_limited"   // a call refused by a client-side local rate limit
)

// durationBounds are histogram boundaries in seconds, OpenTelemetry's
// recommendation for HTTP durations.
var durationBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// New returns a Telemetry with the options' providers. It does no I/O. It
// fails only if a provider refuses an instrument.
func New(opts ...Option) (*Telemetry, error) {
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	if c.disabled {
		return nil, nil
	}
	onGlobals := c.meters == nil && c.tracers == nil && c.accessLog.Mode == AccessLogOff
	if c.meters == nil {
		c.meters = otel.GetMeterProvider()
	}
	if c.tracers == nil {
		c.tracers = otel.GetTracerProvider()
	}
	defaultPropagator := c.propagator == nil
	if defaultPropagator {
		c.propagator = propagation.TraceContext{}
	}
	t := &Telemetry{cfg: c, tracer: c.tracers.Tracer(ScopeName), peerMD: c.workload.encode(), log: newAccessLogger(c.accessLog), defaultPropagator: defaultPropagator, onGlobals: onGlobals}
	if t.peerMD != "" {
		t.peerHeader = metadata.Pairs(PeerHeader, t.peerMD)
		t.peerKV = []string{PeerHeader, t.peerMD}
	}
	m := c.meters.Meter(ScopeName)
	var errs []error
	hist := func(name, unit, desc string, bounds []float64) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit(unit), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(bounds...))
		errs = append(errs, err)
		return h
	}
	ms := make([]float64, len(durationBounds))
	for i, b := range durationBounds {
		ms[i] = b * 1000
	}
	t.rpcClientDuration = hist("rpc.client.duration", "ms", "Duration of outbound RPCs.", ms)
	t.rpcServerDuration = hist("rpc.server.duration", "ms", "Duration of inbound RPCs.", ms)
	t.httpClientDuration = hist("http.client.request.duration", "s", "Duration of HTTP client requests.", durationBounds)
	t.httpServerDuration = hist("http.server.request.duration", "s", "Duration of HTTP server requests.", durationBounds)
	updown := func(name, desc string) metric.Int64UpDownCounter {
		u, err := m.Int64UpDownCounter(name, metric.WithUnit("{request}"), metric.WithDescription(desc))
		errs = append(errs, err)
		return u
	}
	t.rpcClientActive = updown(MetricRPCClientBusy, "Outbound RPCs in flight.")
	t.rpcServerActive = updown(MetricRPCServerBusy, "Inbound RPCs in flight.")
	t.httpClientActive = updown("http.client.active_requests", "HTTP client requests in flight.")
	t.httpServerActive = updown("http.server.active_requests", "HTTP server requests in flight.")
	size := func(name, desc string) metric.Int64Histogram {
		h, err := m.Int64Histogram(name, metric.WithUnit("By"), metric.WithDescription(desc))
		errs = append(errs, err)
		return h
	}
	t.httpServerReqSize = size("http.server.request.body.size", "Size of HTTP server request bodies (when declared).")
	t.httpServerRespSize = size("http.server.response.body.size", "Size of HTTP server response bodies.")
	counter := func(name, unit, desc string) metric.Int64Counter {
		ctr, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return ctr
	}
	t.attempts = counter(MetricAttempts, "{attempt}", "Attempts of outbound calls, retries included.")
	t.retries = counter(MetricRetries, "{retry}", "Retries of outbound calls.")
	t.events = counter(MetricEvents, "{event}", "Mesh events on outbound calls (circuit breaking, fault injection, no healthy upstream).")
	t.denials = counter(MetricDenials, "{request}", "Inbound calls refused by the server's mTLS, authentication or authorization policy.")
	t.dryRuns = counter(MetricDryRun, "{request}", "Would-be decisions of dry-run authorization policies on inbound calls, never enforced: attributes policy, action, decision.")
	t.handshakeFailures = counter(MetricHandshakeFailures, "{connection}", "Inbound connections whose mutual TLS handshake failed: attribute reason.")
	t.xdsUpdates = counter(MetricXDSUpdates, "{resource}", "xDS resources received by the mesh's own xDS client (HTTP path): attributes type and result (accepted, rejected).")
	t.components = newGRPCMetrics(m)
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
	}
	return t, nil
}

// callKey is the context key of a call's *callState.
type callKey struct{}

// callState is what the layers of one call learn about it: the outer
// layer (the whole call) creates it, inner ones (attempts, the policy)
// fill it in.
type callState struct {
	attempts atomic.Int32
	admitted atomic.Bool

	mu        sync.Mutex
	peer      Workload // the other side, from PeerHeader
	peerKnown bool
	upstream  string // the endpoint of the last attempt
	cluster   string // the cluster of the last attempt
	principal string // the caller's identity (server side)
	event     string // a mesh event that decided the call
}

func stateOf(ctx context.Context) *callState {
	s, _ := ctx.Value(callKey{}).(*callState)
	return s
}

// setPeer records in s the peer's workload, v from its PeerHeader.
// Decoded values are cached: a mesh has few workloads.
func (t *Telemetry) setPeer(s *callState, v string) {
	if v == "" {
		return
	}
	var w Workload
	if c, ok := t.peers.Load(v); ok {
		w = c.(Workload)
	} else {
		var ok bool
		if w, ok = decodeWorkload(v); !ok {
			return
		}
		if t.npeers.Load() < maxCachedSets {
			if _, loaded := t.peers.LoadOrStore(v, w); !loaded {
				t.npeers.Add(1)
			}
		}
	}
	s.mu.Lock()
	s.peer, s.peerKnown = w, true
	s.mu.Unlock()
}

// snapshot returns the mutable fields under the lock.
func (s *callState) snapshot() (peer Workload, upstream, cluster, principal, event string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peer, s.upstream, s.cluster, s.principal, s.event
}

// Event counts a mesh event (EventCircuitBreaker, EventFaultAbort, ...) on
// the client call of ctx, with the call's destination host and cluster.
// It is what the mesh's clients call; a nil Telemetry ignores it.
func (t *Telemetry) Event(ctx context.Context, event, host, cluster string) {
	if !t.Active() {
		return
	}
	kv := []attribute.KeyValue{attribute.String("event", event)}
	kv = t.cfg.workload.attrs(kv, "source_")
	if host != "" {
		kv = append(kv, attribute.String("destination_service", host))
	}
	if cluster != "" {
		kv = append(kv, attribute.String("destination_cluster", cluster))
	}
	t.events.Add(ctx, 1, metric.WithAttributes(kv...))
	if s := stateOf(ctx); s != nil {
		s.mu.Lock()
		s.event = event
		s.mu.Unlock()
	}
	trace.SpanFromContext(ctx).AddEvent(event)
}

// HandshakeFailed counts an inbound connection whose mutual TLS handshake
// failed, for reason ("peer_rejected": its certificate is not trusted or
// not authorized; "not_tls": plaintext or garbage where TLS is required;
// "handshake_error": anything else), labelled with the local workload as
// the destination. A nil Telemetry ignores it.
func (t *Telemetry) HandshakeFailed(reason string) {
	if !t.Active() {
		return
	}
	kv := t.cfg.workload.attrs([]attribute.KeyValue{attribute.String("reason", reason)}, "destination_")
	t.handshakeFailures.Add(context.Background(), 1, metric.WithAttributes(kv...))
}

// Would-be decisions of a dry-run policy, the values of the attribute
// "decision" of MetricDryRun.
const (
	DryRunAllow = "allow" // the policy's action would admit the call
	DryRunDeny  = "deny"  // it would refuse it
	DryRunAudit = "audit" // an AUDIT policy would log it
)

// DryRunDecision counts what a dry-run authorization policy would have
// decided of the inbound call of ctx, which the server decided by its
// enforced policies alone: protocol is "grpc" or "http", action the
// policy's ("ALLOW", "DENY", "AUDIT"), policy its name (empty when an ALLOW
// decision denies because no policy matched), decision DryRunAllow,
// DryRunDeny or DryRunAudit. Labelled with the local workload as the
// destination. A nil Telemetry ignores it.
func (t *Telemetry) DryRunDecision(ctx context.Context, protocol, action, policy, decision string) {
	if !t.Active() {
		return
	}
	kv := []attribute.KeyValue{
		attribute.String("protocol", protocol),
		attribute.String("action", action),
		attribute.String("policy", policy),
		attribute.String("decision", decision),
	}
	kv = t.cfg.workload.attrs(kv, "destination_")
	t.dryRuns.Add(ctx, 1, metric.WithAttributes(kv...))
}

// XDSUpdate counts n resources of an xDS type ("LDS", "RDS", "CDS", "EDS")
// received by the mesh's own xDS client, accepted or rejected (NACKed). A
// nil Telemetry ignores it.
func (t *Telemetry) XDSUpdate(typ string, accepted bool, n int) {
	if n <= 0 || !t.Active() {
		return
	}
	result := "accepted"
	if !accepted {
		result = "rejected"
	}
	t.xdsUpdates.Add(context.Background(), int64(n), metric.WithAttributes(attribute.String("type", typ), attribute.String("result", result)))
}
