package telemetry

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"
)

// AccessLogMode says which calls an access log records.
type AccessLogMode int

const (
	// AccessLogOff records nothing; the zero value.
	AccessLogOff AccessLogMode = iota
	// AccessLogOn records every (sampled) call.
	AccessLogOn
	// AccessLogErrors records only failed calls: a gRPC status other than
	// OK, an HTTP status of 400 or more, or a transport error.
	AccessLogErrors
)

// AccessLog configures the access log: one slog record per call, at level
// Info, with the attributes time, duration, kind (client or server),
// protocol, method, path, status, peer (the caller's SPIFFE ID, servers
// with mutual TLS), upstream (the endpoint of the last attempt, HTTP
// clients), attempts, source and destination, and trace_id when traced.
//
// The zero value is off.
type AccessLog struct {
	Mode AccessLogMode
	// Logger receives the records. If nil, JSON lines on standard output,
	// as Istio's access logs.
	Logger *slog.Logger
	// Sampling is the fraction of calls logged, in (0, 1]. If zero, 1: all
	// calls. Errors-only mode samples the errors.
	Sampling float64
}

type accessLogger struct {
	l        *slog.Logger
	errsOnly bool
	sampling float64
}

func newAccessLogger(c AccessLog) *accessLogger {
	if c.Mode == AccessLogOff {
		return nil
	}
	l := c.Logger
	if l == nil {
		l = slog.New(slog.NewJSONHandler(os.Stdout, nil))
	}
	s := c.Sampling
	if s <= 0 || s > 1 {
		s = 1
	}
	return &accessLogger{l: l, errsOnly: c.Mode == AccessLogErrors, sampling: s}
}

// entry is one call, as logged.
type entry struct {
	start     time.Time
	duration  time.Duration
	kind      string // client, server
	protocol  string // grpc, http
	method    string
	path      string
	status    string
	failed    bool
	principal string
	upstream  string
	attempts  int
	source    Workload
	dest      Workload
	host      string
	traceID   string
}

func (a *accessLogger) record(ctx context.Context, e *entry) {
	if a == nil || (a.errsOnly && !e.failed) || (a.sampling < 1 && rand.Float64() >= a.sampling) {
		return
	}
	attrs := []slog.Attr{
		slog.Time("start_time", e.start),
		slog.Duration("duration", e.duration),
		slog.String("kind", e.kind),
		slog.String("protocol", e.protocol),
		slog.String("method", e.method),
		slog.String("path", e.path),
		slog.String("status", e.status),
	}
	if e.host != "" {
		attrs = append(attrs, slog.String("authority", e.host))
	}
	if e.principal != "" {
		attrs = append(attrs, slog.String("peer", e.principal))
	}
	if e.upstream != "" {
		attrs = append(attrs, slog.String("upstream", e.upstream))
	}
	if e.attempts > 0 {
		attrs = append(attrs, slog.Int("attempts", e.attempts))
	}
	if e.source != (Workload{}) {
		attrs = append(attrs, slog.String("source", e.source.encode()))
	}
	if e.dest != (Workload{}) {
		attrs = append(attrs, slog.String("destination", e.dest.encode()))
	}
	if e.traceID != "" {
		attrs = append(attrs, slog.String("trace_id", e.traceID))
	}
	a.l.LogAttrs(ctx, slog.LevelInfo, "access", attrs...)
}
