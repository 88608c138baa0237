package telemetry

import (
	"context"
	"errors"
	"io"
	"strings"
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

// mdCarrier adapts gRPC metadata to a propagation.TextMapCarrier.
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }
func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
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

// rpcCall is one gRPC call in progress, client or server side.
type rpcCall struct {
	t      *Telemetry
	ctx    context.Context
	span   trace.Span
	state  *callState
	start  time.Time
	server bool
	full   string
	host   string // client: the target's authority
	base   []attribute.KeyValue
}

func (t *Telemetry) startRPC(ctx context.Context, full, host string, server bool) (context.Context, *rpcCall) {
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
	active := t.rpcClientActive
	if server {
		kind = trace.SpanKindServer
		active = t.rpcServerActive
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			ctx = t.cfg.propagator.Extract(ctx, mdCarrier(md))
		}
	}
	c := &rpcCall{t: t, state: &callState{}, start: time.Now(), server: server, full: full, host: host, base: base}
	ctx = context.WithValue(ctx, callKey{}, c.state)
	ctx, c.span = t.tracer.Start(ctx, strings.TrimPrefix(full, "/"), trace.WithSpanKind(kind), trace.WithAttributes(base...))
	c.ctx = ctx
	active.Add(ctx, 1, metric.WithAttributes(base...))
	return ctx, c
}

// end records the call's metrics, span status and access log.
func (c *rpcCall) end(err error) {
	t := c.t
	d := time.Since(c.start)
	code := status.Code(err)
	peer, _, _, principal, _ := c.state.snapshot()
	kv := append(c.base[:len(c.base):len(c.base)], attribute.Int("rpc.grpc.status_code", int(code)))
	var source, dest Workload
	if c.server {
		if principal == "" {
			principal = t.principalOf(c.ctx)
		}
		source, dest = peer, t.cfg.workload
		if principal != "" {
			kv = append(kv, attribute.String("source_principal", principal))
		}
	} else {
		source, dest = t.cfg.workload, peer
	}
	kv = source.attrs(kv, "source_")
	kv = dest.attrs(kv, "destination_")
	set := metric.WithAttributeSet(attribute.NewSet(kv...))
	active := metric.WithAttributes(c.base...)
	n := int(c.state.attempts.Load())
	if c.server {
		t.rpcServerDuration.Record(c.ctx, float64(d)/float64(time.Millisecond), set)
		t.rpcServerActive.Add(c.ctx, -1, active)
		if err != nil && !c.state.admitted.Load() && t.guarded.Load() {
			if reason := refusal(code); reason != "" {
				t.denials.Add(c.ctx, 1, metric.WithAttributes(append(kv, attribute.String("reason", reason), attribute.String("protocol", "grpc"))...))
			}
		}
	} else {
		t.rpcClientDuration.Record(c.ctx, float64(d)/float64(time.Millisecond), set)
		t.rpcClientActive.Add(c.ctx, -1, active)
		if n > 1 {
			t.retries.Add(c.ctx, int64(n-1), set)
		}
	}
	c.span.SetAttributes(attribute.Int("rpc.grpc.status_code", int(code)))
	if n > 0 {
		c.span.SetAttributes(attribute.Int("trellis.attempts", n))
	}
	if err != nil && (!c.server || serverFault(code)) {
		c.span.SetStatus(otelcodes.Error, code.String())
	}
	c.span.End()
	if t.log != nil {
		kind := "client"
		if c.server {
			kind = "server"
		}
		t.log.record(c.ctx, &entry{
			start: c.start, duration: d, kind: kind, protocol: "grpc", method: "POST", path: c.full,
			status: code.String(), failed: err != nil, principal: principal, attempts: n,
			source: source, dest: dest, host: c.host, traceID: traceID(c.span),
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
		var header, trailer metadata.MD
		ctx = t.outgoing(ctx)
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&header), grpc.Trailer(&trailer))...)
		t.attemptDone(ctx, method, cc, err, header, trailer)
		return err
	}
}

// outgoing adds the trace context and the local workload to the outgoing
// metadata of ctx.
func (t *Telemetry) outgoing(ctx context.Context) context.Context {
	md, ok := metadata.FromOutgoingContext(ctx)
	if ok {
		md = md.Copy()
	} else {
		md = metadata.MD{}
	}
	t.cfg.propagator.Inject(ctx, mdCarrier(md))
	if t.peerMD != "" {
		md.Set(PeerHeader, t.peerMD)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

func (t *Telemetry) attemptDone(ctx context.Context, method string, cc *grpc.ClientConn, err error, mds ...metadata.MD) {
	s := stateOf(ctx)
	if s != nil {
		s.attempts.Add(1)
		for _, md := range mds {
			if v := md.Get(PeerHeader); len(v) > 0 {
				s.setPeer(v[0])
				break
			}
		}
	}
	service, m := splitMethod(method)
	t.attempts.Add(ctx, 1, metric.WithAttributes(
		attribute.String("rpc.system", "grpc"),
		attribute.String("rpc.service", service),
		attribute.String("rpc.method", m),
		attribute.String("destination_service", authority(cc.Target())),
		attribute.Int("rpc.grpc.status_code", int(status.Code(err))),
	))
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
				s.c.state.setPeer(v[0])
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
		ctx, c := t.startServerRPC(ctx, info.FullMethod)
		resp, err := h(ctx, req)
		c.end(err)
		return resp, err
	}
}

func (t *Telemetry) startServerRPC(ctx context.Context, full string) (context.Context, *rpcCall) {
	ctx, c := t.startRPC(ctx, full, "", true)
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(PeerHeader); len(v) > 0 {
			c.state.setPeer(v[0])
		}
	}
	if t.peerMD != "" {
		grpc.SetHeader(ctx, metadata.Pairs(PeerHeader, t.peerMD))
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
