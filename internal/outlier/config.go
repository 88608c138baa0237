package outlier

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// The defaults of a DestinationRule's outlierDetection (Istio's), which
// ParseJSON also applies to the fields absent from a JSON config.
const (
	DefaultConsecutiveErrors  = 5
	DefaultInterval           = 10 * time.Second
	DefaultBaseEjectionTime   = 30 * time.Second
	DefaultMaxEjectionPercent = 10

	// maxEjectionTimeFloor is the cap on an ejection's length unless
	// BaseEjectionTime is longer, as in Envoy (max_ejection_time).
	maxEjectionTimeFloor = 300 * time.Second
)

// Config is the configuration of outlier ejection, with the semantics of
// Envoy's outlier detection and Istio's DestinationRule outlierDetection.
// Percentages count the endpoints the detector is given: the whole cluster
// for the HTTP client, one locality for the gRPC policy under wrr_locality.
//
// Its zero value detects nothing. The zero value of each field is what the
// field says; Defaults returns the values of a DestinationRule, or of a
// JSON config, that leaves them out.
type Config struct {
	// ConsecutiveErrors ejects an endpoint after this many consecutive
	// Failure or GatewayFailure outcomes: HTTP 5xx, or for gRPC the codes
	// Envoy maps to 5xx, UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
	// INTERNAL, UNAVAILABLE and DATA_LOSS (Envoy's consecutive_5xx,
	// Istio's consecutive5xxErrors). Zero disables this detection.
	ConsecutiveErrors uint32
	// ConsecutiveGatewayErrors ejects an endpoint after this many
	// consecutive GatewayFailure outcomes: HTTP 502, 503, 504, connection
	// failures, and for gRPC UNAVAILABLE and DEADLINE_EXCEEDED (Envoy's
	// consecutive_gateway_failure, Istio's consecutiveGatewayErrors). Zero
	// disables this detection.
	ConsecutiveGatewayErrors uint32
	// Interval is how often ejections are checked for their end, and the
	// ejection counts of endpoints not ejected decay by one. Ejection
	// itself happens as soon as an endpoint reaches a threshold. If zero,
	// 10s.
	Interval time.Duration
	// BaseEjectionTime is the length of a first ejection. An endpoint
	// ejected n times in a row (the count decays by one each Interval it
	// spends not ejected) stays out n × BaseEjectionTime, capped at the
	// larger of BaseEjectionTime and 300s, as in Envoy. If zero, 30s.
	BaseEjectionTime time.Duration
	// MaxEjectionPercent is the largest share of the endpoints ejected at
	// once, in percent; when it is non-zero, one endpoint can always be
	// ejected, however few endpoints there are. Zero ejects nothing.
	MaxEjectionPercent uint32
	// MinHealthPercent suspends ejection while fewer than this percentage
	// of the endpoints are not ejected: every endpoint is then picked as
	// if none were ejected (Istio's minHealthPercent, Envoy's panic
	// threshold). Detection goes on meanwhile. Zero never suspends
	// ejection, so that with MaxEjectionPercent 100 every endpoint can be
	// ejected and requests fail.
	MinHealthPercent uint32
}

// Defaults returns the configuration of an outlierDetection, or of a JSON
// config, that sets no field: 5 consecutive errors, an interval of 10s, a
// base ejection time of 30s, at most 10% of the endpoints ejected.
func Defaults() Config {
	return Config{
		ConsecutiveErrors:  DefaultConsecutiveErrors,
		Interval:           DefaultInterval,
		BaseEjectionTime:   DefaultBaseEjectionTime,
		MaxEjectionPercent: DefaultMaxEjectionPercent,
	}
}

// Detecting reports whether any detection is enabled: a Detector with a
// config that detects nothing ejects nothing and keeps no state.
func (c Config) Detecting() bool {
	return c.ConsecutiveErrors > 0 || c.ConsecutiveGatewayErrors > 0
}

// EffectiveInterval is Interval, or its default if zero.
func (c Config) EffectiveInterval() time.Duration {
	if c.Interval <= 0 {
		return DefaultInterval
	}
	return c.Interval
}

// EffectiveBaseEjectionTime is BaseEjectionTime, or its default if zero.
func (c Config) EffectiveBaseEjectionTime() time.Duration {
	if c.BaseEjectionTime <= 0 {
		return DefaultBaseEjectionTime
	}
	return c.BaseEjectionTime
}

// EjectionTime is how long an endpoint ejected for the n-th time in a row
// stays out: n × BaseEjectionTime, capped at max(BaseEjectionTime, 300s).
// n below 1 counts as 1.
func (c Config) EjectionTime(n int) time.Duration {
	base := c.EffectiveBaseEjectionTime()
	limit := max(base, maxEjectionTimeFloor)
	if n <= 0 {
		return base
	}
	if int64(n) > int64(limit/base) {
		return limit
	}
	return min(base*time.Duration(n), limit)
}

// Validate reports the first field out of its range: percentages above
// 100, negative durations.
func (c Config) Validate() error {
	for _, f := range []struct {
		name  string
		value uint32
	}{
		{"maxEjectionPercent", c.MaxEjectionPercent},
		{"minHealthPercent", c.MinHealthPercent},
	} {
		if f.value > 100 {
			return fmt.Errorf("outlier: %s is %d, must be at most 100", f.name, f.value)
		}
	}
	for _, f := range []struct {
		name  string
		value time.Duration
	}{
		{"interval", c.Interval},
		{"baseEjectionTime", c.BaseEjectionTime},
	} {
		if f.value < 0 {
			return fmt.Errorf("outlier: %s is %v, must not be negative", f.name, f.value)
		}
	}
	return nil
}

// PolicyJSON is the JSON config of the trellis_outlier LB policy (the value
// of the xDS TypedStruct the control plane writes, or a service config
// entry):
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
// where only childPolicy is required and the values shown for the others
// are their defaults (see Defaults). Durations are Go duration strings
// ("10s", "1.5s") and must be positive; counts and percentages are
// non-negative whole numbers, the percentages at most 100. Marshalled, a
// zero consecutiveGatewayErrors is left out and zero durations are written
// as their defaults.
type PolicyJSON struct {
	ChildPolicy              any    `json:"childPolicy"`
	ConsecutiveErrors        uint32 `json:"consecutiveErrors"`
	ConsecutiveGatewayErrors uint32 `json:"consecutiveGatewayErrors,omitempty"`
	Interval                 string `json:"interval"`
	BaseEjectionTime         string `json:"baseEjectionTime"`
	MaxEjectionPercent       uint32 `json:"maxEjectionPercent"`
	MinHealthPercent         uint32 `json:"minHealthPercent"`
}

// PolicyJSON returns the trellis_outlier JSON config of c around
// childPolicy, a list of {"policy name": config} objects.
func (c Config) PolicyJSON(childPolicy any) PolicyJSON {
	return PolicyJSON{
		ChildPolicy:              childPolicy,
		ConsecutiveErrors:        c.ConsecutiveErrors,
		ConsecutiveGatewayErrors: c.ConsecutiveGatewayErrors,
		Interval:                 c.EffectiveInterval().String(),
		BaseEjectionTime:         c.EffectiveBaseEjectionTime().String(),
		MaxEjectionPercent:       c.MaxEjectionPercent,
		MinHealthPercent:         c.MinHealthPercent,
	}
}

// rawPolicy is what ParseJSON decodes: numbers as float64, because a
// config that came through xDS is a google.protobuf.Struct whose numbers
// are doubles, and pointers to tell absent fields from zeros.
type rawPolicy struct {
	ChildPolicy              json.RawMessage `json:"childPolicy"`
	ConsecutiveErrors        *float64        `json:"consecutiveErrors"`
	ConsecutiveGatewayErrors *float64        `json:"consecutiveGatewayErrors"`
	Interval                 *string         `json:"interval"`
	BaseEjectionTime         *string         `json:"baseEjectionTime"`
	MaxEjectionPercent       *float64        `json:"maxEjectionPercent"`
	MinHealthPercent         *float64        `json:"minHealthPercent"`
}

// ParseJSON parses and validates a trellis_outlier JSON config (see
// PolicyJSON), with Defaults for the absent fields, and returns the
// childPolicy list as it is, nil if absent, for the caller to parse. Empty
// input is an empty object; unknown fields are errors.
func ParseJSON(js []byte) (cfg Config, childPolicy json.RawMessage, err error) {
	js = bytes.TrimSpace(js)
	if len(js) == 0 {
		js = []byte("{}")
	}
	var raw rawPolicy
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return Config{}, nil, fmt.Errorf("outlier: config %s: %w", js, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Config{}, nil, fmt.Errorf("outlier: config %s: must be a single JSON object", js)
	}
	cfg = Defaults()
	for _, f := range []struct {
		name  string
		raw   *float64
		value *uint32
	}{
		{"consecutiveErrors", raw.ConsecutiveErrors, &cfg.ConsecutiveErrors},
		{"consecutiveGatewayErrors", raw.ConsecutiveGatewayErrors, &cfg.ConsecutiveGatewayErrors},
		{"maxEjectionPercent", raw.MaxEjectionPercent, &cfg.MaxEjectionPercent},
		{"minHealthPercent", raw.MinHealthPercent, &cfg.MinHealthPercent},
	} {
		if f.raw == nil {
			continue
		}
		switch v := *f.raw; {
		case v < 0:
			return Config{}, nil, fmt.Errorf("outlier: %s is %v, must not be negative", f.name, v)
		case v != math.Trunc(v):
			return Config{}, nil, fmt.Errorf("outlier: %s is %v, must be a whole number", f.name, v)
		case v > math.MaxUint32:
			return Config{}, nil, fmt.Errorf("outlier: %s is %v, must be at most %v", f.name, v, float64(math.MaxUint32))
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
			return Config{}, nil, fmt.Errorf("outlier: %s: %w", f.name, err)
		}
		if d <= 0 {
			return Config{}, nil, fmt.Errorf("outlier: %s is %q, must be positive", f.name, *f.raw)
		}
		*f.value = d
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, nil, err
	}
	return cfg, raw.ChildPolicy, nil
}
