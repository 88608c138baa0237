// Package registry holds the endpoints that workloads registered with the
// control plane themselves, for as long as their registrations live.
//
// A registration is a lease on an endpoint. Releasing it cleanly removes the
// endpoint at once; losing it (a broken stream) removes the endpoint after a
// grace period, unless the same endpoint registers again within it, so that a
// control-plane blip or a client reconnect does not flap EDS.
package registry

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// Endpoint is one registered serving address of a service.
type Endpoint struct {
	Service   string
	Namespace string
	Address   string
	// Port is the port the workload listens on.
	Port uint32
	// ServicePort is the port clients dial; zero means the same as Port.
	ServicePort uint32
	Labels      map[string]string
	Locality    string
	// Identity is the SPIFFE ID ("spiffe://<trust-domain>/ns/<ns>/sa/<sa>")
	// the workload proved by registering with its certificate, or empty if
	// it registered without one.
	Identity string
	// Owner says who holds the registration, for the control plane's
	// ownership rule: the Identity of an identified workload, or a digest
	// of an anonymous workload's owner secret. Empty for endpoints that do
	// not come from registrations.
	Owner string
}

// Key identifies the endpoint: two registrations with the same key are the
// same endpoint.
func (e Endpoint) Key() string {
	return fmt.Sprintf("%s/%s/%s:%d", e.Namespace, e.Service, e.Address, e.Port)
}

// afterFunc schedules grace expiries; tests replace it.
var afterFunc = func(d time.Duration, f func()) interface{ Stop() bool } { return time.AfterFunc(d, f) }

// DefaultGrace is how long an endpoint whose registration broke stays in the
// registry, if the Registry is given no grace.
const DefaultGrace = 5 * time.Second

type entry struct {
	ep     Endpoint
	leases int
	timer  interface{ Stop() bool }
	gen    uint64 // bumped on every change, so a stale timer does nothing
}

// Registry is an in-memory set of registered endpoints. It is safe for
// concurrent use.
type Registry struct {
	grace    time.Duration
	onChange func()

	mu      sync.Mutex
	entries map[string]*entry
	closed  bool
}

// New returns an empty Registry. onChange, if not nil, is called (without
// locks held, possibly concurrently) after every change of the endpoint set.
// A zero grace means DefaultGrace.
func New(grace time.Duration, onChange func()) *Registry {
	if grace <= 0 {
		grace = DefaultGrace
	}
	if onChange == nil {
		onChange = func() {}
	}
	return &Registry{grace: grace, onChange: onChange, entries: map[string]*entry{}}
}

// Store keeps the endpoints workloads registered. Registry is the in-memory
// Store of a single control plane; a shared Store (etcd) lets replicas serve
// each other's registrations. Implementations call the change callback they
// were made with after every change of the endpoint set, including changes
// made through another replica.
type Store interface {
	// Add registers ep and returns the lease that keeps it. Adding an
	// endpoint that is already registered (or in its grace period) takes it
	// over with the new labels and locality.
	Add(ep Endpoint) Lease
	// Endpoints returns the registered endpoints, including those in their
	// grace period, sorted by key.
	Endpoints() []Endpoint
	// Close stops the Store's background work. Endpoints released after
	// Close leave at once from a Registry; a shared Store leaves them to
	// expire (etcd: with the replica's lease, one grace later), so that
	// their workloads can move to another replica without leaving EDS.
	Close()
}

// Lease keeps an endpoint registered until it is released.
type Lease interface {
	// Update replaces the labels and locality of the leased endpoint.
	Update(labels map[string]string, locality string)
	// Release ends the lease. If clean, the endpoint leaves at once (when
	// no other lease holds it); otherwise it leaves after the grace period.
	// Release is idempotent.
	Release(clean bool)
}

// A Source supplies endpoints the control plane learns from elsewhere than
// registrations (Kubernetes EndpointSlices).
type Source interface {
	// Run calls update with the complete endpoint list every time it
	// changes, until ctx is done, and then returns.
	Run(ctx context.Context, update func([]Endpoint)) error
}

var _ Store = (*Registry)(nil)

// memLease is a Lease on a Registry.
type memLease struct {
	r    *Registry
	key  string
	once sync.Once
}

// Add registers ep and returns the lease that keeps it. Adding an endpoint
// that is already registered (or in its grace period) takes it over with the
// new labels and locality.
func (r *Registry) Add(ep Endpoint) Lease {
	key := ep.Key()
	r.mu.Lock()
	e, ok := r.entries[key]
	if !ok {
		e = &entry{}
		r.entries[key] = e
	}
	e.ep = ep
	e.ep.Labels = maps.Clone(ep.Labels)
	e.leases++
	e.gen++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	r.mu.Unlock()
	r.onChange()
	return &memLease{r: r, key: key}
}

// Update replaces the labels and locality of the leased endpoint.
func (l *memLease) Update(labels map[string]string, locality string) {
	l.r.mu.Lock()
	e, ok := l.r.entries[l.key]
	if ok {
		e.ep.Labels = maps.Clone(labels)
		e.ep.Locality = locality
		e.gen++
	}
	l.r.mu.Unlock()
	if ok {
		l.r.onChange()
	}
}

// Release ends the lease. If clean, the endpoint leaves at once (when no
// other lease holds it); otherwise it leaves after the grace period. Release
// is idempotent.
func (l *memLease) Release(clean bool) {
	l.once.Do(func() { l.r.release(l.key, clean) })
}

func (r *Registry) release(key string, clean bool) {
	r.mu.Lock()
	e, ok := r.entries[key]
	if !ok {
		r.mu.Unlock()
		return
	}
	e.leases--
	if e.leases > 0 {
		r.mu.Unlock()
		return
	}
	if clean || r.closed {
		delete(r.entries, key)
		r.mu.Unlock()
		r.onChange()
		return
	}
	gen := e.gen
	e.timer = afterFunc(r.grace, func() {
		r.mu.Lock()
		cur, ok := r.entries[key]
		expired := ok && cur.gen == gen && cur.leases == 0
		if expired {
			delete(r.entries, key)
		}
		r.mu.Unlock()
		if expired {
			r.onChange()
		}
	})
	r.mu.Unlock()
}

// Endpoints returns the registered endpoints, including those in their grace
// period, sorted by key.
func (r *Registry) Endpoints() []Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := slices.Sorted(maps.Keys(r.entries))
	out := make([]Endpoint, 0, len(keys))
	for _, k := range keys {
		ep := r.entries[k].ep
		ep.Labels = maps.Clone(ep.Labels)
		out = append(out, ep)
	}
	return out
}

// Close stops the grace timers; endpoints released after Close leave at once.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, e := range r.entries {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
}
