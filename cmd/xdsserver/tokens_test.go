package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trellismesh/trellis/xdsserver"
)

func TestReadJoinTokens(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		want    map[string]xdsserver.WorkloadIdentity
		wantErr string
	}{
		{
			name: "identity only",
			json: `{"t1": {"namespace": "default", "serviceAccount": "reviews"}}`,
			want: map[string]xdsserver.WorkloadIdentity{"t1": {Namespace: "default", ServiceAccount: "reviews"}},
		},
		{
			name: "expiry and single use",
			json: `{"t1": {"namespace": "default", "serviceAccount": "reviews", "expires": "2026-07-01T12:00:00+02:00", "singleUse": true}}`,
			want: map[string]xdsserver.WorkloadIdentity{"t1": {Namespace: "default", ServiceAccount: "reviews",
				Expires: time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC), SingleUse: true}},
		},
		{name: "unknown field", json: `{"t1": {"namespace": "default", "serviceAccount": "reviews", "expiry": "2026-07-01T00:00:00Z"}}`, wantErr: "unknown field"},
		{name: "expiry not RFC 3339", json: `{"t1": {"namespace": "default", "serviceAccount": "reviews", "expires": "tomorrow"}}`, wantErr: "-join-tokens"},
		{name: "single use not a bool", json: `{"t1": {"namespace": "default", "serviceAccount": "reviews", "singleUse": "yes"}}`, wantErr: "-join-tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.json")
			if err := os.WriteFile(path, []byte(tt.json), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readJoinTokens(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("readJoinTokens(%s) = %v, %v, want an error containing %q", tt.json, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("readJoinTokens(%s) = %v", tt.json, err)
			}
			if diff := cmp.Diff(got, tt.want, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
				t.Errorf("readJoinTokens(%s) (-got +want):\n%s", tt.json, diff)
			}
		})
	}
}
