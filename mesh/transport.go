package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3faultpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	"github.com/trellismesh/trellis/balancer/pick"
	"github.com/trellismesh/trellis/internal/lrs"
	"github.com/trellismesh/trellis/internal/mtls"
	"github.com/trellismesh/trellis/internal/urlpath"
	"github.com/trellismesh/trellis/resolver/xdscluster"
	"github.com/trellismesh/trellis/resolver/xdsroute"
	"github.com/trellismesh/trellis/retry"
	"github.com/trellismesh/trellis/telemetry"
)

// meshLookup bounds how long the first request to a host waits to learn
// whether the control plane knows it.
var meshLookup = time.Second

// maxRepicks bounds the picks a retry makes to avoid endpoints already
// tried (Istio's host_selection_retry_max_attempts).
const maxRepicks = 5

// defaultMaxRequests is the circuit breaker of a cluster that sets none,
// grpc-go's (and Envoy's) default.
const defaultMaxRequests = 1024

// ErrNoRoute is returned for a request to a mesh host that no route of the
// host matches.
var ErrNoRoute = errors.New("mesh: no route")

// Transport is an http.RoundTripper that sends requests for mesh hosts
// ("http://reviews:9080/...") through the mesh, with the same configuration
// as gRPC calls: VirtualService routes (path, headers, weights, subsets),
// timeouts, retries (retryOn 5xx, gateway-error, connect-failure, reset,
// retriable-4xx, status codes; per-try timeouts; the retry budget), fault
// injection, and per cluster the DestinationRule's load balancing, circuit
// breaking, outlier ejection and mutual TLS to exact SPIFFE IDs, decided per
// endpoint: each endpoint must present its own identity when the control
// plane names it, and only automatic mTLS sends plaintext, to the endpoints
// without identity (never under ISTIO_MUTUAL). Requests
// to other hosts go to http.DefaultTransport unless WithMeshOnly is given.
// A host is a mesh host if the control plane has a listener for it (as
// for gRPC targets); IP addresses and localhost never are. Request bodies
// are resent on retry only if the request has GetBody (http.NewRequest
// sets it for in-memory bodies); other requests are not retried.
//
// A Transport is safe for concurrent use. Close it to release its
// connection to the control plane.
type Transport struct {
	opts  *options
	err   error // why the Transport cannot work, if it cannot
	base  http.RoundTripper
	plain *http.Transport
	chash uint64 // the Transport's own hash, for useSourceIp

	shared *sharedXDSClient
	id     *workloadIdentity
	tel    *telemetry.Telemetry // nil: off
	lrs    *lrs.Reporter        // load reports to the control plane (LRS)

	// hosts and clusters are read without a lock on every request; they
	// are replaced (copied) under mu when one is added.
	hosts    atomic.Pointer[map[string]*meshHost]
	clusters atomic.Pointer[map[string]*meshCluster]
	budget   *retry.BudgetTracker

	mu     sync.Mutex // serialises changes to hosts and clusters
	closed bool
}

var _ http.RoundTripper = (*Transport)(nil)

// NewTransport returns a Transport. It does no I/O; it connects to the
// control plane on the first request.
func NewTransport(opts ...TransportOption) *Transport {
	o := newOptions(opts, TransportOption.applyTransport)
	t := &Transport{
		opts:   o,
		base:   http.DefaultTransport,
		plain:  &http.Transport{Proxy: nil, ForceAttemptHTTP2: false, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second},
		chash:  rand.Uint64(),
		budget: retry.NewBudgetTracker(o.retryBudget),
	}
	t.hosts.Store(&map[string]*meshHost{})
	t.clusters.Store(&map[string]*meshCluster{})
	t.id = o.acquireIdentity()
	link, err := o.link(t.id)
	if err == nil {
		t.tel, err = o.newTelemetry()
	}
	if err == nil {
		t.shared, err = o.acquireXDSClient(link)
	}
	if err == nil {
		t.shared.observe(t.tel)
	}
	if err == nil { // the control plane sees HTTP load as it sees grpc-go's
		node, nerr := o.node().Proto()
		t.lrs, err = lrs.New(lrs.Config{Server: link.addr, Node: node, Logger: o.logger, DialOptions: link.dialOptions()})
		err = errors.Join(nerr, err)
	}
	if err != nil {
		t.err = fmt.Errorf("mesh: %w", err)
	}
	return t
}

// HTTPClient returns an *http.Client whose Transport is a mesh Transport
// (see Transport). Close its transport, client.Transport.(*mesh.Transport),
// when done with it.
func HTTPClient(opts ...TransportOption) *http.Client {
	return &http.Client{Transport: NewTransport(opts...)}
}

// WithMeshOnly makes a Transport refuse requests to hosts outside the mesh
// instead of sending them with http.DefaultTransport.
func WithMeshOnly() TransportOption {
	return transportOption(func(o *options) { o.meshOnly = true })
}

// Close stops the Transport: its watches end and its idle connections
// close. Requests in flight finish; new ones fail. It is idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	hosts, clusters := *t.hosts.Load(), *t.clusters.Load()
	t.hosts.Store(&map[string]*meshHost{})
	t.clusters.Store(&map[string]*meshCluster{})
	t.mu.Unlock()
	for _, h := range hosts {
		h.table.Close()
	}
	for _, c := range clusters {
		c.cancel()
		c.closeIdle()
	}
	t.plain.CloseIdleConnections()
	if t.shared != nil {
		releaseXDSClient(t.shared)
	}
	releaseIdentity(t.id)
	t.lrs.Close()
	return nil
}

// CloseIdleConnections closes idle connections to mesh endpoints (and
// http.DefaultTransport's, as http.Client.CloseIdleConnections expects).
func (t *Transport) CloseIdleConnections() {
	t.plain.CloseIdleConnections()
	for _, c := range *t.clusters.Load() {
		c.closeIdle()
	}
	if ci, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// meshHost is a host's routes.
type meshHost struct {
	table     *xdsroute.Table[*httpRoute]
	authority []string    // the host, as the ":authority" header's values
	decided   atomic.Bool // the first lookup has had its answer or its time
}

// external reports whether a host is never a mesh host.
func external(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	return h == "localhost" || net.ParseIP(strings.Trim(h, "[]")) != nil
}

// knownHost returns the host's routes if a request has asked for them
// before; it takes no lock.
func (t *Transport) knownHost(name string) *meshHost {
	return (*t.hosts.Load())[name]
}

func (t *Transport) host(name string) (*meshHost, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("mesh: transport closed")
	}
	old := *t.hosts.Load()
	if h := old[name]; h != nil {
		return h, nil
	}
	h := &meshHost{table: xdsroute.WatchVirtualHost(t.shared.client, name, httpRouteWithLimit), authority: []string{name}}
	next := make(map[string]*meshHost, len(old)+1)
	maps.Copy(next, old)
	next[name] = h
	t.hosts.Store(&next)
	return h, nil
}

// expired is a context that is done: a lookup with it does not wait.
var expired = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// isMesh reports whether the control plane knows host, waiting up to
// meshLookup the first time.
func (h *meshHost) isMesh(ctx context.Context) bool {
	if h.decided.Load() {
		return h.table.Known(expired) // the answer so far, without waiting
	}
	wctx, cancel := context.WithTimeout(ctx, meshLookup)
	defer cancel()
	known := h.table.Known(wctx)
	h.decided.Store(true)
	return known
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.tel.RoundTrip(req, t.roundTrip)
}

func (t *Transport) roundTrip(req *http.Request) (*http.Response, error) {
	if t.err != nil {
		closeBody(req)
		return nil, t.err
	}
	name := req.URL.Host
	if req.URL.Scheme != "http" {
		return t.passThrough(req)
	}
	h := t.knownHost(name) // only hosts that are not external are kept
	if h == nil {
		if external(name) {
			return t.passThrough(req)
		}
		var err error
		if h, err = t.host(name); err != nil {
			closeBody(req)
			return nil, err
		}
	}
	if !h.isMesh(req.Context()) {
		return t.passThrough(req)
	}
	return t.meshRoundTrip(req, h)
}

func (t *Transport) passThrough(req *http.Request) (*http.Response, error) {
	if t.opts.meshOnly {
		closeBody(req)
		return nil, fmt.Errorf("mesh: %s is not a mesh host", req.URL.Host)
	}
	return t.base.RoundTrip(req)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

func (t *Transport) meshRoundTrip(req *http.Request, h *meshHost) (*http.Response, error) {
	ctx := req.Context()
	path, err := urlpath.Canonical(req.URL.EscapedPath())
	if err != nil {
		closeBody(req)
		return nil, fmt.Errorf("mesh: request path: %w", err)
	}
	// The headers as routes match them, made only if a route or the hash
	// policy reads them.
	var headers map[string][]string
	headersOf := func() map[string][]string {
		if headers == nil {
			headers = make(map[string][]string, len(req.Header)+2)
			merged := false
			for k, v := range req.Header {
				lk := strings.ToLower(k)
				_, merged = headers[lk]
				if merged {
					break
				}
				headers[lk] = v
			}
			if merged {
				// Names that differ only in case (set on the map
				// directly) are one header on the wire, which routes
				// must see as one: all its values, in the order of the
				// names, as HTTP/1 writes them.
				clear(headers)
				for _, k := range slices.Sorted(maps.Keys(req.Header)) {
					lk := strings.ToLower(k)
					headers[lk] = append(slices.Clip(headers[lk]), req.Header[k]...)
				}
			}
			headers[":method"] = methodValues(req.Method)
			headers[":authority"] = h.authority
		}
		return headers
	}
	_, r, ok := h.table.LookupHTTPFunc(ctx, path, headersOf)
	if !ok || r == nil || len(r.clusters) == 0 {
		closeBody(req)
		return nil, fmt.Errorf("%w for %s%s", ErrNoRoute, req.URL.Host, path)
	}
	if resp, done := r.fault.inject(req); done {
		t.tel.Event(ctx, telemetry.EventFaultAbort, req.URL.Host, "")
		return resp, nil
	}
	if resp, limited := t.rateLimited(req, r); limited {
		return resp, nil
	}
	hash := t.hashOf(r, headersOf)
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		resp, err := t.attempts(ctx, req, r, hash)
		return releaseOnClose(resp, cancel), err
	}
	return t.attempts(ctx, req, r, hash)
}

// methodValues returns []string{method}, shared for the common methods.
// Callers must not modify it.
func methodValues(method string) []string {
	switch method {
	case http.MethodGet:
		return methodGet
	case http.MethodPost:
		return methodPost
	}
	return []string{method}
}

var methodGet, methodPost = []string{http.MethodGet}, []string{http.MethodPost}

// attempts sends req by the route's retry policy.
func (t *Transport) attempts(ctx context.Context, req *http.Request, r *httpRoute, hash uint64) (*http.Response, error) {
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	attempts := max(r.retry.attempts, 1)
	if !replayable {
		attempts = 1
	}
	t.budget.Call()
	tried := map[string]bool{}
	for n := 1; ; n++ {
		resp, class, err := t.attempt(ctx, req, r, n, hash, tried)
		last := n >= attempts || ctx.Err() != nil || !r.retry.retriable(resp, class) || !t.budget.TryRetry()
		if last {
			if err != nil {
				return nil, err
			}
			return resp, nil
		}
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		p := retry.Policy{BaseBackoff: r.retry.base, MaxBackoff: r.retry.max}
		timer := time.NewTimer(p.Backoff(n))
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			if err != nil {
				return nil, err
			}
			return nil, ctx.Err()
		}
	}
}

// outcome classifies an attempt for retries and outlier detection.
type outcome int

const (
	outcomeOK        outcome = iota
	outcomeStatus            // a response; its code decides
	outcomeConnect           // no connection
	outcomeReset             // the connection broke before a response
	outcomeTimeout           // the per-try timeout
	outcomeOverload          // the circuit breaker refused
	outcomeNoHealthy         // no endpoint to send to
)

// attempt makes one attempt of req on an endpoint of one of the route's
// clusters.
//
// A retry avoids the endpoints earlier attempts used, as Istio's retries
// do (Envoy's previous_hosts predicate): up to maxRepicks picks are made
// for an endpoint not tried yet.
func (t *Transport) attempt(ctx context.Context, req *http.Request, r *httpRoute, n int, hash uint64, tried map[string]bool) (*http.Response, outcome, error) {
	c, err := t.cluster(r.pickCluster())
	if err != nil {
		return nil, outcomeNoHealthy, err
	}
	snap, err := c.wait(ctx)
	if err != nil {
		return nil, outcomeNoHealthy, err
	}
	st, picker := snap.state, snap.picker
	ep, done, err := picker.Pick(hash)
	for i := 0; err == nil && tried[ep.Address] && i < maxRepicks; i++ {
		done(pick.Ignored)
		ep, done, err = picker.Pick(rand.Uint64())
	}
	if err == nil {
		tried[ep.Address] = true
	}
	if errors.Is(err, pick.ErrOverloaded) {
		t.tel.Event(ctx, telemetry.EventCircuitBreaker, req.URL.Host, st.Name)
		return overloaded(req), outcomeOverload, nil
	}
	if err != nil {
		t.tel.Event(ctx, telemetry.EventNoHealthy, req.URL.Host, st.Name)
		return serviceUnavailable(req, "no healthy upstream"), outcomeNoHealthy, nil
	}
	rt, secure, err := c.transport(t, snap, ep.Address)
	if err != nil {
		done(pick.Failure)
		return nil, outcomeConnect, err
	}
	// An attempt has a context of its own only for a per-try timeout;
	// otherwise it is the request's, and nothing needs releasing.
	actx, cancel := ctx, context.CancelFunc(nil)
	var timedOut atomic.Bool
	var timer *time.Timer
	if r.retry.perTry > 0 {
		actx, cancel = context.WithCancel(ctx)
		timer = time.AfterFunc(r.retry.perTry, func() { timedOut.Store(true); cancel() })
	}
	// The attempt's request: a shallow copy with its own URL. The headers
	// are copied only if telemetry may add to them (trace context); the
	// endpoint's transport only reads them.
	out := req.WithContext(actx)
	u := *req.URL
	out.URL = &u
	if t.tel.Active() {
		out.Header = req.Header.Clone()
	}
	out.URL.Host = ep.Address
	if secure {
		out.URL.Scheme = "https" // mutual TLS to the endpoint
	}
	out.Host = req.Host
	if out.Host == "" {
		out.Host = req.URL.Host
	}
	if n > 1 && req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			if cancel != nil {
				cancel()
			}
			done(pick.Success) // not the endpoint's fault
			return nil, outcomeConnect, err
		}
		out.Body = body
	}
	end := t.tel.StartAttempt(out, n, ep.Address, st.Name)
	load := t.lrs.Start(st.Name, ep.Locality)
	resp, err := rt.RoundTrip(out)
	load.Done(lrs.HTTPOutcome(resp, err))
	end(resp, err)
	if timer != nil {
		timer.Stop() // the per-try timeout bounds the wait for the response headers
	}
	if err != nil {
		if cancel != nil {
			cancel()
		}
		switch {
		case timedOut.Load():
			done(pick.GatewayFailure)
			return gatewayTimeout(req), outcomeTimeout, nil
		case isConnectError(err):
			done(pick.Unreachable) // out of picks for a backoff, as a failed subchannel
			return nil, outcomeConnect, fmt.Errorf("mesh: %s: %w", ep.Address, err)
		case ctx.Err() != nil:
			done(pick.Success)
			return nil, outcomeReset, err
		default:
			done(pick.GatewayFailure)
			return nil, outcomeReset, fmt.Errorf("mesh: %s: %w", ep.Address, err)
		}
	}
	switch code := resp.StatusCode; {
	case code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		done(pick.GatewayFailure)
	case code >= 500:
		done(pick.Failure)
	default:
		done(pick.Success)
	}
	if cancel == nil {
		return resp, outcomeStatus, nil
	}
	return releaseOnClose(resp, cancel), outcomeStatus, nil
}

func isConnectError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// releaseOnClose makes closing resp's body call release.
func releaseOnClose(resp *http.Response, release context.CancelFunc) *http.Response {
	if resp == nil {
		release()
		return nil
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
	return resp
}

type releasingBody struct {
	io.ReadCloser
	release context.CancelFunc
	once    sync.Once
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

func synthetic(req *http.Request, code int, header http.Header, body string) *http.Response {
	if header == nil {
		header = http.Header{}
	}
	header.Set("Content-Type", "text/plain; charset=utf-8")
	return &http.Response{
		Status: fmt.Sprintf("%d %s", code, http.StatusText(code)), StatusCode: code,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: header, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
		Request: req,
	}
}

func overloaded(req *http.Request) *http.Response {
	return synthetic(req, http.StatusServiceUnavailable, http.Header{"X-Envoy-Overloaded": {"true"}}, "upstream overloaded")
}

func serviceUnavailable(req *http.Request, why string) *http.Response {
	return synthetic(req, http.StatusServiceUnavailable, nil, why)
}

func gatewayTimeout(req *http.Request) *http.Response {
	return synthetic(req, http.StatusGatewayTimeout, nil, "upstream request timeout")
}

// hashOf is the request's hash for ring hash: the route's hash policy
// (a header, or the Transport itself for useSourceIp), else random.
func (t *Transport) hashOf(r *httpRoute, headers func() map[string][]string) uint64 {
	switch {
	case r.hashHeader != "":
		if v := headers()[r.hashHeader]; len(v) > 0 {
			return xxhash.Sum64String(strings.Join(v, ","))
		}
	case r.hashChannel:
		return t.chash
	}
	return rand.Uint64()
}

// httpRoute is what the HTTP client needs of a route, converted once per
// route configuration.
type httpRoute struct {
	clusters    []weightedCluster
	total       uint32
	timeout     time.Duration
	retry       httpRetry
	fault       *httpFault
	hashHeader  string
	hashChannel bool
	limit       *routeLimit // client-side rate limit; nil: none
}

type weightedCluster struct {
	name   string
	weight uint32
}

func (r *httpRoute) pickCluster() string {
	if len(r.clusters) == 1 || r.total == 0 {
		return r.clusters[0].name
	}
	n := rand.Uint32N(r.total)
	for _, c := range r.clusters {
		if n < c.weight {
			return c.name
		}
		n -= c.weight
	}
	return r.clusters[len(r.clusters)-1].name
}

// httpRetry is a route's retry policy for HTTP, as Envoy reads it.
type httpRetry struct {
	attempts  int
	on        map[string]bool
	codes     []int
	perTry    time.Duration
	base, max time.Duration
}

// retriable reports whether an attempt's outcome may be retried.
func (p *httpRetry) retriable(resp *http.Response, o outcome) bool {
	if p.attempts <= 1 {
		return false
	}
	on := p.on
	switch o {
	case outcomeConnect:
		return on["connect-failure"] || on["5xx"] || on["gateway-error"] || on["reset"]
	case outcomeReset:
		return on["reset"] || on["5xx"]
	case outcomeTimeout:
		return true // what a per-try timeout is for
	case outcomeOverload, outcomeNoHealthy, outcomeOK:
		return false
	}
	if resp == nil {
		return false
	}
	code := resp.StatusCode
	if code < http.StatusConflict && !slices.Contains(p.codes, code) {
		return false // the common case: no condition retries a success
	}
	switch {
	case on["5xx"] && code >= 500:
		return true
	case on["gateway-error"] && (code == 502 || code == 503 || code == 504):
		return true
	case on["retriable-4xx"] && code == http.StatusConflict:
		return true
	case on["retriable-status-codes"] && slices.Contains(p.codes, code):
		return true
	}
	return false
}

// httpFault is a route's fault injection.
type httpFault struct {
	delay    time.Duration
	delayPPM uint32
	abort    int // HTTP status; 0: none
	abortPPM uint32
}

// inject applies the fault to req: it waits the delay, if chosen, and
// answers with the abort, if chosen.
func (f *httpFault) inject(req *http.Request) (*http.Response, bool) {
	if f == nil {
		return nil, false
	}
	if f.delay > 0 && rand.Uint32N(1_000_000) < f.delayPPM {
		t := time.NewTimer(f.delay)
		select {
		case <-t.C:
		case <-req.Context().Done():
			t.Stop()
		}
	}
	if f.abort > 0 && rand.Uint32N(1_000_000) < f.abortPPM {
		closeBody(req)
		return synthetic(req, f.abort, nil, "fault filter abort"), true
	}
	return nil, false
}

// httpRouteOf converts a route for the HTTP client.
func httpRouteOf(route *v3routepb.Route) *httpRoute {
	a := route.GetRoute()
	if a == nil {
		return nil
	}
	r := &httpRoute{timeout: a.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration()}
	if c := a.GetCluster(); c != "" {
		r.clusters = []weightedCluster{{name: c, weight: 1}}
	}
	for _, wc := range a.GetWeightedClusters().GetClusters() {
		w := wc.GetWeight().GetValue()
		r.clusters = append(r.clusters, weightedCluster{name: wc.GetName(), weight: w})
		r.total += w
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		r.retry.attempts = 2
		if n := rp.GetNumRetries(); n != nil {
			r.retry.attempts = int(n.GetValue()) + 1
		}
		r.retry.on = map[string]bool{}
		for _, s := range strings.Split(rp.GetRetryOn(), ",") {
			r.retry.on[strings.TrimSpace(strings.ToLower(s))] = true
		}
		for _, c := range rp.GetRetriableStatusCodes() {
			r.retry.codes = append(r.retry.codes, int(c))
		}
		r.retry.perTry = rp.GetPerTryTimeout().AsDuration()
		r.retry.base = rp.GetRetryBackOff().GetBaseInterval().AsDuration()
		r.retry.max = rp.GetRetryBackOff().GetMaxInterval().AsDuration()
	}
	for _, hp := range a.GetHashPolicy() {
		if h := hp.GetHeader(); h != nil {
			r.hashHeader = strings.ToLower(h.GetHeaderName())
			break
		}
		if hp.GetFilterState().GetKey() == "io.grpc.channel_id" {
			r.hashChannel = true
			break
		}
	}
	if cfg := route.GetTypedPerFilterConfig()["envoy.filters.http.fault"]; cfg != nil {
		f := new(v3faultpb.HTTPFault)
		if cfg.UnmarshalTo(f) == nil {
			hf := &httpFault{}
			if d := f.GetDelay(); d != nil {
				hf.delay = d.GetFixedDelay().AsDuration()
				hf.delayPPM = perMillion(d.GetPercentage().GetNumerator(), d.GetPercentage().GetDenominator().String())
			}
			if ab := f.GetAbort(); ab != nil {
				hf.abortPPM = perMillion(ab.GetPercentage().GetNumerator(), ab.GetPercentage().GetDenominator().String())
				if s := ab.GetHttpStatus(); s != 0 {
					hf.abort = int(s)
				} else {
					hf.abort = httpStatusOf(codes.Code(ab.GetGrpcStatus()))
				}
			}
			r.fault = hf
		}
	}
	return r
}

func perMillion(n uint32, denominator string) uint32 {
	switch denominator {
	case "HUNDRED":
		n *= 10_000
	case "TEN_THOUSAND":
		n *= 100
	}
	return min(n, 1_000_000)
}

// httpStatusOf maps a gRPC code to the HTTP status gRPC's HTTP mapping
// gives it, for a fault abort written with a gRPC status on an HTTP route.
func httpStatusOf(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// meshCluster is one cluster's endpoints, picker and transport.
type meshCluster struct {
	cancel func()
	ready  chan struct{}
	once   sync.Once

	// snap is what requests read, without a lock: the state and picker,
	// then the TLS transport made for that state.
	snap atomic.Pointer[clusterSnap]
	tlsc atomic.Pointer[clusterTLS]

	mu     sync.Mutex // serialises updates and the making of transports
	picker *pick.Picker

	onEject func(address string) // counts ejections; nil without telemetry
}

type clusterSnap struct {
	state  *xdscluster.State
	picker *pick.Picker // nil until the cluster has had a good state
	// tls holds, for a cluster with TLS, the endpoints that are reached in
	// plaintext or must present a named identity, by address; the others
	// are reached over mutual TLS accepting any of the cluster's SANs.
	tls map[string]endpointTLS
}

// endpointTLS is how to reach one endpoint of a cluster with TLS.
type endpointTLS struct {
	plaintext bool   // automatic mTLS, and the endpoint has no identity
	identity  string // the SPIFFE ID it must present; "" for any of the cluster's
}

// clusterTLS holds the mutual TLS transports of a cluster for the SPIFFE
// IDs key (and the state it was last checked for): one per endpoint
// identity, "" for endpoints accepting any of the cluster's SANs. It is
// immutable once stored.
type clusterTLS struct {
	key   string
	state *xdscluster.State
	trs   map[string]*http.Transport
}

func (t *Transport) cluster(name string) (*meshCluster, error) {
	if c := (*t.clusters.Load())[name]; c != nil {
		return c, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("mesh: transport closed")
	}
	old := *t.clusters.Load()
	if c := old[name]; c != nil {
		return c, nil
	}
	c := &meshCluster{ready: make(chan struct{})}
	if t.tel != nil {
		c.onEject = func(string) { t.tel.Event(context.Background(), telemetry.EventEjection, "", name) }
	}
	next := make(map[string]*meshCluster, len(old)+1)
	maps.Copy(next, old)
	next[name] = c
	t.clusters.Store(&next)
	c.cancel = xdscluster.Watch(t.shared.client, name, c.update)
	return c, nil
}

func (c *meshCluster) update(st *xdscluster.State) {
	c.mu.Lock()
	if st.Err == nil {
		cfg, eps := pickConfig(st)
		cfg.OnEject = c.onEject
		if c.picker == nil {
			c.picker = pick.New(cfg, eps)
		} else {
			c.picker.Update(cfg, eps)
		}
	}
	snap := &clusterSnap{state: st, picker: c.picker}
	if st.Err == nil && st.TLS != nil {
		for _, e := range st.Endpoints {
			if e.Plaintext || e.Identity != "" {
				if snap.tls == nil {
					snap.tls = map[string]endpointTLS{}
				}
				snap.tls[e.Address] = endpointTLS{plaintext: e.Plaintext, identity: e.Identity}
			}
		}
	}
	c.snap.Store(snap)
	c.mu.Unlock()
	c.once.Do(func() { close(c.ready) })
}

func pickConfig(st *xdscluster.State) (pick.Config, []pick.Endpoint) {
	cfg := pick.Config{
		Policy:      st.LB.Policy,
		ChoiceCount: st.LB.ChoiceCount,
		MinRingSize: st.LB.MinRingSize,
		MaxRequests: st.MaxRequests,
		// EWMA's parameters (pick.EWMA is xdscluster.EWMA, "ewma").
		Decay:          st.LB.Decay,
		DefaultRTT:     st.LB.DefaultRTT,
		FailurePenalty: st.LB.FailurePenalty,
		// One outlier config type: pick.Outlier is xdscluster.OutlierConfig.
		Outlier: st.Outlier,
	}
	if cfg.MaxRequests == 0 {
		cfg.MaxRequests = defaultMaxRequests
	}
	eps := make([]pick.Endpoint, len(st.Endpoints))
	for i, e := range st.Endpoints {
		eps[i] = pick.Endpoint{Address: e.Address, Weight: e.Weight, Locality: e.Locality, Priority: e.Priority}
	}
	return cfg, eps
}

// wait returns the cluster's state and picker once known.
func (c *meshCluster) wait(ctx context.Context) (*clusterSnap, error) {
	select {
	case <-c.ready:
	default:
		select {
		case <-c.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s := c.snap.Load()
	if s.state.Err != nil {
		return nil, fmt.Errorf("mesh: cluster %s: %w", s.state.Name, s.state.Err)
	}
	if s.picker == nil {
		return nil, fmt.Errorf("mesh: cluster %s has no endpoints", s.state.Name)
	}
	return s, nil
}

// transport returns the round tripper for the cluster's endpoint at addr,
// and whether it speaks mutual TLS: plaintext if the cluster has no TLS or
// the control plane has that endpoint reached in plaintext (automatic mTLS,
// an endpoint without identity); else mutual TLS accepting exactly the
// endpoint's SPIFFE ID when the control plane names it (and the cluster's
// SANs include it), any of the cluster's SANs otherwise.
func (c *meshCluster) transport(t *Transport, snap *clusterSnap, addr string) (http.RoundTripper, bool, error) {
	st := snap.state
	if st.TLS == nil {
		return t.plain, false, nil
	}
	ep := snap.tls[addr]
	if ep.plaintext {
		return t.plain, false, nil
	}
	if t.id == nil {
		return nil, false, fmt.Errorf("mesh: cluster %s requires mutual TLS and this process has no identity (see WithJoinToken)", st.Name)
	}
	if cur := c.tlsc.Load(); cur != nil && cur.state == st {
		if tr := cur.trs[ep.identity]; tr != nil {
			return tr, true, nil // checked for this very state already
		}
	}
	tr, err := c.newTransport(t, st, ep.identity)
	return tr, err == nil, err
}

// newTransport returns the mutual TLS transport of the cluster in state st
// for endpoints that must present identity ("": any of the cluster's
// SANs), making it if needed. When the cluster's SANs change, the
// transports made for the old ones are retired.
func (c *meshCluster) newTransport(t *Transport, st *xdscluster.State, identity string) (*http.Transport, error) {
	key := strings.Join(st.TLS.SANs, ",")
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.tlsc.Load()
	next := &clusterTLS{key: key, state: st, trs: map[string]*http.Transport{}}
	if cur != nil && cur.key == key {
		maps.Copy(next.trs, cur.trs)
	} else if cur != nil {
		for _, tr := range cur.trs {
			tr.CloseIdleConnections()
		}
	}
	if tr := next.trs[identity]; tr != nil {
		c.tlsc.Store(next)
		return tr, nil
	}
	accept := st.TLS.SANs
	if identity != "" {
		if !slices.Contains(st.TLS.SANs, identity) {
			return nil, fmt.Errorf("mesh: cluster %s: the endpoint's identity %s is not one of the cluster's subjectAltNames", st.Name, identity)
		}
		accept = []string{identity}
	}
	var ids []spiffeid.ID
	for _, san := range accept {
		id, err := spiffeid.FromString(san)
		if err != nil {
			continue // a SAN no SPIFFE certificate carries: never matches
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("mesh: cluster %s: no SPIFFE ID to accept", st.Name)
	}
	cfg, err := mtls.ClientConfig(t.id, ids...)
	if err != nil {
		return nil, err
	}
	cfg.NextProtos = []string{"h2", "http/1.1"}
	tr := &http.Transport{DialTLSContext: dialMTLS(cfg), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	next.trs[identity] = tr
	c.tlsc.Store(next)
	return tr, nil
}

// dialMTLS connects and completes the TLS handshake with cfg. A failed
// handshake (a server that does not speak mTLS, or presents an identity
// not accepted) is a connection failure, as for Envoy: the request is
// retried under connect-failure and the endpoint left out of the picks for
// a backoff, as one that refused the connection.
func dialMTLS(cfg *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, cfg)
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, &net.OpError{Op: "dial", Net: network, Addr: raw.RemoteAddr(), Err: fmt.Errorf("tls handshake: %w", err)}
		}
		return conn, nil
	}
}

func (c *meshCluster) closeIdle() {
	if cur := c.tlsc.Load(); cur != nil {
		for _, tr := range cur.trs {
			tr.CloseIdleConnections()
		}
	}
}
