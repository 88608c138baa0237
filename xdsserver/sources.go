package xdsserver

import (
	"slices"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/registry"
)

// startSources runs the configuration source and the endpoint sources, if
// any, until the Server closes. A source that fails is logged; what it
// delivered last stays in force.
func (s *Server) startSources() {
	if src := s.opts.configSource; src != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := src.Run(s.ctx, func(set *config.Set, err error) {
				s.applyConfig(set, err, src.String())
			}); err != nil {
				s.log.Error("configuration source stopped; keeping the last good configuration", "source", src.String(), "error", err)
			}
		}()
	}
	for i, src := range s.opts.endpointSources {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := src.Run(s.ctx, func(eps []registry.Endpoint) {
				s.mu.Lock()
				s.external[i] = slices.Clone(eps)
				s.mu.Unlock()
				s.triggerRebuild()
			}); err != nil {
				s.log.Error("endpoint source stopped; keeping its last endpoints", "error", err)
			}
		}()
	}
}

// endpoints returns the registered endpoints and those of the endpoint
// sources, sorted by key; a registration wins over a source's endpoint with
// the same key.
func (s *Server) endpoints() []registry.Endpoint {
	out := s.reg.Endpoints()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.external) == 0 {
		return out
	}
	seen := make(map[string]bool, len(out))
	for _, ep := range out {
		seen[ep.Key()] = true
	}
	for _, list := range s.external {
		for _, ep := range list {
			if !seen[ep.Key()] {
				seen[ep.Key()] = true
				out = append(out, ep)
			}
		}
	}
	slices.SortFunc(out, func(a, b registry.Endpoint) int {
		if a.Key() < b.Key() {
			return -1
		}
		if a.Key() > b.Key() {
			return 1
		}
		return 0
	})
	return out
}

func (s *Server) configSourceName() string {
	if s.opts.configSource == nil {
		return ""
	}
	return s.opts.configSource.String()
}
