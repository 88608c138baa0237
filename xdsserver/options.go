package xdsserver

import (
	"log/slog"
	"time"
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
	debounce  time.Duration
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
