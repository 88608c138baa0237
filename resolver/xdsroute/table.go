package xdsroute

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"

	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/matcher"
	"github.com/trellismesh/trellis/internal/xdsclient"
)

// Table follows the routes of one mesh target and matches calls against
// them. T is what the Table's convert function derives from each route when
// a route configuration arrives, so that per-call work is matching only.
// It is safe for concurrent use.
type Table[T any] struct {
	client    *xdsclient.Client
	authority string
	convert   func(*v3routepb.VirtualHost, *v3routepb.Route) T

	ready     chan struct{} // closed when the first outcome is known
	readyOnce sync.Once
	current   atomic.Pointer[compiled[T]]

	mu        sync.Mutex // guards the watches
	closed    bool
	cancelLDS func()
	rdsName   string
	cancelRDS func()
}

// Watch starts following the listener named target ("reviews:9080", the
// authority grpc-go's xDS resolver uses) and its route configuration. It
// does not block. Call Close to stop.
func Watch[T any](c *xdsclient.Client, target string, convert func(*v3routepb.Route) T) *Table[T] {
	return WatchVirtualHost(c, target, func(_ *v3routepb.VirtualHost, r *v3routepb.Route) T { return convert(r) })
}

// WatchVirtualHost is Watch with a convert function that also sees the
// virtual host a route belongs to, for what a virtual host gives its routes
// (such as typed_per_filter_config).
func WatchVirtualHost[T any](c *xdsclient.Client, target string, convert func(*v3routepb.VirtualHost, *v3routepb.Route) T) *Table[T] {
	t := &Table[T]{client: c, authority: target, convert: convert, ready: make(chan struct{})}
	cancel := c.Watch(resourcev3.ListenerType, target, xdsclient.WatcherFuncs{
		UpdateFunc:   t.onListener,
		NotFoundFunc: t.onNotFound,
	})
	t.mu.Lock()
	t.cancelLDS = cancel
	t.mu.Unlock()
	return t
}

// Close stops following the target. It is idempotent.
func (t *Table[T]) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	if t.cancelLDS != nil {
		t.cancelLDS()
	}
	if t.cancelRDS != nil {
		t.cancelRDS()
	}
	t.markReady()
}

func (t *Table[T]) markReady() { t.readyOnce.Do(func() { close(t.ready) }) }

func (t *Table[T]) onListener(m proto.Message) {
	hcm := new(v3hcmpb.HttpConnectionManager)
	if err := m.(*v3listenerpb.Listener).GetApiListener().GetApiListener().UnmarshalTo(hcm); err != nil {
		return // the xDS client validated it; cannot happen
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if rc := hcm.GetRouteConfig(); rc != nil {
		t.stopRDS()
		t.install(rc)
		return
	}
	name := hcm.GetRds().GetRouteConfigName()
	if name == t.rdsName {
		return
	}
	t.stopRDS()
	t.rdsName = name
	t.cancelRDS = t.client.Watch(resourcev3.RouteType, name, xdsclient.WatcherFuncs{
		UpdateFunc: func(m proto.Message) {
			t.mu.Lock()
			defer t.mu.Unlock()
			if !t.closed && t.rdsName == name {
				t.install(m.(*v3routepb.RouteConfiguration))
			}
		},
		NotFoundFunc: t.onNotFound,
	})
}

func (t *Table[T]) stopRDS() {
	if t.cancelRDS != nil {
		t.cancelRDS()
	}
	t.cancelRDS, t.rdsName = nil, ""
}

// onNotFound forgets the routes: calls then match nothing, as grpc-go fails
// them when the resource is gone.
func (t *Table[T]) onNotFound() {
	t.current.Store(nil)
	t.markReady()
}

func (t *Table[T]) install(rc *v3routepb.RouteConfiguration) {
	t.current.Store(compile(rc, t.authority, t.convert))
	t.markReady()
}

// Lookup returns the route a gRPC call to method ("/pkg.Service/Method")
// with outgoing metadata md takes, and what convert made of it, matching
// headers as grpc-go does (content-type is application/grpc, binary
// headers never match). Until the first route configuration (or the news
// that there is none) has arrived, it waits for it or for ctx to be done.
// ok is false when no route matches.
func (t *Table[T]) Lookup(ctx context.Context, method string, md metadata.MD) (route *v3routepb.Route, v T, ok bool) {
	return t.lookup(ctx, method, headerSource{md: md}, true)
}

// LookupOutgoing is Lookup with the metadata of ctx's outgoing context,
// which it reads (a copy, in grpc-go) only if a route it tries has header
// matchers.
func (t *Table[T]) LookupOutgoing(ctx context.Context, method string) (route *v3routepb.Route, v T, ok bool) {
	return t.lookup(ctx, method, headerSource{outgoing: true}, true)
}

// LookupHTTP is Lookup for an HTTP request: path is the request's
// canonical path (without query), headers its headers with lowercase
// names, matched as Envoy matches them (repeated values joined with ",").
func (t *Table[T]) LookupHTTP(ctx context.Context, path string, headers map[string][]string) (route *v3routepb.Route, v T, ok bool) {
	return t.lookup(ctx, path, headerSource{md: headers}, false)
}

// LookupHTTPFunc is LookupHTTP with the headers made by headers, which it
// calls (at most once) only if a route it tries has header matchers.
func (t *Table[T]) LookupHTTPFunc(ctx context.Context, path string, headers func() map[string][]string) (route *v3routepb.Route, v T, ok bool) {
	return t.lookup(ctx, path, headerSource{fn: headers}, false)
}

// headerSource gives a lookup the call's headers: md itself, else made by
// fn, else (outgoing) the outgoing metadata of the lookup's context, at
// most once and only when a route has header matchers.
type headerSource struct {
	md       map[string][]string
	fn       func() map[string][]string
	outgoing bool
	done     bool
}

func (h *headerSource) get(ctx context.Context) map[string][]string {
	if h.md != nil || h.done {
		return h.md
	}
	h.done = true
	switch {
	case h.fn != nil:
		h.md = h.fn()
	case h.outgoing:
		h.md, _ = metadata.FromOutgoingContext(ctx)
	}
	return h.md
}

func (t *Table[T]) lookup(ctx context.Context, method string, hs headerSource, grpc bool) (route *v3routepb.Route, v T, ok bool) {
	select {
	case <-t.ready:
	default:
		select {
		case <-t.ready:
		case <-ctx.Done():
			return nil, v, false
		}
	}
	c := t.current.Load()
	if c == nil {
		return nil, v, false
	}
	for i := range c.routes {
		r := &c.routes[i]
		if r.matches(ctx, method, &hs, grpc) {
			return r.route, r.value, true
		}
	}
	return nil, v, false
}

// Known reports, once the first answer has arrived (or ctx is done),
// whether the target has routes.
func (t *Table[T]) Known(ctx context.Context) bool {
	select {
	case <-t.ready:
	default:
		select {
		case <-t.ready:
		case <-ctx.Done():
			return false
		}
	}
	return t.current.Load() != nil
}

type compiled[T any] struct {
	routes []compiledRoute[T]
}

type compiledRoute[T any] struct {
	route *v3routepb.Route
	value T

	path     *matcher.String
	headers  []headerMatcher
	fraction uint32 // parts per million; 1e6 matches all
}

// compile selects the virtual host for authority, as gRFC A28 and Envoy
// choose it (exact domain, then the longest suffix wildcard, then the
// longest prefix wildcard, then "*"), and prepares its routes.
func compile[T any](rc *v3routepb.RouteConfiguration, authority string, convert func(*v3routepb.VirtualHost, *v3routepb.Route) T) *compiled[T] {
	vh := pickVirtualHost(rc.GetVirtualHosts(), authority)
	c := &compiled[T]{}
	for _, r := range vh.GetRoutes() {
		cr, ok := compileRoute[T](r)
		if !ok {
			continue // a matcher this client cannot evaluate never matches
		}
		cr.value = convert(vh, r)
		c.routes = append(c.routes, cr)
	}
	return c
}

func pickVirtualHost(vhs []*v3routepb.VirtualHost, authority string) *v3routepb.VirtualHost {
	host := strings.ToLower(authority)
	var best *v3routepb.VirtualHost
	bestRank, bestLen := 0, -1
	for _, vh := range vhs {
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			rank, l := 0, len(d)
			switch {
			case d == host:
				rank = 4
			case d == "*":
				rank = 1
			case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]):
				rank = 3
			case strings.HasSuffix(d, "*") && strings.HasPrefix(host, d[:len(d)-1]):
				rank = 2
			}
			if rank > bestRank || (rank == bestRank && rank > 0 && l > bestLen) {
				best, bestRank, bestLen = vh, rank, l
			}
		}
	}
	return best
}

func compileRoute[T any](r *v3routepb.Route) (compiledRoute[T], bool) {
	m := r.GetMatch()
	cr := compiledRoute[T]{route: r, fraction: 1_000_000}
	path, err := matcher.CompileRoutePath(m)
	if err != nil {
		return cr, false
	}
	cr.path = path
	for _, h := range m.GetHeaders() {
		hm, err := matcher.CompileHeader(h)
		if err != nil {
			return cr, false
		}
		cr.headers = append(cr.headers, headerMatcher{
			Header:  hm,
			binary:  strings.HasSuffix(hm.Name(), "-bin"),
			content: hm.Name() == "content-type",
		})
	}
	if rf := m.GetRuntimeFraction().GetDefaultValue(); rf != nil {
		cr.fraction = perMillion(rf)
	}
	return cr, true
}

func perMillion(f *v3typepb.FractionalPercent) uint32 {
	n := uint64(f.GetNumerator())
	switch f.GetDenominator() {
	case v3typepb.FractionalPercent_HUNDRED:
		n *= 10_000
	case v3typepb.FractionalPercent_TEN_THOUSAND:
		n *= 100
	}
	return uint32(min(n, 1_000_000))
}

func (r *compiledRoute[T]) matches(ctx context.Context, method string, hs *headerSource, grpc bool) bool {
	if !r.path.Match(method) {
		return false
	}
	if len(r.headers) > 0 {
		if !r.headersMatch(hs.get(ctx), grpc) {
			return false
		}
	}
	return r.fraction >= 1_000_000 || rand.Uint32N(1_000_000) < r.fraction
}

func (r *compiledRoute[T]) headersMatch(md map[string][]string, grpc bool) bool {
	for _, h := range r.headers {
		if !h.matches(md, grpc) {
			return false
		}
	}
	return true
}

// headerMatcher is one Envoy HeaderMatcher, compiled by package
// internal/matcher as the authorization engine (package authz) compiles
// its own, so that over HTTP a header matcher decides as a policy does.
// Over gRPC, the route must be the one grpc-go's own xDS resolver picks
// while it routes mesh.Dial's calls, so headers are seen as grpc-go shows
// them to its matchers: binary ("-bin") headers are absent, content-type is
// "application/grpc", and treat_missing_header_as_empty (which grpc-go does
// not read) is not applied.
type headerMatcher struct {
	*matcher.Header
	binary  bool // a "-bin" header
	content bool // content-type
}

func (h headerMatcher) matches(md map[string][]string, grpc bool) bool {
	if !grpc {
		return h.Match(md[h.Name()])
	}
	switch {
	case h.content:
		return h.MatchValue("application/grpc")
	case h.binary:
	default:
		if vs := md[h.Name()]; len(vs) > 0 {
			return h.Match(vs)
		}
	}
	return !h.TreatsMissingAsEmpty() && h.MatchMissing()
}
