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
// telemetry.Disabled to turn it off. Options given in several WithTelemetry
// add up.
//
// Telemetry is on by default, on the global OpenTelemetry providers: every
// call gets a span and the metrics of OpenTelemetry's RPC and HTTP
// semantic conventions, labelled with Istio's mesh dimensions (source and
// destination app, version and namespace, the caller's principal, the
// cluster), and the mesh's own events are counted; see package telemetry.
// Until the application installs an SDK (otel.SetMeterProvider,
// otel.SetTracerProvider) the global providers record nothing, and the
// mesh does no telemetry work at all (telemetry.Telemetry.Active), so the
// default costs next to nothing (docs/BENCHMARKS.md). Install the SDK
// before making gRPC connections and servers: those made while no SDK is
// installed go without telemetry interceptors (HTTP clients and servers
// follow the SDK whenever it comes).
func WithTelemetry(opts ...telemetry.Option) WorkloadOption {
	return workloadOption(func(o *options) { o.telemetry = append(o.telemetry, opts...) })
}

// newTelemetry returns the telemetry of a client or server made with o;
// nil if disabled.
func (o *options) newTelemetry() (*telemetry.Telemetry, error) {
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
// go before the retry interceptors) and attempts (inner, after them): none
// if tel is not active when the connection is made, since every
// interceptor in a gRPC chain costs each call an allocation even when it
// passes the call through.
func clientTelemetry(tel *telemetry.Telemetry) (outer, inner []grpc.DialOption) {
	if !tel.Active() {
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
	if !tel.Active() { // as clientTelemetry
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
