// Package pick chooses the endpoint of each request for the mesh's HTTP
// client, with the algorithms and semantics grpc-go applies to the same xDS
// configuration on the gRPC path:
//
//   - "round_robin": endpoints in turn from a random start, or, when their
//     weights differ, grpc-go's static stride schedule over the weights;
//   - "least_request": ChoiceCount endpoints sampled at random (by weight),
//     the one with the fewest outstanding requests wins (gRFC A48, P2C);
//   - "random": one endpoint at random, by weight;
//   - "ring_hash": the request's hash on a ring of xxhash64 entries of at
//     least MinRingSize, built from the weighted endpoints exactly as
//     grpc-go builds it (gRFC A42), so a hash lands on the same address in
//     both paths;
//   - "ewma": two endpoints sampled at random (by weight), the one whose
//     peak EWMA latency times outstanding requests plus one is lower wins,
//     the algorithm of the gRPC policy trellis_ewma (balancer/ewma). A
//     request's latency runs from Pick to done; Failure and GatewayFailure
//     count as at least Config.FailurePenalty; Ignored is not counted.
//
// Around the algorithm come what the mesh adds: consecutive-error outlier
// ejection with Envoy's and Istio's semantics (see [Outlier]), circuit
// breaking on the requests outstanding in the cluster ([ErrOverloaded]),
// and priority failover: requests go to the lowest priority that has any
// endpoint not ejected, as grpc-go's priority policy fails over between
// localities. Within a priority, an endpoint's share is its locality's
// share of the locality weights times its share of the endpoint weights in
// its locality, as grpc-go's wrr_locality and ring_hash weigh them.
//
// A Picker never blocks in Pick and starts no goroutine; ejections end, and
// their counts decay, on the first Pick after each Interval.
//
//	p := pick.New(pick.Config{Policy: pick.LeastRequest, MaxRequests: 100}, []pick.Endpoint{
//		{Address: "10.0.0.1:8080"},
//		{Address: "10.0.0.2:8080"},
//	})
//	ep, done, err := p.Pick(0)
//	if err != nil {
//		return err // ErrNoEndpoints or ErrOverloaded
//	}
//	resp, err := send(ep.Address)
//	switch {
//	case err != nil:
//		done(pick.GatewayFailure)
//	case resp.StatusCode >= 500:
//		done(pick.ResultForStatus(resp.StatusCode))
//	default:
//		done(pick.Success)
//	}
package pick
