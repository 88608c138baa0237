package xdscluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	v1udpatypepb "github.com/cncf/xds/go/udpa/type/v1"
	v3xdstypepb "github.com/cncf/xds/go/xds/type/v3"
	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3leastrequestpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	v3randompb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	v3ringhashpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	v3roundrobinpb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	v3wrrlocalitypb "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellismesh/trellis/internal/outlier"
	"github.com/trellismesh/trellis/internal/peakewma"
)

// Names of the Trellis policies in TypedStructs and JSON configs.
const (
	outlierPolicy = "trellis_outlier"
	recyclePolicy = "trellis_recycle"
	randomPolicy  = "trellis_random"
	ewmaPolicy    = "trellis_ewma"
)

// maxDepth bounds the nesting of policies, as grpc-go's converter does.
const maxDepth = 16

// lb is a parsed policy: the picking policy and the wrappers around it.
type lb struct {
	cfg     LBConfig
	outlier *OutlierConfig
}

// parseLB reads the load-balancing policy of a cluster.
func parseLB(c *v3clusterpb.Cluster) (LBConfig, *OutlierConfig, error) {
	if ps := c.GetLoadBalancingPolicy().GetPolicies(); len(ps) > 0 {
		p, err := policyList(ps, 0)
		if err != nil {
			return LBConfig{}, nil, fmt.Errorf("load_balancing_policy: %w", err)
		}
		return p.cfg, p.outlier, nil
	}
	switch c.GetLbPolicy() {
	case v3clusterpb.Cluster_ROUND_ROBIN:
		return LBConfig{Policy: RoundRobin}, nil, nil
	case v3clusterpb.Cluster_LEAST_REQUEST:
		n := uint32(2)
		if v := c.GetLeastRequestLbConfig().GetChoiceCount(); v != nil {
			n = v.GetValue()
		}
		cc, err := choiceCount(float64(n))
		return LBConfig{Policy: LeastRequest, ChoiceCount: cc}, nil, err
	case v3clusterpb.Cluster_RING_HASH:
		rh := c.GetRingHashLbConfig()
		if f := rh.GetHashFunction(); f != v3clusterpb.Cluster_RingHashLbConfig_XX_HASH {
			return LBConfig{}, nil, fmt.Errorf("ring_hash_lb_config: hash function %v is not supported", f)
		}
		return ringHash(rh.GetMinimumRingSize().GetValue(), rh.GetMaximumRingSize().GetValue())
	}
	return LBConfig{}, nil, fmt.Errorf("lb_policy %v is not supported", c.GetLbPolicy())
}

func ringHash(minSize, maxSize uint64) (LBConfig, *OutlierConfig, error) {
	if maxSize != 0 && minSize > maxSize {
		return LBConfig{}, nil, fmt.Errorf("ring hash: minimum ring size %d is above the maximum %d", minSize, maxSize)
	}
	return LBConfig{Policy: RingHash, MinRingSize: minSize}, nil, nil
}

// policyList returns the first policy of ps it understands.
func policyList(ps []*v3clusterpb.LoadBalancingPolicy_Policy, depth int) (lb, error) {
	if depth > maxDepth {
		return lb{}, errors.New("policies nested too deep")
	}
	var names []string
	for _, p := range ps {
		tc := p.GetTypedExtensionConfig()
		got, ok, err := typedPolicy(tc.GetTypedConfig(), depth)
		if err != nil {
			return lb{}, fmt.Errorf("%s: %w", tc.GetName(), err)
		}
		if ok {
			return got, nil
		}
		names = append(names, tc.GetName())
	}
	return lb{}, fmt.Errorf("none of the policies %q is supported", names)
}

// typedPolicy reads one policy, and reports whether it knows it.
func typedPolicy(a *anypb.Any, depth int) (lb, bool, error) {
	switch a.GetTypeUrl() {
	case "type.googleapis.com/envoy.extensions.load_balancing_policies.wrr_locality.v3.WrrLocality":
		m := &v3wrrlocalitypb.WrrLocality{}
		if err := a.UnmarshalTo(m); err != nil {
			return lb{}, false, err
		}
		p, err := policyList(m.GetEndpointPickingPolicy().GetPolicies(), depth+1)
		return p, err == nil, err
	case "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin":
		return lb{cfg: LBConfig{Policy: RoundRobin}}, true, a.UnmarshalTo(&v3roundrobinpb.RoundRobin{})
	case "type.googleapis.com/envoy.extensions.load_balancing_policies.random.v3.Random":
		return lb{cfg: LBConfig{Policy: Random}}, true, a.UnmarshalTo(&v3randompb.Random{})
	case "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest":
		m := &v3leastrequestpb.LeastRequest{}
		if err := a.UnmarshalTo(m); err != nil {
			return lb{}, false, err
		}
		n := uint32(2)
		if v := m.GetChoiceCount(); v != nil {
			n = v.GetValue()
		}
		cc, err := choiceCount(float64(n))
		return lb{cfg: LBConfig{Policy: LeastRequest, ChoiceCount: cc}}, true, err
	case "type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash":
		m := &v3ringhashpb.RingHash{}
		if err := a.UnmarshalTo(m); err != nil {
			return lb{}, false, err
		}
		switch m.GetHashFunction() {
		case v3ringhashpb.RingHash_DEFAULT_HASH, v3ringhashpb.RingHash_XX_HASH:
		default:
			return lb{}, false, fmt.Errorf("hash function %v is not supported", m.GetHashFunction())
		}
		cfg, _, err := ringHash(m.GetMinimumRingSize().GetValue(), m.GetMaximumRingSize().GetValue())
		return lb{cfg: cfg}, true, err
	case "type.googleapis.com/xds.type.v3.TypedStruct":
		m := &v3xdstypepb.TypedStruct{}
		if err := a.UnmarshalTo(m); err != nil {
			return lb{}, false, err
		}
		return typedStruct(m.GetTypeUrl(), m.GetValue(), depth)
	case "type.googleapis.com/udpa.type.v1.TypedStruct":
		m := &v1udpatypepb.TypedStruct{}
		if err := a.UnmarshalTo(m); err != nil {
			return lb{}, false, err
		}
		return typedStruct(m.GetTypeUrl(), m.GetValue(), depth)
	}
	return lb{}, false, nil
}

// typedStruct reads a gRPC policy given by name with a JSON config (gRFC
// A52): the name is the last segment of the type URL.
func typedStruct(typeURL string, v *structpb.Struct, depth int) (lb, bool, error) {
	name := typeURL[strings.LastIndex(typeURL, "/")+1:]
	js := []byte("{}")
	if v != nil {
		var err error
		if js, err = protojson.Marshal(v); err != nil {
			return lb{}, false, err
		}
	}
	return jsonPolicy(name, js, depth)
}

// jsonPolicy reads a gRPC policy config, and reports whether it knows the
// policy.
func jsonPolicy(name string, js json.RawMessage, depth int) (lb, bool, error) {
	wrap := func(err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	switch name {
	case "round_robin":
		return lb{cfg: LBConfig{Policy: RoundRobin}}, true, nil
	case randomPolicy:
		return lb{cfg: LBConfig{Policy: Random}}, true, nil
	case ewmaPolicy:
		cfg, err := ewmaConfig(js)
		return lb{cfg: cfg}, err == nil, wrap(err)
	case "least_request_experimental":
		var raw struct {
			ChoiceCount *float64 `json:"choiceCount"`
		}
		if err := decode(js, &raw); err != nil {
			return lb{}, false, wrap(err)
		}
		n := 2.0
		if raw.ChoiceCount != nil {
			n = *raw.ChoiceCount
		}
		cc, err := choiceCount(n)
		return lb{cfg: LBConfig{Policy: LeastRequest, ChoiceCount: cc}}, true, wrap(err)
	case "ring_hash_experimental":
		var raw struct {
			MinRingSize float64 `json:"minRingSize"`
			MaxRingSize float64 `json:"maxRingSize"`
		}
		if err := decode(js, &raw); err != nil {
			return lb{}, false, wrap(err)
		}
		cfg, _, err := ringHash(uint64(raw.MinRingSize), uint64(raw.MaxRingSize))
		return lb{cfg: cfg}, true, wrap(err)
	case recyclePolicy:
		var raw struct {
			MaxRequestsPerConnection *float64       `json:"maxRequestsPerConnection"`
			ChildPolicy              []jsonSelector `json:"childPolicy"`
		}
		if err := decode(js, &raw); err != nil {
			return lb{}, false, wrap(err)
		}
		if raw.MaxRequestsPerConnection == nil {
			return lb{}, false, wrap(errors.New("maxRequestsPerConnection is required"))
		}
		n, err := count("maxRequestsPerConnection", *raw.MaxRequestsPerConnection, 1, math.MaxUint32)
		if err != nil {
			return lb{}, false, wrap(err)
		}
		child, err := jsonList(raw.ChildPolicy, depth+1)
		if err != nil {
			return lb{}, false, wrap(err)
		}
		child.cfg.MaxRequestsPerConnection = uint32(n)
		return child, true, nil
	case outlierPolicy:
		o, child, err := outlierConfig(js, depth)
		if err != nil {
			return lb{}, false, wrap(err)
		}
		child.outlier = o
		return child, true, nil
	}
	return lb{}, false, nil
}

// jsonSelector is one entry of a JSON childPolicy list: {"name": config}.
type jsonSelector map[string]json.RawMessage

// jsonList returns the first policy of a JSON list it understands.
func jsonList(list []jsonSelector, depth int) (lb, error) {
	if depth > maxDepth {
		return lb{}, errors.New("policies nested too deep")
	}
	var names []string
	for _, sel := range list {
		if len(sel) != 1 {
			return lb{}, fmt.Errorf("childPolicy entry has %d policies, want 1", len(sel))
		}
		for name, js := range sel {
			p, ok, err := jsonPolicy(name, js, depth)
			if err != nil || ok {
				return p, err
			}
			names = append(names, name)
		}
	}
	return lb{}, fmt.Errorf("childPolicy: none of the policies %q is supported", names)
}

// outlierConfig reads a trellis_outlier config, as balancer/outlier does:
// internal/outlier parses it, with its defaults.
func outlierConfig(js json.RawMessage, depth int) (*OutlierConfig, lb, error) {
	o, childJSON, err := outlier.ParseJSON(js)
	if err != nil {
		return nil, lb{}, err
	}
	var children []jsonSelector
	if len(childJSON) > 0 {
		if err := json.Unmarshal(childJSON, &children); err != nil {
			return nil, lb{}, fmt.Errorf("childPolicy %s: %w", childJSON, err)
		}
	}
	if len(children) == 0 {
		return nil, lb{}, errors.New("childPolicy is required")
	}
	child, err := jsonList(children, depth+1)
	return &o, child, err
}

// ewmaConfig reads a trellis_ewma config, as balancer/ewma does.
func ewmaConfig(js json.RawMessage) (LBConfig, error) {
	p, err := peakewma.ParseParams(js)
	if err != nil {
		return LBConfig{}, err
	}
	return LBConfig{Policy: EWMA, Decay: p.Decay, DefaultRTT: p.DefaultRTT, FailurePenalty: p.FailurePenalty}, nil
}

// choiceCount checks a least-request choice count as grpc-go does: at
// least 2, and more than 10 means 10.
func choiceCount(n float64) (int, error) {
	c, err := count("choiceCount", n, 2, math.MaxUint32)
	return int(min(c, 10)), err
}

// count checks that v is a whole number in [lo, hi].
func count(name string, v, lo, hi float64) (uint64, error) {
	if v != math.Trunc(v) || v < lo || v > hi {
		return 0, fmt.Errorf("%s is %v, must be a whole number from %v to %v", name, v, lo, hi)
	}
	return uint64(v), nil
}

// decode decodes one JSON object, rejecting unknown fields.
func decode(js json.RawMessage, v any) error {
	if len(bytes.TrimSpace(js)) == 0 {
		js = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("config %s: %w", js, err)
	}
	return nil
}
