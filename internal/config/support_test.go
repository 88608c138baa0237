package config

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSupportMatrix keeps docs/SUPPORT.md true: the fields it marks
// supported are exactly the fields the loader accepts, kind by kind.
func TestSupportMatrix(t *testing.T) {
	data, err := os.ReadFile("../../docs/SUPPORT.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `([a-z0-9_.]+)` \\| supported \\|")
	documented := map[string][]string{}
	kind := ""
	for _, line := range strings.Split(string(data), "\n") {
		if k, ok := strings.CutPrefix(line, "## "); ok {
			kind = strings.TrimSpace(k)
			continue
		}
		if m := row.FindStringSubmatch(line); m != nil {
			documented[kind] = append(documented[kind], m[1])
		}
	}
	// The traffic policy table applies at every level a policy appears.
	for _, f := range documented["DestinationRule traffic policy"] {
		for _, level := range []string{"traffic_policy.", "traffic_policy.port_level_settings.", "subsets.traffic_policy.", "subsets.traffic_policy.port_level_settings."} {
			documented[KindDestinationRule] = append(documented[KindDestinationRule], level+f)
		}
	}
	for _, k := range []string{KindServiceEntry, KindWorkloadEntry, KindVirtualService, KindDestinationRule, KindPeerAuthentication, KindAuthorizationPolicy, KindRequestAuthentication, KindTelemetry} {
		got := documented[k]
		slices.Sort(got)
		if diff := cmp.Diff(got, Supported(k)); diff != "" {
			t.Errorf("docs/SUPPORT.md %s fields (-documented +implemented):\n%s", k, diff)
		}
	}
}
