package outlier

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/leastrequest"

	"github.com/trellismesh/trellis/balancer/random"
)

func TestParseConfig(t *testing.T) {
	defaults := func(child ChildPolicy) *Config {
		return &Config{
			ChildPolicy:        child,
			ConsecutiveErrors:  5,
			Interval:           10 * time.Second,
			BaseEjectionTime:   30 * time.Second,
			MaxEjectionPercent: 10,
		}
	}
	roundRobin := ChildPolicy{Name: "round_robin"}
	for _, tc := range []struct {
		name    string
		json    string
		want    *Config
		wantErr string
	}{
		{
			name: "only childPolicy: defaults",
			json: `{"childPolicy":[{"round_robin":{}}]}`,
			want: defaults(roundRobin),
		},
		{
			name: "every field",
			json: `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":7,"consecutiveGatewayErrors":3,
				"interval":"1.5s","baseEjectionTime":"2m","maxEjectionPercent":100,"minHealthPercent":50}`,
			want: &Config{
				ChildPolicy:              roundRobin,
				ConsecutiveErrors:        7,
				ConsecutiveGatewayErrors: 3,
				Interval:                 1500 * time.Millisecond,
				BaseEjectionTime:         2 * time.Minute,
				MaxEjectionPercent:       100,
				MinHealthPercent:         50,
			},
		},
		{
			name: "explicit zeros disable",
			json: `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":0,"maxEjectionPercent":0}`,
			want: func() *Config { c := defaults(roundRobin); c.ConsecutiveErrors, c.MaxEjectionPercent = 0, 0; return c }(),
		},
		{
			name: "numbers as a protobuf Struct writes them",
			json: `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":5.0,"maxEjectionPercent":1e1}`,
			want: defaults(roundRobin),
		},
		{
			name: "first registered child policy wins",
			json: `{"childPolicy":[{"no_such_policy":{}},{"trellis_random":{}},{"round_robin":{}}]}`,
			want: defaults(ChildPolicy{Name: random.Name, Config: &random.Config{}}),
		},
		{
			name: "child config parsed by the child",
			json: `{"childPolicy":[{"least_request_experimental":{"choiceCount":3}}]}`,
			want: defaults(ChildPolicy{Name: leastrequest.Name, Config: &leastrequest.LBConfig{ChoiceCount: 3}}),
		},
		{name: "negative count", json: `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":-1}`, wantErr: "outlier: consecutiveErrors is -1, must not be negative"},
		{name: "negative gateway count", json: `{"childPolicy":[{"round_robin":{}}],"consecutiveGatewayErrors":-3}`, wantErr: "outlier: consecutiveGatewayErrors is -3, must not be negative"},
		{name: "fractional count", json: `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":2.5}`, wantErr: "outlier: consecutiveErrors is 2.5, must be a whole number"},
		{name: "huge count", json: `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":1e10}`, wantErr: "outlier: consecutiveErrors is 1e+10, must be at most 4.294967295e+09"},
		{name: "max percent over 100", json: `{"childPolicy":[{"round_robin":{}}],"maxEjectionPercent":101}`, wantErr: "outlier: maxEjectionPercent is 101, must be at most 100"},
		{name: "min health percent over 100", json: `{"childPolicy":[{"round_robin":{}}],"minHealthPercent":150}`, wantErr: "outlier: minHealthPercent is 150, must be at most 100"},
		{name: "negative percent", json: `{"childPolicy":[{"round_robin":{}}],"minHealthPercent":-5}`, wantErr: "outlier: minHealthPercent is -5, must not be negative"},
		{name: "count as string", json: `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":"5"}`, wantErr: "outlier: config "},
		{name: "duration without unit", json: `{"childPolicy":[{"round_robin":{}}],"interval":"10"}`, wantErr: `outlier: interval: time: missing unit in duration "10"`},
		{name: "duration garbage", json: `{"childPolicy":[{"round_robin":{}}],"baseEjectionTime":"soon"}`, wantErr: `outlier: baseEjectionTime: time: invalid duration "soon"`},
		{name: "negative duration", json: `{"childPolicy":[{"round_robin":{}}],"baseEjectionTime":"-1s"}`, wantErr: `outlier: baseEjectionTime is "-1s", must be positive`},
		{name: "zero duration", json: `{"childPolicy":[{"round_robin":{}}],"interval":"0s"}`, wantErr: `outlier: interval is "0s", must be positive`},
		{name: "duration as number", json: `{"childPolicy":[{"round_robin":{}}],"interval":10}`, wantErr: "outlier: config "},
		{name: "unknown field", json: `{"childPolicy":[{"round_robin":{}}],"consecutive5xx":5}`, wantErr: `json: unknown field "consecutive5xx"`},
		{name: "missing childPolicy", json: `{"consecutiveErrors":5}`, wantErr: "outlier: childPolicy is required"},
		{name: "empty config", json: ``, wantErr: "outlier: childPolicy is required"},
		{name: "null childPolicy", json: `{"childPolicy":null}`, wantErr: "outlier: childPolicy is required"},
		{name: "empty childPolicy", json: `{"childPolicy":[]}`, wantErr: "outlier: childPolicy is empty"},
		{name: "childPolicy not a list", json: `{"childPolicy":{"round_robin":{}}}`, wantErr: `outlier: childPolicy {"round_robin":{}}: must be a list of {"policy name": config} objects`},
		{name: "childPolicy entry with two policies", json: `{"childPolicy":[{"round_robin":{},"pick_first":{}}]}`, wantErr: "outlier: childPolicy[0] has 2 entries, must name exactly one policy"},
		{name: "unsupported childPolicy", json: `{"childPolicy":[{"ring_hash_x":{}},{"maglev":{}}]}`, wantErr: `outlier: childPolicy: no registered policy among "ring_hash_x", "maglev"`},
		{name: "child rejects its config", json: `{"childPolicy":[{"least_request_experimental":{"choiceCount":1}}]}`, wantErr: `outlier: childPolicy "least_request_experimental": least-request:`},
		{name: "child rejects unknown field", json: `{"childPolicy":[{"trellis_random":{"x":1}}]}`, wantErr: `outlier: childPolicy "trellis_random": random:`},
		{name: "not an object", json: `[]`, wantErr: "outlier: config []: json: cannot unmarshal array"},
		{name: "trailing data", json: `{"childPolicy":[{"round_robin":{}}]} {}`, wantErr: "must be a single JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := balancer.Get(Name).(balancer.ConfigParser).ParseConfig(json.RawMessage(tc.json))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseConfig(%s) = %v, want error containing %q", tc.json, err, tc.wantErr)
				}
				if got != nil {
					t.Errorf("ParseConfig(%s) config = %v, want nil with the error", tc.json, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig(%s) = %v, want no error", tc.json, err)
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("ParseConfig(%s) mismatch (-got +want):\n%s", tc.json, diff)
			}
		})
	}
}

// TestConfigJSONRoundTrip: the JSON a Config marshals to parses back to it,
// with zero durations written as their defaults.
func TestConfigJSONRoundTrip(t *testing.T) {
	for _, cfg := range []*Config{
		{
			ChildPolicy:              ChildPolicy{Name: leastrequest.Name, Config: &leastrequest.LBConfig{ChoiceCount: 4}},
			ConsecutiveErrors:        3,
			ConsecutiveGatewayErrors: 2,
			Interval:                 250 * time.Millisecond,
			BaseEjectionTime:         90 * time.Second,
			MaxEjectionPercent:       34,
			MinHealthPercent:         50,
		},
		{ChildPolicy: ChildPolicy{Name: "round_robin"}, MaxEjectionPercent: 10},
	} {
		js, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("json.Marshal(%+v) = %v", cfg, err)
		}
		got, err := parseConfig(js)
		if err != nil {
			t.Fatalf("parseConfig(%s) = %v", js, err)
		}
		want := *cfg
		want.Interval, want.BaseEjectionTime = cfg.interval(), cfg.baseEjectionTime()
		if diff := cmp.Diff(got, &want); diff != "" {
			t.Errorf("parseConfig(%s) mismatch (-got +want):\n%s", js, diff)
		}
	}
}

func TestEjectionTime(t *testing.T) {
	for _, tc := range []struct {
		base time.Duration
		n    int
		want time.Duration
	}{
		{base: 30 * time.Second, n: 1, want: 30 * time.Second},
		{base: 30 * time.Second, n: 2, want: 60 * time.Second},
		{base: 30 * time.Second, n: 10, want: 300 * time.Second},
		{base: 30 * time.Second, n: 11, want: 300 * time.Second},
		{base: 30 * time.Second, n: 1 << 40, want: 300 * time.Second},
		{base: 400 * time.Second, n: 1, want: 400 * time.Second},
		{base: 400 * time.Second, n: 3, want: 400 * time.Second},
		{base: 0, n: 2, want: 60 * time.Second},
		{base: 200 * time.Millisecond, n: 3, want: 600 * time.Millisecond},
	} {
		cfg := &Config{BaseEjectionTime: tc.base}
		if got := cfg.ejectionTime(tc.n); got != tc.want {
			t.Errorf("Config{BaseEjectionTime: %v}.ejectionTime(%d) = %v, want %v", tc.base, tc.n, got, tc.want)
		}
	}
}
