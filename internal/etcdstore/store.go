package etcdstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellismesh/trellis/internal/registry"
)

// StoreOptions configure a Store. The zero value is valid.
type StoreOptions struct {
	// Grace is how long an endpoint whose registration broke stays
	// registered, and the TTL of the replica's etcd lease (rounded up to
	// whole seconds; etcd raises a TTL below its minimum, 2 s by default).
	// If zero, it is registry.DefaultGrace.
	Grace time.Duration
	// OnChange, if not nil, is called (without locks held, possibly
	// concurrently) after every change of the endpoint set, whichever
	// replica made it.
	OnChange func()
	// Logger receives what the Store cannot do (etcd away, a bad record).
	// If nil, the Store logs nothing.
	Logger *slog.Logger
}

// record is the JSON value of a registration key.
type record struct {
	Service     string            `json:"service"`
	Namespace   string            `json:"namespace"`
	Address     string            `json:"address"`
	Port        uint32            `json:"port"`
	ServicePort uint32            `json:"servicePort,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Locality    string            `json:"locality,omitempty"`
	Identity    string            `json:"identity,omitempty"`
	Owner       string            `json:"owner,omitempty"`
}

func encode(ep registry.Endpoint) string {
	b, _ := json.Marshal(record(ep)) // a struct of strings, ints and a string map cannot fail
	return string(b)
}

func decode(b []byte) (registry.Endpoint, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return registry.Endpoint{}, err
	}
	if r.Service == "" || r.Namespace == "" || r.Address == "" || r.Port == 0 {
		return registry.Endpoint{}, errors.New("service, namespace, address and port are required")
	}
	return registry.Endpoint(r), nil
}

// state is where a registration held by this replica is.
type state int

const (
	live  state = iota // a registration stream holds it
	grace              // its stream broke; it leaves when the grace ends
	gone               // released or expired; its key is to be deleted
)

// entry is a registration held by this replica.
type entry struct {
	ep     registry.Endpoint
	leases int
	state  state
	dirty  bool             // etcd must be written: put (live, grace) or delete (gone)
	gen    uint64           // bumped on every change, so stale work does nothing
	timer  *time.Timer      // the grace timer
	lease  clientv3.LeaseID // the lease the key was last put with; 0 if never
	rev    int64            // the revision of the last write; 0 if none since the last change
}

// Store is a registry.Store kept in etcd, shared by every control-plane
// replica that uses the same prefix. It is safe for concurrent use.
//
// Each registration is the key <prefix>/registrations/<ns>/<service>/<addr>:<port>,
// holding the endpoint as JSON, attached to this replica's lease. See the
// package documentation for what happens when a replica or etcd goes away.
type Store struct {
	c        *Client
	ttl      int64
	grace    time.Duration
	onChange func()
	log      *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // wakes the writer

	mu        sync.Mutex
	mirror    map[string]registry.Endpoint // etcd key → endpoint, as last read from etcd
	mirrorRev int64                        // the revision the mirror reflects
	local     map[string]*entry            // etcd key → registration held here
	lease     clientv3.LeaseID             // this replica's lease; 0 while lost
	lost      clientv3.LeaseID             // the lease last lost, to renew if etcd still has it
	leaseStop context.CancelFunc           // stops the lease's keepalive
	closed    bool
}

var _ registry.Store = (*Store)(nil)

// OpenStore grants this replica's lease and reads the registrations under
// the Client's prefix. It blocks until both are done, and fails if they are
// not done before ctx is. The Store then follows etcd until Close.
func (c *Client) OpenStore(ctx context.Context, o StoreOptions) (*Store, error) {
	g := cmp.Or(o.Grace, registry.DefaultGrace)
	s := &Store{
		c:        c,
		ttl:      max(int64(math.Ceil(g.Seconds())), 1),
		grace:    g,
		onChange: o.OnChange,
		log:      o.Logger,
		kick:     make(chan struct{}, 1),
		mirror:   map[string]registry.Endpoint{},
		local:    map[string]*entry{},
	}
	if s.onChange == nil {
		s.onChange = func() {}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.grant(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("etcdstore: %s: grant lease: %w", c, err)
	}
	rev, err := s.list(ctx)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("etcdstore: %s: read registrations: %w", c, err)
	}
	s.wg.Add(2)
	go s.writeLoop()
	go s.watchLoop(rev)
	return s, nil
}

// TTL returns the TTL of the replica's lease, in seconds, as asked of etcd.
func (s *Store) TTL() int64 { return s.ttl }

func (s *Store) key(ep registry.Endpoint) string { return s.c.registrationPrefix() + ep.Key() }

// Add registers ep and returns the lease that keeps it. The endpoint is
// served by this replica at once and written to etcd in the background
// (when etcd is back, if it is away).
func (s *Store) Add(ep registry.Endpoint) registry.Lease {
	ep.Labels = maps.Clone(ep.Labels)
	k := s.key(ep)
	s.mu.Lock()
	e, ok := s.local[k]
	if !ok {
		e = &entry{}
		s.local[k] = e
	}
	e.ep = ep
	e.leases++
	e.state = live
	e.dirty = true
	e.gen++
	e.rev = 0
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	s.mu.Unlock()
	s.wake()
	s.onChange()
	return &lease{s: s, key: k}
}

// lease is a registry.Lease on a Store.
type lease struct {
	s    *Store
	key  string
	once sync.Once
}

// Update replaces the labels and locality of the leased endpoint.
func (l *lease) Update(labels map[string]string, locality string) {
	s := l.s
	s.mu.Lock()
	e, ok := s.local[l.key]
	if ok && e.state != gone {
		e.ep.Labels = maps.Clone(labels)
		e.ep.Locality = locality
		e.dirty = true
		e.gen++
	}
	s.mu.Unlock()
	if ok {
		s.wake()
		s.onChange()
	}
}

// Release ends the lease. If clean, the key is deleted at once (when no
// other lease of this replica holds it, and unless another replica has
// taken the registration over); otherwise it is deleted when the grace
// period ends, or with the replica's etcd lease if the replica dies first.
func (l *lease) Release(clean bool) {
	l.once.Do(func() { l.s.release(l.key, clean) })
}

func (s *Store) release(k string, clean bool) {
	s.mu.Lock()
	e, ok := s.local[k]
	if !ok || e.leases == 0 {
		s.mu.Unlock()
		return
	}
	e.leases--
	if e.leases > 0 {
		s.mu.Unlock()
		return
	}
	e.gen++
	if clean || s.closed {
		s.retire(k, e)
		s.mu.Unlock()
		s.wake()
		s.onChange()
		return
	}
	e.state = grace
	gen := e.gen
	e.timer = time.AfterFunc(s.grace, func() {
		s.mu.Lock()
		cur, ok := s.local[k]
		expired := ok && cur.gen == gen && cur.state == grace
		if expired {
			cur.gen++
			s.retire(k, cur)
		}
		s.mu.Unlock()
		if expired {
			s.wake()
			s.onChange()
		}
	})
	s.mu.Unlock()
}

// retire marks a registration gone: the writer deletes its key (or just
// forgets it if it was never written). s.mu is held.
func (s *Store) retire(k string, e *entry) {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	if s.closed {
		// After Close the key leaves with the replica's lease.
		delete(s.local, k)
		return
	}
	e.state = gone
	e.dirty = true
	e.rev = 0
}

// Endpoints returns the registered endpoints of every replica, sorted by
// key: what the Store last read from etcd, updated with this replica's own
// registrations not written yet. While etcd is away it keeps returning the
// last endpoints read.
func (s *Store) Endpoints() []registry.Endpoint {
	s.mu.Lock()
	eps := maps.Clone(s.mirror)
	for k, e := range s.local {
		if e.state == gone {
			delete(eps, k)
		} else {
			eps[k] = e.ep
		}
	}
	s.mu.Unlock()
	out := make([]registry.Endpoint, 0, len(eps))
	for _, k := range slices.Sorted(maps.Keys(eps)) {
		ep := eps[k]
		ep.Labels = maps.Clone(ep.Labels)
		out = append(out, ep)
	}
	return out
}

// Close stops following etcd and keeping the replica's lease alive. It does
// not delete anything: the replica's registrations leave when its lease
// expires, one TTL later, unless their workloads have registered through
// another replica by then. Close is idempotent; it does not close the
// Client.
func (s *Store) Close() {
	s.mu.Lock()
	s.closed = true
	for _, e := range s.local {
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

func (s *Store) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// grant gets a new lease for the replica and keeps it alive.
func (s *Store) grant(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	resp, err := s.c.cli.Grant(rctx, s.ttl)
	cancel()
	if err != nil {
		return err
	}
	return s.keepAlive(resp.ID, true)
}

// renew takes the lease back if the one lost is still alive in etcd (etcd
// extends every lease by an election timeout when it restarts, so after a
// short outage it is), or else grants a new one.
func (s *Store) renew(ctx context.Context) error {
	s.mu.Lock()
	lost := s.lost
	s.mu.Unlock()
	if lost != 0 {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		_, err := s.c.cli.KeepAliveOnce(rctx, lost)
		cancel()
		switch {
		case err == nil:
			s.log.Info("etcd lease renewed after an outage", "store", s.c.String(), "lease", int64(lost))
			return s.keepAlive(lost, false)
		case !errors.Is(err, rpctypes.ErrLeaseNotFound):
			return err
		}
	}
	return s.grant(ctx)
}

// keepAlive makes id the replica's lease and keeps it alive; if rewrite,
// every registration the replica holds is written again under it.
func (s *Store) keepAlive(id clientv3.LeaseID, rewrite bool) error {
	kctx, stop := context.WithCancel(s.ctx)
	ch, err := s.c.cli.KeepAlive(kctx, id)
	if err != nil {
		stop()
		return err
	}
	s.mu.Lock()
	if s.leaseStop != nil {
		s.leaseStop()
	}
	s.lease, s.lost, s.leaseStop = id, 0, stop
	for _, e := range s.local {
		if rewrite && e.state != gone {
			e.dirty = true
		}
	}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for range ch {
		}
		// The channel closes when the lease expired, when etcd did not
		// answer for a TTL, or when the keepalive was stopped.
		if kctx.Err() != nil {
			return
		}
		s.log.Warn("etcd lease not renewed for a TTL; renewing it or granting a new one", "store", s.c.String(), "lease", int64(id))
		s.mu.Lock()
		if s.lease == id {
			s.lease, s.lost = 0, id
		}
		s.mu.Unlock()
		s.wake()
	}()
	return nil
}

// writeLoop writes this replica's registrations to etcd whenever they
// change, retrying with backoff while etcd is away.
func (s *Store) writeLoop() {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		if s.leaseStop != nil {
			s.leaseStop()
		}
		s.mu.Unlock()
	}()
	backoff := newRetrier()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		}
		failing := false
		for {
			err := s.flush()
			if err == nil || s.ctx.Err() != nil {
				if failing && err == nil {
					s.log.Info("registrations written to etcd again", "store", s.c.String())
				}
				backoff.reset()
				break
			}
			// Once per outage at warn; the retries at debug.
			level := slog.LevelDebug
			if !failing {
				level, failing = slog.LevelWarn, true
			}
			s.log.Log(s.ctx, level, "cannot write registrations to etcd; serving them from this replica and retrying", "store", s.c.String(), "error", err)
			if !backoff.wait(s.ctx) {
				return
			}
		}
	}
}

// flush writes every registration that changed, until none is left.
func (s *Store) flush() error {
	for {
		s.mu.Lock()
		id := s.lease
		s.mu.Unlock()
		if id == 0 {
			if err := s.renew(s.ctx); err != nil {
				return fmt.Errorf("renew lease: %w", err)
			}
			continue
		}
		type job struct {
			key   string
			gen   uint64
			state state
			ep    registry.Endpoint
			lease clientv3.LeaseID
		}
		var jobs []job
		s.mu.Lock()
		for k, e := range s.local {
			if e.dirty {
				jobs = append(jobs, job{k, e.gen, e.state, e.ep, e.lease})
			}
		}
		s.mu.Unlock()
		if len(jobs) == 0 {
			return nil
		}
		slices.SortFunc(jobs, func(a, b job) int { return strings.Compare(a.key, b.key) })
		for _, j := range jobs {
			ctx, cancel := context.WithTimeout(s.ctx, requestTimeout)
			var rev int64
			var err error
			deleted := false
			switch {
			case j.state == gone && j.lease == 0:
				// Never written (etcd was away all along): nothing to
				// delete. The writer is the only one to write, so no
				// put of this key is in flight.
			case j.state == gone:
				// Delete only a key this replica wrote: if another
				// replica took the registration over, the key is on its
				// lease and stays.
				var resp *clientv3.TxnResponse
				resp, err = s.c.cli.Txn(ctx).
					If(clientv3.Compare(clientv3.LeaseValue(j.key), "=", j.lease)).
					Then(clientv3.OpDelete(j.key)).
					Commit()
				if err == nil {
					rev, deleted = resp.Header.Revision, resp.Succeeded
				}
			default:
				var resp *clientv3.PutResponse
				resp, err = s.c.cli.Put(ctx, j.key, encode(j.ep), clientv3.WithLease(id))
				if err == nil {
					rev = resp.Header.Revision
				}
			}
			cancel()
			if err != nil {
				if errors.Is(err, rpctypes.ErrLeaseNotFound) {
					s.mu.Lock()
					if s.lease == id {
						s.lease, s.lost = 0, 0 // gone: grant a new one
					}
					s.mu.Unlock()
				}
				return fmt.Errorf("%s: %w", j.key, err)
			}
			s.mu.Lock()
			e, ok := s.local[j.key]
			if ok && j.state != gone {
				// The key is on this lease now, whatever changed since.
				e.lease = id
			}
			if ok && e.gen == j.gen {
				e.dirty = false
				e.rev = rev
				switch {
				case j.state != gone:
				case deleted && s.mirrorRev < rev:
					// Keep hiding the key until the mirror has seen
					// the delete, so the endpoint does not come back
					// for a moment.
				default:
					delete(s.local, j.key)
				}
			}
			s.mu.Unlock()
		}
	}
}

// list reads every registration into the mirror and returns the revision
// read.
func (s *Store) list(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	resp, err := s.c.cli.Get(rctx, s.c.registrationPrefix(), clientv3.WithPrefix())
	cancel()
	if err != nil {
		return 0, err
	}
	m := make(map[string]registry.Endpoint, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if ep, ok := s.decodeKV(kv.Key, kv.Value); ok {
			m[string(kv.Key)] = ep
		}
	}
	s.mu.Lock()
	changed := !maps.EqualFunc(m, s.mirror, endpointEqual)
	s.mirror, s.mirrorRev = m, resp.Header.Revision
	s.reconcileLocked()
	s.mu.Unlock()
	if changed {
		s.onChange()
	}
	return resp.Header.Revision, nil
}

func (s *Store) decodeKV(k, v []byte) (registry.Endpoint, bool) {
	ep, err := decode(v)
	if err == nil && s.c.registrationPrefix()+ep.Key() != string(k) {
		err = errors.New("the key does not match the endpoint")
	}
	if err != nil {
		s.log.Warn("ignoring a bad registration record in etcd", "key", string(k), "error", err)
		return registry.Endpoint{}, false
	}
	return ep, true
}

// reconcileLocked compares this replica's registrations with the mirror:
// a live registration whose key is gone from etcd (its lease expired while
// etcd was away, or it was deleted) is written again, and a deleted key the
// mirror has caught up with is forgotten. It reports whether the writer
// has work. s.mu is held.
func (s *Store) reconcileLocked() bool {
	work := false
	for k, e := range s.local {
		switch {
		case e.dirty || e.rev == 0 || s.mirrorRev < e.rev:
			// Not written yet, or the mirror has not seen the write.
		case e.state == gone:
			delete(s.local, k)
		default:
			if _, ok := s.mirror[k]; !ok {
				e.dirty = true
				work = true
			}
		}
	}
	return work
}

// watchLoop keeps the mirror in line with etcd: a watch from the revision
// read, and a new read whenever the watch cannot go on (compaction).
func (s *Store) watchLoop(rev int64) {
	defer s.wg.Done()
	backoff := newRetrier()
	failing := false
	for {
		if rev != 0 {
			s.watch(rev)
			rev = 0
		}
		if s.ctx.Err() != nil {
			return
		}
		var err error
		rev, err = s.list(s.ctx)
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			level := slog.LevelDebug
			if !failing {
				level, failing = slog.LevelWarn, true
			}
			s.log.Log(s.ctx, level, "cannot read registrations from etcd; serving the last known ones", "store", s.c.String(), "error", err)
			if !backoff.wait(s.ctx) {
				return
			}
			continue
		}
		failing = false
		backoff.reset()
		if s.reconcile() {
			s.wake()
		}
	}
}

func (s *Store) reconcile() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconcileLocked()
}

// watch applies the changes after rev to the mirror until the watch ends.
func (s *Store) watch(rev int64) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	wch := s.c.cli.Watch(ctx, s.c.registrationPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range wch {
		if err := resp.Err(); err != nil {
			if resp.CompactRevision != 0 {
				s.log.Info("etcd compacted the registrations watched; reading them again", "store", s.c.String())
			} else {
				s.log.Warn("etcd watch of registrations failed; reading them again", "store", s.c.String(), "error", err)
			}
			return
		}
		changed := false
		s.mu.Lock()
		for _, ev := range resp.Events {
			k := string(ev.Kv.Key)
			switch ev.Type {
			case clientv3.EventTypePut:
				ep, ok := s.decodeKV(ev.Kv.Key, ev.Kv.Value)
				if !ok {
					if _, had := s.mirror[k]; had {
						delete(s.mirror, k)
						changed = true
					}
					continue
				}
				if old, had := s.mirror[k]; !had || !endpointEqual(old, ep) {
					s.mirror[k] = ep
					changed = true
				}
			case clientv3.EventTypeDelete:
				if _, had := s.mirror[k]; had {
					delete(s.mirror, k)
					changed = true
				}
			}
		}
		if resp.Header.Revision > s.mirrorRev {
			s.mirrorRev = resp.Header.Revision
		}
		work := s.reconcileLocked()
		s.mu.Unlock()
		if work {
			s.wake()
		}
		if changed {
			s.onChange()
		}
	}
}

func endpointEqual(a, b registry.Endpoint) bool {
	return a.Service == b.Service && a.Namespace == b.Namespace && a.Address == b.Address &&
		a.Port == b.Port && a.ServicePort == b.ServicePort && a.Locality == b.Locality &&
		a.Identity == b.Identity && a.Owner == b.Owner && maps.Equal(a.Labels, b.Labels)
}
