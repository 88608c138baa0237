package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var countRE = regexp.MustCompile(`rpc_client_duration_milliseconds_count\{[^}]*destination_version="(v\d)"[^}]*\} (\d+)`)

// TestRun runs the example as `go run ./examples/observability` does and
// checks what it prints: Prometheus counts per destination version that
// add up to the calls sent (more v1 than v2 with the 80/20 split), an
// access-log line, and a server span whose parent is the client's.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const calls = 200
	var out bytes.Buffer
	if err := run(ctx, &out, calls, 30*time.Second); err != nil {
		t.Fatalf("run() = %v\noutput:\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	counts := map[string]int{}
	for _, m := range countRE.FindAllStringSubmatch(out.String(), -1) {
		n, _ := strconv.Atoi(m[2])
		counts[m[1]] += n
	}
	// The counters include the warm-up calls made before the measured ones.
	if counts["v1"]+counts["v2"] < calls || counts["v1"] <= counts["v2"] {
		t.Errorf("per-version call counts %v, want at least %d in all and more v1 than v2", counts, calls)
	}
	// The first span printed is a server span whose parent came over the
	// wire from the client (W3C trace context).
	for _, want := range []string{"access log (first line):", `"protocol":"grpc"`, `"status":"OK"`, `"SpanKind": 2`, `"Remote": true`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
