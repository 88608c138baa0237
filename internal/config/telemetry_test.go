package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTelemetryResource: a Telemetry with only a selector loads; its
// accessLogging, tracing, metrics and targetRef are rejected with errors
// naming the file, the resource and the field.
func TestTelemetryResource(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       []string // substrings of the one error; none: loads
	}{
		{"selector only", "selector: {matchLabels: {app: reviews}}", nil},
		{"access logging", "accessLogging: [{disabled: true}]", []string{"Telemetry default/t", "spec.accessLogging", "telemetry.WithAccessLog"}},
		{"tracing sampling", "tracing: [{randomSamplingPercentage: 10}]", []string{"Telemetry default/t", "spec.tracing", "sampler"}},
		{"metrics", "metrics: [{providers: [{name: prometheus}]}]", []string{"spec.metrics", "not supported"}},
		{"target ref", "targetRef: {kind: Service, name: reviews}", []string{"spec.targetRef", "not supported"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "telemetry.yaml")
			doc := "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t}\nspec:\n  " + tc.spec + "\n"
			if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			set, err := LoadDir(dir)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("LoadDir() = %v, want success", err)
				}
				if len(set.Telemetries) != 1 || set.Telemetries[0].Spec.GetSelector().GetMatchLabels()["app"] != "reviews" {
					t.Fatalf("LoadDir() Telemetries = %v, want one selecting app=reviews", set.Telemetries)
				}
				return
			}
			errs := Errors(err)
			if len(errs) != 1 {
				t.Fatalf("LoadDir() = %v, want one error", err)
			}
			for _, w := range append(tc.want, file) {
				if !strings.Contains(errs[0].Error(), w) {
					t.Errorf("LoadDir() error %q lacks %q", errs[0], w)
				}
			}
		})
	}
}
