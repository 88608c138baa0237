package retry

import (
	"sync"
	"time"
)

// Defaults of a Budget, those of Linkerd's retry budgets.
const (
	DefaultBudgetRatio        = 0.2
	DefaultBudgetMinPerSecond = 10
	DefaultBudgetWindow       = 10 * time.Second
)

// Budget caps retries as a share of calls, so that when every backend
// fails, retries cannot multiply the load (the retry storms of ANCHORS.md):
// over the last Window, retries may number at most Ratio × calls, plus
// MinPerSecond × Window so that light traffic can still retry. The zero
// value is valid and uses the defaults: 20 % of calls plus 10 retries a
// second, over 10 seconds.
type Budget struct {
	// Ratio is the share of calls that may be retried. If zero, 0.2; a
	// negative Ratio allows no retries beyond MinPerSecond.
	Ratio float64
	// MinPerSecond is the rate of retries always allowed. If zero, 10; a
	// negative value allows none beyond Ratio.
	MinPerSecond float64
	// Window is the period calls and retries are counted over. If zero,
	// 10 seconds.
	Window time.Duration
}

// budgetSlots is the number of slots a window is counted in.
const budgetSlots = 10

// BudgetTracker enforces a Budget over the calls of one destination. It is
// safe for concurrent use.
type BudgetTracker struct {
	ratio, floor float64 // floor: retries always allowed per window
	slot         time.Duration

	mu      sync.Mutex
	start   time.Time // start of slots[cur]
	cur     int
	calls   [budgetSlots]int64
	retries [budgetSlots]int64
}

// timeNow is replaced in tests.
var timeNow = time.Now

// NewBudgetTracker returns a tracker of b.
func NewBudgetTracker(b Budget) *BudgetTracker {
	ratio := b.Ratio
	if ratio == 0 {
		ratio = DefaultBudgetRatio
	}
	perSec := b.MinPerSecond
	if perSec == 0 {
		perSec = DefaultBudgetMinPerSecond
	}
	window := b.Window
	if window <= 0 {
		window = DefaultBudgetWindow
	}
	return &BudgetTracker{
		ratio: max(ratio, 0),
		floor: max(perSec, 0) * window.Seconds(),
		slot:  window / budgetSlots,
		start: timeNow(),
	}
}

// advance moves the current slot to now, clearing the slots it passes;
// the caller holds t.mu.
func (t *BudgetTracker) advance(now time.Time) {
	for n := 0; now.Sub(t.start) >= t.slot; n++ {
		if n >= budgetSlots { // idle for a whole window: start afresh
			t.calls, t.retries = [budgetSlots]int64{}, [budgetSlots]int64{}
			t.start = now
			return
		}
		t.cur = (t.cur + 1) % budgetSlots
		t.calls[t.cur], t.retries[t.cur] = 0, 0
		t.start = t.start.Add(t.slot)
	}
}

// Call records a call (its first attempt).
func (t *BudgetTracker) Call() {
	t.mu.Lock()
	t.advance(timeNow())
	t.calls[t.cur]++
	t.mu.Unlock()
}

// TryRetry reports whether the budget allows one more retry now, and if so
// counts it.
func (t *BudgetTracker) TryRetry() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.advance(timeNow())
	var calls, retries int64
	for i := range budgetSlots {
		calls += t.calls[i]
		retries += t.retries[i]
	}
	if float64(retries+1) > t.ratio*float64(calls)+t.floor {
		return false
	}
	t.retries[t.cur]++
	return true
}
