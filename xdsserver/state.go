package xdsserver

import (
	"cmp"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/naming"
	"github.com/trellismesh/trellis/internal/registrationpb"
	"github.com/trellismesh/trellis/internal/registry"
	"github.com/trellismesh/trellis/internal/translate"
)

// rebuildDebounce batches changes that arrive together (a burst of
// registrations, an editor writing several files) into one push.
var rebuildDebounce = 20 * time.Millisecond

// knownTTL is how long a registered service port stays defined after its
// last endpoint left.
var knownTTL = 10 * time.Minute

// configDebounce waits for a directory change to settle before reloading.
var configDebounce = 100 * time.Millisecond

func (s *Server) triggerRebuild() {
	select {
	case s.rebuildCh <- struct{}{}:
	default:
	}
}

func (s *Server) rebuildLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.rebuildCh:
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(s.opts.debounce):
		}
		s.rebuild()
	}
}

// rebuild translates the current configuration and registrations and applies
// what changed to the caches, resource by resource.
func (s *Server) rebuild() {
	registered := s.endpoints()
	s.mu.Lock()
	set := s.cfg
	// A registered service with an explicit service port stays defined
	// for knownTTL after its last endpoint leaves, so that clients dialing
	// it during a restart fail fast (no endpoints) rather than wait for a
	// listener that is gone; after that it is forgotten, so that a service
	// nobody serves any more does not shadow the name for ever. Without an
	// explicit service port the port is the workload's own, often random,
	// and is not kept.
	now := time.Now()
	for _, ep := range registered {
		if ep.ServicePort != 0 {
			s.known[translate.ServiceRef{Service: ep.Service, Namespace: ep.Namespace, Port: ep.ServicePort}] = now
		}
	}
	var forget time.Time // when the next known port is due to be forgotten
	for ref, seen := range s.known {
		switch expiry := seen.Add(knownTTL); {
		case !expiry.After(now):
			delete(s.known, ref)
		case seen != now && (forget.IsZero() || expiry.Before(forget)):
			forget = expiry
		}
	}
	if s.knownExp != nil {
		s.knownExp.Stop()
		s.knownExp = nil
	}
	if !forget.IsZero() && !s.closed {
		s.knownExp = time.AfterFunc(forget.Sub(now), s.triggerRebuild)
	}
	known := slices.Collect(maps.Keys(s.known))
	s.mu.Unlock()
	res := translate.Build(set, registered, translate.Options{Known: known, TrustDomain: s.trustDomain()})
	// Cold start: withhold endpoint lists that have never had an endpoint
	// until warm-up ends (see WithWarmup).
	warming := time.Now().Before(s.warmUntil)
	withheld := 0
	for name, cla := range res.Endpoints {
		if len(cla.GetEndpoints()) > 0 {
			s.populated[name] = true // only this goroutine touches populated
		} else if warming && !s.populated[name] {
			delete(res.Endpoints, name)
			withheld++
		}
	}
	if withheld > 0 {
		s.log.Debug("warming up: empty endpoint lists withheld", "count", withheld)
	}
	baseRoutes := map[string]types.Resource{}
	for name, rc := range res.Routes {
		baseRoutes[name] = translate.ViewRoutes(rc, res.RouteConditions[name], nil)
	}
	listeners := toResources(res.Listeners)
	maps.Copy(listeners, toResources(res.ServerListeners)) // names never clash: grpc/server?...
	next := map[string]map[string]types.Resource{
		resource.ListenerType: listeners,
		resource.RouteType:    baseRoutes,
		resource.ClusterType:  toResources(res.Clusters),
		resource.EndpointType: toResources(res.Endpoints),
	}
	changed := 0
	deletes := map[string][]string{}
	for _, t := range typeURLs {
		c := s.caches[t]
		cur := c.GetResources()
		upd := map[string]types.Resource{}
		for name, r := range next[t] {
			if old, ok := cur[name]; !ok || !proto.Equal(old, r) {
				upd[name] = r
			}
		}
		for name := range cur {
			if _, ok := next[t][name]; !ok {
				deletes[t] = append(deletes[t], name)
			}
		}
		if len(upd) > 0 {
			s.metrics.changedType(shortType(t), time.Now())
			if err := c.UpdateResources(upd, nil); err != nil {
				s.log.Error("updating xDS cache", "type", t, "error", err)
			}
			changed += len(upd)
		}
		s.syncViews(t, res)
		s.metrics.resources.WithLabelValues(shortType(t)).Set(float64(len(next[t])))
	}
	// Removals go the other way round: listeners before the routes,
	// clusters and endpoints they refer to.
	for i := len(typeURLs) - 1; i >= 0; i-- {
		t := typeURLs[i]
		if len(deletes[t]) > 0 {
			s.metrics.changedType(shortType(t), time.Now())
			if err := s.caches[t].UpdateResources(nil, deletes[t]); err != nil {
				s.log.Error("updating xDS cache", "type", t, "error", err)
			}
			changed += len(deletes[t])
		}
	}
	for _, t := range []string{resource.EndpointType, resource.RouteType} {
		if len(deletes[t]) > 0 {
			s.syncViews(t, res)
		}
	}
	for _, w := range res.Warnings {
		s.log.Warn("translation", "warning", w)
	}
	s.mu.Lock()
	s.built = res
	s.version++
	s.mu.Unlock()
	s.metrics.registered.Set(float64(len(registered)))
	if changed > 0 {
		s.metrics.builds.Inc()
		s.log.Debug("xDS resources updated", "changed", changed)
	}
}

// syncViews updates the per-client views of a type after its base cache
// changed.
func (s *Server) syncViews(typeURL string, res *translate.Resources) {
	var err error
	switch typeURL {
	case resource.EndpointType:
		base := s.caches[resource.EndpointType]
		err = s.eds.sync(func(locality string) map[string]types.Resource {
			out := base.GetResources()
			for name, setting := range res.Locality {
				if cla, ok := out[name].(*v3endpointpb.ClusterLoadAssignment); ok {
					out[name] = translate.Localize(cla, locality, setting)
				}
			}
			return out
		})
	case resource.RouteType:
		err = s.rds.sync(func(key string) map[string]types.Resource {
			labels := parseLabelsKey(key)
			out := make(map[string]types.Resource, len(res.Routes))
			for name, rc := range res.Routes {
				out[name] = translate.ViewRoutes(rc, res.RouteConditions[name], labels)
			}
			return out
		})
	}
	if err != nil {
		s.log.Error("updating per-client views", "type", shortType(typeURL), "error", err)
	}
}

func toResources[M proto.Message](m map[string]M) map[string]types.Resource {
	out := make(map[string]types.Resource, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func shortType(typeURL string) string {
	switch typeURL {
	case resource.ListenerType:
		return "LDS"
	case resource.RouteType:
		return "RDS"
	case resource.ClusterType:
		return "CDS"
	case resource.EndpointType:
		return "EDS"
	}
	return typeURL
}

// watchConfig reloads the configuration directory when it changes.
func (s *Server) watchConfig(w *fsnotify.Watcher) {
	defer s.wg.Done()
	defer w.Close()
	var timer <-chan time.Time
	for {
		select {
		case <-s.ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			name := filepath.Base(ev.Name)
			// Kubernetes ConfigMap volumes swap a "..data" symlink.
			if config.IsConfigFile(name) || name == "..data" {
				timer = time.After(configDebounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Error("watching configuration directory", "error", err)
		case <-timer:
			timer = nil
			s.Reload()
		}
	}
}

// endpointFromRequest reads and checks the endpoint of a registration
// request: names, address and port, and bounds on the message, labels and
// locality, so that no registration can make the mesh's resources large.
func endpointFromRequest(req *registrationpb.RegisterRequest) (registry.Endpoint, error) {
	p := req.GetEndpoint()
	ep := registry.Endpoint{
		Service:     p.GetService(),
		Namespace:   cmp.Or(p.GetNamespace(), config.DefaultNamespace),
		Address:     p.GetAddress(),
		Port:        p.GetPort(),
		ServicePort: p.GetServicePort(),
		Labels:      p.GetLabels(),
		Locality:    p.GetLocality(),
	}
	if n := proto.Size(req); n > maxRegistrationSize {
		return ep, errorf("registration: message of %d bytes is larger than %d", n, maxRegistrationSize)
	}
	if p == nil {
		return ep, errorf("registration: the first request must carry an endpoint")
	}
	if err := naming.ValidateName(ep.Service); err != nil {
		return ep, errorf("registration: service: %v", err)
	}
	if err := naming.ValidateName(ep.Namespace); err != nil {
		return ep, errorf("registration: namespace: %v", err)
	}
	if !validIP(ep.Address) {
		return ep, errorf("registration: address %q is not an IP address", ep.Address)
	}
	if ep.Port == 0 || ep.Port > 65535 {
		return ep, errorf("registration: port %d is not between 1 and 65535", ep.Port)
	}
	if ep.ServicePort > 65535 {
		return ep, errorf("registration: service port %d is not between 1 and 65535", ep.ServicePort)
	}
	if len(ep.Labels) > maxLabels {
		return ep, errorf("registration: %d labels, at most %d", len(ep.Labels), maxLabels)
	}
	if err := naming.ValidateLabels(ep.Labels); err != nil {
		return ep, errorf("registration: labels: %v", err)
	}
	if err := validateLocality(ep.Locality); err != nil {
		return ep, errorf("registration: locality: %v", err)
	}
	return ep, nil
}

// validateLocality checks a "region/zone/subzone" locality: at most three
// parts, each at most maxLocalityPart bytes of printable ASCII.
func validateLocality(l string) error {
	parts := strings.Split(l, "/")
	if len(parts) > 3 {
		return fmt.Errorf("%d parts, want region/zone/subzone", len(parts))
	}
	for _, part := range parts {
		if len(part) > maxLocalityPart {
			return fmt.Errorf("a part of %d bytes, at most %d", len(part), maxLocalityPart)
		}
		for i := 0; i < len(part); i++ {
			if c := part[i]; c <= ' ' || c > '~' {
				return fmt.Errorf("byte %#x is not printable ASCII", c)
			}
		}
	}
	return nil
}

func statusInvalid(err error) error { return status.Error(codes.InvalidArgument, err.Error()) }
