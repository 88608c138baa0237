// Command trellis-bench measures the mesh against plain grpc-go and net/http
// with the same mutual TLS, and the control plane against the targets of
// ANCHORS.md (M1–M8), and prints one table of medians and ratios.
//
// Plain and mesh variants run interleaved (plain, mesh, plain, mesh, …,
// -reps times). Clients and servers of M1–M5 share this process, so CPU
// per RPC is client and server together; the control plane always runs in
// a child process (this binary re-executed), so its work is not counted in
// the data path and its memory is measured alone. M8 runs each first call
// in a fresh child process.
//
//	go run ./cmd/trellis-bench              # full run, a few minutes
//	go run ./cmd/trellis-bench -quick       # smoke run, seconds
//	go run ./cmd/trellis-bench -only cp -clients 1000
//	go run ./cmd/trellis-bench -variant mesh -cpuprofile cpu.out -memprofile mem.out
//
// It prints nothing but the table; errors go to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"time"
)

// config is what the flags set.
type config struct {
	quick    bool
	reps     int
	rate     int           // open-loop requests per second
	duration time.Duration // each load phase
	clients  int           // M6/M7 xDS clients
	changes  int           // M6 endpoint changes
	variant  string        // both, plain or mesh
	only     string        // "": everything; data, memory or cp: that part alone
	progress io.Writer     // -v: section timings; nil: silent
}

// logf reports progress when -v is set.
func (c config) logf(format string, args ...any) {
	if c.progress != nil {
		fmt.Fprintf(c.progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}

func main() {
	if os.Getenv(childEnv) != "" {
		if err := childMain(); err != nil {
			fmt.Fprintln(os.Stderr, "trellis-bench child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if err := runMain(); err != nil {
		fmt.Fprintln(os.Stderr, "trellis-bench:", err)
		os.Exit(1)
	}
}

func runMain() error {
	var (
		quick      = flag.Bool("quick", false, "smoke run: one short repetition, 10 xDS clients (seconds)")
		reps       = flag.Int("reps", 5, "repetitions of each plain/mesh pair")
		rate       = flag.Int("rate", 1000, "open-loop request rate per second (M1)")
		duration   = flag.Duration("duration", time.Second, "length of each load phase")
		clients    = flag.Int("clients", 100, "lightweight xDS clients for M6 and M7")
		variant    = flag.String("variant", "both", "data-path variants to run: both, plain or mesh (for profiling); not both skips M4 memory, M6 and M7")
		only       = flag.String("only", "", "run one part alone: data (M1–M5 and M8), memory (M4 footprint), cp (M6, M7, M9) or delta (M9)")
		cpuprofile = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
		memprofile = flag.String("memprofile", "", "write an allocation profile to this file at the end")
		verbose    = flag.Bool("v", false, "report progress on stderr")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	cfg := config{reps: *reps, rate: *rate, duration: *duration, clients: *clients, changes: 5, variant: *variant, only: *only}
	if *quick {
		cfg = quickConfig(cfg)
	}
	if *verbose {
		cfg.progress = os.Stderr
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	started := time.Now()
	rows, err := run(ctx, cfg)
	if err != nil {
		return err
	}
	printTable(os.Stdout, cfg, started, rows)
	if *memprofile != "" {
		f, err := os.Create(*memprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			return err
		}
	}
	return nil
}

func quickConfig(cfg config) config {
	cfg.quick = true
	cfg.reps = 1
	cfg.duration = 100 * time.Millisecond
	cfg.clients = min(cfg.clients, 10)
	cfg.changes = 2
	return cfg
}

func (c config) validate() error {
	switch {
	case c.reps < 1:
		return errors.New("-reps must be at least 1")
	case c.rate < 1:
		return errors.New("-rate must be at least 1")
	case c.duration <= 0:
		return errors.New("-duration must be positive")
	case c.clients < 1:
		return errors.New("-clients must be at least 1")
	case c.variant != "both" && c.variant != "plain" && c.variant != "mesh":
		return fmt.Errorf("-variant %q: want both, plain or mesh", c.variant)
	case c.only != "" && c.only != "data" && c.only != "memory" && c.only != "cp" && c.only != "delta":
		return fmt.Errorf("-only %q: want data, memory, cp or delta", c.only)
	}
	return nil
}

// run takes every measurement and returns the rows of the table.
func run(ctx context.Context, cfg config) ([]row, error) {
	var rows []row
	part := func(name string) bool { return cfg.only == "" || cfg.only == name }
	if part("data") {
		cfg.logf("M1–M5, M8: data path")
		dp, err := dataPath(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("M1–M5, M8: %w", err)
		}
		rows = append(rows, dp...)
	}
	if cfg.variant != "both" {
		return rows, nil
	}
	if part("memory") {
		cfg.logf("M4: memory")
		mem, err := memory(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("M4 memory: %w", err)
		}
		rows = append(rows, mem...)
	}
	if part("cp") {
		cfg.logf("M6, M7: control plane")
		cp, err := controlPlane(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("M6/M7: %w", err)
		}
		rows = append(rows, cp...)
	}
	if part("cp") || part("delta") {
		cfg.logf("M9: cost of one endpoint change")
		d, err := deltaCost(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("M9: %w", err)
		}
		rows = append(rows, d...)
	}
	cfg.logf("done")
	return rows, nil
}

// printTable writes the table.
func printTable(w io.Writer, cfg config, started time.Time, rows []row) {
	mode := "full"
	if cfg.quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "trellis-bench %s run, %s, %d reps, %s phases, open loop %d/s, %d xDS clients; medians over reps\n",
		mode, started.UTC().Format(time.RFC3339), cfg.reps, cfg.duration, cfg.rate, cfg.clients)
	fmt.Fprintf(w, "%-44s %12s %12s %12s  %-14s %s\n", "metric", "plain", "mesh", "mesh vs plain", "target", "")
	for _, r := range rows {
		fmt.Fprintf(w, "%-44s %12s %12s %12s  %-14s %s\n", r.name, num(r.plain), num(r.mesh), r.compare(), r.target, r.verdict())
	}
}
