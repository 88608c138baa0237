package xdsserver

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
)

// viewCache serves one resource type as each client should see it, where
// that depends on who the client is: endpoints depend on the client's
// locality (localityLbSetting), routes on its labels (sourceLabels).
// Clients whose key is empty read the shared base cache; every distinct key
// gets a cache of its own, computed by the current view function and kept
// in line with it resource by resource. It is safe for concurrent use.
type viewCache struct {
	typeURL string
	base    *cache.LinearCache
	key     func(*v3corepb.Node) string

	mu     sync.Mutex
	view   func(key string) map[string]types.Resource
	groups map[string]*cache.LinearCache
}

var _ cache.Cache = (*viewCache)(nil)

func newViewCache(typeURL string, base *cache.LinearCache, key func(*v3corepb.Node) string) *viewCache {
	return &viewCache{
		typeURL: typeURL,
		base:    base,
		key:     key,
		view:    func(string) map[string]types.Resource { return base.GetResources() },
		groups:  map[string]*cache.LinearCache{},
	}
}

// localityKey keys endpoint views by the client's locality.
func localityKey(node *v3corepb.Node) string {
	l := node.GetLocality()
	if l.GetRegion() == "" && l.GetZone() == "" && l.GetSubZone() == "" {
		return ""
	}
	return l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
}

// NodeLabelsKey is the node metadata field holding the client workload's
// labels (a JSON object of strings), matched by VirtualService
// sourceLabels.
const NodeLabelsKey = "LABELS"

// nodeLabels returns the labels a client declares in its node metadata.
func nodeLabels(node *v3corepb.Node) map[string]string {
	out := map[string]string{}
	for k, v := range node.GetMetadata().GetFields()[NodeLabelsKey].GetStructValue().GetFields() {
		out[k] = v.GetStringValue()
	}
	return out
}

// labelsKey keys route views by the client's labels ("k=v,k=v", sorted).
func labelsKey(node *v3corepb.Node) string {
	labels := nodeLabels(node)
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// parseLabelsKey inverts labelsKey.
func parseLabelsKey(key string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(key, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out
}

func (v *viewCache) cacheFor(node *v3corepb.Node) *cache.LinearCache {
	key := v.key(node)
	if key == "" {
		return v.base
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.groups[key]
	if !ok {
		c = cache.NewLinearCache(v.typeURL, cache.WithLogger(discardLogger{}))
		c.SetResources(v.view(key))
		v.groups[key] = c
	}
	return c
}

// sync installs a new view function and brings every client's cache in
// line with it, updating only resources that changed.
func (v *viewCache) sync(view func(key string) map[string]types.Resource) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.view = view
	var errs []error
	for key, c := range v.groups {
		next := view(key)
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

func (v *viewCache) CreateWatch(req *cache.Request, sub cache.Subscription, ch chan cache.Response) (func(), error) {
	return v.cacheFor(req.GetNode()).CreateWatch(req, sub, ch)
}

func (v *viewCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, ch chan cache.DeltaResponse) (func(), error) {
	return v.cacheFor(req.GetNode()).CreateDeltaWatch(req, sub, ch)
}

func (v *viewCache) Fetch(ctx context.Context, req *cache.Request) (cache.Response, error) {
	return v.cacheFor(req.GetNode()).Fetch(ctx, req)
}
