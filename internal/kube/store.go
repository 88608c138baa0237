package kube

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	clientnetworking "istio.io/client-go/pkg/apis/networking/v1"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	networkinglisters "istio.io/client-go/pkg/listers/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/trellismesh/trellis/internal/registry"
)

type networkingWorkloadEntry = clientnetworking.WorkloadEntry

var jsonMarshal = json.Marshal

// What the Store writes on the WorkloadEntries of registrations.
const (
	// LabelAutoRegistered ("true") marks a WorkloadEntry the Store wrote
	// for a registration; such entries are endpoints, not configuration.
	LabelAutoRegistered = "trellis.io/auto-registered"
	// LabelService holds the registered service's name.
	LabelService = "trellis.io/service"
	// AnnotationRegisteredBy names the control-plane replica (its Pod)
	// holding the registration.
	AnnotationRegisteredBy = "trellis.io/registered-by"
	// AnnotationRegistration identifies the registration that owns the
	// entry; a replica deletes an entry only while it still carries the
	// identifier of its own registration.
	AnnotationRegistration = "trellis.io/registration"
	// AnnotationServicePort holds the port clients dial, if the workload
	// gave one.
	AnnotationServicePort = "trellis.io/service-port"
	// AnnotationIdentity holds the SPIFFE ID the workload proved.
	AnnotationIdentity = "trellis.io/identity"
	// AnnotationOwner holds who owns the registration (its identity, or
	// a digest of an anonymous workload's owner secret), so that every
	// replica applies the same ownership rule.
	AnnotationOwner = "trellis.io/owner"
	// AnnotationDisconnectedAt (RFC 3339) marks an entry whose registration
	// stream broke: it is deleted after the grace period unless the
	// workload registers again, by the replica that held it or, should
	// that replica be gone, by any other after twice the grace period.
	AnnotationDisconnectedAt = "trellis.io/disconnected-at"

	// workloadPort is the name of the one port of a registered entry.
	workloadPort = "port"
)

func autoRegistered(l map[string]string) bool { return l[LabelAutoRegistered] == "true" }

// EntryName is the name of the WorkloadEntry of a registered endpoint:
// "<service>-<address>-<port>", the address's dots and colons made dashes.
func EntryName(ep registry.Endpoint) string {
	addr := strings.Trim(strings.NewReplacer(".", "-", ":", "-", "%", "-").Replace(strings.ToLower(ep.Address)), "-")
	return fmt.Sprintf("%s-%s-%d", strings.ToLower(ep.Service), addr, ep.Port)
}

// Store keeps registrations as WorkloadEntries in the workload's namespace,
// as Istio's auto-registration does, so that every control-plane replica
// serves every replica's registrations: Endpoints reads them from an
// informer, and the change callback fires on changes made by any replica.
// It is a registry.Store and safe for concurrent use.
//
// A registration writes its entry at once (taking it over if another
// replica held it); a clean release deletes it; a broken stream marks it
// disconnected and deletes it after the grace period unless the workload
// registers again (here or at another replica). A replica deletes an entry
// only while it still carries its own registration's identifier, so an
// entry a newer registration owns is never deleted by a stale one. Every
// grace period each replica also sweeps: entries of a replica that went
// away without closing (its Pod gone, or an earlier run of this replica)
// are marked disconnected, and entries disconnected for twice the grace
// period are deleted.
type Store struct {
	clients  *Clients
	opts     Options
	grace    time.Duration
	onChange func()
	replica  string
	nonce    string

	ctx     context.Context
	cancel  context.CancelFunc
	factory istioinformers.SharedInformerFactory
	lister  networkinglisters.WorkloadEntryLister
	wg      sync.WaitGroup

	mu      sync.Mutex
	entries map[string]*storeEntry
	seq     uint64
	closed  bool
}

var _ registry.Store = (*Store)(nil)

type entryState int

const (
	leased entryState = iota
	inGrace
	gone
)

type storeEntry struct {
	io sync.Mutex // serialises the API calls for the entry

	// Guarded by Store.mu.
	ep             registry.Endpoint
	leases         int
	gen            uint64
	token          string
	state          entryState
	disconnectedAt time.Time
	timer          *time.Timer
}

// callTimeout bounds each API call of the Store; closeTimeout, all the calls
// of Close.
const (
	callTimeout  = 10 * time.Second
	closeTimeout = 5 * time.Second
)

// OpenStore starts a Store reading and writing with c. grace is how long an
// endpoint whose registration broke stays (zero: registry.DefaultGrace);
// onChange is called after every change of the endpoint set. OpenStore does
// not block: the first endpoints arrive, with a call of onChange, once the
// informer has synced.
func OpenStore(c *Clients, opts Options, grace time.Duration, onChange func()) *Store {
	if grace <= 0 {
		grace = registry.DefaultGrace
	}
	if onChange == nil {
		onChange = func() {}
	}
	b := make([]byte, 6)
	rand.Read(b)
	s := &Store{
		clients:  c,
		opts:     opts,
		grace:    grace,
		onChange: onChange,
		replica:  opts.replica(),
		nonce:    hex.EncodeToString(b),
		entries:  map[string]*storeEntry{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.factory = istioinformers.NewSharedInformerFactoryWithOptions(c.Istio, 0,
		istioinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelAutoRegistered + "=true" }))
	inf := s.factory.Networking().V1().WorkloadEntries()
	s.lister = inf.Lister()
	inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.onChange() },
		UpdateFunc: func(_, _ any) { s.onChange() },
		DeleteFunc: func(any) { s.onChange() },
	})
	s.factory.Start(s.ctx.Done())
	s.wg.Add(1)
	go s.sweep()
	return s
}

// Endpoints implements registry.Store: the endpoints of all auto-registered
// WorkloadEntries, whichever replica wrote them, sorted by key.
func (s *Store) Endpoints() []registry.Endpoint {
	l, err := s.lister.List(labels.SelectorFromSet(labels.Set{LabelAutoRegistered: "true"}))
	if err != nil {
		return nil
	}
	out := make([]registry.Endpoint, 0, len(l))
	for _, we := range l {
		if ep, ok := entryEndpoint(we); ok {
			out = append(out, ep)
		}
	}
	slices.SortFunc(out, func(a, b registry.Endpoint) int { return cmp.Compare(a.Key(), b.Key()) })
	return out
}

func entryEndpoint(we *networkingWorkloadEntry) (registry.Endpoint, bool) {
	ep := registry.Endpoint{
		Service:   we.Labels[LabelService],
		Namespace: we.Namespace,
		Address:   we.Spec.GetAddress(),
		Port:      we.Spec.GetPorts()[workloadPort],
		Labels:    maps.Clone(we.Spec.GetLabels()),
		Locality:  we.Spec.GetLocality(),
		Identity:  we.Annotations[AnnotationIdentity],
		Owner:     we.Annotations[AnnotationOwner],
	}
	if sp, err := strconv.ParseUint(we.Annotations[AnnotationServicePort], 10, 32); err == nil {
		ep.ServicePort = uint32(sp)
	}
	return ep, ep.Service != "" && ep.Address != "" && ep.Port != 0
}

// Add implements registry.Store. It writes the WorkloadEntry before it
// returns (errors are logged; the entry is written again on the next
// change of the registration).
func (s *Store) Add(ep registry.Endpoint) registry.Lease {
	key := ep.Key()
	s.mu.Lock()
	e, ok := s.entries[key]
	if !ok {
		e = &storeEntry{}
		s.entries[key] = e
	}
	e.ep = ep
	e.ep.Labels = maps.Clone(ep.Labels)
	e.leases++
	e.gen++
	s.seq++
	e.token = fmt.Sprintf("%s/%s/%d", s.replica, s.nonce, s.seq)
	e.state = leased
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		s.reconcile(key, e)
	}
	return &storeLease{s: s, key: key, e: e}
}

type storeLease struct {
	s    *Store
	key  string
	e    *storeEntry
	once sync.Once
}

func (l *storeLease) Update(labels map[string]string, locality string) {
	s := l.s
	s.mu.Lock()
	cur := s.entries[l.key] == l.e && l.e.state == leased && !s.closed
	if cur {
		l.e.ep.Labels = maps.Clone(labels)
		l.e.ep.Locality = locality
	}
	s.mu.Unlock()
	if cur {
		s.reconcile(l.key, l.e)
	}
}

func (l *storeLease) Release(clean bool) {
	l.once.Do(func() { l.s.release(l.key, l.e, clean) })
}

func (s *Store) release(key string, e *storeEntry, clean bool) {
	s.mu.Lock()
	e.leases--
	if e.leases > 0 || s.closed {
		s.mu.Unlock()
		return
	}
	if clean {
		e.state = gone
	} else {
		e.state = inGrace
		e.disconnectedAt = time.Now()
		gen := e.gen
		e.timer = time.AfterFunc(s.grace, func() { s.expire(key, e, gen) })
	}
	s.mu.Unlock()
	s.reconcile(key, e)
}

func (s *Store) expire(key string, e *storeEntry, gen uint64) {
	s.mu.Lock()
	if s.closed || e.gen != gen || e.leases > 0 || e.state != inGrace {
		s.mu.Unlock()
		return
	}
	e.state = gone
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.reconcile(key, e)
}

// reconcile brings the entry's WorkloadEntry in line with its state.
func (s *Store) reconcile(key string, e *storeEntry) { s.reconcileCtx(s.ctx, key, e) }

func (s *Store) reconcileCtx(parent context.Context, key string, e *storeEntry) {
	e.io.Lock()
	defer e.io.Unlock()
	s.mu.Lock()
	ep, state, token, at := e.ep, e.state, e.token, e.disconnectedAt
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(parent, callTimeout)
	defer cancel()
	var err error
	switch state {
	case leased:
		err = s.write(ctx, s.entry(ep, token, time.Time{}), token, false)
	case inGrace:
		err = s.write(ctx, s.entry(ep, token, at), token, true)
	case gone:
		err = s.deleteOwned(ctx, ep.Namespace, EntryName(ep), token)
		s.mu.Lock()
		if e.state == gone && s.entries[key] == e {
			delete(s.entries, key)
		}
		s.mu.Unlock()
	}
	if err != nil {
		s.opts.logger().Error("writing the WorkloadEntry of a registration", "endpoint", key, "error", err)
	}
}

// entry is the WorkloadEntry of a registration.
func (s *Store) entry(ep registry.Endpoint, token string, disconnected time.Time) *networkingWorkloadEntry {
	ann := map[string]string{
		AnnotationRegisteredBy: s.replica,
		AnnotationRegistration: token,
	}
	if ep.ServicePort != 0 {
		ann[AnnotationServicePort] = strconv.FormatUint(uint64(ep.ServicePort), 10)
	}
	if ep.Identity != "" {
		ann[AnnotationIdentity] = ep.Identity
	}
	if ep.Owner != "" {
		ann[AnnotationOwner] = ep.Owner
	}
	if !disconnected.IsZero() {
		ann[AnnotationDisconnectedAt] = disconnected.UTC().Format(time.RFC3339Nano)
	}
	we := &networkingWorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{
			Name:        EntryName(ep),
			Namespace:   ep.Namespace,
			Labels:      map[string]string{LabelAutoRegistered: "true", LabelService: ep.Service},
			Annotations: ann,
		},
	}
	we.Spec.Address = ep.Address
	we.Spec.Ports = map[string]uint32{workloadPort: ep.Port}
	we.Spec.Labels = maps.Clone(ep.Labels)
	we.Spec.Locality = ep.Locality
	we.Spec.ServiceAccount = serviceAccount(ep.Identity)
	return we
}

// serviceAccount is the service account of a SPIFFE ID of the form
// spiffe://<td>/ns/<ns>/sa/<sa>, or "".
func serviceAccount(id string) string {
	_, sa, ok := strings.Cut(id, "/sa/")
	if !ok || strings.Contains(sa, "/") {
		return ""
	}
	return sa
}

// write creates or replaces the entry; if onlyOwned, only while the entry
// exists and still belongs to the registration token.
func (s *Store) write(ctx context.Context, want *networkingWorkloadEntry, token string, onlyOwned bool) error {
	api := s.clients.Istio.NetworkingV1().WorkloadEntries(want.Namespace)
	var err error
	for range 5 {
		var cur *networkingWorkloadEntry
		cur, err = api.Get(ctx, want.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			if onlyOwned {
				return nil
			}
			if _, err = api.Create(ctx, want, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
				continue
			}
			return err
		case err != nil:
			return err
		}
		if onlyOwned && cur.Annotations[AnnotationRegistration] != token {
			return nil
		}
		if sameEntry(cur, want) {
			return nil
		}
		next := want.DeepCopy()
		next.ResourceVersion = cur.ResourceVersion
		if _, err = api.Update(ctx, next, metav1.UpdateOptions{}); apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue
		}
		return err
	}
	return err
}

func sameEntry(a, b *networkingWorkloadEntry) bool {
	return maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations) &&
		protoEqual(&a.Spec, &b.Spec)
}

func protoEqual(a, b *networking.WorkloadEntry) bool {
	return a.GetAddress() == b.GetAddress() && maps.Equal(a.GetPorts(), b.GetPorts()) &&
		maps.Equal(a.GetLabels(), b.GetLabels()) && a.GetLocality() == b.GetLocality() &&
		a.GetServiceAccount() == b.GetServiceAccount()
}

// deleteOwned deletes the entry if it still belongs to the registration
// token (a token "" matches any disconnected entry's, for sweep).
func (s *Store) deleteOwned(ctx context.Context, ns, name, token string) error {
	api := s.clients.Istio.NetworkingV1().WorkloadEntries(ns)
	for range 5 {
		cur, err := api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur.Annotations[AnnotationRegistration] != token {
			return nil // a newer registration owns it
		}
		rv := cur.ResourceVersion
		err = api.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		if apierrors.IsConflict(err) {
			continue
		}
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	return nil
}

// sweep deletes, every grace period, the entries that have been
// disconnected for twice the grace period: those whose replica went away
// before their grace ended.
func (s *Store) sweep() {
	defer s.wg.Done()
	t := time.NewTicker(max(s.grace, time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		l, err := s.lister.List(labels.SelectorFromSet(labels.Set{LabelAutoRegistered: "true"}))
		if err != nil {
			continue
		}
		gone := map[string]bool{} // replica -> its Pod is gone, this round
		for _, we := range l {
			token := we.Annotations[AnnotationRegistration]
			ctx, cancel := context.WithTimeout(s.ctx, callTimeout)
			at, err := time.Parse(time.RFC3339Nano, we.Annotations[AnnotationDisconnectedAt])
			switch {
			case err == nil && time.Since(at) >= 2*s.grace:
				err = s.deleteOwned(ctx, we.Namespace, we.Name, token)
			case err != nil && s.orphaned(ctx, we, gone):
				err = s.markDisconnected(ctx, we.Namespace, we.Name, token)
			default:
				err = nil
			}
			cancel()
			if err != nil {
				s.opts.logger().Warn("removing a disconnected WorkloadEntry", "namespace", we.Namespace, "name", we.Name, "error", err)
			}
		}
	}
}

// orphaned reports whether a connected-looking entry has no replica left to
// hold its registration: it was written by an earlier run of this replica
// (a restarted container), or by a replica whose Pod no longer exists (a
// crash, a lost node).
func (s *Store) orphaned(ctx context.Context, we *networkingWorkloadEntry, gone map[string]bool) bool {
	owner := we.Annotations[AnnotationRegisteredBy]
	if owner == s.replica {
		return !strings.HasPrefix(we.Annotations[AnnotationRegistration], s.replica+"/"+s.nonce+"/")
	}
	ns := s.opts.replicaNamespace()
	if ns == "" || owner == "" {
		return false
	}
	g, ok := gone[owner]
	if !ok {
		_, err := s.clients.Kube.CoreV1().Pods(ns).Get(ctx, owner, metav1.GetOptions{})
		g = apierrors.IsNotFound(err)
		gone[owner] = g
	}
	return g
}

// markDisconnected marks an orphaned entry disconnected now, if it still
// belongs to the registration token, so that it is deleted after twice the
// grace period unless its workload registers again.
func (s *Store) markDisconnected(ctx context.Context, ns, name, token string) error {
	api := s.clients.Istio.NetworkingV1().WorkloadEntries(ns)
	for range 5 {
		cur, err := api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur.Annotations[AnnotationRegistration] != token || cur.Annotations[AnnotationDisconnectedAt] != "" {
			return nil
		}
		cur.Annotations[AnnotationDisconnectedAt] = time.Now().UTC().Format(time.RFC3339Nano)
		if _, err = api.Update(ctx, cur, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
			return err
		}
	}
	return nil
}

// Close implements registry.Store. Registrations still held are marked
// disconnected, so that if their workloads do not register again with
// another replica the others remove them after twice the grace period;
// releases after Close leave the cluster untouched. Close is idempotent.
func (s *Store) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	held := map[string]*storeEntry{}
	now := time.Now()
	for key, e := range s.entries {
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
		if e.state == leased {
			e.state = inGrace
			e.disconnectedAt = now
		}
		if e.state == inGrace {
			held[key] = e
		}
	}
	s.mu.Unlock()
	// Bounded as a whole: an unreachable API server must not hold Close
	// for a call timeout per registration.
	ctx, cancel := context.WithTimeout(s.ctx, closeTimeout)
	for key, e := range held {
		s.reconcileCtx(ctx, key, e)
	}
	cancel()
	s.cancel()
	s.factory.Shutdown()
	s.wg.Wait()
}
