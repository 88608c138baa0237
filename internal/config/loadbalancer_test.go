package config_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trellismesh/trellis/internal/config"
)

func TestLoadBalancerAnnotation(t *testing.T) {
	rule := func(value, spec string) string {
		return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\n  annotations:\n    trellis.io/load-balancer: " +
			value + "\nspec:\n  host: reviews\n" + spec
	}
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{name: "EWMA", yaml: rule("EWMA", "")},
		{name: "EWMA with locality and outlier settings", yaml: rule("EWMA", `  trafficPolicy:
    loadBalancer: {localityLbSetting: {enabled: true}}
    outlierDetection: {consecutive5xxErrors: 3}
  subsets: [{name: v1, labels: {version: v1}}]
`)},
		{name: "EWMA with ROUND_ROBIN spelled out elsewhere is still a conflict", yaml: rule("EWMA", `  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
`), want: []string{`mesh.yaml:1: DestinationRule default/reviews: spec.subsets[0].trafficPolicy.loadBalancer.simple: conflicts with annotation trellis.io/load-balancer: EWMA; remove one of them`}},
		{name: "lower case", yaml: rule("ewma", ""), want: []string{`mesh.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/load-balancer"]: "ewma" is not supported (supported: EWMA)`}},
		{name: "another balancer", yaml: rule("LEAST_REQUEST", ""), want: []string{`mesh.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/load-balancer"]: "LEAST_REQUEST" is not supported (supported: EWMA)`}},
		{name: "empty", yaml: rule("''", ""), want: []string{`mesh.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/load-balancer"]: "" is not supported (supported: EWMA)`}},
		{name: "with simple", yaml: rule("EWMA", "  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n"),
			want: []string{`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.simple: conflicts with annotation trellis.io/load-balancer: EWMA; remove one of them`}},
		{name: "with consistent hash on a port", yaml: rule("EWMA", `  trafficPolicy:
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {consistentHash: {httpHeaderName: x-user}}
`), want: []string{`mesh.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[0].loadBalancer.consistentHash: conflicts with annotation trellis.io/load-balancer: EWMA; remove one of them`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := config.Load(map[string][]byte{"mesh.yaml": []byte(tc.yaml)})
			var got []string
			for _, e := range config.Errors(err) {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Fatalf("Load() errors (-got +want):\n%s", diff)
			}
			if tc.want == nil && set.DestinationRules[0].Annotations[config.LoadBalancerAnnotation] != config.LoadBalancerEWMA {
				t.Errorf("Load() annotations = %v, want %s: %s", set.DestinationRules[0].Annotations, config.LoadBalancerAnnotation, config.LoadBalancerEWMA)
			}
		})
	}
}
