package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const shadowed = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - route: [{destination: {host: greeter}}]
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: greeter}}]
`

func TestValidate(t *testing.T) {
	good, bad := t.TempDir(), t.TempDir()
	write(t, good, "vs.yaml", shadowed)
	write(t, bad, "vs.yaml", strings.Replace(shadowed, "hosts: [greeter]", "hosts: [greeter]\n  gateways: [mesh]", 1))
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  []string
	}{
		{"valid with a warning", []string{"validate", good}, 0, []string{
			"warning: " + filepath.Join(good, "vs.yaml") + ":1: VirtualService default/greeter: spec.http[0]: matches every request",
			good + ": valid (1 resources, 2 findings)",
		}},
		{"strict fails on warnings", []string{"validate", "-strict", good}, 1, []string{"valid"}},
		{"rejected", []string{"validate", bad}, 1, []string{
			"error: " + filepath.Join(bad, "vs.yaml") + ":1: VirtualService default/greeter: spec.gateways: field not supported by Trellis",
			"rejected (1 errors)",
		}},
		{"no directory", []string{"validate"}, 2, nil},
		{"missing directory", []string{"validate", filepath.Join(good, "nope")}, 1, nil},
		{"unknown command", []string{"frobnicate"}, 2, nil},
		{"bad format", []string{"validate", "-o", "xml", good}, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tc.args, &stdout, &stderr); code != tc.code {
				t.Errorf("run(%q) = %d, want %d\nstdout:\n%s\nstderr:\n%s", tc.args, code, tc.code, &stdout, &stderr)
			}
			for _, want := range tc.out {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("run(%q) output:\n%s\nwant it to contain %q", tc.args, &stdout, want)
				}
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "vs.yaml", shadowed)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"validate", "-o", "json", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, &stderr)
	}
	var rep struct {
		Valid    bool
		Errors   []any
		Findings []struct{ Severity, Field, Message string }
		Counts   map[string]int `json:"resources"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, &stdout)
	}
	if !rep.Valid || len(rep.Errors) != 0 || rep.Counts["VirtualService"] != 1 || len(rep.Findings) != 2 {
		t.Errorf("report = %+v, want valid, one VirtualService, two findings", rep)
	}
	if f := rep.Findings[1]; f.Severity != "warning" || f.Field != "spec.http[0]" {
		t.Errorf("second finding = %+v, want the shadowing warning on spec.http[0]", f)
	}
}
