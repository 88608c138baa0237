package xdsclient

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/replicas"
)

// Defaults of Config.
const (
	DefaultResourceTimeout = 15 * time.Second
	DefaultBackoffMin      = 100 * time.Millisecond
	DefaultBackoffMax      = 30 * time.Second
)

// ErrUnknownType is given to the Watcher of a type other than the four
// xDS types a Client knows.
var ErrUnknownType = errors.New("xdsclient: unknown resource type")

// Config configures a Client. The zero value of every field but Server is
// valid.
type Config struct {
	// Server is the control plane address: "host:port", several replicas
	// of it ("a:15010,b:15010"), or any gRPC target. Required. With
	// several replicas the Client connects to one (the order is drawn per
	// process, see package replicas) and, when its stream breaks, to
	// another, keeping its cache and subscribing again there.
	Server string
	// Node identifies this client to the control plane; it is sent on the
	// first request of each stream. If nil, a node with a generated ID
	// ("trellis-<random>") is used. The Client keeps a copy.
	Node *v3corepb.Node
	// DialOptions are used to dial Server. If empty, the connection uses
	// insecure (plaintext) credentials; if not empty, they must include
	// transport credentials.
	DialOptions []grpc.DialOption
	// Delta selects incremental ADS (DeltaAggregatedResources) instead of
	// state of the world (StreamAggregatedResources).
	Delta bool
	// ResourceTimeout is how long a subscribed resource that has never been
	// received may go unanswered, on a connected stream, before its
	// Watchers are told it does not exist. If zero, 15 seconds.
	ResourceTimeout time.Duration
	// Logger receives the Client's logs. If nil, the Client logs nothing.
	Logger *slog.Logger
	// OnResponse, if not nil, is called after each response with its
	// resource type ("LDS", "RDS", "CDS" or "EDS") and how many of its resources were accepted
	// and rejected (NACKed), for metrics. It is called with the Client's
	// lock held: it must return quickly and not call the Client.
	OnResponse func(kind string, accepted, rejected int)
	// BackoffMin and BackoffMax bound the jittered exponential delay
	// between attempts to open the ADS stream. The delay starts again from
	// BackoffMin after a stream that received a response. If zero, 100
	// milliseconds and 30 seconds.
	BackoffMin, BackoffMax time.Duration
}

// Client is an xDS client: it keeps one ADS stream to a control plane,
// shared by all its watches, and delivers the resources they ask for. It is
// safe for concurrent use.
type Client struct {
	cfg  Config
	log  *slog.Logger
	node *v3corepb.Node
	cc   *grpc.ClientConn

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	wake      chan struct{} // a request may be due; capacity 1

	mu        sync.Mutex
	closed    bool
	connected bool
	types     map[string]*typeState

	cbMu    sync.Mutex // guards cbQueue; taken after mu, never before
	cbQueue []func()
	cbWake  chan struct{} // capacity 1
}

// typeState is the client's state for one resource type.
type typeState struct {
	rt        *resourceType
	resources map[string]*resourceState // the subscribed resources
	version   string                    // state of the world: last accepted version_info
	nonce     string                    // nonce of the last response on the current stream
	dirty     bool                      // a request is due
	ack       bool                      // the request due answers nonce (delta)
	nackErr   error                     // the request due rejects nonce with this error
	sent      map[string]*resourceState // subscribed on the current stream; nil before its first request
}

// resourceState is the client's state for one subscribed resource.
type resourceState struct {
	watchers map[*watch]struct{}
	value    proto.Message // the version in force; nil if none
	version  string
	notFound bool  // the resource is known not to exist
	answered bool  // the control plane answered (sent, removed or timed out) since subscription
	err      error // rejection of the last version received; nil if it was good
	timer    *time.Timer
	timerGen uint64 // identifies the running timer
}

type watch struct {
	w         Watcher
	cancelled atomic.Bool
}

// New returns a Client for cfg. It does no I/O: the ADS stream is opened, in
// a goroutine owned by the Client, when the first resource is watched. Call
// Close to release it.
func New(cfg Config) (*Client, error) {
	if cfg.Server == "" {
		return nil, errors.New("xdsclient: Config.Server is empty")
	}
	cfg.ResourceTimeout = cmp.Or(cfg.ResourceTimeout, DefaultResourceTimeout)
	cfg.BackoffMin = cmp.Or(cfg.BackoffMin, DefaultBackoffMin)
	cfg.BackoffMax = max(cmp.Or(cfg.BackoffMax, DefaultBackoffMax), cfg.BackoffMin)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	node := &v3corepb.Node{}
	if cfg.Node != nil {
		node = proto.Clone(cfg.Node).(*v3corepb.Node)
	}
	if node.Id == "" {
		node.Id = "trellis-" + strings.ToLower(rand.Text())
	}
	if node.UserAgentName == "" {
		node.UserAgentName = "trellis-xdsclient"
	}
	// gRPC's own reconnection backoff follows ours, so that a stream retry
	// does not wait for a channel still backing off for minutes.
	bc := grpcbackoff.DefaultConfig
	bc.BaseDelay, bc.MaxDelay = cfg.BackoffMin, cfg.BackoffMax
	opts := []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 20 * time.Second})}
	if len(cfg.DialOptions) == 0 {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	target, err := replicas.Target(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("xdsclient: %w", err)
	}
	cc, err := grpc.NewClient(target, append(opts, cfg.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("xdsclient: %w", err)
	}
	c := &Client{
		cfg:    cfg,
		log:    log.With("controlPlane", cfg.Server),
		node:   node,
		cc:     cc,
		wake:   make(chan struct{}, 1),
		types:  map[string]*typeState{},
		cbWake: make(chan struct{}, 1),
	}
	for url, rt := range resourceTypes {
		c.types[url] = &typeState{rt: rt, resources: map[string]*resourceState{}}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(2)
	go c.run()
	go c.deliver()
	return c, nil
}

// Close stops the Client: it closes the ADS stream, drops the watches and
// waits for its goroutines to end. Callbacks not yet delivered are dropped.
// Close is idempotent; it must not be called from a Watcher method.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		for _, t := range c.types {
			for _, r := range t.resources {
				stopTimer(r)
			}
		}
		c.mu.Unlock()
		c.cancel()
		c.wg.Wait()
		c.cc.Close()
	})
	return nil
}

// Watch subscribes w to the resource of type typeURL (resource.ListenerType,
// RouteType, ClusterType or EndpointType of go-control-plane's
// pkg/resource/v3) named name, and returns a function that cancels the
// watch. Watchers of one resource share one subscription. If the resource
// is already known, w receives its state at once (from the callback
// goroutine, not before Watch returns). After cancel returns, w receives no
// further calls except one that may be in progress. Cancel is idempotent.
// Watch on a closed Client does nothing.
func (c *Client) Watch(typeURL, name string, w Watcher) (cancel func()) {
	wt := &watch{w: w}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return func() {}
	}
	t := c.types[typeURL]
	if t == nil {
		c.notify(wt, func(w Watcher) { w.Error(fmt.Errorf("%w %q", ErrUnknownType, typeURL)) })
		return func() { wt.cancelled.Store(true) }
	}
	r := t.resources[name]
	if r == nil {
		r = &resourceState{watchers: map[*watch]struct{}{}}
		t.resources[name] = r
		t.dirty = true
		c.signal()
	}
	r.watchers[wt] = struct{}{}
	switch {
	case r.value != nil:
		v := r.value
		c.notify(wt, func(w Watcher) { w.Update(v) })
	case r.notFound:
		c.notify(wt, Watcher.NotFound)
	case r.err != nil:
		err := r.err
		c.notify(wt, func(w Watcher) { w.Error(err) })
	}
	return func() { c.unwatch(t, name, r, wt) }
}

func (c *Client) unwatch(t *typeState, name string, r *resourceState, wt *watch) {
	wt.cancelled.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := r.watchers[wt]; !ok {
		return
	}
	delete(r.watchers, wt)
	if len(r.watchers) == 0 && t.resources[name] == r {
		stopTimer(r)
		delete(t.resources, name)
		t.dirty = true
		c.signal()
	}
}

// signal wakes the stream goroutine: a request may be due.
func (c *Client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// notify queues a call of f on wt for the callback goroutine. Callers hold
// c.mu, so callbacks are queued in the order the state changed.
func (c *Client) notify(wt *watch, f func(Watcher)) {
	c.cbMu.Lock()
	c.cbQueue = append(c.cbQueue, func() {
		if !wt.cancelled.Load() {
			f(wt.w)
		}
	})
	c.cbMu.Unlock()
	select {
	case c.cbWake <- struct{}{}:
	default:
	}
}

// notifyAll queues f for every watcher of r.
func (c *Client) notifyAll(r *resourceState, f func(Watcher)) {
	for wt := range r.watchers {
		c.notify(wt, f)
	}
}

// deliver runs the queued callbacks, one at a time, until Close.
func (c *Client) deliver() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.cbWake:
		}
		for {
			c.cbMu.Lock()
			if len(c.cbQueue) == 0 || c.ctx.Err() != nil {
				c.cbQueue = nil
				c.cbMu.Unlock()
				break
			}
			f := c.cbQueue[0]
			c.cbQueue[0] = nil
			c.cbQueue = c.cbQueue[1:]
			c.cbMu.Unlock()
			f()
		}
	}
}

// Status is a snapshot of a Client's state, for tests and debugging.
type Status struct {
	// Connected is whether the ADS stream is open.
	Connected bool
	// Resources are the subscribed resources, by type URL and name.
	Resources []ResourceStatus
}

// ResourceStatus is the state of one subscribed resource.
type ResourceStatus struct {
	TypeURL  string
	Name     string
	Watchers int
	// Resource is the version in force, nil if none; it is shared and must
	// not be modified. Version is its version.
	Resource proto.Message
	Version  string
	// NotFound is whether the resource is known not to exist.
	NotFound bool
	// Err is why the last version received was rejected (NACKed), nil if
	// it was accepted.
	Err error
}

// Status returns a snapshot of the Client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{Connected: c.connected}
	for _, url := range typeOrder {
		t := c.types[url]
		for _, name := range slices.Sorted(maps.Keys(t.resources)) {
			r := t.resources[name]
			st.Resources = append(st.Resources, ResourceStatus{
				TypeURL: url, Name: name, Watchers: len(r.watchers),
				Resource: r.value, Version: r.version, NotFound: r.notFound, Err: r.err,
			})
		}
	}
	return st
}

// startTimers starts the does-not-exist timer of each named resource that
// has not been answered since it was subscribed, now that a request naming
// it went out on a connected stream.
func (c *Client) startTimers(t *typeState, names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || !c.connected {
		return
	}
	for _, name := range names {
		r := t.resources[name]
		if r == nil || r.answered || r.timer != nil {
			continue
		}
		r.timerGen++
		gen := r.timerGen
		r.timer = time.AfterFunc(c.cfg.ResourceTimeout, func() { c.expire(t, name, r, gen) })
	}
}

func (c *Client) expire(t *typeState, name string, r *resourceState, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || t.resources[name] != r || r.timer == nil || r.timerGen != gen {
		return
	}
	r.timer = nil
	c.log.Warn("resource not received in time; it does not exist", "type", t.rt.kind, "name", name, "timeout", c.cfg.ResourceTimeout)
	c.remove(r)
}

func stopTimer(r *resourceState) {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
		r.timerGen++
	}
}

// remove records that r does not exist and tells its watchers, once.
func (c *Client) remove(r *resourceState) {
	stopTimer(r)
	r.answered = true
	if r.notFound {
		return
	}
	r.notFound, r.value, r.version, r.err = true, nil, "", nil
	c.notifyAll(r, Watcher.NotFound)
}
