package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTrellisAnnotations: a misspelt or misplaced trellis.io/ annotation
// is rejected with the file, resource and annotation named, never ignored;
// other annotations are left alone.
func TestTrellisAnnotations(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{
			name: "misspelt",
			yaml: `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: r
  annotations: {trellis.io/rate-limt: '{"requestsPerSecond": 1}', example.com/owner: team-a}
spec: {host: r}
`,
			want: []string{`mesh.yaml:1: DestinationRule default/r: metadata.annotations["trellis.io/rate-limt"]: unknown Trellis annotation (known: trellis.io/load-balancer, trellis.io/rate-limit, trellis.io/route-rate-limit, trellis.io/server-rate-limit; see docs/SUPPORT.md)`},
		},
		{
			name: "load balancer on a VirtualService",
			yaml: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: r
  annotations: {trellis.io/load-balancer: EWMA}
spec: {hosts: [r], http: [{route: [{destination: {host: r}}]}]}
`,
			want: []string{`mesh.yaml:1: VirtualService default/r: metadata.annotations["trellis.io/load-balancer"]: belongs on a DestinationRule`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(map[string][]byte{"mesh.yaml": []byte(tc.yaml)})
			var got []string
			for _, e := range Errors(err) {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("Load() errors (-got +want):\n%s", diff)
			}
		})
	}
	ok := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: r
  annotations: {trellis.io/load-balancer: EWMA, example.com/owner: team-a}
spec: {host: r}
`
	if _, err := Load(map[string][]byte{"mesh.yaml": []byte(ok)}); err != nil {
		t.Errorf("Load(known annotations) = %v, want success", err)
	}
}

// TestDryRunAnnotation: istio.io/dry-run on an AuthorizationPolicy is read
// ("true" makes a dry run, "false" an enforced policy); any other value,
// or the annotation on another kind, is rejected with the file, resource
// and annotation named, never read as "enforce" or "ignore".
func TestDryRunAnnotation(t *testing.T) {
	policy := func(annotations string) string {
		return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: shop
  annotations: ` + annotations + `
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
`
	}
	field := `mesh.yaml:1: AuthorizationPolicy shop/deny-admin: metadata.annotations["istio.io/dry-run"]: `
	tests := []struct {
		name, yaml string
		dryRun     bool
		want       []string
	}{
		{name: "true", yaml: policy(`{istio.io/dry-run: "true"}`), dryRun: true},
		{name: "false", yaml: policy(`{istio.io/dry-run: "false"}`)},
		{name: "absent", yaml: policy(`{example.com/owner: team-a}`)},
		{name: "True", yaml: policy(`{istio.io/dry-run: "True"}`), want: []string{field + `"True" is not a valid value (true or false)`}},
		{name: "yes", yaml: policy(`{istio.io/dry-run: "yes"}`), want: []string{field + `"yes" is not a valid value (true or false)`}},
		{name: "1", yaml: policy(`{istio.io/dry-run: "1"}`), want: []string{field + `"1" is not a valid value (true or false)`}},
		{name: "empty", yaml: policy(`{istio.io/dry-run: ""}`), want: []string{field + `"" is not a valid value (true or false)`}},
		{name: "not a string", yaml: policy(`{istio.io/dry-run: true}`), want: []string{field + `must be a string`}},
		{
			name: "on a PeerAuthentication",
			yaml: `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec: {mtls: {mode: STRICT}}
`,
			want: []string{`mesh.yaml:1: PeerAuthentication shop/strict: metadata.annotations["istio.io/dry-run"]: applies only to an AuthorizationPolicy`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set, err := Load(map[string][]byte{"mesh.yaml": []byte(tc.yaml)})
			var got []string
			for _, e := range Errors(err) {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Fatalf("Load() errors (-got +want):\n%s", diff)
			}
			if tc.want != nil {
				return
			}
			if n := len(set.AuthorizationPolicies); n != 1 {
				t.Fatalf("Load() = %d AuthorizationPolicies, want 1", n)
			}
			if got := set.AuthorizationPolicies[0].DryRun(); got != tc.dryRun {
				t.Errorf("DryRun() = %v, want %v", got, tc.dryRun)
			}
		})
	}
}
