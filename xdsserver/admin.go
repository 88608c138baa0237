package xdsserver

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/registry"
)

// ConfigDump is the JSON document served at /debug/config_dump.
type ConfigDump struct {
	Config        ConfigStatus               `json:"config"`
	Registrations []registry.Endpoint        `json:"registrations"`
	Warnings      []string                   `json:"warnings,omitempty"`
	Clients       []ClientStatus             `json:"clients"`
	Resources     map[string]json.RawMessage `json:"resources"`
}

// ConfigStatus describes the configuration in force and the last load.
type ConfigStatus struct {
	Dir        string    `json:"dir,omitempty"`
	Files      []string  `json:"files,omitempty"`
	Resources  int       `json:"resources"`
	LoadedAt   time.Time `json:"loadedAt,omitzero"`
	Valid      bool      `json:"lastLoadValid"`
	LastErrors []string  `json:"lastErrors,omitempty"`
	Build      uint64    `json:"build"`
}

// AdminHandler returns the admin endpoints: /healthz, /readyz, /metrics
// (Prometheus text format) and /debug/config_dump.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		ready := s.built != nil && !s.closed
		s.mu.Unlock()
		if !ready {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /debug/config_dump", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.ConfigDump())
	})
	return mux
}

// ConfigDump returns what the Server serves and why: the configuration in
// force and the errors of the last load, registrations, the status of every
// connected client and the xDS resources.
func (s *Server) ConfigDump() *ConfigDump {
	s.mu.Lock()
	d := &ConfigDump{
		Config: ConfigStatus{
			Dir:      s.opts.configDir,
			LoadedAt: s.cfgLoaded,
			Valid:    s.cfgErr == nil,
			Build:    s.version,
		},
		Resources: map[string]json.RawMessage{},
	}
	if s.cfg != nil {
		d.Config.Files = s.cfg.Files
		d.Config.Resources = s.cfg.Len()
	}
	if s.cfgErr != nil {
		errs := config.Errors(s.cfgErr)
		for _, e := range errs {
			d.Config.LastErrors = append(d.Config.LastErrors, e.Error())
		}
		if len(errs) == 0 {
			d.Config.LastErrors = []string{s.cfgErr.Error()}
		}
	}
	if s.built != nil {
		d.Warnings = s.built.Warnings
	}
	s.mu.Unlock()
	d.Registrations = s.reg.Endpoints()
	d.Clients = s.clients.snapshot()
	for _, t := range typeURLs {
		res := s.caches[t].GetResources()
		m := map[string]json.RawMessage{}
		for _, name := range slices.Sorted(maps.Keys(res)) {
			b, err := protojson.Marshal(res[name].(proto.Message))
			if err != nil {
				continue
			}
			m[name] = b
		}
		b, _ := json.Marshal(m)
		d.Resources[shortType(t)] = b
	}
	return d
}
