package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// caller makes one request.
type caller func(ctx context.Context) error

// phase is the outcome of one load phase.
type phase struct {
	ops     int
	elapsed time.Duration
	lat     []time.Duration // sorted
	cpu     time.Duration   // user + system CPU of this process
	mallocs uint64          // heap allocations of this process
}

func (p phase) perOp(d time.Duration) float64 { return float64(d) / float64(p.ops) }

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// closedLoop runs inFlight callers, each sending its next request when the
// last one returns, for d.
func closedLoop(ctx context.Context, call caller, inFlight int, d time.Duration) (phase, error) {
	lats := make([][]time.Duration, inFlight)
	var (
		wg       sync.WaitGroup
		firstErr atomic.Pointer[error]
	)
	m0, cpu0 := mallocs(), cpuTime()
	start := time.Now()
	deadline := start.Add(d)
	for i := range inFlight {
		wg.Go(func() {
			for {
				t := time.Now()
				if t.After(deadline) {
					return
				}
				if err := call(ctx); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				lats[i] = append(lats[i], time.Since(t))
			}
		})
	}
	wg.Wait()
	p := phase{elapsed: time.Since(start), cpu: cpuTime() - cpu0}
	p.mallocs = mallocs() - m0
	if e := firstErr.Load(); e != nil {
		return p, *e
	}
	p.lat = slices.Concat(lats...)
	slices.Sort(p.lat)
	p.ops = len(p.lat)
	if p.ops == 0 {
		return p, fmt.Errorf("no request completed in %s", d)
	}
	return p, nil
}

// openLoop sends rate requests per second for d, each at its scheduled
// time whether or not earlier ones have returned, and measures each from
// its scheduled time, so that a stall is charged to every request it
// delays (no coordinated omission).
func openLoop(ctx context.Context, call caller, rate int, d time.Duration) (phase, error) {
	n := max(1, int(d.Seconds()*float64(rate)))
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	var (
		wg       sync.WaitGroup
		firstErr atomic.Pointer[error]
	)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	m0, cpu0 := mallocs(), cpuTime()
	start := time.Now()
	for i := range n {
		sched := start.Add(time.Duration(i) * interval)
		// Go's timers wake up to a millisecond late on Linux, which would
		// add about half a millisecond to every latency; nanosleep(2) on
		// this locked thread is precise to tens of microseconds.
		if err := ctx.Err(); err != nil {
			wg.Wait()
			return phase{}, err
		}
		if wait := time.Until(sched); wait > 0 {
			ts := syscall.NsecToTimespec(wait.Nanoseconds())
			syscall.Nanosleep(&ts, nil)
		}
		wg.Go(func() {
			if err := call(ctx); err != nil {
				firstErr.CompareAndSwap(nil, &err)
			}
			lat[i] = time.Since(sched)
		})
	}
	wg.Wait()
	p := phase{ops: n, elapsed: time.Since(start), cpu: cpuTime() - cpu0}
	p.mallocs = mallocs() - m0
	if e := firstErr.Load(); e != nil {
		return p, *e
	}
	slices.Sort(lat)
	p.lat = lat
	return p, nil
}
