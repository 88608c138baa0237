package recycle

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/leastrequest"
)

func TestParseConfig(t *testing.T) {
	roundRobin := ChildPolicy{Name: "round_robin"}
	for _, tc := range []struct {
		name    string
		json    string
		want    *Config
		wantErr string
	}{
		{
			name: "valid",
			json: `{"maxRequestsPerConnection":100,"childPolicy":[{"round_robin":{}}]}`,
			want: &Config{MaxRequestsPerConnection: 100, ChildPolicy: roundRobin},
		},
		{
			name: "one request per connection",
			json: `{"maxRequestsPerConnection":1,"childPolicy":[{"round_robin":{}}]}`,
			want: &Config{MaxRequestsPerConnection: 1, ChildPolicy: roundRobin},
		},
		{
			name: "number as a protobuf Struct writes it",
			json: `{"maxRequestsPerConnection":1e3,"childPolicy":[{"round_robin":{}}]}`,
			want: &Config{MaxRequestsPerConnection: 1000, ChildPolicy: roundRobin},
		},
		{
			name: "first registered child policy wins, its config parsed by it",
			json: `{"maxRequestsPerConnection":5,"childPolicy":[{"no_such_policy":{}},{"least_request_experimental":{"choiceCount":3}},{"round_robin":{}}]}`,
			want: &Config{MaxRequestsPerConnection: 5, ChildPolicy: ChildPolicy{Name: leastrequest.Name, Config: &leastrequest.LBConfig{ChoiceCount: 3}}},
		},
		{name: "zero", json: `{"maxRequestsPerConnection":0,"childPolicy":[{"round_robin":{}}]}`, wantErr: "recycle: maxRequestsPerConnection is 0, must be at least 1"},
		{name: "negative", json: `{"maxRequestsPerConnection":-5,"childPolicy":[{"round_robin":{}}]}`, wantErr: "recycle: maxRequestsPerConnection is -5, must be at least 1"},
		{name: "fractional", json: `{"maxRequestsPerConnection":2.5,"childPolicy":[{"round_robin":{}}]}`, wantErr: "recycle: maxRequestsPerConnection is 2.5, must be a whole number"},
		{name: "huge", json: `{"maxRequestsPerConnection":1e10,"childPolicy":[{"round_robin":{}}]}`, wantErr: "recycle: maxRequestsPerConnection is 1e+10, must be at most 4294967295"},
		{name: "as a string", json: `{"maxRequestsPerConnection":"5","childPolicy":[{"round_robin":{}}]}`, wantErr: "recycle: config "},
		{name: "missing", json: `{"childPolicy":[{"round_robin":{}}]}`, wantErr: "recycle: maxRequestsPerConnection is required"},
		{name: "empty config", json: ``, wantErr: "recycle: maxRequestsPerConnection is required"},
		{name: "unknown field", json: `{"maxRequestsPerConnection":5,"maxRequests":5,"childPolicy":[{"round_robin":{}}]}`, wantErr: `json: unknown field "maxRequests"`},
		{name: "missing childPolicy", json: `{"maxRequestsPerConnection":5}`, wantErr: "recycle: childPolicy is required"},
		{name: "null childPolicy", json: `{"maxRequestsPerConnection":5,"childPolicy":null}`, wantErr: "recycle: childPolicy is required"},
		{name: "empty childPolicy", json: `{"maxRequestsPerConnection":5,"childPolicy":[]}`, wantErr: "recycle: childPolicy is empty"},
		{name: "childPolicy not a list", json: `{"maxRequestsPerConnection":5,"childPolicy":{"round_robin":{}}}`, wantErr: `recycle: childPolicy {"round_robin":{}}: must be a list of {"policy name": config} objects`},
		{name: "childPolicy entry with two policies", json: `{"maxRequestsPerConnection":5,"childPolicy":[{"round_robin":{},"pick_first":{}}]}`, wantErr: "recycle: childPolicy[0] has 2 entries, must name exactly one policy"},
		{name: "unsupported childPolicy", json: `{"maxRequestsPerConnection":5,"childPolicy":[{"ring_hash_x":{}},{"maglev":{}}]}`, wantErr: `recycle: childPolicy: no registered policy among "ring_hash_x", "maglev"`},
		{name: "child rejects its config", json: `{"maxRequestsPerConnection":5,"childPolicy":[{"least_request_experimental":{"choiceCount":1}}]}`, wantErr: `recycle: childPolicy "least_request_experimental": least-request:`},
		{name: "not an object", json: `[]`, wantErr: "recycle: config []: json: cannot unmarshal array"},
		{name: "trailing data", json: `{"maxRequestsPerConnection":5,"childPolicy":[{"round_robin":{}}]} {}`, wantErr: "must be a single JSON object"},
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

// TestConfigJSONRoundTrip: the JSON a Config marshals to parses back to it.
func TestConfigJSONRoundTrip(t *testing.T) {
	cfg := &Config{
		MaxRequestsPerConnection: 250,
		ChildPolicy:              ChildPolicy{Name: leastrequest.Name, Config: &leastrequest.LBConfig{ChoiceCount: 4}},
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("json.Marshal(%+v) = %v", cfg, err)
	}
	got, err := parseConfig(js)
	if err != nil {
		t.Fatalf("parseConfig(%s) = %v", js, err)
	}
	if diff := cmp.Diff(got, cfg); diff != "" {
		t.Errorf("parseConfig(%s) mismatch (-got +want):\n%s", js, diff)
	}
}
