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
