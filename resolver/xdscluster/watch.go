package xdscluster

import (
	"fmt"
	"sync"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/xdsclient"
)

// Watch follows the cluster named cluster through c, and calls update with
// a new State each time the cluster or its endpoints change, once both are
// known; with a State whose Err wraps ErrNotFound when the cluster does not
// exist; and with a State whose Err says why when the cluster cannot be
// used (an unsupported policy or TLS setting) or was rejected before any
// good version arrived. A rejected later version leaves the last State in
// force, with no call.
//
// update is called from c's callback goroutine, one call at a time; it must
// not block long, since it delays every watch of c. After cancel returns,
// update is not called again except for a call that may be in progress.
// cancel is idempotent.
func Watch(c *xdsclient.Client, cluster string, update func(*State)) (cancel func()) {
	w := &watcher{c: c, name: cluster, update: update}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cdsCancel = c.Watch(resource.ClusterType, cluster, xdsclient.WatcherFuncs{
		UpdateFunc:   w.onCluster,
		NotFoundFunc: w.onClusterNotFound,
		ErrorFunc:    w.onClusterError,
	})
	return w.cancel
}

// watcher follows one cluster. Its callbacks come from the Client's single
// callback goroutine; mu guards the state against cancel.
type watcher struct {
	c      *xdsclient.Client
	name   string
	update func(*State)

	mu        sync.Mutex
	cancelled bool
	cdsCancel func()
	cluster   *cluster // last good version; nil when none or gone
	delivered bool     // a State was delivered
	eds       string   // the EDS resource watched; "" when none
	edsCancel func()
	edsGen    int // tells stale EDS callbacks from current ones
	haveEDS   bool
	endpoints []Endpoint
}

func (w *watcher) cancel() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancelled {
		return
	}
	w.cancelled = true
	w.cdsCancel()
	w.stopEDSLocked()
}

func (w *watcher) stopEDSLocked() {
	if w.edsCancel != nil {
		w.edsCancel()
	}
	w.eds, w.edsCancel, w.haveEDS, w.endpoints = "", nil, false, nil
	w.edsGen++
}

// deliverLocked calls update with s, outside the lock, unless cancelled.
func (w *watcher) deliverLocked(s *State) {
	if w.cancelled {
		w.mu.Unlock()
		return
	}
	w.delivered = true
	w.mu.Unlock()
	w.update(s)
}

// stateLocked is the State of the cluster and endpoints, or nil when the
// endpoints are not known yet.
func (w *watcher) stateLocked() *State {
	if w.cluster == nil || !w.haveEDS {
		return nil
	}
	return &State{
		Name:        w.name,
		Endpoints:   w.endpoints,
		LB:          w.cluster.lb,
		MaxRequests: w.cluster.maxRequests,
		Outlier:     w.cluster.outlier,
		TLS:         w.cluster.tls,
	}
}

func (w *watcher) onCluster(m proto.Message) {
	w.mu.Lock()
	if w.cancelled {
		w.mu.Unlock()
		return
	}
	cl, err := parseCluster(m.(*v3clusterpb.Cluster))
	if err != nil {
		w.cluster = nil
		w.stopEDSLocked()
		w.deliverLocked(&State{Name: w.name, Err: fmt.Errorf("xdscluster: cluster %q: %w", w.name, err)})
		return
	}
	w.cluster = cl
	switch {
	case cl.eds == "":
		w.stopEDSLocked()
		w.haveEDS, w.endpoints = true, cl.static
	case cl.eds != w.eds:
		w.stopEDSLocked()
		w.eds = cl.eds
		gen := w.edsGen
		w.edsCancel = w.c.Watch(resource.EndpointType, cl.eds, xdsclient.WatcherFuncs{
			UpdateFunc:   func(m proto.Message) { w.onEndpoints(gen, m, nil) },
			NotFoundFunc: func() { w.onEndpoints(gen, nil, nil) },
			ErrorFunc:    func(err error) { w.onEndpoints(gen, nil, err) },
		})
	}
	if s := w.stateLocked(); s != nil {
		w.deliverLocked(s)
		return
	}
	w.mu.Unlock()
}

func (w *watcher) onClusterNotFound() {
	w.mu.Lock()
	w.cluster = nil
	w.stopEDSLocked()
	w.deliverLocked(&State{Name: w.name, Err: fmt.Errorf("%w: %q", ErrNotFound, w.name)})
}

func (w *watcher) onClusterError(err error) {
	w.mu.Lock()
	if w.delivered {
		w.mu.Unlock() // the last good version stays
		return
	}
	w.deliverLocked(&State{Name: w.name, Err: fmt.Errorf("xdscluster: cluster %q: %w", w.name, err)})
}

// onEndpoints handles an EDS update (m), deletion (m and err nil) or error.
func (w *watcher) onEndpoints(gen int, m proto.Message, err error) {
	w.mu.Lock()
	switch {
	case gen != w.edsGen || w.cancelled:
		w.mu.Unlock()
		return
	case err != nil && w.haveEDS:
		w.mu.Unlock() // the last good version stays
		return
	case err != nil:
		w.deliverLocked(&State{Name: w.name, Err: fmt.Errorf("xdscluster: cluster %q: endpoints %q: %w", w.name, w.eds, err)})
		return
	case m == nil:
		w.haveEDS, w.endpoints = true, nil // no endpoints
	default:
		w.haveEDS, w.endpoints = true, parseEndpoints(m.(*v3endpointpb.ClusterLoadAssignment))
	}
	if s := w.stateLocked(); s != nil {
		w.deliverLocked(s)
		return
	}
	w.mu.Unlock()
}
