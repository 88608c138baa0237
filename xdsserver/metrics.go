package xdsserver

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// metrics are the control plane's Prometheus metrics, in a registry of the
// Server's own so that several Servers can live in one process.
type metrics struct {
	reg               *prometheus.Registry
	streams           prometheus.Gauge
	acks              *prometheus.CounterVec
	nacks             *prometheus.CounterVec
	pushes            *prometheus.CounterVec
	resources         *prometheus.GaugeVec
	builds            prometheus.Counter
	registered        prometheus.Gauge
	registrations     *prometheus.CounterVec
	configLoads       *prometheus.CounterVec
	configValid       prometheus.Gauge
	configTimestamp   prometheus.Gauge
	configErrors      prometheus.Gauge
	clients           prometheus.Gauge
	pushLatency       *prometheus.HistogramVec
	certsIssued       prometheus.Counter
	caErrors          *prometheus.CounterVec
	admissionRejected prometheus.Counter
	insecure          prometheus.Gauge
	unauthenticated   *prometheus.CounterVec
	adminRefused      *prometheus.CounterVec

	mu      sync.Mutex
	changed map[string]time.Time // short type → time of the last change pushed to the cache
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_xds_streams", Help: "Open xDS streams."}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_xds_acks_total", Help: "xDS responses acknowledged by clients, by type."}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_xds_nacks_total", Help: "xDS responses rejected by clients, by type and reason (unsupported, unmarshal, validation, other: a class of the client's error, never its text)."}, []string{"type", "reason"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_xds_pushes_total", Help: "xDS responses sent, by type."}, []string{"type"}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_xds_resources", Help: "xDS resources served, by type."}, []string{"type"}),
		builds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_xds_builds_total", Help: "Translations that changed at least one resource."}),
		registered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_registered_endpoints", Help: "Self-registered endpoints, including those in their grace period."}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_registrations_total", Help: "Registration attempts, by result."}, []string{"result"}),
		configLoads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_config_loads_total", Help: "Configuration loads, by result."}, []string{"result"}),
		configValid: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_config_last_load_success", Help: "1 if the last configuration load succeeded, 0 if it was rejected."}),
		configTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_config_last_success_timestamp_seconds", Help: "Time of the last successful configuration load."}),
		configErrors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_config_errors", Help: "Errors in the last configuration load (0 if it succeeded); the errors are on /debug/config_dump."}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_xds_clients", Help: "Connected xDS clients: open streams whose node identified itself."}),
		pushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trellis_xds_push_latency_seconds",
			Help:    "Time from a configuration or registration change reaching the xDS cache to its response being sent to a client, by type; answers to new requests are not counted.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"type"}),
		certsIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_ca_certificates_issued_total", Help: "Workload certificates the mesh CA issued."}),
		caErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_ca_errors_total", Help: "Certificate requests the mesh CA refused or failed, by reason (unauthenticated, rate_limited, invalid, denied, internal)."}, []string{"reason"}),
		admissionRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_xds_streams_rejected_total", Help: "New xDS streams turned away by the admission limit (clients retry after backing off)."}),
		insecure: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_insecure_registration", Help: "1 if the control plane accepts registrations without a credential (WithInsecureRegistration: an open mesh), else 0."}),
		unauthenticated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_secure_port_unauthenticated_total", Help: "Streams refused on the secure port for want of a verified workload certificate, by API (xds, lrs)."}, []string{"api"}),
		changed: map[string]time.Time{},
	}
	m.reg.MustRegister(m.streams, m.acks, m.nacks, m.pushes, m.resources, m.builds, m.registered,
		m.registrations, m.configLoads, m.configValid, m.configTimestamp, m.configErrors,
		m.clients, m.pushLatency, m.certsIssued, m.caErrors, m.admissionRejected, m.insecure, m.unauthenticated,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.adminRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_admin_refused_total", Help: "Admin requests refused, by reason (token: without the admin token; host: without a token, addressed to a Host that is not loopback; connection: without a token, on a connection not accepted on loopback)."}, []string{"reason"})
	m.reg.MustRegister(m.adminRefused)
	for _, reason := range []string{"token", "host", "connection"} {
		m.adminRefused.WithLabelValues(reason)
	}
	return m
}

func (m *metrics) configLoaded(ok bool, errs int) {
	m.configErrors.Set(float64(errs))
	if ok {
		m.configLoads.WithLabelValues("success").Inc()
		m.configValid.Set(1)
		m.configTimestamp.Set(float64(time.Now().Unix()))
		return
	}
	m.configLoads.WithLabelValues("failure").Inc()
	m.configValid.Set(0)
}

// changedType records that resources of type t (short name) changed now.
func (m *metrics) changedType(t string, now time.Time) {
	m.mu.Lock()
	m.changed[t] = now
	m.mu.Unlock()
}

// pushed observes the push latency of a response of type t on a stream
// whose last request of that type came at requested: only responses to a
// change made after that request are pushes.
func (m *metrics) pushed(t string, requested, now time.Time) {
	m.mu.Lock()
	changed := m.changed[t]
	m.mu.Unlock()
	if changed.IsZero() || !changed.After(requested) {
		return
	}
	m.pushLatency.WithLabelValues(t).Observe(now.Sub(changed).Seconds())
}

// nackReason classifies a client's NACK message into a bounded label
// value: the message itself is free text and goes to logs and the config
// dump only.
func nackReason(msg string) string {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "unsupported") || strings.Contains(m, "not supported"):
		return "unsupported"
	case strings.Contains(m, "unmarshal") || strings.Contains(m, "parse") || strings.Contains(m, "decode"):
		return "unmarshal"
	case strings.Contains(m, "valid"): // invalid, validation, validate
		return "validation"
	}
	return "other"
}

// caMethodPrefix is the gRPC service of the mesh CA (Istio's
// IstioCertificateService).
const caMethodPrefix = "/istio.v1.auth.IstioCertificateService/"

// caInterceptor counts the certificates the mesh CA issues and the
// requests it refuses, by the class of their status code.
func (m *metrics) caInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	if !strings.HasPrefix(info.FullMethod, caMethodPrefix) {
		return resp, err
	}
	if err == nil {
		m.certsIssued.Inc()
		return resp, nil
	}
	reason := "internal"
	switch status.Code(err) {
	case codes.Unauthenticated:
		reason = "unauthenticated"
	case codes.ResourceExhausted:
		reason = "rate_limited"
	case codes.InvalidArgument:
		reason = "invalid"
	case codes.PermissionDenied:
		reason = "denied"
	}
	m.caErrors.WithLabelValues(reason).Inc()
	return resp, err
}
