package pick

import "github.com/trellismesh/trellis/internal/outlier"

// Outlier configures consecutive-error outlier ejection, with the semantics
// of Envoy's outlier detection and Istio's DestinationRule outlierDetection:
// it is the mesh's one outlier configuration, which the control plane
// writes, resolver/xdscluster reads (xdscluster.OutlierConfig is the same
// type) and the gRPC policy balancer/outlier applies as well. Its zero value
// detects nothing; the zero value of each field is documented on the field.
// Percentages count the endpoints of the whole cluster, all priorities; with
// MaxEjectionPercent 100 and MinHealthPercent 0 every endpoint can be
// ejected, and Pick then fails with ErrNoEndpoints.
type Outlier = outlier.Config

// outcome is how a request's result counts for outlier detection.
func outcome(r Result) outlier.Outcome {
	switch r {
	case Success:
		return outlier.Success
	case Failure:
		return outlier.Failure
	case GatewayFailure, Unreachable:
		return outlier.GatewayFailure
	}
	return outlier.Ignored
}
