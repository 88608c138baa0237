package retry

import (
	"testing"
	"time"
)

// fakeClock replaces timeNow for a test.
func fakeClock(t *testing.T) *time.Time {
	now := time.Unix(1_000_000, 0)
	timeNow = func() time.Time { return now }
	t.Cleanup(func() { timeNow = time.Now })
	return &now
}

func allowed(b *BudgetTracker, max int) int {
	n := 0
	for n < max && b.TryRetry() {
		n++
	}
	return n
}

func TestBudgetTracker(t *testing.T) {
	now := fakeClock(t)
	b := NewBudgetTracker(Budget{Ratio: 0.2, MinPerSecond: 1, Window: 10 * time.Second})
	for range 100 {
		b.Call()
	}
	// 20 % of 100 calls, plus 1 a second over 10 seconds.
	if got := allowed(b, 1000); got != 30 {
		t.Errorf("retries allowed after 100 calls = %d, want 30", got)
	}
	// Half a window later the calls and retries are still counted.
	*now = now.Add(5 * time.Second)
	for range 50 {
		b.Call()
	}
	if got := allowed(b, 1000); got != 10 {
		t.Errorf("retries allowed after 50 more calls = %d, want 10 (0.2 × 150 + 10 − 30)", got)
	}
	// Once a whole window has passed with no traffic, only the floor is left.
	*now = now.Add(11 * time.Second)
	if got := allowed(b, 1000); got != 10 {
		t.Errorf("retries allowed after an idle window = %d, want 10", got)
	}
}

func TestBudgetDefaults(t *testing.T) {
	fakeClock(t)
	b := NewBudgetTracker(Budget{})
	for range 1000 {
		b.Call()
	}
	if got := allowed(b, 10000); got != 300 {
		t.Errorf("zero Budget: retries allowed after 1000 calls = %d, want 300 (20 %% + 10/s × 10 s)", got)
	}
	none := NewBudgetTracker(Budget{Ratio: -1, MinPerSecond: -1})
	none.Call()
	if none.TryRetry() {
		t.Errorf("a budget with negative ratio and floor allowed a retry")
	}
}
