package config

import (
	"fmt"

	networking "istio.io/api/networking/v1alpha3"
)

// LoadBalancerAnnotation on a DestinationRule selects, for every port and
// subset of its host, a load balancer that Istio's API lacks. Its only
// value is LoadBalancerEWMA: latency-aware power of two choices over a peak
// EWMA of latency weighted by outstanding requests (balancer/ewma for gRPC,
// balancer/pick's "ewma" for HTTP). It cannot be combined with
// loadBalancer.simple or loadBalancer.consistentHash at any level of the
// rule.
const (
	LoadBalancerAnnotation = "trellis.io/load-balancer"
	LoadBalancerEWMA       = "EWMA"
)

func validateLoadBalancerAnnotation(p *problems, dr *DestinationRule) {
	v, ok := dr.Annotations[LoadBalancerAnnotation]
	if !ok {
		return
	}
	field := annotationField(LoadBalancerAnnotation)
	if v != LoadBalancerEWMA {
		p.add(field, "%q is not supported (supported: %s)", v, LoadBalancerEWMA)
		return
	}
	conflict := func(f string, lb *networking.LoadBalancerSettings) {
		switch {
		case lb.GetSimple() != networking.LoadBalancerSettings_UNSPECIFIED:
			p.add(f+".loadBalancer.simple", "conflicts with annotation %s: %s; remove one of them", LoadBalancerAnnotation, v)
		case lb.GetConsistentHash() != nil:
			p.add(f+".loadBalancer.consistentHash", "conflicts with annotation %s: %s; remove one of them", LoadBalancerAnnotation, v)
		}
	}
	policy := func(f string, tp *networking.TrafficPolicy) {
		conflict(f, tp.GetLoadBalancer())
		for i, pl := range tp.GetPortLevelSettings() {
			conflict(fmt.Sprintf("%s.portLevelSettings[%d]", f, i), pl.GetLoadBalancer())
		}
	}
	policy("spec.trafficPolicy", dr.Spec.TrafficPolicy)
	for i, sub := range dr.Spec.Subsets {
		policy(fmt.Sprintf("spec.subsets[%d].trafficPolicy", i), sub.TrafficPolicy)
	}
}
