package pick

import "time"

// Defaults of Outlier's zero durations, and the floor of the cap on an
// ejection's length.
const (
	defaultInterval         = 10 * time.Second
	defaultBaseEjectionTime = 30 * time.Second
	maxEjectionTimeFloor    = 300 * time.Second
)

// Outlier configures consecutive-error outlier ejection, with the semantics
// of Envoy's outlier detection and Istio's DestinationRule outlierDetection
// (and of the mesh's gRPC policy, balancer/outlier). Percentages count the
// endpoints of the whole cluster, all priorities.
type Outlier struct {
	// ConsecutiveErrors ejects an endpoint after this many consecutive
	// Failure or GatewayFailure results (Envoy's consecutive_5xx). Zero
	// disables this detection.
	ConsecutiveErrors uint32
	// ConsecutiveGatewayErrors ejects an endpoint after this many
	// consecutive GatewayFailure results (Envoy's
	// consecutive_gateway_failure). Zero disables this detection.
	ConsecutiveGatewayErrors uint32
	// Interval is how often ejections are checked for their end, and the
	// ejection counts of endpoints not ejected decay by one. If zero, 10s.
	Interval time.Duration
	// BaseEjectionTime is the length of a first ejection; an endpoint
	// ejected n times in a row stays out n × BaseEjectionTime, capped at
	// the larger of BaseEjectionTime and 300s. If zero, 30s.
	BaseEjectionTime time.Duration
	// MaxEjectionPercent is the largest share of the endpoints ejected at
	// once; when non-zero, one endpoint can always be ejected. Zero ejects
	// nothing.
	MaxEjectionPercent uint32
	// MinHealthPercent suspends ejection while fewer than this percentage
	// of the endpoints are not ejected: all endpoints are then picked as if
	// none were ejected (Istio's minHealthPercent, Envoy's panic
	// threshold). Zero never suspends ejection, so that with
	// MaxEjectionPercent 100 every endpoint can be ejected and Pick fails
	// with ErrNoEndpoints.
	MinHealthPercent uint32
}

func (o *Outlier) interval() time.Duration {
	if o == nil || o.Interval <= 0 {
		return defaultInterval
	}
	return o.Interval
}

// ejectionTime is the length of the n-th ejection in a row.
func (o *Outlier) ejectionTime(n int) time.Duration {
	base := o.BaseEjectionTime
	if base <= 0 {
		base = defaultBaseEjectionTime
	}
	return min(base*time.Duration(n), max(base, maxEjectionTimeFloor))
}

// ejectLocked ejects ep unless MaxEjectionPercent forbids it, and reports
// whether it did.
func (p *Picker) ejectLocked(ep *endpoint) bool {
	total, ejected := len(p.eps), 0
	for _, e := range p.eps {
		if e.ejected {
			ejected++
		}
	}
	maxPercent := int(p.cfg.Outlier.MaxEjectionPercent)
	if maxPercent == 0 || (ejected > 0 && (ejected+1)*100 > maxPercent*total) {
		return false
	}
	ep.ejected = true
	ep.ejectedAt = timeNow()
	ep.multiplier++
	return true
}

// sweepLocked runs the Interval checks that are due: ejections whose time
// has passed end, and the ejection counts of the other endpoints decay.
func (p *Picker) sweepLocked() {
	o := p.cfg.Outlier
	next := p.nextSweep.Load()
	if o == nil || next == 0 {
		return
	}
	interval := o.interval()
	now := timeNow()
	changed := false
	for t := time.Unix(0, next); !t.After(now); t = t.Add(interval) {
		idle := true
		for _, ep := range p.eps {
			switch {
			case ep.ejected && !t.Before(ep.ejectedAt.Add(o.ejectionTime(ep.multiplier))):
				ep.ejected = false
				ep.errors.Store(0)
				ep.gateway.Store(0)
				changed = true
			case !ep.ejected && ep.multiplier > 0:
				ep.multiplier--
			}
			idle = idle && !ep.ejected && ep.multiplier == 0
		}
		next = t.Add(interval).UnixNano()
		if idle { // later checks would change nothing: skip to the next due
			elapsed := now.Sub(t) / interval
			next = t.Add((elapsed + 1) * interval).UnixNano()
			break
		}
	}
	p.nextSweep.Store(next)
	if changed {
		p.rebuildLocked()
	}
}
