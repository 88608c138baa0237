package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the harness's child processes
// (control planes, first-RPC probes), as the command does.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := childMain(); err != nil {
			fmt.Fprintln(os.Stderr, "trellis-bench child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestQuickRun runs the -quick mode and checks that the table has every
// row, with finite numbers, positive where they measure time, rate or
// size, and ordered percentiles.
func TestQuickRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := quickConfig(config{reps: 1, rate: 1000, clients: 10, changes: 5, variant: "both"})
	if err := cfg.validate(); err != nil {
		t.Fatalf("quickConfig().validate() = %v", err)
	}
	rows, err := run(ctx, cfg)
	if err != nil {
		t.Fatalf("run() = %v", err)
	}
	var b strings.Builder
	printTable(&b, cfg, time.Now(), rows)
	table := b.String()

	byName := map[string]row{}
	for _, r := range rows {
		byName[r.name] = r
		if !strings.Contains(table, r.name) {
			t.Errorf("the table lacks row %q:\n%s", r.name, table)
		}
	}
	var want []string
	for _, p := range []string{"gRPC", "HTTP"} {
		for _, f := range []string{
			"M1 %s closed 1 in flight p50 µs", "M1 %s closed 1 in flight p90 µs", "M1 %s closed 1 in flight p99 µs",
			"M1 %s open loop p50 µs", "M1 %s open loop p90 µs", "M1 %s open loop p99 µs",
			"M2 %s CPU µs/RPC at 8 (cli+srv)", "M3 %s RPC/s at 64 in flight", "M4 %s allocs/RPC (cli+srv)",
			"M5 %s handshakes per 10k RPCs",
		} {
			want = append(want, fmt.Sprintf(f, p))
		}
	}
	want = append(want,
		"M8 first routed RPC, fresh process ms",
		"M4 heap, 10 targets x 10 endpoints MiB", "M4 RSS, 10 targets x 10 endpoints MiB", "M4 heap per target past the first KiB",
		"M6 N=10 change → client p50 ms", "M6 N=10 change → client p99 ms", "M6 N=10 change → last client ms",
		"M6 bytes received per client per change",
		"M7 N=10 CP heap per client KiB", "M7 N=10 CP RSS per client KiB", "M7 N=10 restart → all reconverged s",
		"M9 N=10 K=50 bytes/client/change SotW", "M9 N=10 K=50 bytes/client/change delta",
		"M9 N=10 K=50 CP CPU ms/change SotW", "M9 N=10 K=50 CP CPU ms/change delta", "M9 N=10 K=50 last client ms SotW",
	)
	if len(rows) != len(want) {
		t.Errorf("run() returned %d rows, want %d", len(rows), len(want))
	}
	for _, name := range want {
		r, ok := byName[name]
		if !ok {
			t.Errorf("row %q missing from the table:\n%s", name, table)
			continue
		}
		controlPlaneOnly := strings.HasPrefix(name, "M6") || strings.HasPrefix(name, "M7")
		if controlPlaneOnly != math.IsNaN(r.plain) {
			t.Errorf("row %q: plain = %v; want a number exactly for data-path rows", name, r.plain)
		}
		for _, v := range []float64{r.plain, r.mesh} {
			if math.IsNaN(v) && controlPlaneOnly {
				continue
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Errorf("row %q: value %v is not finite", name, v)
			}
			// Memory deltas may be negative (GC), handshakes zero; the
			// rest are times, rates, sizes or counts of work done.
			if !strings.HasPrefix(name, "M4 heap") && !strings.HasPrefix(name, "M4 RSS") && !strings.HasPrefix(name, "M5") &&
				!strings.Contains(name, "RSS per client") && v <= 0 {
				t.Errorf("row %q: value %v, want > 0", name, v)
			}
		}
	}
	for _, p := range []string{"gRPC closed 1 in flight", "gRPC open loop", "HTTP closed 1 in flight", "HTTP open loop"} {
		p50, p90, p99 := byName["M1 "+p+" p50 µs"], byName["M1 "+p+" p90 µs"], byName["M1 "+p+" p99 µs"]
		if !(p50.mesh <= p90.mesh && p90.mesh <= p99.mesh && p50.plain <= p90.plain && p90.plain <= p99.plain) {
			t.Errorf("M1 %s: percentiles out of order: plain %v/%v/%v, mesh %v/%v/%v", p, p50.plain, p90.plain, p99.plain, p50.mesh, p90.mesh, p99.mesh)
		}
	}
	// One endpoint change costs each client one endpoint list, not the 50
	// it subscribes to, as the snapshot baseline does.
	for _, name := range []string{"M9 N=10 K=50 bytes/client/change SotW", "M9 N=10 K=50 bytes/client/change delta"} {
		if r := byName[name]; !(r.mesh*10 < r.plain) {
			t.Errorf("row %q: %v bytes per client per change, want under a tenth of the snapshot cache's %v", name, r.mesh, r.plain)
		}
	}
	if t.Failed() {
		t.Logf("table:\n%s", table)
	}
}

func TestValidate(t *testing.T) {
	good := config{reps: 1, rate: 1, duration: time.Millisecond, clients: 1, variant: "both"}
	tests := []struct {
		name   string
		change func(*config)
	}{
		{"zero reps", func(c *config) { c.reps = 0 }},
		{"zero rate", func(c *config) { c.rate = 0 }},
		{"zero duration", func(c *config) { c.duration = 0 }},
		{"zero clients", func(c *config) { c.clients = 0 }},
		{"unknown variant", func(c *config) { c.variant = "other" }},
	}
	if err := good.validate(); err != nil {
		t.Fatalf("validate(%+v) = %v, want nil", good, err)
	}
	for _, tt := range tests {
		c := good
		tt.change(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: validate(%+v) = nil, want an error", tt.name, c)
		}
	}
}
