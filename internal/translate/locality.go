package translate

import (
	"slices"
	"strings"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// Localize returns the endpoints of a cluster as a client in locality
// client ("region/zone/subzone") should see them under a DestinationRule's
// localityLbSetting, following Istio:
//
//   - distribute: a rule whose from matches the client sets the share of
//     traffic each locality pattern in to receives (localities matching no
//     pattern receive none); within a pattern, traffic spreads over its
//     endpoints evenly;
//   - otherwise failover: priority 0 is the client's own
//     region/zone/subzone, then its zone, then its region, then the region
//     that failover names for the client's region, then everything else.
//     grpc-go's priority policy moves to the next priority only when the
//     ones before have no ready endpoint.
//
// cla is not modified. With no setting, a disabled one or a client without
// locality, cla itself is returned.
func Localize(cla *v3endpointpb.ClusterLoadAssignment, client string, s *networking.LocalityLoadBalancerSetting) *v3endpointpb.ClusterLoadAssignment {
	if s == nil || (s.Enabled != nil && !s.Enabled.Value) || client == "" || len(cla.GetEndpoints()) == 0 {
		return cla
	}
	out := proto.Clone(cla).(*v3endpointpb.ClusterLoadAssignment)
	for _, d := range s.Distribute {
		if localityMatches(d.From, client) {
			distribute(out, d.To)
			return out
		}
	}
	c := splitLocality(client)
	failoverTo := ""
	for _, f := range s.Failover {
		if f.From == c[0] {
			failoverTo = f.To
			break
		}
	}
	for _, loc := range out.Endpoints {
		l := loc.GetLocality()
		switch {
		case l.GetRegion() == c[0] && l.GetZone() == c[1] && l.GetSubZone() == c[2]:
			loc.Priority = 0
		case l.GetRegion() == c[0] && l.GetZone() == c[1]:
			loc.Priority = 1
		case l.GetRegion() == c[0]:
			loc.Priority = 2
		case failoverTo != "" && l.GetRegion() == failoverTo:
			loc.Priority = 3
		default:
			loc.Priority = 4
		}
	}
	// grpc-go wants priorities numbered from 0 without gaps.
	var used []uint32
	for _, loc := range out.Endpoints {
		if !slices.Contains(used, loc.Priority) {
			used = append(used, loc.Priority)
		}
	}
	slices.Sort(used)
	for _, loc := range out.Endpoints {
		loc.Priority = uint32(slices.Index(used, loc.Priority))
	}
	slices.SortStableFunc(out.Endpoints, func(a, b *v3endpointpb.LocalityLbEndpoints) int { return int(a.Priority) - int(b.Priority) })
	return out
}

// distribute weights localities by the patterns of to, in thousandths.
func distribute(cla *v3endpointpb.ClusterLoadAssignment, to map[string]uint32) {
	patterns := make([]string, 0, len(to))
	for p := range to {
		patterns = append(patterns, p)
	}
	// The most specific pattern wins when several match.
	slices.SortFunc(patterns, func(a, b string) int { return strings.Count(b, "*") - strings.Count(a, "*") })
	owner := map[*v3endpointpb.LocalityLbEndpoints]string{}
	endpoints := map[string]int{}
	for _, loc := range cla.Endpoints {
		for _, p := range patterns {
			if localityMatches(p, localityString(loc.GetLocality())) {
				owner[loc] = p
				endpoints[p] += len(loc.GetLbEndpoints())
				break
			}
		}
	}
	kept := cla.Endpoints[:0]
	for _, loc := range cla.Endpoints {
		p, ok := owner[loc]
		if !ok || to[p] == 0 {
			continue
		}
		w := uint64(to[p]) * 1000 * uint64(len(loc.GetLbEndpoints())) / uint64(endpoints[p])
		loc.LoadBalancingWeight = wrapperspb.UInt32(uint32(max(w, 1)))
		loc.Priority = 0
		kept = append(kept, loc)
	}
	cla.Endpoints = kept
}

func splitLocality(s string) [3]string {
	var out [3]string
	for i, part := range strings.SplitN(s, "/", 3) {
		out[i] = part
	}
	return out
}

func localityString(l *v3corepb.Locality) string {
	return l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
}

// localityMatches reports whether locality ("region/zone/subzone") matches
// pattern, whose parts may be "*" and whose missing trailing parts match
// anything.
func localityMatches(pattern, locality string) bool {
	l := splitLocality(locality)
	for i, part := range strings.SplitN(pattern, "/", 3) {
		if part != "*" && part != l[i] {
			return false
		}
	}
	return true
}
