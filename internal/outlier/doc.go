// Package outlier is the mesh's outlier ejection, written once for both
// protocols: the configuration the control plane writes (from a
// DestinationRule's outlierDetection, as the JSON config of the
// trellis_outlier policy) and the clients read, and the state machine that
// ejects endpoints, which the gRPC policy balancer/outlier and the HTTP
// client's picker balancer/pick both run.
//
// The detection is Envoy's consecutive_5xx and consecutive_gateway_failure
// with Istio's defaults; see [Config] for the semantics.
//
//	d := outlier.New()
//	a, b := outlier.NewHost("10.0.0.1:8080"), outlier.NewHost("10.0.0.2:8080")
//	d.Update(&outlier.Config{ConsecutiveErrors: 5, MaxEjectionPercent: 50}, []*outlier.Host{a, b})
//
//	// When a request to a ends:
//	if d.Record(a, outlier.GatewayFailure) {
//		// a was ejected: picks now skip it (a.Ejected() is true)
//	}
//	// At each Interval (a timer, or Pick when d.Due()):
//	if d.Tick() {
//		// ejections ended: picks may use those hosts again
//	}
package outlier
