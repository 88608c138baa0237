package xdsserver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the control plane's Prometheus metrics, in a registry of the
// Server's own so that several Servers can live in one process.
type metrics struct {
	reg             *prometheus.Registry
	streams         prometheus.Gauge
	acks            *prometheus.CounterVec
	nacks           *prometheus.CounterVec
	pushes          *prometheus.CounterVec
	resources       *prometheus.GaugeVec
	builds          prometheus.Counter
	registered      prometheus.Gauge
	registrations   *prometheus.CounterVec
	configLoads     *prometheus.CounterVec
	configValid     prometheus.Gauge
	configTimestamp prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_xds_streams", Help: "Open xDS streams."}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_xds_acks_total", Help: "xDS responses acknowledged by clients, by type."}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_xds_nacks_total", Help: "xDS responses rejected by clients, by type."}, []string{"type"}),
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
	}
	m.reg.MustRegister(m.streams, m.acks, m.nacks, m.pushes, m.resources, m.builds, m.registered,
		m.registrations, m.configLoads, m.configValid, m.configTimestamp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) configLoaded(ok bool) {
	if ok {
		m.configLoads.WithLabelValues("success").Inc()
		m.configValid.Set(1)
		m.configTimestamp.Set(float64(time.Now().Unix()))
		return
	}
	m.configLoads.WithLabelValues("failure").Inc()
	m.configValid.Set(0)
}
