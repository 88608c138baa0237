package xdsserver

import (
	"context"
	"errors"
	"sync"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellismesh/trellis/internal/translate"
)

// localityEDS serves endpoints per client locality. Clients that send no
// locality read the base cache; every distinct client locality gets a cache
// of its own, holding the base endpoints localized (priorities or weights)
// for clusters with a localityLbSetting and identical copies of the rest.
// It is safe for concurrent use.
type localityEDS struct {
	base *cache.LinearCache

	mu       sync.Mutex
	groups   map[string]*cache.LinearCache
	settings map[string]*networking.LocalityLoadBalancerSetting
}

var _ cache.Cache = (*localityEDS)(nil)

func newLocalityEDS(base *cache.LinearCache) *localityEDS {
	return &localityEDS{base: base, groups: map[string]*cache.LinearCache{}}
}

func localityKey(l *v3corepb.Locality) string {
	if l.GetRegion() == "" && l.GetZone() == "" && l.GetSubZone() == "" {
		return ""
	}
	return l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
}

func (l *localityEDS) cacheFor(node *v3corepb.Node) *cache.LinearCache {
	key := localityKey(node.GetLocality())
	if key == "" {
		return l.base
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.groups[key]
	if !ok {
		c = cache.NewLinearCache(resource.EndpointType, cache.WithLogger(discardLogger{}))
		c.SetResources(l.localized(key))
		l.groups[key] = c
	}
	return c
}

// localized returns the base endpoints as a client in locality key sees
// them. l.mu must be held.
func (l *localityEDS) localized(key string) map[string]types.Resource {
	base := l.base.GetResources()
	out := make(map[string]types.Resource, len(base))
	for name, r := range base {
		if s, ok := l.settings[name]; ok {
			r = translate.Localize(r.(*v3endpointpb.ClusterLoadAssignment), key, s)
		}
		out[name] = r
	}
	return out
}

// sync brings every locality's cache in line with the base cache and the
// settings of the latest build, updating only resources that changed.
func (l *localityEDS) sync(settings map[string]*networking.LocalityLoadBalancerSetting) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.settings = settings
	var errs []error
	for key, c := range l.groups {
		next := l.localized(key)
		cur := c.GetResources()
		upd := map[string]types.Resource{}
		var del []string
		for name, r := range next {
			if old, ok := cur[name]; !ok || !proto.Equal(old, r) {
				upd[name] = r
			}
		}
		for name := range cur {
			if _, ok := next[name]; !ok {
				del = append(del, name)
			}
		}
		if len(upd) > 0 || len(del) > 0 {
			errs = append(errs, c.UpdateResources(upd, del))
		}
	}
	return errors.Join(errs...)
}

func (l *localityEDS) CreateWatch(req *cache.Request, sub cache.Subscription, ch chan cache.Response) (func(), error) {
	return l.cacheFor(req.GetNode()).CreateWatch(req, sub, ch)
}

func (l *localityEDS) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, ch chan cache.DeltaResponse) (func(), error) {
	return l.cacheFor(req.GetNode()).CreateDeltaWatch(req, sub, ch)
}

func (l *localityEDS) Fetch(ctx context.Context, req *cache.Request) (cache.Response, error) {
	return l.cacheFor(req.GetNode()).Fetch(ctx, req)
}
