package xdsserver

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	v3server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/backoff"
)

// ClientStatus is what the control plane knows of one connected xDS stream.
type ClientStatus struct {
	Node string `json:"node"`
	// Service, Namespace, Version and Locality are what the client's node
	// says of it (the mesh library's node metadata); empty for clients
	// that say nothing.
	Service   string `json:"service,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Version   string `json:"version,omitempty"`
	Locality  string `json:"locality,omitempty"`
	// Identity is the SPIFFE ID the client proved with a certificate on
	// the secure port; empty on the plaintext port.
	Identity  string                 `json:"identity,omitempty"`
	Stream    int64                  `json:"stream"`
	Delta     bool                   `json:"delta"`
	Connected time.Time              `json:"connected"`
	Types     map[string]*TypeStatus `json:"types"`
}

// TypeStatus is the state of one resource type on one stream.
type TypeStatus struct {
	Subscribed   []string  `json:"subscribed,omitempty"`
	AckedVersion string    `json:"ackedVersion,omitempty"`
	Acks         int       `json:"acks"`
	Nacks        int       `json:"nacks"`
	LastNack     string    `json:"lastNack,omitempty"`
	LastNackTime time.Time `json:"lastNackTime,omitzero"`
	// ConsecutiveNacks counts NACKs since the last ACK; the server slows
	// its answers to a client that keeps rejecting them.
	ConsecutiveNacks int `json:"consecutiveNacks,omitempty"`

	requested time.Time // the last request of this type, for the push latency
}

// NACK backoff: a client that rejects a response is sent the same
// resources again at once (go-control-plane answers a request whose
// version is behind), and would reject them again, in a tight loop. From
// the second consecutive NACK of a type on a stream, the server waits
// before processing the request: 100 ms, doubling, at most 5 s, without
// jitter (the wait holds one stream of one client: there is no herd to
// spread).
var nackDelay = backoff.Exponential{Config: grpcbackoff.Config{
	BaseDelay: 100 * time.Millisecond, Multiplier: 2, MaxDelay: 5 * time.Second,
}}

func nackBackoff(consecutive int) time.Duration {
	if consecutive < 2 {
		return 0
	}
	return nackDelay.Backoff(consecutive - 2)
}

// clientTracker follows xDS streams through go-control-plane's callbacks:
// it logs and counts ACKs and NACKs per client.
type clientTracker struct {
	log     *slog.Logger
	metrics *metrics

	stop <-chan struct{} // closed when the server stops
	// identify returns the SPIFFE ID a stream's client proved, or "".
	identify func(ctx context.Context) string
	// views are the per-client caches a stream's node selects, retained
	// while the stream is open.
	views []*viewCache

	mu      sync.Mutex
	streams map[int64]*ClientStatus
	nodes   map[int64]*v3corepb.Node // each stream's node (its first), for its view of the resources
}

func newClientTracker(log *slog.Logger, m *metrics, stop <-chan struct{}) *clientTracker {
	return &clientTracker{log: log, metrics: m, stop: stop, streams: map[int64]*ClientStatus{}, nodes: map[int64]*v3corepb.Node{}}
}

func (c *clientTracker) callbacks() v3server.Callbacks {
	return v3server.CallbackFuncs{
		StreamOpenFunc:      func(ctx context.Context, id int64, _ string) error { c.open(ctx, id, false); return nil },
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error { c.open(ctx, id, true); return nil },
		StreamClosedFunc:    func(id int64, _ *v3corepb.Node) { c.close(id) },
		DeltaStreamClosedFunc: func(id int64, _ *v3corepb.Node) {
			c.close(id)
		},
		StreamRequestFunc: func(id int64, r *v3discoverypb.DiscoveryRequest) error {
			return c.request(id, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce(), r.GetVersionInfo(), r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil, r.GetResourceNames())
		},
		StreamDeltaRequestFunc: func(id int64, r *v3discoverypb.DeltaDiscoveryRequest) error {
			return c.request(id, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce(), "", r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil, r.GetResourceNamesSubscribe())
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *v3discoverypb.DiscoveryRequest, resp *v3discoverypb.DiscoveryResponse) {
			c.pushed(id, resp.GetTypeUrl())
		},
		StreamDeltaResponseFunc: func(id int64, _ *v3discoverypb.DeltaDiscoveryRequest, resp *v3discoverypb.DeltaDiscoveryResponse) {
			c.pushed(id, resp.GetTypeUrl())
		},
	}
}

func (c *clientTracker) open(ctx context.Context, id int64, delta bool) {
	identity := ""
	if c.identify != nil {
		identity = c.identify(ctx)
	}
	c.mu.Lock()
	c.streams[id] = &ClientStatus{Stream: id, Delta: delta, Identity: identity, Connected: time.Now(), Types: map[string]*TypeStatus{}}
	c.mu.Unlock()
	c.metrics.streams.Inc()
}

// pushed counts a response sent on stream id and observes its push
// latency.
func (c *clientTracker) pushed(id int64, typeURL string) {
	t := shortType(typeURL)
	c.metrics.pushes.WithLabelValues(t).Inc()
	var requested time.Time
	c.mu.Lock()
	if st, ok := c.streams[id]; ok {
		if ts, ok := st.Types[t]; ok {
			requested = ts.requested
		}
	}
	c.mu.Unlock()
	c.metrics.pushed(t, requested, time.Now())
}

func (c *clientTracker) close(id int64) {
	c.mu.Lock()
	st, ok := c.streams[id]
	node, pinned := c.nodes[id]
	delete(c.streams, id)
	delete(c.nodes, id)
	c.mu.Unlock()
	if pinned {
		for _, v := range c.views {
			v.release(node)
		}
	}
	if ok {
		c.metrics.streams.Dec()
		if st.Node != "" {
			c.metrics.clients.Dec()
		}
		c.log.Debug("xDS stream closed", "node", st.Node, "stream", id)
	}
}

// errNodeChanged ends a stream whose requests name another node than its
// first: a client is one node for the life of a stream, and each distinct
// node may cost a view of the resources of its own.
var errNodeChanged = status.Error(codes.InvalidArgument, "the node may not change on a stream")

// request records a request of stream id. The stream's node is its first
// request's: the views it selects are retained for the stream, and a
// request naming another node ends the stream.
func (c *clientTracker) request(id int64, node *v3corepb.Node, typeURL, nonce, version, nackMsg string, nack bool, names []string) error {
	t := shortType(typeURL)
	c.mu.Lock()
	st, ok := c.streams[id]
	if !ok {
		c.mu.Unlock()
		return nil
	}
	first, pinned := c.nodes[id]
	if pinned && node != nil && node != first && !proto.Equal(node, first) {
		c.mu.Unlock()
		c.log.Warn("xDS stream closed: its node changed", "node", st.Node, "stream", id)
		return errNodeChanged
	}
	if !pinned {
		for i, v := range c.views {
			if err := v.retain(node); err != nil {
				for _, r := range c.views[:i] {
					r.release(node)
				}
				c.mu.Unlock()
				c.log.Warn("xDS stream refused", "node", node.GetId(), "stream", id, "error", err)
				return err
			}
		}
		c.nodes[id] = node
	}
	if st.Node == "" && node.GetId() != "" {
		st.Node = node.GetId()
		md := node.GetMetadata().GetFields()
		st.Service = md["SERVICE"].GetStringValue()
		st.Namespace = md["NAMESPACE"].GetStringValue()
		st.Version = md["VERSION"].GetStringValue()
		if l := node.GetLocality(); l != nil {
			st.Locality = strings.Trim(l.GetRegion()+"/"+l.GetZone()+"/"+l.GetSubZone(), "/")
		}
		c.metrics.clients.Inc()
		c.log.Info("xDS client connected", "node", st.Node, "stream", id, "delta", st.Delta)
	}
	ts, ok := st.Types[t]
	if !ok {
		ts = &TypeStatus{}
		st.Types[t] = ts
	}
	if names != nil {
		ts.Subscribed = slices.Clone(names)
	}
	ts.requested = time.Now()
	nodeID := st.Node
	consecutive := ts.ConsecutiveNacks
	switch {
	case nack:
		ts.Nacks++
		ts.ConsecutiveNacks++
		ts.LastNack, ts.LastNackTime = nackMsg, time.Now()
	case nonce != "":
		ts.Acks++
		ts.ConsecutiveNacks = 0
		if version != "" {
			ts.AckedVersion = version
		}
	}
	c.mu.Unlock()
	switch {
	case nack:
		c.metrics.nacks.WithLabelValues(t, nackReason(nackMsg)).Inc()
		c.log.Warn("xDS client rejected a response (NACK)", "node", nodeID, "type", t, "nonce", nonce, "error", nackMsg)
		if d := nackBackoff(consecutive + 1); d > 0 {
			// Blocks only this stream's request processing; ends at once
			// when the server stops.
			select {
			case <-time.After(d):
			case <-c.stop:
			}
		}
	case nonce != "":
		c.metrics.acks.WithLabelValues(t).Inc()
		c.log.Debug("xDS client accepted a response (ACK)", "node", nodeID, "type", t, "version", version)
	}
	return nil
}

// snapshot returns the status of every open stream, ordered by stream ID.
func (c *clientTracker) snapshot() []ClientStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ClientStatus, 0, len(c.streams))
	for _, id := range slices.Sorted(maps.Keys(c.streams)) {
		st := *c.streams[id]
		st.Types = map[string]*TypeStatus{}
		for k, v := range c.streams[id].Types {
			cp := *v
			st.Types[k] = &cp
		}
		out = append(out, st)
	}
	return out
}

// node returns the node of the first stream whose client is nodeID.
func (c *clientTracker) node(nodeID string) *v3corepb.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(c.streams)) {
		if c.streams[id].Node == nodeID {
			return c.nodes[id]
		}
	}
	return nil
}
