package telemetry

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	estats "google.golang.org/grpc/experimental/stats"
	"google.golang.org/grpc/stats"
)

// grpcMetrics records the metrics grpc-go's components measure beyond
// single calls — its xDS client (gRFC A78: grpc.xds_client.*, such as
// resource_updates_invalid, the resources it NACKed), its load-balancing
// policies, and Trellis's own policies registered the same way
// (trellis.lb.outlier.ejections) — as OpenTelemetry instruments of the
// Telemetry's MeterProvider. grpc-go hands such metrics to every stats
// handler of a channel that is also a MetricsRecorder (gRFC A79); this one
// records each metric it is given, with every label grpc-go passes, and
// does nothing per call, so it measures nothing grpc-go's OpenTelemetry
// plugin or Trellis's interceptors already measure.
type grpcMetrics struct {
	estats.UnimplementedMetricsRecorder
	meter metric.Meter

	mu    sync.Mutex
	insts map[*estats.MetricDescriptor]any // instrument per descriptor
}

var (
	_ estats.MetricsRecorder = (*grpcMetrics)(nil)
	_ stats.Handler          = (*grpcMetrics)(nil)
)

func newGRPCMetrics(m metric.Meter) *grpcMetrics {
	return &grpcMetrics{meter: m, insts: map[*estats.MetricDescriptor]any{}}
}

// instrument returns the instrument of d, made by mk the first time.
func (g *grpcMetrics) instrument(d *estats.MetricDescriptor, mk func() (any, error)) any {
	g.mu.Lock()
	defer g.mu.Unlock()
	if i, ok := g.insts[d]; ok {
		return i
	}
	i, err := mk()
	if err != nil {
		i = nil // a provider that refuses an instrument records nothing of it
	}
	g.insts[d] = i
	return i
}

// attrs pairs the descriptor's label keys, required then optional, with
// the values grpc-go passed.
func attrs(d *estats.MetricDescriptor, values []string) metric.MeasurementOption {
	kv := make([]attribute.KeyValue, 0, len(values))
	i := 0
	for _, keys := range [][]string{d.Labels, d.OptionalLabels} {
		for _, k := range keys {
			if i < len(values) {
				kv = append(kv, attribute.String(k, values[i]))
			}
			i++
		}
	}
	return metric.WithAttributes(kv...)
}

func (g *grpcMetrics) RecordInt64Count(h *estats.Int64CountHandle, incr int64, labels ...string) {
	d := h.Descriptor()
	if c, ok := g.instrument(d, func() (any, error) {
		return g.meter.Int64Counter(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	}).(metric.Int64Counter); ok {
		c.Add(context.Background(), incr, attrs(d, labels))
	}
}

func (g *grpcMetrics) RecordFloat64Count(h *estats.Float64CountHandle, incr float64, labels ...string) {
	d := h.Descriptor()
	if c, ok := g.instrument(d, func() (any, error) {
		return g.meter.Float64Counter(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	}).(metric.Float64Counter); ok {
		c.Add(context.Background(), incr, attrs(d, labels))
	}
}

func (g *grpcMetrics) RecordInt64UpDownCount(h *estats.Int64UpDownCountHandle, incr int64, labels ...string) {
	d := h.Descriptor()
	if c, ok := g.instrument(d, func() (any, error) {
		return g.meter.Int64UpDownCounter(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	}).(metric.Int64UpDownCounter); ok {
		c.Add(context.Background(), incr, attrs(d, labels))
	}
}

func (g *grpcMetrics) RecordInt64Histo(h *estats.Int64HistoHandle, v int64, labels ...string) {
	d := h.Descriptor()
	if c, ok := g.instrument(d, func() (any, error) {
		return g.meter.Int64Histogram(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	}).(metric.Int64Histogram); ok {
		c.Record(context.Background(), v, attrs(d, labels))
	}
}

func (g *grpcMetrics) RecordFloat64Histo(h *estats.Float64HistoHandle, v float64, labels ...string) {
	d := h.Descriptor()
	if c, ok := g.instrument(d, func() (any, error) {
		return g.meter.Float64Histogram(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	}).(metric.Float64Histogram); ok {
		c.Record(context.Background(), v, attrs(d, labels))
	}
}

func (g *grpcMetrics) RecordInt64Gauge(h *estats.Int64GaugeHandle, v int64, labels ...string) {
	d := h.Descriptor()
	if c, ok := g.instrument(d, func() (any, error) {
		return g.meter.Int64Gauge(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	}).(metric.Int64Gauge); ok {
		c.Record(context.Background(), v, attrs(d, labels))
	}
}

// RegisterAsyncReporter is not supported: grpc-go's asynchronous gauges
// (grpc.xds_client.connected, grpc.xds_client.resources) are not exported.
func (g *grpcMetrics) RegisterAsyncReporter(estats.AsyncMetricReporter, ...estats.AsyncMetric) func() {
	return func() {}
}

// The stats.Handler methods do nothing: calls are measured by the
// Telemetry's interceptors.
func (g *grpcMetrics) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (g *grpcMetrics) HandleRPC(context.Context, stats.RPCStats)                         {}
func (g *grpcMetrics) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (g *grpcMetrics) HandleConn(context.Context, stats.ConnStats)                       {}

// ComponentMetrics returns the dial option through which grpc-go's own
// components of a channel — its xDS client and load-balancing policies —
// report the metrics they measure beyond single calls, which t then
// records (see the package documentation). Nil if t is not Active when the
// channel is made: the recorder is a stats handler, and any stats handler
// makes grpc-go build per-call events, so a channel made while telemetry
// is idle goes without it.
func (t *Telemetry) ComponentMetrics() []grpc.DialOption {
	if !t.Active() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(t.components)}
}
