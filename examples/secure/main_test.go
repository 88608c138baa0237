package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"
)

// TestRun runs the example as `go run ./examples/secure` does and checks
// each call's fate: only the frontend with an admin token gets through;
// the others are refused with the code the README shows.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out, 30*time.Second); err != nil {
		t.Fatalf("run() = %v\noutput:\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	for _, want := range []string{
		`frontend +admin token +allowed: `,
		`frontend +user token +denied: +PermissionDenied`,
		`frontend +no token +denied: +PermissionDenied`,
		`frontend +forged token +denied: +Unauthenticated`,
		`batch +admin token +denied: +PermissionDenied`,
	} {
		if !regexp.MustCompile(want).Match(out.Bytes()) {
			t.Errorf("output has no line matching %q", want)
		}
	}
}
