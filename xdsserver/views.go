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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// viewCache serves one resource type as each client should see it, where
// that depends on who the client is: endpoints depend on the client's
// locality (localityLbSetting), routes on its labels (sourceLabels).
// Clients whose key is empty read the shared base cache; every distinct key
// gets a cache of its own, computed by the current view function and kept
// in line with it resource by resource. A key's cache lives while a stream
// of a client with that key is open (retain, release), and there are at
// most maxViews of them. It is safe for concurrent use.
type viewCache struct {
	typeURL  string
	base     *cache.LinearCache
	key      func(*v3corepb.Node) string
	maxViews int

	mu     sync.Mutex
	view   func(key string) map[string]types.Resource
	groups map[string]*viewGroup
}

// viewGroup is the cache of one key and the streams that use it.
type viewGroup struct {
	cache   *cache.LinearCache
	streams int
}

// defaultMaxViews bounds the per-client caches of each type. A client
// beyond it is refused (its stream ends with RESOURCE_EXHAUSTED) rather
// than served a view that is not its own.
const defaultMaxViews = 4096

// errTooManyViews refuses a stream whose view would exceed maxViews.
var errTooManyViews = status.Error(codes.ResourceExhausted, "control plane busy: too many distinct client views")

var _ cache.Cache = (*viewCache)(nil)

func newViewCache(typeURL string, base *cache.LinearCache, key func(*v3corepb.Node) string) *viewCache {
	return &viewCache{
		typeURL:  typeURL,
		base:     base,
		key:      key,
		maxViews: defaultMaxViews,
		view:     func(string) map[string]types.Resource { return base.GetResources() },
		groups:   map[string]*viewGroup{},
	}
}

// retain makes the view of node's key live for one more stream, creating
// it if needed.
func (v *viewCache) retain(node *v3corepb.Node) error {
	key := v.key(node)
	if key == "" {
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	g, ok := v.groups[key]
	if !ok {
		if len(v.groups) >= v.maxViews {
			return errTooManyViews
		}
		g = &viewGroup{cache: cache.NewLinearCache(v.typeURL, cache.WithLogger(discardLogger{}))}
		g.cache.SetResources(v.view(key))
		v.groups[key] = g
	}
	g.streams++
	return nil
}

// release ends one stream's use of the view of node's key; the view goes
// with its last stream.
func (v *viewCache) release(node *v3corepb.Node) {
	key := v.key(node)
	if key == "" {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if g, ok := v.groups[key]; ok {
		if g.streams--; g.streams <= 0 {
			delete(v.groups, key)
		}
	}
}

// views returns the number of per-client views.
func (v *viewCache) views() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.groups)
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

// cacheFor returns the cache a client with node reads: the base cache, its
// key's retained view, or, for a key no open stream retains (a one-off
// fetch, the admin endpoint), a view made for the occasion and not kept.
func (v *viewCache) cacheFor(node *v3corepb.Node) *cache.LinearCache {
	key := v.key(node)
	if key == "" {
		return v.base
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if g, ok := v.groups[key]; ok {
		return g.cache
	}
	c := cache.NewLinearCache(v.typeURL, cache.WithLogger(discardLogger{}))
	c.SetResources(v.view(key))
	return c
}

// sync installs a new view function and brings every client's cache in
// line with it, updating only resources that changed.
func (v *viewCache) sync(view func(key string) map[string]types.Resource) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.view = view
	var errs []error
	for key, g := range v.groups {
		c := g.cache
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
