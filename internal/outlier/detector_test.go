package outlier

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// clock is a fake clock for WithClock: time stands still until set.
type clock struct {
	mu    sync.Mutex
	start time.Time
	now   time.Time
}

func newClock() *clock {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &clock{start: start, now: start}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// set moves the clock to d after its start.
func (c *clock) set(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.start.Add(d)
}

// step is one step of TestDetector: outcomes for a host, a Failure for
// every host in turn, or the clock moving on and a Tick; then the hosts
// whose Ejected is true.
type step struct {
	host    int
	outcome Outcome
	n       int           // how many times outcome is recorded
	rounds  int           // or: how many times every host fails in turn
	at      time.Duration // or: the clock moves to at after the start, and Tick
	// wantEjections is how many of the step's Records report an
	// ejection; wantOut the hosts picks avoid after the step.
	wantEjections int
	wantOut       []int
}

func fail(host, n int, wantEjections int, wantOut ...int) step {
	return step{host: host, outcome: Failure, n: n, wantEjections: wantEjections, wantOut: wantOut}
}

func gateway(host, n int, wantEjections int, wantOut ...int) step {
	return step{host: host, outcome: GatewayFailure, n: n, wantEjections: wantEjections, wantOut: wantOut}
}

func record(host int, o Outcome, wantOut ...int) step {
	return step{host: host, outcome: o, n: 1, wantOut: wantOut}
}

func tick(at time.Duration, wantOut ...int) step {
	return step{at: at, wantOut: wantOut}
}

// each is a Failure for every host in turn, rounds times.
func each(rounds int, wantEjections int, wantOut ...int) step {
	return step{rounds: rounds, wantEjections: wantEjections, wantOut: wantOut}
}

const s = time.Second

// TestDetector drives the state machine through the corner cases of
// outlier ejection: thresholds and what resets them, every host failing
// against maxEjectionPercent and minHealthPercent, a flapping host's
// backoff and its decay, and ticks that catch up after a pause.
func TestDetector(t *testing.T) {
	base := Config{ConsecutiveErrors: 3, Interval: 10 * s, BaseEjectionTime: 30 * s, MaxEjectionPercent: 100}
	with := func(f func(*Config)) Config { c := base; f(&c); return c }
	for _, tc := range []struct {
		name  string
		cfg   Config
		hosts int
		steps []step
	}{{
		name:  "consecutive errors eject at the threshold",
		cfg:   base,
		hosts: 3,
		steps: []step{fail(0, 2, 0), fail(0, 1, 1, 0)},
	}, {
		name:  "a success resets the count, an ignored outcome does not",
		cfg:   base,
		hosts: 3,
		steps: []step{fail(0, 2, 0), record(0, Success), fail(0, 2, 0), record(0, Ignored), fail(0, 1, 1, 0)},
	}, {
		name:  "gateway failures count as errors",
		cfg:   base,
		hosts: 3,
		steps: []step{gateway(0, 1, 0), fail(0, 1, 0), gateway(0, 1, 1, 0)},
	}, {
		name:  "a failure resets the gateway count",
		cfg:   Config{ConsecutiveGatewayErrors: 2, MaxEjectionPercent: 100},
		hosts: 3,
		steps: []step{gateway(0, 1, 0), fail(0, 1, 0), gateway(0, 1, 0), fail(0, 5, 0), gateway(0, 2, 1, 0)},
	}, {
		name:  "the first threshold reached ejects",
		cfg:   Config{ConsecutiveErrors: 5, ConsecutiveGatewayErrors: 2, MaxEjectionPercent: 100},
		hosts: 3,
		steps: []step{gateway(0, 2, 1, 0), fail(1, 4, 0, 0), fail(1, 1, 1, 0, 1)},
	}, {
		name:  "outcomes of an ejected host do not count",
		cfg:   with(func(c *Config) { c.MinHealthPercent = 100 }), // ejection suspended: picks still reach it
		hosts: 2,
		steps: []step{fail(0, 3, 1), fail(0, 10, 0), tick(30 * s), fail(0, 2, 0), fail(0, 1, 1)},
	}, {
		name:  "all hosts failing: maxEjectionPercent 50 of 4 ejects two",
		cfg:   with(func(c *Config) { c.MaxEjectionPercent = 50 }),
		hosts: 4,
		steps: []step{each(3, 2, 0, 1), each(3, 0, 0, 1)},
	}, {
		name:  "all hosts failing: one host can always be ejected",
		cfg:   with(func(c *Config) { c.MaxEjectionPercent = 1 }),
		hosts: 4,
		steps: []step{each(3, 1, 0), tick(30 * s), fail(1, 3, 1, 1), fail(2, 3, 0, 1)},
	}, {
		name:  "all hosts failing: maxEjectionPercent 0 ejects none",
		cfg:   with(func(c *Config) { c.MaxEjectionPercent = 0 }),
		hosts: 2,
		steps: []step{each(5, 0)},
	}, {
		name:  "all hosts failing: every host out, then every host back",
		cfg:   base,
		hosts: 3,
		steps: []step{each(3, 3, 0, 1, 2), tick(29*s, 0, 1, 2), tick(30 * s)},
	}, {
		name:  "all hosts failing: minHealthPercent suspends ejection, and resumes it",
		cfg:   with(func(c *Config) { c.MinHealthPercent = 50 }),
		hosts: 4,
		steps: []step{
			fail(0, 3, 1, 0), fail(1, 3, 1, 0, 1), // 2 of 4 left: 50%, not below
			tick(10*s, 0, 1),
			fail(2, 3, 1), // ejected, but 1 of 4 is below 50%: suspended
			fail(3, 3, 1), // detection goes on: every host ejected, all picked
			tick(29 * s),
			tick(30*s, 2, 3), // 0 and 1 back: 2 of 4 left, resumed
			tick(39*s, 2, 3),
			tick(40 * s), // 2 and 3 back too
		},
	}, {
		name:  "a flapping host stays out n × baseEjectionTime, the count decaying while it behaves",
		cfg:   base,
		hosts: 3,
		steps: []step{
			fail(0, 3, 1, 0), // first ejection, at 0: 30s
			tick(29*s, 0),    // ticks at 10s and 20s
			tick(30 * s),
			fail(0, 3, 1, 0), // second in a row, at 30s: 60s
			tick(89*s, 0),
			tick(90 * s),
			fail(0, 3, 1, 0), // third, at 90s: 90s
			tick(179*s, 0),
			tick(180 * s),
			tick(210 * s),    // three intervals not ejected: the count decays from 3 to 0
			fail(0, 3, 1, 0), // first again, at 210s: 30s
			tick(239*s, 0),
			tick(240 * s),
		},
	}, {
		name:  "ejections are capped at 300s",
		cfg:   with(func(c *Config) { c.Interval, c.BaseEjectionTime = 100*s, 200*s }),
		hosts: 3,
		steps: []step{
			fail(0, 3, 1, 0), tick(200 * s), // 200s
			fail(0, 3, 1, 0), tick(400*s, 0), tick(500 * s), // 400s capped at 300s
			fail(0, 3, 1, 0), tick(700*s, 0), tick(800 * s), // 600s capped at 300s
		},
	}, {
		name:  "a base ejection time above 300s is the cap",
		cfg:   with(func(c *Config) { c.Interval, c.BaseEjectionTime = 100*s, 400*s }),
		hosts: 3,
		steps: []step{fail(0, 3, 1, 0), tick(400 * s), fail(0, 3, 1, 0), tick(800 * s)},
	}, {
		name:  "ticks missed during a pause catch up, each at its own time",
		cfg:   base,
		hosts: 3,
		steps: []step{
			fail(0, 3, 1, 0), tick(30 * s),
			fail(0, 3, 1, 0),                                                  // second in a row, at 30s: 60s
			tick(time.Hour),                                                   // back at 90s, the count decayed to 0 at 100s and 110s
			fail(0, 3, 1, 0), tick(time.Hour+29*s, 0), tick(time.Hour + 30*s), // first again: 30s
		},
	}, {
		name:  "zero durations are the defaults",
		cfg:   Config{ConsecutiveErrors: 1, MaxEjectionPercent: 100},
		hosts: 2,
		steps: []step{fail(0, 1, 1, 0), tick(29*s, 0), tick(30 * s)},
	}, {
		name:  "no threshold: nothing is ejected",
		cfg:   Config{MaxEjectionPercent: 100},
		hosts: 2,
		steps: []step{fail(0, 20, 0), gateway(1, 20, 0)},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			d := New(WithClock(c.Now), WithLogger(t.Logf))
			hosts := make([]*Host, tc.hosts)
			for i := range hosts {
				hosts[i] = NewHost(fmt.Sprintf("host%d", i))
			}
			d.Update(&tc.cfg, hosts)
			for i, st := range tc.steps {
				ejections := 0
				switch {
				case st.n > 0:
					for range st.n {
						if d.Record(hosts[st.host], st.outcome) {
							ejections++
						}
					}
				case st.rounds > 0:
					for range st.rounds {
						for _, h := range hosts {
							if d.Record(h, Failure) {
								ejections++
							}
						}
					}
				default:
					c.set(st.at)
					d.Tick()
				}
				if ejections != st.wantEjections {
					t.Errorf("step %d (%+v): %d Records reported an ejection, want %d", i, st, ejections, st.wantEjections)
				}
				if diff := cmp.Diff(out(hosts), st.wantOut); diff != "" {
					t.Fatalf("step %d (%+v): hosts ejected (-got +want):\n%s", i, st, diff)
				}
			}
		})
	}
}

// out returns the indexes of the hosts whose Ejected is true, nil if none.
func out(hosts []*Host) []int {
	var got []int
	for i, h := range hosts {
		if h.Ejected() {
			got = append(got, i)
		}
	}
	return got
}

// TestDetectorUpdate: what a new configuration or host set keeps and
// clears.
func TestDetectorUpdate(t *testing.T) {
	cfg := &Config{ConsecutiveErrors: 1, Interval: 10 * s, BaseEjectionTime: 30 * s, MaxEjectionPercent: 100}
	setup := func(t *testing.T) (*clock, *Detector, []*Host) {
		c := newClock()
		d := New(WithClock(c.Now))
		hosts := []*Host{NewHost("a"), NewHost("b"), NewHost("c")}
		d.Update(cfg, hosts)
		if !d.Record(hosts[0], Failure) {
			t.Fatal("Record(a, Failure) = false, want an ejection")
		}
		return c, d, hosts
	}

	t.Run("hosts that stay keep their ejection", func(t *testing.T) {
		c, d, hosts := setup(t)
		d.Update(cfg, hosts[:2])
		if diff := cmp.Diff(out(hosts), []int{0}); diff != "" {
			t.Errorf("ejected after an update keeping a (-got +want):\n%s", diff)
		}
		c.set(30 * s)
		d.Tick()
		if got := out(hosts); got != nil {
			t.Errorf("ejected after the ejection time = %v, want none", got)
		}
	})
	t.Run("removed hosts are no longer ejected nor counted", func(t *testing.T) {
		_, d, hosts := setup(t)
		d.Update(cfg, hosts[1:])
		if got := out(hosts); got != nil {
			t.Errorf("ejected after removing a = %v, want none", got)
		}
		if d.Record(hosts[0], Failure) {
			t.Error("Record(removed host, Failure) = true, want no ejection")
		}
		// a no longer counts toward maxEjectionPercent's total: with 50%
		// of two hosts, one is ejected.
		d.Update(&Config{ConsecutiveErrors: 1, MaxEjectionPercent: 50}, hosts[1:])
		if !d.Record(hosts[1], Failure) || d.Record(hosts[2], Failure) {
			t.Errorf("ejected = %v, want b only (50%% of 2 hosts)", out(hosts))
		}
	})
	t.Run("disabling detection clears every ejection", func(t *testing.T) {
		_, d, hosts := setup(t)
		for _, off := range []*Config{nil, {MaxEjectionPercent: 100}} {
			d.Update(cfg, hosts)
			d.Record(hosts[1], Failure)
			d.Update(off, hosts)
			if got := out(hosts); got != nil {
				t.Errorf("Update(%+v): ejected = %v, want none", off, got)
			}
			if d.Due() {
				t.Errorf("Update(%+v): Due() = true, want false with detection off", off)
			}
			if _, ok := d.Wait(); ok {
				t.Errorf("Update(%+v): Wait() ok = true, want false with detection off", off)
			}
		}
		// Enabled again, the hosts start afresh: the multiplier is gone.
		c := newClock()
		d = New(WithClock(c.Now))
		d.Update(cfg, hosts)
		d.Record(hosts[0], Failure)
		c.set(30 * s)
		d.Tick()
		d.Update(nil, hosts)
		d.Update(cfg, hosts)
		d.Record(hosts[0], Failure)
		c.set(60 * s)
		d.Tick()
		if got := out(hosts); got != nil {
			t.Errorf("ejected 30s into an ejection after detection was re-enabled = %v, want none (a first ejection)", got)
		}
	})
	t.Run("a new interval counts from the update", func(t *testing.T) {
		c, d, hosts := setup(t)
		c.set(5 * s)
		d.Update(&Config{ConsecutiveErrors: 1, Interval: time.Minute, BaseEjectionTime: 30 * s, MaxEjectionPercent: 100}, hosts)
		if wait, ok := d.Wait(); !ok || wait != time.Minute {
			t.Errorf("Wait() = %v, %v; want 1m, true", wait, ok)
		}
		c.set(64 * s)
		if d.Tick() || !hosts[0].Ejected() {
			t.Error("Tick() before the new interval unejected a host")
		}
		c.set(65 * s)
		if !d.Tick() || hosts[0].Ejected() {
			t.Error("Tick() at the new interval did not uneject a")
		}
	})
	t.Run("a config with the same interval keeps the schedule", func(t *testing.T) {
		c, d, hosts := setup(t)
		c.set(5 * s)
		d.Update(&Config{ConsecutiveErrors: 7, Interval: 10 * s, BaseEjectionTime: 30 * s, MaxEjectionPercent: 100}, hosts)
		if wait, ok := d.Wait(); !ok || wait != 5*s {
			t.Errorf("Wait() = %v, %v; want 5s, true", wait, ok)
		}
	})
}

// TestDetectorDueAndWait: Due and Wait follow the schedule of Intervals.
func TestDetectorDueAndWait(t *testing.T) {
	c := newClock()
	d := New(WithClock(c.Now))
	if d.Due() {
		t.Error("Due() before any config = true, want false")
	}
	d.Update(&Config{ConsecutiveErrors: 1, Interval: 10 * s, MaxEjectionPercent: 100}, []*Host{NewHost("a")})
	for _, tc := range []struct {
		at       time.Duration
		wantDue  bool
		wantWait time.Duration
	}{
		{at: 0, wantDue: false, wantWait: 10 * s},
		{at: 9 * s, wantDue: false, wantWait: s},
		{at: 10 * s, wantDue: true, wantWait: 0},
		{at: 25 * s, wantDue: true, wantWait: 0},
	} {
		c.set(tc.at)
		if got := d.Due(); got != tc.wantDue {
			t.Errorf("at %v: Due() = %v, want %v", tc.at, got, tc.wantDue)
		}
		if got, _ := d.Wait(); got != tc.wantWait {
			t.Errorf("at %v: Wait() = %v, want %v", tc.at, got, tc.wantWait)
		}
	}
	d.Tick() // at 25s: the ticks of 10s and 20s ran; the next is at 30s
	if got, _ := d.Wait(); got != 5*s {
		t.Errorf("after Tick at 25s: Wait() = %v, want 5s", got)
	}
	if d.Due() {
		t.Error("after Tick: Due() = true, want false")
	}
}

// TestDetectorConcurrentRecords: outcomes recorded from many goroutines at
// once never eject more hosts than maxEjectionPercent allows, and each
// ejection is reported once.
func TestDetectorConcurrentRecords(t *testing.T) {
	d := New()
	hosts := make([]*Host, 10)
	for i := range hosts {
		hosts[i] = NewHost(fmt.Sprint(i))
	}
	d.Update(&Config{ConsecutiveErrors: 5, MaxEjectionPercent: 30}, hosts)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		reported []int
	)
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				h := (g + i) % len(hosts)
				o := Failure
				if i%7 == 0 {
					o = Success
				}
				if d.Record(hosts[h], o) {
					mu.Lock()
					reported = append(reported, h)
					mu.Unlock()
				}
				_ = hosts[h].Ejected()
			}
		})
	}
	wg.Wait()
	slices.Sort(reported)
	if diff := cmp.Diff(reported, out(hosts)); diff != "" {
		t.Errorf("ejections reported by Record, against the hosts ejected (-reported +ejected):\n%s", diff)
	}
	if n := len(out(hosts)); n != 3 {
		t.Errorf("%d hosts ejected, want 3 (30%% of 10)", n)
	}
}
