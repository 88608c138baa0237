// Package xdscluster follows one xDS cluster and its endpoints from the
// control plane for the mesh's HTTP client, reading them as grpc-go's xDS
// stack reads them on the gRPC path (gRFCs A27, A42, A48, A52, A29): the
// same xDS gives the same endpoints, load-balancing policy, circuit breaker,
// outlier ejection and upstream TLS on both paths.
//
// Watch follows the Cluster (CDS) and, for an EDS cluster, its
// ClusterLoadAssignment (EDS, named by the cluster's eds service name or
// else the cluster name), and hands the caller a fresh immutable State each
// time either changes, once both are known:
//
//	cancel := xdscluster.Watch(client, "outbound|9080||reviews.default.svc.cluster.local", func(s *xdscluster.State) {
//		if s.Err != nil {
//			log.Print(s.Err) // fail the cluster's requests; never fall back to plaintext
//			return
//		}
//		picker.Update(pick.Config{
//			Policy:      s.LB.Policy,
//			ChoiceCount: s.LB.ChoiceCount,
//			MinRingSize: s.LB.MinRingSize,
//			MaxRequests: s.MaxRequests, // 0: the picker's default, 1024
//		}, endpoints(s.Endpoints))
//	})
//	defer cancel()
//
// The load-balancing policy is read from the cluster's
// load_balancing_policy as the Trellis control plane writes it: a list
// whose first understood policy wins, where wrr_locality holds a list of
// endpoint-picking policies, again tried in order; the Trellis policies
// (trellis_outlier, trellis_recycle, trellis_random, as xds.type.v3
// TypedStructs) wrap or replace the standard ones. Without
// load_balancing_policy, lb_policy ROUND_ROBIN, LEAST_REQUEST and RING_HASH
// are read with their legacy configs. Upstream TLS is the cluster's
// transport socket (State.TLS: mTLS accepting its SANs), narrowed per
// endpoint by the EndpointTLSMetadata the control plane writes: an
// endpoint's exact Identity, or, under automatic mTLS only, Plaintext for
// an endpoint without one. A cluster whose policy, TLS or
// discovery type is not understood gets a State with Err set: the caller
// must fail its requests, as grpc-go rejects such a cluster.
package xdscluster
