// Package outlier is the mesh's outlier ejection, written once for both
// protocols: the configuration the control plane writes (from a
// DestinationRule's outlierDetection, as the JSON config of the
// trellis_outlier policy) and the clients read, and the state machine that
// ejects endpoints, used by the gRPC policy balancer/outlier and by the HTTP
// client's picker balancer/pick.
//
// The detection is Envoy's consecutive_5xx and consecutive_gateway_failure
// with Istio's defaults: see [Config] for the semantics, [Detector] for the
// state machine.
//
//	d := outlier.New()
//	a, b := outlier.NewHost("10.0.0.1:8080"), outlier.NewHost("10.0.0.2:8080")
//	d.Update(&outlier.Config{ConsecutiveErrors: 5, MaxEjectionPercent: 50}, []*outlier.Host{a, b})
//	if d.Record(a, outlier.GatewayFailure) {
//		// a was ejected: rebuild the picker without it
//	}
//	skip := a.Ejected() // read by picks, without locks
//	if d.Tick() {       // at each Interval: ejections that have lasted long enough end
//		// rebuild the picker
//	}
package outlier
