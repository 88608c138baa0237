package outlier

import (
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/grpc/serviceconfig"

	"github.com/trellismesh/trellis/internal/childlb"
	detection "github.com/trellismesh/trellis/internal/outlier"
)

// Config is the configuration of the policy, as ParseConfig returns it. Its
// JSON form (the service config entry, or the value of the xDS TypedStruct)
// is
//
//	{
//	  "childPolicy": [{"round_robin": {}}],
//	  "consecutiveErrors": 5,
//	  "consecutiveGatewayErrors": 0,
//	  "interval": "10s",
//	  "baseEjectionTime": "30s",
//	  "maxEjectionPercent": 10,
//	  "minHealthPercent": 0
//	}
//
// where only childPolicy is required and the values shown for the others are
// their defaults. Durations are Go duration strings ("10s", "1.5s") and must
// be positive; counts and percentages are non-negative whole numbers, the
// percentages at most 100.
//
// The defaults ParseConfig fills in for absent JSON fields are not all the
// zero values of the Go fields: each field says what its zero value means to
// the balancer. The fields are those of the mesh's one outlier configuration
// (internal/outlier), which the control plane writes and the HTTP client
// reads too; parsing, defaults and validation are written there.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	// ChildPolicy balances RPCs over the endpoints that are not ejected. In
	// JSON it is a list of {"policy_name": config} objects, in grpc service
	// config style: the first policy registered with grpc-go is used, and
	// its config is parsed by its builder. Required: the zero value makes
	// the balancer reject the config.
	ChildPolicy ChildPolicy `json:"childPolicy"`

	// ConsecutiveErrors ejects an endpoint after this many consecutive RPCs
	// that failed with an error Envoy maps to an HTTP 5xx: UNKNOWN,
	// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS
	// (Envoy's consecutive_5xx). Zero disables this detection; ParseConfig
	// uses 5 when the field is absent.
	ConsecutiveErrors uint32 `json:"consecutiveErrors"`

	// ConsecutiveGatewayErrors ejects an endpoint after this many
	// consecutive gateway failures (HTTP 502, 503, 504): UNAVAILABLE and
	// DEADLINE_EXCEEDED (Envoy's consecutive_gateway_failure). Zero, the
	// default, disables this detection.
	ConsecutiveGatewayErrors uint32 `json:"consecutiveGatewayErrors"`

	// Interval is how often ejected endpoints are checked for unejection,
	// and the multipliers of endpoints not ejected decay by one. Ejection
	// itself happens as soon as an endpoint reaches a threshold. If zero,
	// 10s.
	Interval time.Duration `json:"interval"`

	// BaseEjectionTime is how long the first ejection of an endpoint lasts.
	// An endpoint ejected n times in a row (the count decays by one each
	// Interval it spends not ejected) stays out for n × BaseEjectionTime,
	// capped at the larger of BaseEjectionTime and 300s, as in Envoy. If
	// zero, 30s.
	BaseEjectionTime time.Duration `json:"baseEjectionTime"`

	// MaxEjectionPercent is the largest share of the endpoints ejected at
	// once, in percent; when it is non-zero one endpoint can always be
	// ejected, however few endpoints there are (Envoy semantics). Zero
	// ejects nothing; ParseConfig uses 10 when the field is absent.
	MaxEjectionPercent uint32 `json:"maxEjectionPercent"`

	// MinHealthPercent suspends ejection while fewer than this percentage of
	// the endpoints are not ejected: the child policy then sees every
	// endpoint as it is, ejected or not (Istio's minHealthPercent, Envoy's
	// panic threshold). Detection goes on meanwhile. Zero, the default,
	// never suspends ejection, so that with MaxEjectionPercent 100 every
	// endpoint can be ejected and RPCs fail.
	MinHealthPercent uint32 `json:"minHealthPercent"`
}

// ChildPolicy is a child load-balancing policy with its parsed config.
type ChildPolicy = childlb.Policy

// MarshalJSON encodes the config in the JSON form ParseConfig reads, with
// durations as strings (zero ones as their defaults) and a zero
// consecutiveGatewayErrors left out, as the control plane writes it.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(c.params().PolicyJSON(c.ChildPolicy))
}

// params returns the detection parameters, for the state machine.
func (c *Config) params() detection.Config {
	return detection.Config{
		ConsecutiveErrors:        c.ConsecutiveErrors,
		ConsecutiveGatewayErrors: c.ConsecutiveGatewayErrors,
		Interval:                 c.Interval,
		BaseEjectionTime:         c.BaseEjectionTime,
		MaxEjectionPercent:       c.MaxEjectionPercent,
		MinHealthPercent:         c.MinHealthPercent,
	}
}

// parseConfig is the builder's ParseConfig: internal/outlier parses and
// validates the detection fields, with their defaults; childlb the child
// policy.
func parseConfig(js json.RawMessage) (*Config, error) {
	p, child, err := detection.ParseJSON(js)
	if err != nil {
		return nil, err
	}
	cfg := &Config{
		ConsecutiveErrors:        p.ConsecutiveErrors,
		ConsecutiveGatewayErrors: p.ConsecutiveGatewayErrors,
		Interval:                 p.Interval,
		BaseEjectionTime:         p.BaseEjectionTime,
		MaxEjectionPercent:       p.MaxEjectionPercent,
		MinHealthPercent:         p.MinHealthPercent,
	}
	if cfg.ChildPolicy, err = parseChildPolicy(child); err != nil {
		return nil, err
	}
	return cfg, nil
}

// parseChildPolicy parses the childPolicy list (see childlb.Parse).
func parseChildPolicy(js json.RawMessage) (ChildPolicy, error) {
	p, err := childlb.Parse(js)
	if err != nil {
		return ChildPolicy{}, fmt.Errorf("outlier: %w", err)
	}
	return p, nil
}

// interval returns the effective evaluation interval.
func (c *Config) interval() time.Duration { return c.params().EffectiveInterval() }

// baseEjectionTime returns the effective base ejection time.
func (c *Config) baseEjectionTime() time.Duration { return c.params().EffectiveBaseEjectionTime() }

// ejectionTime returns how long an endpoint ejected for the n-th time in a
// row stays out: n × base, capped at max(base, 300s).
func (c *Config) ejectionTime(n int) time.Duration { return c.params().EjectionTime(n) }
