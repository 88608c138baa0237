package analyze

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trellismesh/trellis/internal/config"
)

func TestSet(t *testing.T) {
	set, err := config.Load(map[string][]byte{"mesh.yaml": []byte(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  resolution: STATIC
  ports: [{number: 9080, name: grpc}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings]
  resolution: STATIC
  ports: [{number: 8080, name: grpc}]
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /x}}]
    route: [{destination: {host: details}}]
`)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range Set(set) {
		got = append(got, f.Severity+": "+f.String())
	}
	want := []string{
		"warning: mesh.yaml:12: ServiceEntry default/ratings: spec.workloadSelector: selects no WorkloadEntry in namespace default; the service has endpoints only if workloads register",
		"warning: mesh.yaml:21: DestinationRule default/reviews: spec.subsets[1].labels: subset v2 selects none of the 1 static endpoints of reviews",
		"warning: mesh.yaml:30: VirtualService default/reviews: spec.http[0]: matches every request, so the 1 route(s) after it never match",
		"info: mesh.yaml:30: VirtualService default/reviews: spec.http[1].route[0].destination.host: host details is defined by no ServiceEntry; it exists only while workloads register under that name",
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Set() findings (-got +want):\n%s", diff)
	}
}

func TestCleanSetHasNoFindings(t *testing.T) {
	set, err := config.Load(map[string][]byte{"mesh.yaml": []byte(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  resolution: STATIC
  ports: [{number: 9080, name: grpc}]
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {x-a: {exact: "1"}}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
`)})
	if err != nil {
		t.Fatal(err)
	}
	if f := Set(set); len(f) != 0 {
		t.Errorf("Set() = %v, want no findings", f)
	}
}

// TestSecurityFindings: an ALLOW policy without rules (denies everything),
// a DENY policy without rules (matches nothing) and selectors that match
// no defined workload are reported; a policy with rules selecting a
// defined workload is not.
func TestSecurityFindings(t *testing.T) {
	set, err := config.Load(map[string][]byte{"mesh.yaml": []byte(`
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-1}
spec: {address: 10.0.0.1, labels: {app: reviews}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing}
spec:
  selector: {matchLabels: {app: reviews}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-nothing}
spec:
  action: DENY
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo}
spec:
  selector: {matchLabels: {app: reveiws}}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict-reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: dry-allow-nothing, annotations: {istio.io/dry-run: "true"}}
spec: {}
`)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range Set(set) {
		got = append(got, f.Severity+": "+f.String())
	}
	want := []string{
		"warning: mesh.yaml:7: AuthorizationPolicy default/allow-nothing: spec.rules: an ALLOW policy with no rules allows nothing: every request to the workloads it selects is denied (write rules: [{}] to allow all)",
		"warning: mesh.yaml:13: AuthorizationPolicy default/deny-nothing: spec.rules: a DENY policy with no rules matches no request",
		"info: mesh.yaml:19: AuthorizationPolicy default/typo: spec.selector.matchLabels: selects no workload the configuration defines in namespace default; it applies only to workloads that register with these labels",
		"warning: mesh.yaml:33: AuthorizationPolicy default/dry-allow-nothing: spec.rules: a dry-run ALLOW policy with no rules would allow nothing: it reports every request to the workloads it selects as denied, and enforces nothing (write rules: [{}] to allow all)",
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Set() findings (-got +want):\n%s", diff)
	}
}
