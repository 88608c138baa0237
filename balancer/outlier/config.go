package outlier

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"google.golang.org/grpc/serviceconfig"

	"github.com/trellismesh/trellis/internal/childlb"
)

// Defaults ParseConfig applies to fields absent from the JSON config.
const (
	defaultConsecutiveErrors  = 5
	defaultInterval           = 10 * time.Second
	defaultBaseEjectionTime   = 30 * time.Second
	defaultMaxEjectionPercent = 10

	// maxEjectionTimeFloor is the cap on an ejection's length unless
	// BaseEjectionTime is longer, as in Envoy (max_ejection_time).
	maxEjectionTimeFloor = 300 * time.Second
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
// the balancer.
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
// durations as strings.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(jsonConfig{
		ChildPolicy:              c.ChildPolicy,
		ConsecutiveErrors:        c.ConsecutiveErrors,
		ConsecutiveGatewayErrors: c.ConsecutiveGatewayErrors,
		Interval:                 c.interval().String(),
		BaseEjectionTime:         c.baseEjectionTime().String(),
		MaxEjectionPercent:       c.MaxEjectionPercent,
		MinHealthPercent:         c.MinHealthPercent,
	})
}

type jsonConfig struct {
	ChildPolicy              ChildPolicy `json:"childPolicy"`
	ConsecutiveErrors        uint32      `json:"consecutiveErrors"`
	ConsecutiveGatewayErrors uint32      `json:"consecutiveGatewayErrors"`
	Interval                 string      `json:"interval"`
	BaseEjectionTime         string      `json:"baseEjectionTime"`
	MaxEjectionPercent       uint32      `json:"maxEjectionPercent"`
	MinHealthPercent         uint32      `json:"minHealthPercent"`
}

// rawConfig is what ParseConfig decodes: numbers as float64, because a
// config that came through xDS is a google.protobuf.Struct whose numbers
// are doubles, and pointers to tell absent fields from zeros.
type rawConfig struct {
	ChildPolicy              json.RawMessage `json:"childPolicy"`
	ConsecutiveErrors        *float64        `json:"consecutiveErrors"`
	ConsecutiveGatewayErrors *float64        `json:"consecutiveGatewayErrors"`
	Interval                 *string         `json:"interval"`
	BaseEjectionTime         *string         `json:"baseEjectionTime"`
	MaxEjectionPercent       *float64        `json:"maxEjectionPercent"`
	MinHealthPercent         *float64        `json:"minHealthPercent"`
}

// parseConfig is the builder's ParseConfig.
func parseConfig(js json.RawMessage) (*Config, error) {
	js = bytes.TrimSpace(js)
	if len(js) == 0 {
		js = []byte("{}")
	}
	var raw rawConfig
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("outlier: config %s: %w", js, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("outlier: config %s: must be a single JSON object", js)
	}
	cfg := &Config{
		ConsecutiveErrors:  defaultConsecutiveErrors,
		Interval:           defaultInterval,
		BaseEjectionTime:   defaultBaseEjectionTime,
		MaxEjectionPercent: defaultMaxEjectionPercent,
	}
	var err error
	if cfg.ChildPolicy, err = parseChildPolicy(raw.ChildPolicy); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name  string
		raw   *float64
		max   float64
		value *uint32
	}{
		{"consecutiveErrors", raw.ConsecutiveErrors, math.MaxUint32, &cfg.ConsecutiveErrors},
		{"consecutiveGatewayErrors", raw.ConsecutiveGatewayErrors, math.MaxUint32, &cfg.ConsecutiveGatewayErrors},
		{"maxEjectionPercent", raw.MaxEjectionPercent, 100, &cfg.MaxEjectionPercent},
		{"minHealthPercent", raw.MinHealthPercent, 100, &cfg.MinHealthPercent},
	} {
		if f.raw == nil {
			continue
		}
		switch v := *f.raw; {
		case v < 0:
			return nil, fmt.Errorf("outlier: %s is %v, must not be negative", f.name, v)
		case v != math.Trunc(v):
			return nil, fmt.Errorf("outlier: %s is %v, must be a whole number", f.name, v)
		case v > f.max:
			return nil, fmt.Errorf("outlier: %s is %v, must be at most %v", f.name, v, f.max)
		default:
			*f.value = uint32(v)
		}
	}
	for _, f := range []struct {
		name  string
		raw   *string
		value *time.Duration
	}{
		{"interval", raw.Interval, &cfg.Interval},
		{"baseEjectionTime", raw.BaseEjectionTime, &cfg.BaseEjectionTime},
	} {
		if f.raw == nil {
			continue
		}
		d, err := time.ParseDuration(*f.raw)
		if err != nil {
			return nil, fmt.Errorf("outlier: %s: %w", f.name, err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("outlier: %s is %q, must be positive", f.name, *f.raw)
		}
		*f.value = d
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
func (c *Config) interval() time.Duration {
	if c.Interval <= 0 {
		return defaultInterval
	}
	return c.Interval
}

// baseEjectionTime returns the effective base ejection time.
func (c *Config) baseEjectionTime() time.Duration {
	if c.BaseEjectionTime <= 0 {
		return defaultBaseEjectionTime
	}
	return c.BaseEjectionTime
}

// ejectionTime returns how long an endpoint ejected for the n-th time in a
// row stays out: n × base, capped at max(base, 300s).
func (c *Config) ejectionTime(n int) time.Duration {
	base := c.baseEjectionTime()
	limit := max(base, maxEjectionTimeFloor)
	if n <= 0 {
		return base
	}
	if int64(n) > int64(limit/base) {
		return limit
	}
	return min(base*time.Duration(n), limit)
}

// detecting reports whether any detection is enabled.
func (c *Config) detecting() bool {
	return c.ConsecutiveErrors > 0 || c.ConsecutiveGatewayErrors > 0
}
