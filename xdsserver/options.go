package xdsserver

import (
	"log/slog"
	"time"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/registry"
)

// An Option configures a Server.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	configDir string
	logger    *slog.Logger
	grace     time.Duration
	warmup    time.Duration
	debounce  time.Duration

	dataDir      string
	caCert       string
	caKey        string
	caAnchors    string
	trustDomain  string
	joinTokens   map[string]WorkloadIdentity
	maxChain     time.Duration
	servingNames []string
	adminToken   string

	metricsBehindToken bool // WithMetricsBehindToken

	// Sources other than a directory, set by WithStore and WithKubernetes.
	store           string // WithStore's URI; see resolveStore
	configSource    config.Source
	endpointSources []registry.Source
	openStore       func(grace time.Duration, onChange func()) (registry.Store, error)
	kubernetes      *kubeOptions // WithKubernetes; see useKubernetes

	insecureRegistration bool
	regLimits            RegistrationLimits

	admission      int
	admissionBurst int
	admissionSet   bool
	lrsInterval    time.Duration
}

// WithConfigDir loads the Istio resources in dir (every *.yaml, *.yml and
// *.json file directly inside it) and reloads them when the directory
// changes. A change that fails to load leaves the last good configuration in
// force; its errors are logged, counted in metrics and shown on the admin
// endpoint. Without this option the mesh has no configuration beyond what
// workloads register.
func WithConfigDir(dir string) Option {
	return optionFunc(func(o *options) { o.configDir = dir })
}

// WithLogger sets the logger. If nil or not given, the Server logs nothing.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.logger = l })
}

// WithRegistrationGrace sets how long an endpoint whose registration stream
// broke (rather than being closed cleanly) stays in EDS, waiting for the
// workload to register again. If zero or not given, it is 5 seconds.
func WithRegistrationGrace(d time.Duration) Option {
	return optionFunc(func(o *options) { o.grace = d })
}

// WithWarmup sets how long after start the Server withholds endpoint (EDS)
// resources that have never had an endpoint. A restarted control plane
// knows its configuration at once but learns registrations only as
// workloads reconnect; publishing the empty endpoint lists meanwhile would
// make every client drop the endpoints it has cached. During warm-up such a
// list is simply not sent (clients keep what they have; new clients wait),
// and it is sent, empty or not, once warm-up ends. An endpoint list that
// has had endpoints is always published, including when it empties. If not
// given, warm-up lasts the registration grace period; a negative duration
// turns it off.
func WithWarmup(d time.Duration) Option {
	return optionFunc(func(o *options) { o.warmup = d })
}
