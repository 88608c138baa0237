package main

import (
	"bytes"
	"context"
	"math"
	"regexp"
	"strconv"
	"testing"
	"time"
)

var rowRE = regexp.MustCompile(`(?m)^(split 75/25|x-user: jason)\s+([\d.]+)%\s+([\d.]+)%$`)

// TestRun runs the example as `go run ./examples/http` does and checks
// what it prints: the split matches the weights and the header route sends
// every request to v2.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out, 1000, 30*time.Second); err != nil {
		t.Fatalf("run() = %v\noutput:\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	rows := map[string]float64{}
	for _, m := range rowRE.FindAllStringSubmatch(out.String(), -1) {
		v2, _ := strconv.ParseFloat(m[3], 64)
		rows[m[1]] = v2
	}
	if v2, ok := rows["split 75/25"]; !ok || math.Abs(v2-25) > 5 {
		t.Errorf("split row v2 = %v (found %v), want 25±5", v2, ok)
	}
	if v2, ok := rows["x-user: jason"]; !ok || v2 != 100 {
		t.Errorf("header row v2 = %v (found %v), want 100", v2, ok)
	}
}
