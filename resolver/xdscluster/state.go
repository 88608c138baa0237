package xdscluster

import (
	"errors"
	"net"
	"strconv"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/trellismesh/trellis/internal/outlier"
)

// ErrNotFound is the Err of a State whose cluster does not exist.
var ErrNotFound = errors.New("xdscluster: cluster not found")

// Names of the policies in LBConfig.Policy.
const (
	RoundRobin   = "round_robin"
	LeastRequest = "least_request"
	Random       = "random"
	RingHash     = "ring_hash"
	EWMA         = "ewma"
)

// State is the state of a cluster. It is immutable: the slices and
// pointers it holds are shared and must not be modified.
type State struct {
	// Name is the cluster's name, as given to Watch.
	Name string
	// Endpoints are the cluster's endpoints that are HEALTHY or of
	// UNKNOWN health, in the order of the ClusterLoadAssignment.
	Endpoints []Endpoint
	// LB is the cluster's load-balancing policy.
	LB LBConfig
	// MaxRequests is circuit_breakers.thresholds[DEFAULT].max_requests,
	// the most requests outstanding in the cluster at once. Zero when
	// unset: the caller applies grpc-go's default of 1024 (as pick.Config
	// does for its zero MaxRequests).
	MaxRequests uint32
	// Outlier is the cluster's outlier ejection (the trellis_outlier
	// policy), or nil for none.
	Outlier *OutlierConfig
	// TLS is the cluster's upstream TLS, or nil when the cluster has no
	// transport socket and connections are plaintext.
	TLS *TLSConfig
	// Err, when not nil, says the cluster does not exist (ErrNotFound),
	// or cannot be used as the control plane sent it; the other fields
	// but Name are then zero, and the caller must fail the cluster's
	// requests.
	Err error
}

// Endpoint is one endpoint of a cluster.
type Endpoint struct {
	// Address is "host:port".
	Address string
	// Weight is the endpoint's load_balancing_weight within its locality;
	// 1 when unset.
	Weight uint32
	// Locality is "region/zone/subzone" (parts may be empty).
	Locality string
	// LocalityWeight is the locality's load_balancing_weight within its
	// priority. Localities without a weight are left out, as grpc-go does,
	// so it is never zero.
	LocalityWeight uint32
	// Priority is the locality's priority, 0 the most preferred.
	Priority uint32
	// Plaintext says the control plane has this endpoint reached without
	// TLS although the cluster has TLS (State.TLS is not nil): automatic
	// mTLS, for an endpoint without identity or serving plaintext only.
	// Read from the endpoint's EndpointTLSMetadata mode "DISABLE"; any
	// other mode, or none, is TLS. Meaningless when State.TLS is nil.
	Plaintext bool
	// Identity is the exact SPIFFE ID the endpoint must present over TLS,
	// from its EndpointTLSMetadata; empty when not named, and then any of
	// State.TLS.SANs is accepted. When named, the ID must also be one of
	// State.TLS.SANs.
	Identity string
}

// EndpointTLSMetadata is the filter_metadata namespace, on an EDS
// endpoint, of how to reach it in a cluster with TLS, as the Trellis
// control plane writes it (translate.EndpointTLSMetadata): a Struct whose
// string field "mode" is "ISTIO_MUTUAL" or "DISABLE" and "identity" the
// endpoint's SPIFFE ID. It stands in for Istio's transport_socket_matches,
// which grpc-go rejects; grpc-go ignores the metadata and dials every
// endpoint with the cluster's transport socket.
const EndpointTLSMetadata = "trellis.io/tls"

// LBConfig is a cluster's load-balancing policy.
type LBConfig struct {
	// Policy is RoundRobin, LeastRequest, Random, RingHash or EWMA.
	Policy string
	// ChoiceCount is how many endpoints LeastRequest samples, 2 to 10;
	// zero for the other policies.
	ChoiceCount int
	// MinRingSize is RingHash's minimum ring size, zero when unset (grpc-go
	// uses 1024).
	MinRingSize uint64
	// MaxRequestsPerConnection is how many requests a connection carries
	// before it is replaced (the trellis_recycle policy); zero for no
	// limit.
	MaxRequestsPerConnection uint32
	// Decay, DefaultRTT and FailurePenalty are EWMA's parameters (the
	// trellis_ewma policy, see balancer/ewma.Config); zero when unset, the
	// picker then applies its defaults.
	Decay, DefaultRTT, FailurePenalty time.Duration
}

// OutlierConfig is the configuration of the trellis_outlier policy, with
// its defaults applied: the mesh's one outlier configuration, which
// balancer/outlier applies to gRPC and balancer/pick (pick.Outlier is the
// same type) to HTTP.
type OutlierConfig = outlier.Config

// TLSConfig is a cluster's upstream TLS.
type TLSConfig struct {
	// SANs are the identities the server's certificate may present, one of
	// which it must; empty means any certificate of the trust domain's
	// roots.
	SANs []string
}

// cluster is what a Cluster resource says.
type cluster struct {
	eds         string     // the EDS resource name; empty for a STATIC cluster
	static      []Endpoint // the endpoints of a STATIC cluster
	lb          LBConfig
	outlier     *OutlierConfig
	maxRequests uint32
	tls         *TLSConfig
}

// parseCluster reads a Cluster resource.
func parseCluster(c *v3clusterpb.Cluster) (*cluster, error) {
	out := &cluster{}
	if c.GetClusterType() != nil {
		return nil, errors.New("custom cluster types are not supported")
	}
	switch c.GetType() {
	case v3clusterpb.Cluster_EDS:
		out.eds = c.GetEdsClusterConfig().GetServiceName()
		if out.eds == "" {
			out.eds = c.GetName()
		}
	case v3clusterpb.Cluster_STATIC:
		out.static = parseEndpoints(c.GetLoadAssignment())
	default:
		return nil, errors.New("discovery type " + c.GetType().String() + " is not supported")
	}
	var err error
	if out.lb, out.outlier, err = parseLB(c); err != nil {
		return nil, err
	}
	for _, th := range c.GetCircuitBreakers().GetThresholds() {
		if th.GetPriority() == v3corepb.RoutingPriority_DEFAULT {
			out.maxRequests = th.GetMaxRequests().GetValue()
			break
		}
	}
	if out.tls, err = parseTLS(c.GetTransportSocket()); err != nil {
		return nil, err
	}
	return out, nil
}

// parseEndpoints reads the endpoints of a ClusterLoadAssignment as grpc-go
// does: localities without weight are left out, and so are endpoints that
// are neither HEALTHY nor of UNKNOWN health, or have no port number.
func parseEndpoints(cla *v3endpointpb.ClusterLoadAssignment) []Endpoint {
	var out []Endpoint
	for _, loc := range cla.GetEndpoints() {
		lw := loc.GetLoadBalancingWeight().GetValue()
		if lw == 0 {
			continue
		}
		l := loc.GetLocality()
		locality := l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
		for _, lbe := range loc.GetLbEndpoints() {
			switch lbe.GetHealthStatus() {
			case v3corepb.HealthStatus_HEALTHY, v3corepb.HealthStatus_UNKNOWN:
			default:
				continue
			}
			sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
			port, ok := sa.GetPortSpecifier().(*v3corepb.SocketAddress_PortValue)
			if sa == nil || !ok {
				continue
			}
			w := uint32(1)
			if v := lbe.GetLoadBalancingWeight(); v != nil {
				w = max(v.GetValue(), 1)
			}
			tls := lbe.GetMetadata().GetFilterMetadata()[EndpointTLSMetadata].GetFields()
			out = append(out, Endpoint{
				Address:        net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(port.PortValue), 10)),
				Weight:         w,
				Locality:       locality,
				LocalityWeight: lw,
				Priority:       loc.GetPriority(),
				Plaintext:      tls["mode"].GetStringValue() == "DISABLE",
				Identity:       tls["identity"].GetStringValue(),
			})
		}
	}
	return out
}
