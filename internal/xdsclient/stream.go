package xdsclient

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/backoff"
)

// run owns the ADS stream: it waits for the first watch, then keeps a
// stream open, reopening it with jittered exponential backoff, until Close.
func (c *Client) run() {
	defer c.wg.Done()
	for !c.hasWatches() {
		select {
		case <-c.ctx.Done():
			return
		case <-c.wake:
		}
	}
	c.signal() // the wake-up was consumed; the first request is due
	ads := v3discoverypb.NewAggregatedDiscoveryServiceClient(c.cc)
	attempt := 0
	for {
		if c.runStream(ads) {
			attempt = 0
			continue // the stream worked: reconnect at once
		}
		d := c.backoff(attempt)
		attempt++
		t := time.NewTimer(d)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (c *Client) hasWatches() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.types {
		if len(t.resources) > 0 {
			return true
		}
	}
	return false
}

// backoff returns the delay before attempt n+1 (n from 0): exponential from
// BackoffMin to BackoffMax, jittered down to half of it.
func (c *Client) backoff(n int) time.Duration {
	return backoff.Exponential{Config: grpcbackoff.Config{
		BaseDelay: c.cfg.BackoffMin, Multiplier: 2, Jitter: 0.5, MaxDelay: c.cfg.BackoffMax,
	}, Capped: true}.Backoff(n)
}

// pendingRequest is a request built from the client's state and the
// resources it names for the first time on the stream.
type pendingRequest struct {
	t     *typeState
	msg   proto.Message
	names []string
}

// runStream runs one ADS stream until it breaks or the Client closes, and
// reports whether it received a response.
func (c *Client) runStream(ads v3discoverypb.AggregatedDiscoveryServiceClient) bool {
	if c.ctx.Err() != nil {
		return false
	}
	sctx, scancel := context.WithCancel(c.ctx)
	defer scancel()
	var (
		send func(proto.Message) error
		recv func() (proto.Message, error)
		err  error
	)
	if c.cfg.Delta {
		var s v3discoverypb.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
		if s, err = ads.DeltaAggregatedResources(sctx); err == nil {
			send = func(m proto.Message) error { return s.Send(m.(*v3discoverypb.DeltaDiscoveryRequest)) }
			recv = func() (proto.Message, error) { return s.Recv() }
		}
	} else {
		var s v3discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient
		if s, err = ads.StreamAggregatedResources(sctx); err == nil {
			send = func(m proto.Message) error { return s.Send(m.(*v3discoverypb.DiscoveryRequest)) }
			recv = func() (proto.Message, error) { return s.Recv() }
		}
	}
	if err != nil {
		c.streamEnded(err, false)
		return false
	}
	c.streamStarted()

	var received atomic.Bool
	recvDone := make(chan error, 1)
	go func() {
		for {
			resp, err := recv()
			if err != nil {
				recvDone <- err
				return
			}
			received.Store(true)
			c.handleResponse(resp)
		}
	}()

	node := c.node // sent on the first request of the stream only
	var streamErr error
loop:
	for {
		for _, p := range c.pendingRequests() {
			if node != nil {
				setNode(p.msg, node)
			}
			if err := send(p.msg); err != nil {
				break loop // the stream is broken; Recv says why
			}
			node = nil
			c.startTimers(p.t, p.names)
		}
		select {
		case <-c.wake:
		case streamErr = <-recvDone:
			recvDone = nil
			break loop
		case <-c.ctx.Done():
			break loop
		}
	}
	scancel()
	if recvDone != nil {
		streamErr = <-recvDone
	}
	c.streamEnded(streamErr, received.Load())
	return received.Load()
}

func setNode(m proto.Message, node *v3corepb.Node) {
	switch r := m.(type) {
	case *v3discoverypb.DiscoveryRequest:
		r.Node = node
	case *v3discoverypb.DeltaDiscoveryRequest:
		r.Node = node
	}
}

// streamStarted resets the per-stream state: every subscription is
// requested again, with the versions already known.
func (c *Client) streamStarted() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connected = true
	for _, t := range c.types {
		t.nonce, t.sent, t.ack, t.nackErr = "", nil, false, nil
		t.dirty = len(t.resources) > 0
	}
	c.signal()
	c.log.Debug("ADS stream opened", "delta", c.cfg.Delta)
}

// streamEnded stops the does-not-exist timers, which run only on a
// connected stream; cached resources stay. If the stream never received a
// response, the watchers hear about the trouble.
func (c *Client) streamEnded(err error, received bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connected = false
	for _, t := range c.types {
		for _, r := range t.resources {
			stopTimer(r)
		}
	}
	if c.closed {
		return
	}
	if received {
		c.log.Info("ADS stream ended; reconnecting", "error", err)
		return
	}
	c.log.Warn("ADS stream failed", "error", err)
	err = fmt.Errorf("xdsclient: control plane %s: %w", c.cfg.Server, err)
	for _, t := range c.types {
		for _, r := range t.resources {
			c.notifyAll(r, func(w Watcher) { w.Error(err) })
		}
	}
}

// pendingRequests builds the requests due, in type order.
//
// A resource unsubscribed and subscribed again before the unsubscription
// went out has a new state but the same name: the server, which believes
// the client still holds it, would not send it again. Such a name is
// unsubscribed in one request and subscribed in the next.
func (c *Client) pendingRequests() []pendingRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []pendingRequest
	for _, url := range typeOrder {
		t := c.types[url]
		if !t.dirty {
			continue
		}
		t.dirty = false
		names := slices.Sorted(maps.Keys(t.resources))
		if t.sent == nil && len(names) == 0 {
			// Nothing was ever asked on this stream; an empty first
			// request would be a wildcard subscription.
			t.ack, t.nackErr = false, nil
			continue
		}
		var detail *statuspb.Status
		if t.nackErr != nil {
			detail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: t.nackErr.Error()}
			t.nackErr = nil
		}
		first := t.sent == nil
		if first {
			t.sent = map[string]*resourceState{}
		}
		var replaced []string // sent, then unsubscribed and subscribed again
		for n, r := range t.sent {
			if nr := t.resources[n]; nr != nil && nr != r {
				replaced = append(replaced, n)
			}
		}
		if !c.cfg.Delta {
			if len(replaced) > 0 {
				out = append(out, pendingRequest{t: t, msg: &v3discoverypb.DiscoveryRequest{
					TypeUrl: url, ResourceNames: slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(replaced, n) }),
					VersionInfo: t.version, ResponseNonce: t.nonce, ErrorDetail: detail,
				}})
				detail = nil
			}
			clear(t.sent)
			for _, n := range names {
				t.sent[n] = t.resources[n]
			}
			out = append(out, pendingRequest{t: t, names: names, msg: &v3discoverypb.DiscoveryRequest{
				TypeUrl: url, ResourceNames: names, VersionInfo: t.version, ResponseNonce: t.nonce, ErrorDetail: detail,
			}})
			continue
		}
		req := &v3discoverypb.DeltaDiscoveryRequest{TypeUrl: url, ErrorDetail: detail}
		if t.ack {
			req.ResponseNonce = t.nonce
			t.ack = false
		}
		if first {
			for _, n := range names {
				if r := t.resources[n]; r.value != nil {
					if req.InitialResourceVersions == nil {
						req.InitialResourceVersions = map[string]string{}
					}
					req.InitialResourceVersions[n] = r.version
				}
			}
		}
		for _, n := range slices.Sorted(maps.Keys(t.sent)) {
			if t.resources[n] != t.sent[n] {
				req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, n)
				delete(t.sent, n)
			}
		}
		sub := req
		if len(replaced) > 0 {
			out = append(out, pendingRequest{t: t, msg: req})
			sub = &v3discoverypb.DeltaDiscoveryRequest{TypeUrl: url}
		}
		for _, n := range names {
			if t.sent[n] == nil {
				sub.ResourceNamesSubscribe = append(sub.ResourceNamesSubscribe, n)
				t.sent[n] = t.resources[n]
			}
		}
		if sub.ResponseNonce == "" && sub.ErrorDetail == nil && len(sub.ResourceNamesSubscribe) == 0 && len(sub.ResourceNamesUnsubscribe) == 0 {
			continue
		}
		out = append(out, pendingRequest{t: t, names: sub.ResourceNamesSubscribe, msg: sub})
	}
	return out
}

// decoded is one resource of a response.
type decoded struct {
	name    string // "" if it could not be found
	msg     proto.Message
	version string
	err     error
}

// handleResponse applies a response: valid resources take effect, invalid
// ones keep their last good version and make the response NACKed (gRFC
// A46), and the ACK or NACK is queued.
func (c *Client) handleResponse(m proto.Message) {
	var (
		url, nonce, version string
		res                 []decoded
		removed             []string
	)
	switch resp := m.(type) {
	case *v3discoverypb.DiscoveryResponse:
		url, nonce, version = resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo()
		if rt := resourceTypes[url]; rt != nil {
			for _, a := range resp.GetResources() {
				name, msg, err := decode(rt, a)
				res = append(res, decoded{name: name, msg: msg, version: version, err: err})
			}
		}
	case *v3discoverypb.DeltaDiscoveryResponse:
		url, nonce = resp.GetTypeUrl(), resp.GetNonce()
		if rt := resourceTypes[url]; rt != nil {
			for _, r := range resp.GetResources() {
				name, msg, err := decodeNamed(rt, r.GetName(), r.GetResource())
				res = append(res, decoded{name: name, msg: msg, version: r.GetVersion(), err: err})
			}
		}
		removed = resp.GetRemovedResources()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.types[url]
	if c.closed {
		return
	}
	if t == nil {
		c.log.Warn("response of an unknown type ignored", "type", url)
		return
	}
	t.nonce, t.ack, t.dirty = nonce, true, true
	defer c.signal()

	var errs []error
	seen := map[string]bool{}
	named := true
	for _, d := range res {
		if d.name == "" {
			named = false
			errs = append(errs, d.err)
			continue
		}
		if seen[d.name] && d.err == nil {
			d.err = fmt.Errorf("%s %q: appears twice in the response", t.rt.kind, d.name)
		}
		seen[d.name] = true
		r := t.resources[d.name]
		if d.err != nil {
			errs = append(errs, d.err)
			if r != nil {
				stopTimer(r)
				r.answered, r.err = true, d.err
				err := d.err
				c.notifyAll(r, func(w Watcher) { w.Error(err) })
			}
			continue
		}
		if r == nil {
			continue // not (or no longer) subscribed
		}
		stopTimer(r)
		changed := r.value == nil || !proto.Equal(r.value, d.msg)
		r.answered, r.notFound, r.err = true, false, nil
		r.value, r.version = d.msg, d.version
		if changed {
			msg := d.msg
			c.notifyAll(r, func(w Watcher) { w.Update(msg) })
		}
	}
	// In state of the world, an LDS or CDS response holds every subscribed
	// resource that exists: a cached one that is missing was deleted. A
	// never-received one may simply not have been asked for yet by the
	// request this answers; its timer decides. If a resource could not
	// even be named, nothing is concluded from absence.
	if _, sotw := m.(*v3discoverypb.DiscoveryResponse); sotw && t.rt.fullState && named {
		for name, r := range t.resources {
			if !seen[name] && r.value != nil {
				c.remove(r)
			}
		}
	}
	for _, name := range removed {
		if r := t.resources[name]; r != nil {
			c.remove(r)
		}
	}
	if f := c.cfg.OnResponse; f != nil {
		f(xdsAbbrev[url], len(res)-len(errs), len(errs))
	}
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = err.Error()
		}
		t.nackErr = fmt.Errorf("xdsclient: rejected %s", strings.Join(msgs, "; "))
		c.log.Warn("rejected (NACK) resources of a response", "type", url, "version", version, "nonce", nonce, "error", t.nackErr)
		return
	}
	t.version = version // state of the world only; empty in delta
}

// xdsAbbrev names the resource types as xDS does: LDS, RDS, CDS, EDS.
var xdsAbbrev = map[string]string{
	resource.ListenerType: "LDS",
	resource.RouteType:    "RDS",
	resource.ClusterType:  "CDS",
	resource.EndpointType: "EDS",
}
