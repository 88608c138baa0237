package translate

import (
	"fmt"
	"testing"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// claOf builds a ClusterLoadAssignment with n endpoints in each locality.
func claOf(n int, localities ...string) *v3endpointpb.ClusterLoadAssignment {
	cla := &v3endpointpb.ClusterLoadAssignment{ClusterName: "c"}
	for _, l := range localities {
		p := splitLocality(l)
		loc := &v3endpointpb.LocalityLbEndpoints{
			Locality:            &v3corepb.Locality{Region: p[0], Zone: p[1], SubZone: p[2]},
			LoadBalancingWeight: wrapperspb.UInt32(uint32(n)),
		}
		for range n {
			loc.LbEndpoints = append(loc.LbEndpoints, &v3endpointpb.LbEndpoint{})
		}
		cla.Endpoints = append(cla.Endpoints, loc)
	}
	return cla
}

// summary lists "locality pN wW" per locality group.
func summary(cla *v3endpointpb.ClusterLoadAssignment) []string {
	var out []string
	for _, loc := range cla.GetEndpoints() {
		out = append(out, fmt.Sprintf("%s p%d w%d", localityString(loc.GetLocality()), loc.GetPriority(), loc.GetLoadBalancingWeight().GetValue()))
	}
	return out
}

func TestLocalize(t *testing.T) {
	all := claOf(2, "us-east/a/1", "us-east/a/2", "us-east/b/1", "us-west/a/1", "eu/a/1")
	for _, tc := range []struct {
		name    string
		client  string
		setting *networking.LocalityLoadBalancerSetting
		want    []string
	}{
		{
			name:    "failover by proximity",
			client:  "us-east/a/1",
			setting: &networking.LocalityLoadBalancerSetting{},
			want:    []string{"us-east/a/1 p0 w2", "us-east/a/2 p1 w2", "us-east/b/1 p2 w2", "us-west/a/1 p3 w2", "eu/a/1 p3 w2"},
		},
		{
			name:   "failover to a named region first",
			client: "us-east/b/9",
			setting: &networking.LocalityLoadBalancerSetting{Failover: []*networking.LocalityLoadBalancerSetting_Failover{
				{From: "us-east", To: "eu"},
			}},
			// No endpoint shares the client's subzone: priorities start at its zone.
			want: []string{"us-east/b/1 p0 w2", "us-east/a/1 p1 w2", "us-east/a/2 p1 w2", "eu/a/1 p2 w2", "us-west/a/1 p3 w2"},
		},
		{
			name:   "distribute",
			client: "us-east/a/1",
			setting: &networking.LocalityLoadBalancerSetting{Distribute: []*networking.LocalityLoadBalancerSetting_Distribute{
				{From: "eu/*", To: map[string]uint32{"eu": 100}},
				{From: "us-east/*", To: map[string]uint32{"us-east/a/*": 80, "us-west": 20}},
			}},
			want: []string{"us-east/a/1 p0 w40000", "us-east/a/2 p0 w40000", "us-west/a/1 p0 w20000"},
		},
		{
			name:    "disabled",
			client:  "us-east/a/1",
			setting: &networking.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(false)},
			want:    summary(all),
		},
		{
			name:    "client without locality",
			client:  "",
			setting: &networking.LocalityLoadBalancerSetting{},
			want:    summary(all),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := proto.Clone(all)
			got := Localize(all, tc.client, tc.setting)
			if diff := cmp.Diff(summary(got), tc.want); diff != "" {
				t.Errorf("Localize(%q) (-got +want):\n%s", tc.client, diff)
			}
			if !proto.Equal(all, before) {
				t.Error("Localize modified its input")
			}
		})
	}
}
