package xdsclient

import (
	"strings"
	"testing"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// notADS is a config source other than the ADS stream.
var notADS = &v3corepb.ConfigSource{ConfigSourceSpecifier: &v3corepb.ConfigSource_ApiConfigSource{
	ApiConfigSource: &v3corepb.ApiConfigSource{ApiType: v3corepb.ApiConfigSource_REST},
}}

func TestDecode(t *testing.T) {
	withAPI := func(m proto.Message) *v3listenerpb.Listener {
		return &v3listenerpb.Listener{Name: "l", ApiListener: &v3listenerpb.ApiListener{ApiListener: mustAny(m)}}
	}
	badLB := edsCluster("c", time.Second)
	badLB.LbPolicy = 99
	pathEDS := edsCluster("c", time.Second)
	pathEDS.EdsClusterConfig.EdsConfig = notADS
	for _, tc := range []struct {
		name     string
		typeURL  string
		res      *anypb.Any
		wantName string
		wantErr  string // "" for a valid resource
	}{
		{"api listener", resource.ListenerType, mustAny(apiListener("l", "r")), "l", ""},
		{"server listener", resource.ListenerType, mustAny(&v3listenerpb.Listener{Name: "s"}), "s", ""},
		{"wrapped", resource.ListenerType, mustAny(&v3discoverypb.Resource{Name: "l", Resource: mustAny(apiListener("l", "r"))}), "l", ""},
		{"wrapper name differs", resource.ListenerType, mustAny(&v3discoverypb.Resource{Name: "x", Resource: mustAny(apiListener("l", "r"))}), "x", `is named "l" inside`},
		{"api listener not an HCM", resource.ListenerType, mustAny(withAPI(edsCluster("c", time.Second))), "l", "want an HttpConnectionManager"},
		{"HCM without routes", resource.ListenerType, mustAny(withAPI(&v3hcmpb.HttpConnectionManager{})), "l", "neither rds nor route_config"},
		{"RDS not over ADS", resource.ListenerType, mustAny(withAPI(&v3hcmpb.HttpConnectionManager{RouteSpecifier: &v3hcmpb.HttpConnectionManager_Rds{Rds: &v3hcmpb.Rds{
			ConfigSource: notADS, RouteConfigName: "r",
		}}})), "l", "must be ads or self"},
		{"RDS without a name", resource.ListenerType, mustAny(withAPI(&v3hcmpb.HttpConnectionManager{RouteSpecifier: &v3hcmpb.HttpConnectionManager_Rds{Rds: &v3hcmpb.Rds{ConfigSource: ads}}})), "l", "route_config_name is empty"},
		{"wrong type", resource.ListenerType, mustAny(edsCluster("c", time.Second)), "", "in a response for"},
		{"no name", resource.ListenerType, mustAny(&v3listenerpb.Listener{}), "", "has no name"},
		{"route", resource.RouteType, mustAny(routeConfig("r", "c")), "r", ""},
		{"cluster", resource.ClusterType, mustAny(edsCluster("c", time.Second)), "c", ""},
		{"cluster bad enum", resource.ClusterType, mustAny(badLB), "c", "LbPolicy"},
		{"cluster negative timeout", resource.ClusterType, mustAny(edsCluster("c", -time.Second)), "c", "ConnectTimeout"},
		{"EDS not over ADS", resource.ClusterType, mustAny(pathEDS), "c", "eds_config: must be ads or self"},
		{"endpoints", resource.EndpointType, mustAny(endpoints("e", "10.0.0.1")), "e", ""},
		{"endpoints bad port", resource.EndpointType, mustAny(&v3endpointpb.ClusterLoadAssignment{ClusterName: "e", Endpoints: []*v3endpointpb.LocalityLbEndpoints{{
			LbEndpoints: []*v3endpointpb.LbEndpoint{{HostIdentifier: &v3endpointpb.LbEndpoint_Endpoint{Endpoint: &v3endpointpb.Endpoint{
				Address: &v3corepb.Address{Address: &v3corepb.Address_SocketAddress{SocketAddress: &v3corepb.SocketAddress{
					Address: "10.0.0.1", PortSpecifier: &v3corepb.SocketAddress_PortValue{PortValue: 70000},
				}}},
			}}}},
		}}}), "e", "PortValue"},
		{"cluster type mismatch", resource.ClusterType, mustAny(&v3endpointpb.ClusterLoadAssignment{ClusterName: "e"}), "", "in a response for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, msg, err := decode(resourceTypes[tc.typeURL], tc.res)
			if name != tc.wantName {
				t.Errorf("decode() name = %q, want %q", name, tc.wantName)
			}
			switch {
			case tc.wantErr == "" && (err != nil || msg == nil):
				t.Errorf("decode() = %v, %v, want a resource", msg, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("decode() error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
