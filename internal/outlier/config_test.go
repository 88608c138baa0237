package outlier

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseJSON(t *testing.T) {
	for _, tc := range []struct {
		name      string
		json      string
		want      Config
		wantChild string
		wantErr   string
	}{
		{name: "empty: the defaults", json: ``, want: Defaults()},
		{name: "empty object: the defaults", json: `{}`, want: Defaults()},
		{
			name:      "childPolicy returned as it is",
			json:      `{"childPolicy": [{"round_robin": {}}]}`,
			want:      Defaults(),
			wantChild: `[{"round_robin": {}}]`,
		},
		{
			name: "every field",
			json: `{"consecutiveErrors":7,"consecutiveGatewayErrors":3,"interval":"1.5s","baseEjectionTime":"2m","maxEjectionPercent":100,"minHealthPercent":50}`,
			want: Config{ConsecutiveErrors: 7, ConsecutiveGatewayErrors: 3, Interval: 1500 * time.Millisecond, BaseEjectionTime: 2 * time.Minute, MaxEjectionPercent: 100, MinHealthPercent: 50},
		},
		{
			name: "explicit zeros",
			json: `{"consecutiveErrors":0,"maxEjectionPercent":0}`,
			want: Config{Interval: DefaultInterval, BaseEjectionTime: DefaultBaseEjectionTime},
		},
		{name: "numbers as a protobuf Struct writes them", json: `{"consecutiveErrors":5.0,"maxEjectionPercent":1e1}`, want: Defaults()},
		{name: "largest count", json: `{"consecutiveErrors":4294967295}`, want: func() Config { c := Defaults(); c.ConsecutiveErrors = 1<<32 - 1; return c }()},
		{name: "negative count", json: `{"consecutiveErrors":-1}`, wantErr: "outlier: consecutiveErrors is -1, must not be negative"},
		{name: "fractional count", json: `{"consecutiveGatewayErrors":2.5}`, wantErr: "outlier: consecutiveGatewayErrors is 2.5, must be a whole number"},
		{name: "huge count", json: `{"consecutiveErrors":4294967296}`, wantErr: "outlier: consecutiveErrors is 4.294967296e+09, must be at most 4.294967295e+09"},
		{name: "percent over 100", json: `{"maxEjectionPercent":101}`, wantErr: "outlier: maxEjectionPercent is 101, must be at most 100"},
		{name: "min health over 100", json: `{"minHealthPercent":150}`, wantErr: "outlier: minHealthPercent is 150, must be at most 100"},
		{name: "duration without unit", json: `{"interval":"10"}`, wantErr: `outlier: interval: time: missing unit in duration "10"`},
		{name: "zero duration", json: `{"baseEjectionTime":"0s"}`, wantErr: `outlier: baseEjectionTime is "0s", must be positive`},
		{name: "duration as number", json: `{"interval":10}`, wantErr: "outlier: config "},
		{name: "unknown field", json: `{"consecutive5xx":5}`, wantErr: `json: unknown field "consecutive5xx"`},
		{name: "trailing data", json: `{} {}`, wantErr: "must be a single JSON object"},
		{name: "not an object", json: `[]`, wantErr: "outlier: config []: json: cannot unmarshal array"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, child, err := ParseJSON([]byte(tc.json))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseJSON(%s) = %v, want error containing %q", tc.json, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseJSON(%s) = %v, want no error", tc.json, err)
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("ParseJSON(%s) config (-got +want):\n%s", tc.json, diff)
			}
			if string(child) != tc.wantChild {
				t.Errorf("ParseJSON(%s) childPolicy = %s, want %s", tc.json, child, tc.wantChild)
			}
		})
	}
}

// TestPolicyJSON: the JSON the control plane writes, exactly, and that it
// parses back to the config, zero durations as their defaults.
func TestPolicyJSON(t *testing.T) {
	child := []any{map[string]any{"round_robin": map[string]any{}}}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{
			cfg:  Defaults(),
			want: `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":5,"interval":"10s","baseEjectionTime":"30s","maxEjectionPercent":10,"minHealthPercent":0}`,
		},
		{
			cfg:  Config{ConsecutiveErrors: 3, ConsecutiveGatewayErrors: 2, Interval: 250 * time.Millisecond, BaseEjectionTime: 90 * time.Second, MaxEjectionPercent: 34, MinHealthPercent: 50},
			want: `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":3,"consecutiveGatewayErrors":2,"interval":"250ms","baseEjectionTime":"1m30s","maxEjectionPercent":34,"minHealthPercent":50}`,
		},
		{
			cfg:  Config{},
			want: `{"childPolicy":[{"round_robin":{}}],"consecutiveErrors":0,"interval":"10s","baseEjectionTime":"30s","maxEjectionPercent":0,"minHealthPercent":0}`,
		},
	} {
		js, err := json.Marshal(tc.cfg.PolicyJSON(child))
		if err != nil {
			t.Fatalf("json.Marshal(%+v) = %v", tc.cfg, err)
		}
		if string(js) != tc.want {
			t.Errorf("json.Marshal(%+v.PolicyJSON()) = %s, want %s", tc.cfg, js, tc.want)
		}
		got, gotChild, err := ParseJSON(js)
		if err != nil {
			t.Fatalf("ParseJSON(%s) = %v", js, err)
		}
		want := tc.cfg
		want.Interval, want.BaseEjectionTime = tc.cfg.EffectiveInterval(), tc.cfg.EffectiveBaseEjectionTime()
		if diff := cmp.Diff(got, want); diff != "" {
			t.Errorf("ParseJSON(%s) (-got +want):\n%s", js, diff)
		}
		if string(gotChild) != `[{"round_robin":{}}]` {
			t.Errorf("ParseJSON(%s) childPolicy = %s, want the one marshalled", js, gotChild)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg     Config
		wantErr string
	}{
		{cfg: Config{}},
		{cfg: Defaults()},
		{cfg: Config{MaxEjectionPercent: 100, MinHealthPercent: 100}},
		{cfg: Config{MaxEjectionPercent: 101}, wantErr: "outlier: maxEjectionPercent is 101, must be at most 100"},
		{cfg: Config{MinHealthPercent: 200}, wantErr: "outlier: minHealthPercent is 200, must be at most 100"},
		{cfg: Config{Interval: -time.Second}, wantErr: "outlier: interval is -1s, must not be negative"},
		{cfg: Config{BaseEjectionTime: -time.Millisecond}, wantErr: "outlier: baseEjectionTime is -1ms, must not be negative"},
	} {
		err := tc.cfg.Validate()
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
			t.Errorf("%+v.Validate() = %v, want %q", tc.cfg, err, tc.wantErr)
		}
	}
}

func TestEjectionTime(t *testing.T) {
	for _, tc := range []struct {
		base time.Duration
		n    int
		want time.Duration
	}{
		{base: 30 * time.Second, n: 0, want: 30 * time.Second},
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
		cfg := Config{BaseEjectionTime: tc.base}
		if got := cfg.EjectionTime(tc.n); got != tc.want {
			t.Errorf("Config{BaseEjectionTime: %v}.EjectionTime(%d) = %v, want %v", tc.base, tc.n, got, tc.want)
		}
	}
}
