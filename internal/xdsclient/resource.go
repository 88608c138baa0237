package xdsclient

import (
	"errors"
	"fmt"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// resourceType describes one of the four xDS resource types.
type resourceType struct {
	typeURL string
	kind    string // used in messages: "listener"
	// fullState: in state of the world, a response holds every subscribed
	// resource that exists, so absence means deletion (LDS and CDS).
	fullState bool
	new       func() proto.Message
	name      func(proto.Message) string
	validate  func(proto.Message) error
}

// typeOrder lists the types in the order requests for them are sent.
var typeOrder = []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType}

var resourceTypes = map[string]*resourceType{
	resource.ListenerType: {
		typeURL: resource.ListenerType, kind: "listener", fullState: true,
		new:      func() proto.Message { return new(v3listenerpb.Listener) },
		name:     func(m proto.Message) string { return m.(*v3listenerpb.Listener).GetName() },
		validate: func(m proto.Message) error { return validateListener(m.(*v3listenerpb.Listener)) },
	},
	resource.RouteType: {
		typeURL: resource.RouteType, kind: "route configuration",
		new:      func() proto.Message { return new(v3routepb.RouteConfiguration) },
		name:     func(m proto.Message) string { return m.(*v3routepb.RouteConfiguration).GetName() },
		validate: func(m proto.Message) error { return m.(*v3routepb.RouteConfiguration).ValidateAll() },
	},
	resource.ClusterType: {
		typeURL: resource.ClusterType, kind: "cluster", fullState: true,
		new:      func() proto.Message { return new(v3clusterpb.Cluster) },
		name:     func(m proto.Message) string { return m.(*v3clusterpb.Cluster).GetName() },
		validate: func(m proto.Message) error { return validateCluster(m.(*v3clusterpb.Cluster)) },
	},
	resource.EndpointType: {
		typeURL: resource.EndpointType, kind: "endpoints",
		new:      func() proto.Message { return new(v3endpointpb.ClusterLoadAssignment) },
		name:     func(m proto.Message) string { return m.(*v3endpointpb.ClusterLoadAssignment).GetClusterName() },
		validate: func(m proto.Message) error { return m.(*v3endpointpb.ClusterLoadAssignment).ValidateAll() },
	},
}

// wrapperTypeURL is the type of the envoy.service.discovery.v3.Resource
// wrapper, which a state-of-the-world server may use too.
const wrapperTypeURL = "type.googleapis.com/envoy.service.discovery.v3.Resource"

// decode unpacks and validates one resource of type rt. It returns the
// resource's name whenever it can be found, even with an error, so that the
// error can be attributed to the resource.
func decode(rt *resourceType, a *anypb.Any) (name string, msg proto.Message, err error) {
	if a.GetTypeUrl() == wrapperTypeURL {
		w := new(v3discoverypb.Resource)
		if err := proto.Unmarshal(a.GetValue(), w); err != nil {
			return "", nil, fmt.Errorf("%s: %w", rt.kind, err)
		}
		return decodeNamed(rt, w.GetName(), w.GetResource())
	}
	return decodeNamed(rt, "", a)
}

// decodeNamed decodes a, whose name is known to be name if it is not
// empty (a delta or wrapped resource).
func decodeNamed(rt *resourceType, name string, a *anypb.Any) (string, proto.Message, error) {
	if a == nil {
		return name, nil, fmt.Errorf("%s %q: resource has no body", rt.kind, name)
	}
	if a.GetTypeUrl() != rt.typeURL {
		return name, nil, fmt.Errorf("%s %q: resource of type %q in a response for %q", rt.kind, name, a.GetTypeUrl(), rt.typeURL)
	}
	msg := rt.new()
	if err := proto.Unmarshal(a.GetValue(), msg); err != nil {
		return name, nil, fmt.Errorf("%s %q: %w", rt.kind, name, err)
	}
	inner := rt.name(msg)
	switch {
	case inner == "":
		return name, nil, fmt.Errorf("%s %q: resource has no name", rt.kind, name)
	case name != "" && inner != name:
		return name, nil, fmt.Errorf("%s %q: resource is named %q inside", rt.kind, name, inner)
	}
	if err := rt.validate(msg); err != nil {
		return inner, nil, fmt.Errorf("%s %q: %w", rt.kind, inner, err)
	}
	return inner, msg, nil
}

// validateListener checks what a client of an API listener relies on: it
// holds an HttpConnectionManager whose routes come inline (validated) or
// over ADS.
// Listeners without api_listener (server listeners) get the generic checks.
func validateListener(l *v3listenerpb.Listener) error {
	if err := l.ValidateAll(); err != nil {
		return err
	}
	api := l.GetApiListener().GetApiListener()
	if l.GetApiListener() == nil {
		return nil
	}
	hcm := new(v3hcmpb.HttpConnectionManager)
	if !api.MessageIs(hcm) {
		return fmt.Errorf("api_listener holds %q, want an HttpConnectionManager", api.GetTypeUrl())
	}
	if err := api.UnmarshalTo(hcm); err != nil {
		return fmt.Errorf("api_listener: %w", err)
	}
	// The HttpConnectionManager's own protoc-gen-validate rules are not
	// applied: they require Envoy-only fields (stat_prefix) that proxyless
	// clients, grpc-go's included, neither need nor get.
	switch rs := hcm.GetRouteSpecifier().(type) {
	case *v3hcmpb.HttpConnectionManager_Rds:
		if err := checkADS(rs.Rds.GetConfigSource(), false); err != nil {
			return fmt.Errorf("api_listener: rds.config_source: %w", err)
		}
		if rs.Rds.GetRouteConfigName() == "" {
			return errors.New("api_listener: rds.route_config_name is empty")
		}
	case *v3hcmpb.HttpConnectionManager_RouteConfig:
		if err := rs.RouteConfig.ValidateAll(); err != nil {
			return fmt.Errorf("api_listener: route_config: %w", err)
		}
	default:
		return errors.New("api_listener: the HttpConnectionManager has neither rds nor route_config")
	}
	return nil
}

// validateCluster adds to the generic checks that an EDS cluster's
// endpoints come over ADS, the only stream this client has.
func validateCluster(c *v3clusterpb.Cluster) error {
	if err := c.ValidateAll(); err != nil {
		return err
	}
	if c.GetType() == v3clusterpb.Cluster_EDS {
		if err := checkADS(c.GetEdsClusterConfig().GetEdsConfig(), true); err != nil {
			return fmt.Errorf("eds_cluster_config.eds_config: %w", err)
		}
	}
	return nil
}

// checkADS accepts a config source that points at the ADS stream (ads or
// self), or nothing when optional.
func checkADS(cs *v3corepb.ConfigSource, optional bool) error {
	if cs == nil && optional {
		return nil
	}
	switch cs.GetConfigSourceSpecifier().(type) {
	case *v3corepb.ConfigSource_Ads, *v3corepb.ConfigSource_Self:
		return nil
	}
	return errors.New("must be ads or self")
}
