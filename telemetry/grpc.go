package telemetry

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/mtls"
)

// incomingCarrier reads a server call's trace context from its incoming
// metadata without copying all of it (metadata.FromIncomingContext does).
type incomingCarrier struct{ ctx context.Context }

func (c incomingCarrier) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (incomingCarrier) Set(string, string) {}
func (c incomingCarrier) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}

// kvCarrier collects the metadata a propagator injects, as the key-value
// list metadata.AppendToOutgoingContext takes.
type kvCarrier []string

func (c *kvCarrier) Get(key string) string {
	for i := 0; i+1 < len(*c); i += 2 {
		if (*c)[i] == key {
			return (*c)[i+1]
		}
	}
	return ""
}
func (c *kvCarrier) Set(key, value string) { *c = append(*c, key, value) }
func (c *kvCarrier) Keys() []string {
	keys := make([]string, 0, len(*c)/2)
	for i := 0; i < len(*c); i += 2 {
		keys = append(keys, (*c)[i])
	}
	return keys
}

// splitMethod splits "/pkg.Service/Method".
func splitMethod(full string) (service, method string) {
	s := strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// rpcMethod is what the calls of one method (to one host, on one side)
// share: their base attributes and span options, built once.
type rpcMethod struct {
	full     string
	host     string // client: the target's authority
	server   bool
	base     []attribute.KeyValue
	active   *measure
	spanName string
	spanOpts []trace.SpanStartOption
	attempts [codes.Unauthenticated + 1]atomic.Pointer[measure] // client attempts by status code
}

type methodKey struct {
	full, host string
	server     bool
}

// method returns the rpcMethod of full (and host, for clients).
func (t *Telemetry) method(full, host string, server bool) *rpcMethod {
	k := methodKey{full, host, server}
	if v, ok := t.methods.Load(k); ok {
		return v.(*rpcMethod)
	}
	service, method := splitMethod(full)
	base := []attribute.KeyValue{
		attribute.String("rpc.system", "grpc"),
		attribute.String("rpc.service", service),
		attribute.String("rpc.method", method),
	}
	if host != "" {
		base = append(base, attribute.String("server.address", host), attribute.String("destination_service", host))
	}
	kind := trace.SpanKindClient
	if server {
		kind = trace.SpanKindServer
	}
	m := &rpcMethod{
		full: full, host: host, server: server, base: base, active: newMeasure(base),
		spanName: strings.TrimPrefix(full, "/"),
		spanOpts: []trace.SpanStartOption{trace.WithSpanKind(kind), trace.WithAttributes(base...)},
	}
	if t.nmethods.Load() >= maxCachedSets {
		return m
	}
	if v, loaded := t.methods.LoadOrStore(k, m); loaded {
		return v.(*rpcMethod)
	}
	t.nmethods.Add(1)
	return m
}

// attempt returns the measure of a client attempt that ended with code.
func (m *rpcMethod) attempt(code codes.Code) *measure {
	build := func() *measure {
		return newMeasure(append(m.base[:len(m.base):len(m.base)], attribute.Int("rpc.grpc.status_code", int(code))))
	}
	if int(code) >= len(m.attempts) {
		return build()
	}
	if p := m.attempts[code].Load(); p != nil {
		return p
	}
	p := build()
	m.attempts[code].Store(p)
	return p
}

// rpcKey is what decides the attributes of a finished call.
type rpcKey struct {
	m         *rpcMethod
	code      codes.Code
	peer      Workload
	principal string
}

// rpcCall is one gRPC call in progress, client or server side.
type rpcCall struct {
	state callState
	t     *Telemetry
	m     *rpcMethod
	ctx   context.Context
	span  trace.Span
	start time.Time
}

func (t *Telemetry) startRPC(ctx context.Context, full, host string, server bool) (context.Context, *rpcCall) {
	m := t.method(full, host, server)
	active := t.rpcClientActive
	if server {
		active = t.rpcServerActive
		ctx = t.cfg.propagator.Extract(ctx, incomingCarrier{ctx})
	}
	c := &rpcCall{t: t, m: m, start: time.Now()}
	ctx = context.WithValue(ctx, callKey{}, &c.state)
	ctx, c.span = t.tracer.Start(ctx, m.spanName, m.spanOpts...)
	c.ctx = ctx
	active.Add(ctx, 1, m.active.add...)
	return ctx, c
}

// end records the call's metrics, span status and access log.
func (c *rpcCall) end(err error) {
	t, m := c.t, c.m
	d := time.Since(c.start)
	code := status.Code(err)
	peer, _, _, principal, _ := c.state.snapshot()
	var source, dest Workload
	if m.server {
		if principal == "" {
			principal = t.principalOf(c.ctx)
		}
		source, dest = peer, t.cfg.workload
	} else {
		source, dest = t.cfg.workload, peer
	}
	kv := func() []attribute.KeyValue {
		kv := append(m.base[:len(m.base):len(m.base)], attribute.Int("rpc.grpc.status_code", int(code)))
		if m.server && principal != "" {
			kv = append(kv, attribute.String("source_principal", principal))
		}
		kv = source.attrs(kv, "source_")
		return dest.attrs(kv, "destination_")
	}
	set := t.rpcSets.get(rpcKey{m, code, peer, principal}, kv)
	n := int(c.state.attempts.Load())
	ms := float64(d) / float64(time.Millisecond)
	if m.server {
		t.rpcServerDuration.Record(c.ctx, ms, set.rec...)
		t.rpcServerActive.Add(c.ctx, -1, m.active.add...)
		if err != nil && !c.state.admitted.Load() && t.guarded.Load() {
			if reason := refusal(code); reason != "" {
				t.denials.Add(c.ctx, 1, metric.WithAttributes(append(kv(), attribute.String("reason", reason), attribute.String("protocol", "grpc"))...))
			}
		}
	} else {
		t.rpcClientDuration.Record(c.ctx, ms, set.rec...)
		t.rpcClientActive.Add(c.ctx, -1, m.active.add...)
		if n > 1 {
			t.retries.Add(c.ctx, int64(n-1), set.add...)
		}
	}
	if c.span.IsRecording() {
		c.span.SetAttributes(attribute.Int("rpc.grpc.status_code", int(code)))
		if n > 0 {
			c.span.SetAttributes(attribute.Int("trellis.attempts", n))
		}
		if err != nil && (!m.server || serverFault(code)) {
			c.span.SetStatus(otelcodes.Error, code.String())
		}
	}
	c.span.End()
	if t.log != nil {
		kind := "client"
		if m.server {
			kind = "server"
		}
		t.log.record(c.ctx, &entry{
			start: c.start, duration: d, kind: kind, protocol: "grpc", method: "POST", path: m.full,
			status: code.String(), failed: err != nil, principal: principal, attempts: n,
			source: source, dest: dest, host: m.host, traceID: traceID(c.span),
		})
	}
}

func traceID(s trace.Span) string {
	if sc := s.SpanContext(); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// refusal names why a server's policy refused a call, by its code.
func refusal(code codes.Code) string {
	switch code {
	case codes.PermissionDenied:
		return "denied"
	case codes.Unauthenticated:
		return "unauthenticated"
	case codes.Unavailable:
		return "not_serving"
	}
	return ""
}

// serverFault reports whether a code is the server's fault, as
// OpenTelemetry's RPC conventions mark server spans in error.
func serverFault(c codes.Code) bool {
	switch c {
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

func (t *Telemetry) principalOf(ctx context.Context) string {
	if t.cfg.principal != nil {
		if id, ok := t.cfg.principal(ctx); ok {
			return id
		}
		return ""
	}
	if id, ok := mtls.PeerIDFromContext(ctx); ok {
		return id.String()
	}
	return ""
}

// authority returns the host of a client connection's target
// ("xds:///reviews:9080" → "reviews:9080").
func authority(target string) string {
	if i := strings.Index(target, "://"); i >= 0 {
		target = target[i+3:]
		if j := strings.IndexByte(target, '/'); j >= 0 {
			target = target[j+1:]
		}
	}
	return target
}

// DialOptions returns the client interceptors of t for a plain
// grpc.ClientConn: a span and metrics per call, trace context and the
// local workload sent with it. With a retrying interceptor, install
// UnaryClientInterceptor outside it and UnaryAttemptInterceptor inside it
// instead, so that a call's attempts are counted.
func (t *Telemetry) DialOptions() []grpc.DialOption {
	if t == nil {
		return nil
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(t.UnaryClientInterceptor(), t.UnaryAttemptInterceptor()),
		grpc.WithChainStreamInterceptor(t.StreamClientInterceptor(), t.StreamAttemptInterceptor()),
	}
}

// ServerOptions returns the server interceptors of t for a plain
// grpc.Server: a span and metrics per call, with trace context and the
// caller's workload taken from the call's metadata.
func (t *Telemetry) ServerOptions() []grpc.ServerOption {
	if t == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(t.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(t.StreamServerInterceptor()),
	}
}

// UnaryClientInterceptor measures and traces each call as a whole.
func (t *Telemetry) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	if t == nil {
		return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if !t.Active() {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		ctx, c := t.startRPC(ctx, method, authority(cc.Target()), false)
		err := invoker(ctx, method, req, reply, cc, opts...)
		c.end(err)
		return err
	}
}

// UnaryAttemptInterceptor counts each attempt of a call and sends the
// trace context and the local workload with it; it reads the server's
// workload from the response.
func (t *Telemetry) UnaryAttemptInterceptor() grpc.UnaryClientInterceptor {
	if t == nil {
		return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if !t.Active() {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		var md struct{ header, trailer metadata.MD }
		ctx = t.outgoing(ctx)
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md.header), grpc.Trailer(&md.trailer))...)
		t.attemptDone(ctx, method, cc, err, md.header, md.trailer)
		return err
	}
}

// outgoing adds the trace context and the local workload to the outgoing
// metadata of ctx. It appends to the metadata rather than copying it.
func (t *Telemetry) outgoing(ctx context.Context) context.Context {
	if t.defaultPropagator && !trace.SpanContextFromContext(ctx).IsValid() {
		// W3C trace context has nothing to send for a call without a span.
		if t.peerKV == nil {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, t.peerKV...)
	}
	kv := make(kvCarrier, 0, 6)
	if t.peerMD != "" {
		kv = append(kv, PeerHeader, t.peerMD)
	}
	t.cfg.propagator.Inject(ctx, &kv)
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func (t *Telemetry) attemptDone(ctx context.Context, method string, cc *grpc.ClientConn, err error, mds ...metadata.MD) {
	if s := stateOf(ctx); s != nil {
		s.attempts.Add(1)
		for _, md := range mds {
			if v := md[PeerHeader]; len(v) > 0 {
				t.setPeer(s, v[0])
				break
			}
		}
	}
	t.attempts.Add(ctx, 1, t.method(method, authority(cc.Target()), false).attempt(status.Code(err)).add...)
}

// StreamClientInterceptor measures and traces each stream as a whole: it
// ends when the stream does (an error or end of stream from RecvMsg, or
// the one response of a client-streaming call).
func (t *Telemetry) StreamClientInterceptor() grpc.StreamClientInterceptor {
	if t == nil {
		return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(ctx, desc, cc, method, opts...)
		}
	}
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if !t.Active() {
			return streamer(ctx, desc, cc, method, opts...)
		}
		ctx, c := t.startRPC(ctx, method, authority(cc.Target()), false)
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			c.end(err)
			return nil, err
		}
		return &clientStream{ClientStream: cs, c: c, serverStreams: desc.ServerStreams}, nil
	}
}

// StreamAttemptInterceptor is UnaryAttemptInterceptor for streams.
func (t *Telemetry) StreamAttemptInterceptor() grpc.StreamClientInterceptor {
	if t == nil {
		return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(ctx, desc, cc, method, opts...)
		}
	}
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if !t.Active() {
			return streamer(ctx, desc, cc, method, opts...)
		}
		ctx = t.outgoing(ctx)
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			t.attemptDone(ctx, method, cc, err)
			return nil, err
		}
		t.attemptDone(ctx, method, cc, nil)
		return cs, nil
	}
}

type clientStream struct {
	grpc.ClientStream
	c             *rpcCall
	serverStreams bool
	done          bool
}

func (s *clientStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if s.done {
		return err
	}
	if err != nil || !s.serverStreams {
		s.done = true
		if h, herr := s.ClientStream.Header(); herr == nil {
			if v := h.Get(PeerHeader); len(v) > 0 {
				s.c.t.setPeer(&s.c.state, v[0])
			}
		}
		if errors.Is(err, io.EOF) {
			s.c.end(nil)
		} else {
			s.c.end(err)
		}
	}
	return err
}

// UnaryServerInterceptor measures and traces each call. Install it first,
// so that it sees calls the server's policy refuses.
func (t *Telemetry) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	if t == nil {
		return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(ctx, req)
		}
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if !t.Active() {
			return h(ctx, req)
		}
		ctx, c := t.startServerRPC(ctx, info.FullMethod)
		resp, err := h(ctx, req)
		c.end(err)
		return resp, err
	}
}

func (t *Telemetry) startServerRPC(ctx context.Context, full string) (context.Context, *rpcCall) {
	ctx, c := t.startRPC(ctx, full, "", true)
	if v := metadata.ValueFromIncomingContext(ctx, PeerHeader); len(v) > 0 {
		t.setPeer(&c.state, v[0])
	}
	if t.peerHeader != nil {
		grpc.SetHeader(ctx, t.peerHeader)
	}
	return ctx, c
}

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func (t *Telemetry) StreamServerInterceptor() grpc.StreamServerInterceptor {
	if t == nil {
		return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, ss)
		}
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if !t.Active() {
			return h(srv, ss)
		}
		ctx, c := t.startServerRPC(ss.Context(), info.FullMethod)
		err := h(srv, &serverStream{ServerStream: ss, ctx: ctx})
		c.end(err)
		return err
	}
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// UnaryAdmittedInterceptor marks calls that passed the server's policy;
// install it right after the policy's interceptor. With it, calls the
// policy refuses (PERMISSION_DENIED, UNAUTHENTICATED, UNAVAILABLE before
// the handler) are counted in MetricDenials.
func (t *Telemetry) UnaryAdmittedInterceptor() grpc.UnaryServerInterceptor {
	if t != nil {
		t.guarded.Store(true)
	}
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		t.admit(ctx)
		return h(ctx, req)
	}
}

// StreamAdmittedInterceptor is UnaryAdmittedInterceptor for streams.
func (t *Telemetry) StreamAdmittedInterceptor() grpc.StreamServerInterceptor {
	if t != nil {
		t.guarded.Store(true)
	}
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		t.admit(ss.Context())
		return h(srv, ss)
	}
}

// admit marks the call of ctx admitted and records its caller's identity.
func (t *Telemetry) admit(ctx context.Context) {
	if t == nil {
		return
	}
	if s := stateOf(ctx); s != nil {
		s.admitted.Store(true)
		if p := t.principalOf(ctx); p != "" {
			s.mu.Lock()
			s.principal = p
			s.mu.Unlock()
		}
	}
}
