package outlier

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is how the result of a request counts for its endpoint. The
// protocols classify their results: balancer/outlier from gRPC status
// codes, balancer/pick from HTTP statuses and connection errors.
type Outcome int

const (
	// Ignored says nothing of the endpoint, such as a request the client
	// cancelled: the counts are left as they are.
	Ignored Outcome = iota
	// Success is an answer from a working endpoint; it resets the
	// endpoint's consecutive counts.
	Success
	// Failure is a 5xx other than a gateway failure: it counts toward
	// ConsecutiveErrors and resets the gateway count.
	Failure
	// GatewayFailure is a 502, 503 or 504, a connection failure or a
	// timeout: it counts toward both ConsecutiveErrors and
	// ConsecutiveGatewayErrors.
	GatewayFailure
)

// Host is the outlier state of one endpoint. Create it with NewHost and
// give it to a Detector with Update; Ejected is safe for concurrent use.
type Host struct {
	name string // for logs

	// Counted without the Detector's lock.
	errors  atomic.Uint32 // consecutive Failure or GatewayFailure outcomes
	gateway atomic.Uint32 // consecutive GatewayFailure outcomes
	// ejected mirrors ejected, for Record to skip counting without the
	// lock; out is ejected && !suspended, for picks.
	ejectedFlag, out atomic.Bool

	// Guarded by Detector.mu.
	member     bool          // in the Detector's current hosts
	ejected    bool          //
	ejectedAt  time.Duration // since the Detector's epoch
	multiplier int           // ejections in a row, decaying each Interval not ejected
}

// NewHost returns the state of an endpoint not yet seen; name is how logs
// call it.
func NewHost(name string) *Host {
	return &Host{name: name}
}

// Ejected reports whether picks must avoid the host: it is ejected, and
// ejection is not suspended by MinHealthPercent. It never blocks.
func (h *Host) Ejected() bool { return h.out.Load() }

// Name returns the name the host was created with.
func (h *Host) Name() string { return h.name }

// Option configures a Detector.
type Option interface{ apply(*Detector) }

type optionFunc func(*Detector)

func (f optionFunc) apply(d *Detector) { f(d) }

// WithClock makes the Detector read the time from now instead of
// time.Now. Tests inject a fake clock with it; the adapters pass their
// clock knob.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(d *Detector) { d.now = now })
}

// WithLogger makes the Detector report ejections, unejections and
// suspensions through logf (formatted as fmt.Sprintf). By default it
// reports nothing.
func WithLogger(logf func(format string, args ...any)) Option {
	return optionFunc(func(d *Detector) { d.logf = logf })
}

// Detector is the outlier ejection state machine over a set of hosts: it
// counts each host's consecutive errors (Record), ejects a host at once
// when it reaches a threshold, within MaxEjectionPercent, suspends
// ejection below MinHealthPercent, and at each Interval (Tick) ends the
// ejections that have lasted n × BaseEjectionTime and lets the counts of
// hosts not ejected decay.
//
// It starts no goroutine and never sleeps: the caller calls Tick, on a
// timer (the gRPC policy) or when Due says an Interval has passed (the
// HTTP picker). It is safe for concurrent use; Record of a Success, Due
// and Host.Ejected take no lock.
type Detector struct {
	now   func() time.Time
	logf  func(format string, args ...any)
	epoch time.Time // times are kept as durations since epoch: monotonic when the clock is

	cfg  atomic.Pointer[Config] // nil: detection off
	next atomic.Int64           // the next Interval, as a duration since epoch; off: detection off

	mu        sync.Mutex
	hosts     []*Host
	suspended bool
	interval  time.Duration // of the schedule; 0 when detection is off
}

// New returns a Detector with no hosts and detection off until Update.
func New(opts ...Option) *Detector {
	d := &Detector{now: time.Now, logf: func(string, ...any) {}}
	for _, o := range opts {
		o.apply(d)
	}
	d.epoch = d.now()
	d.next.Store(off)
	return d
}

// off is Detector.next while detection is off.
const off = math.MinInt64

// since returns the time elapsed since the epoch.
func (d *Detector) since() time.Duration {
	return d.now().Sub(d.epoch)
}

// Update replaces the configuration and the set of hosts. A nil cfg, or
// one that detects nothing, turns detection off: every host's counts and
// ejections are cleared. Hosts that stay keep their state; hosts left out
// are no longer counted nor ejected. When the Interval changes, or
// detection turns on, the next Interval is counted from now.
func (d *Detector) Update(cfg *Config, hosts []*Host) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, h := range d.hosts {
		h.member = false
	}
	for _, h := range hosts {
		h.member = true
	}
	for _, h := range d.hosts {
		if !h.member {
			d.clearLocked(h)
		}
	}
	d.hosts = append(d.hosts[:0:0], hosts...)

	if cfg == nil || !cfg.Detecting() {
		for _, h := range d.hosts {
			d.clearLocked(h)
		}
		d.cfg.Store(nil)
		d.interval = 0
		d.next.Store(off)
		d.updateOutLocked()
		return
	}
	c := *cfg
	d.cfg.Store(&c)
	if interval := c.EffectiveInterval(); interval != d.interval {
		d.interval = interval
		d.next.Store(int64(d.since() + interval))
	}
	d.updateOutLocked()
}

// clearLocked forgets a host's counts and ejections.
func (d *Detector) clearLocked(h *Host) {
	h.errors.Store(0)
	h.gateway.Store(0)
	h.ejected, h.ejectedAt, h.multiplier = false, 0, 0
	h.ejectedFlag.Store(false)
	h.out.Store(false)
}

// Record counts the outcome of a request to h, and ejects h if it has
// reached a threshold and MaxEjectionPercent allows; it reports whether it
// ejected h, which the caller then leaves out of its picks (h.Ejected is
// already true unless ejection is suspended). Outcomes of a host that is
// ejected, or not in the Detector's hosts, do not count.
func (d *Detector) Record(h *Host, o Outcome) bool {
	cfg := d.cfg.Load()
	if cfg == nil || h.ejectedFlag.Load() {
		return false
	}
	var errs, gw uint32
	switch o {
	case Success:
		if h.errors.Load() != 0 || h.gateway.Load() != 0 {
			h.errors.Store(0)
			h.gateway.Store(0)
		}
		return false
	case Failure:
		errs = h.errors.Add(1)
		h.gateway.Store(0)
	case GatewayFailure:
		errs, gw = h.errors.Add(1), h.gateway.Add(1)
	default:
		return false
	}
	if !reached(cfg, errs, gw) {
		return false
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	cfg = d.cfg.Load()
	if cfg == nil || !h.member || h.ejected {
		return false
	}
	// Another outcome may have reset the counts meanwhile.
	errs, gw = h.errors.Load(), h.gateway.Load()
	var reason string
	switch {
	case cfg.ConsecutiveErrors > 0 && errs >= cfg.ConsecutiveErrors:
		reason = fmt.Sprintf("%d consecutive errors", errs)
	case cfg.ConsecutiveGatewayErrors > 0 && gw >= cfg.ConsecutiveGatewayErrors:
		reason = fmt.Sprintf("%d consecutive gateway errors", gw)
	default:
		return false
	}
	// Count afresh whether or not the ejection is allowed, as Envoy does.
	h.errors.Store(0)
	h.gateway.Store(0)
	return d.ejectLocked(cfg, h, reason)
}

// reached reports whether counts reach a threshold of cfg.
func reached(cfg *Config, errs, gw uint32) bool {
	return (cfg.ConsecutiveErrors > 0 && errs >= cfg.ConsecutiveErrors) ||
		(cfg.ConsecutiveGatewayErrors > 0 && gw >= cfg.ConsecutiveGatewayErrors)
}

// ejectLocked ejects h unless MaxEjectionPercent forbids it, and reports
// whether it did. One host can always be ejected when MaxEjectionPercent
// is not zero.
func (d *Detector) ejectLocked(cfg *Config, h *Host, reason string) bool {
	total, ejected := len(d.hosts), d.numEjectedLocked()
	maxPercent := int(cfg.MaxEjectionPercent)
	if maxPercent == 0 || (ejected > 0 && (ejected+1)*100 > maxPercent*total) {
		d.logf("endpoint %s had %s; not ejected: %d of %d endpoints are ejected, maxEjectionPercent is %d", h.name, reason, ejected, total, maxPercent)
		return false
	}
	h.ejected, h.ejectedAt = true, d.since()
	h.ejectedFlag.Store(true)
	h.multiplier++
	d.logf("ejecting endpoint %s for %v after %s", h.name, cfg.EjectionTime(h.multiplier), reason)
	d.updateOutLocked()
	return true
}

func (d *Detector) numEjectedLocked() int {
	n := 0
	for _, h := range d.hosts {
		if h.ejected {
			n++
		}
	}
	return n
}

// updateOutLocked recomputes whether ejection is suspended by
// MinHealthPercent, and which hosts picks avoid.
func (d *Detector) updateOutLocked() {
	total, ejected := len(d.hosts), d.numEjectedLocked()
	cfg := d.cfg.Load()
	suspended := cfg != nil && cfg.MinHealthPercent > 0 && (total-ejected)*100 < int(cfg.MinHealthPercent)*total
	if suspended != d.suspended {
		d.suspended = suspended
		if suspended {
			d.logf("ejection suspended: %d of %d endpoints are ejected, minHealthPercent is %d", ejected, total, cfg.MinHealthPercent)
		} else {
			d.logf("ejection resumed: %d of %d endpoints are ejected", ejected, total)
		}
	}
	for _, h := range d.hosts {
		h.out.Store(h.ejected && !suspended)
	}
}

// Due reports whether an Interval has passed since the last Tick, so that
// Tick has work to do. It takes no lock, and reads the clock only while
// detection is on.
func (d *Detector) Due() bool {
	next := d.next.Load()
	return next != off && d.since() >= time.Duration(next)
}

// Wait returns how long until the next Interval, and false if detection is
// off: how long a timer that calls Tick waits.
func (d *Detector) Wait() (time.Duration, bool) {
	next := d.next.Load()
	if next == off {
		return 0, false
	}
	return max(time.Duration(next)-d.since(), 0), true
}

// Tick runs the Interval checks that are due, each at its own time: a host
// whose ejection has lasted its ejection time comes back, with its counts
// reset, and the ejection count of each host not ejected decays by one.
// It reports whether any host's Ejected changed.
func (d *Detector) Tick() bool {
	if !d.Due() {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cfg, next := d.cfg.Load(), d.next.Load()
	if cfg == nil || next == off {
		return false
	}
	interval, now := d.interval, d.since()
	changed := false
	t := time.Duration(next)
	for ; t <= now; t += interval {
		idle := true
		for _, h := range d.hosts {
			switch {
			case h.ejected && t >= h.ejectedAt+cfg.EjectionTime(h.multiplier):
				h.ejected = false
				h.ejectedFlag.Store(false)
				h.errors.Store(0)
				h.gateway.Store(0)
				changed = true
				d.logf("unejecting endpoint %s", h.name)
			case !h.ejected && h.multiplier > 0:
				h.multiplier--
			}
			idle = idle && !h.ejected && h.multiplier == 0
		}
		if idle { // later checks would change nothing: skip to the next due
			t += (now - t) / interval * interval
		}
	}
	d.next.Store(int64(t))
	if changed {
		d.updateOutLocked()
	}
	return changed
}
