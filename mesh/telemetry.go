package mesh

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/trellismesh/trellis/internal/mtls"

	"github.com/trellismesh/trellis/telemetry"
)

// WithTelemetry configures the telemetry of mesh clients and servers:
// providers (telemetry.WithMeterProvider, WithTracerProvider,
// WithPropagator), the access log (telemetry.WithAccessLog), or
// telemetry.Disabled. Options given in several WithTelemetry add up.
//
// With WithTelemetry (even with no options: then the global
// OpenTelemetry providers, which record nothing until the application
// installs an SDK with otel.SetMeterProvider and otel.SetTracerProvider,
// W3C trace context, and no access log), every call gets a span and the
// metrics of OpenTelemetry's RPC and HTTP semantic conventions, labelled
// with Istio's mesh dimensions (source and destination app, version and
// namespace, the caller's principal, the cluster); see package telemetry.
// Without it there is no telemetry: it is opt-in for now, until its cost
// with no-op providers (+41 allocations per gRPC call) is shown to stay
// within 10% of a call (docs/BENCHMARKS.md). For Dial, NewServer, NewHTTPServer and
// NewTransport.
func WithTelemetry(opts ...telemetry.Option) Option {
	return optionFunc(func(o *options) { o.telemetryOn, o.telemetry = true, append(o.telemetry, opts...) })
}

// newTelemetry returns the telemetry of a client or server made with o;
// nil if disabled.
func (o *options) newTelemetry() (*telemetry.Telemetry, error) {
	if !o.telemetryOn {
		return nil, nil
	}
	base := []telemetry.Option{
		telemetry.WithWorkload(telemetry.Workload{Service: o.service, Version: o.version, Namespace: o.namespace}),
		telemetry.WithPeerIdentity(peerIdentity),
	}
	tel, err := telemetry.New(append(base, o.telemetry...)...)
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	return tel, nil
}

func peerIdentity(ctx context.Context) (string, bool) {
	id, ok := PeerID(ctx)
	if !ok {
		return "", false
	}
	return id.String(), true
}

// clientTelemetry returns the dial options that measure calls (outer, to
// go before the retry interceptors) and attempts (inner, after them).
func clientTelemetry(tel *telemetry.Telemetry) (outer, inner []grpc.DialOption) {
	if tel == nil {
		return nil, nil
	}
	outer = []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(tel.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(tel.StreamClientInterceptor()),
	}
	inner = []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(tel.UnaryAttemptInterceptor()),
		grpc.WithChainStreamInterceptor(tel.StreamAttemptInterceptor()),
	}
	return outer, inner
}

// serverInterceptors chains a Server's policy between the telemetry's
// call interceptors (outside, so refused calls are measured) and its
// admitted markers (inside, so refusals are told from handler errors).
func serverInterceptors(tel *telemetry.Telemetry, unary grpc.UnaryServerInterceptor, stream grpc.StreamServerInterceptor) []grpc.ServerOption {
	if tel == nil {
		return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream)}
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(tel.UnaryServerInterceptor(), unary, tel.UnaryAdmittedInterceptor()),
		grpc.ChainStreamInterceptor(tel.StreamServerInterceptor(), stream, tel.StreamAdmittedInterceptor()),
	}
}

// mtlsOptions are the options of a server's mutual TLS: its logger, and
// its handshake failures counted by tel (if not nil).
func (o *options) mtlsOptions(tel *telemetry.Telemetry) []mtls.Option {
	opts := []mtls.Option{mtls.WithLogger(o.logger)}
	if tel != nil {
		opts = append(opts, mtls.WithHandshakeFailures(tel.HandshakeFailed))
	}
	return opts
}
