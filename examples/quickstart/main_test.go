package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestRun runs the quickstart as `go run ./examples/quickstart` does and
// checks what it prints: the measured shares match the weights, the header
// route sends everything to v2, and the temporary directory is gone
// afterwards.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const rpcs = 1000
	var out bytes.Buffer
	if err := run(ctx, &out, rpcs, 20*time.Second); err != nil {
		t.Fatalf("run() = %v\noutput:\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())

	rows := map[string][2]float64{}
	for _, m := range rowRE.FindAllStringSubmatch(out.String(), -1) {
		v1, _ := strconv.ParseFloat(m[2], 64)
		v2, _ := strconv.ParseFloat(m[3], 64)
		rows[m[1]] = [2]float64{v1, v2}
	}
	for _, tc := range []struct {
		row    string
		wantV2 float64
	}{
		{"canary 90/10", 10},
		{"canary 50/50", 50},
		{"x-canary: true", 100},
	} {
		got, ok := rows[tc.row]
		if !ok {
			t.Errorf("no %q row in the output", tc.row)
			continue
		}
		// Five standard deviations of a binomial share: a false alarm
		// is rarer than one in a million runs.
		p := tc.wantV2 / 100
		tol := 5 * 100 * math.Sqrt(p*(1-p)/rpcs)
		if math.Abs(got[1]-tc.wantV2) > tol || math.Abs(got[0]+got[1]-100) > 0.2 {
			t.Errorf("%s: v1 %.1f%%, v2 %.1f%%; want v2 %.0f±%.1f%% and v1 the rest", tc.row, got[0], got[1], tc.wantV2, tol)
		}
	}

	m := dirRE.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no configuration directory in the output")
	}
	if _, err := os.Stat(m[1]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after run, os.Stat(%q) = %v, want the directory removed", m[1], err)
	}
}

var (
	rowRE = regexp.MustCompile(`(?m)^(canary \d+/\d+|x-canary: true)\s+([\d.]+)%\s+([\d.]+)%`)
	dirRE = regexp.MustCompile(`(?m)^control plane .*, watching (\S+)$`)
)

func TestRunBadArguments(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := run(ctx, io.Discard, 0, time.Second); err == nil {
		t.Errorf("run(rpcs = 0) = nil, want an error")
	}
}
