package translate

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestEWMAAnnotation: a DestinationRule annotated trellis.io/load-balancer:
// EWMA selects trellis_ewma for every cluster of its host, inside the
// Trellis wrappers, with least request for clients without it.
func TestEWMAAnnotation(t *testing.T) {
	res := buildReviews(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  annotations: {trellis.io/load-balancer: EWMA}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 50}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 3}
`)
	const (
		wrr   = "envoy.load_balancing_policies.wrr_locality"
		least = "/envoy.load_balancing_policies.least_request"
	)
	for _, tc := range []struct {
		cluster  string
		policies []string
	}{
		{ClusterName(reviews, 9080, ""), []string{
			wrr + `/trellis_recycle[type.googleapis.com/trellis_recycle {"childPolicy":[{"trellis_ewma":{}}],"maxRequestsPerConnection":50}]` + least,
		}},
		{ClusterName(reviews, 9080, "v1"), []string{
			wrr + `/trellis_outlier[type.googleapis.com/trellis_outlier {"baseEjectionTime":"30s","childPolicy":[{"trellis_recycle":{"childPolicy":[{"trellis_ewma":{}}],"maxRequestsPerConnection":50}}],"consecutiveErrors":3,"interval":"10s","maxEjectionPercent":10,"minHealthPercent":0}]` + least,
		}},
	} {
		if diff := cmp.Diff(lbPolicies(t, res.Clusters[tc.cluster]), tc.policies); diff != "" {
			t.Errorf("%s policies (-got +want):\n%s", tc.cluster, diff)
		}
	}
}

func TestEWMAAlone(t *testing.T) {
	res := buildReviews(t, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  annotations: {trellis.io/load-balancer: EWMA}
spec:
  host: reviews
`)
	got := lbPolicies(t, res.Clusters[ClusterName(reviews, 9080, "")])
	want := []string{"envoy.load_balancing_policies.wrr_locality" +
		"/trellis_ewma[type.googleapis.com/trellis_ewma {}]" +
		"/envoy.load_balancing_policies.least_request"}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("EWMA policies (-got +want):\n%s", diff)
	}
}
