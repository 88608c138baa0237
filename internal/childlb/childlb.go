// Package childlb parses the child policy of a wrapping gRPC LB policy: a
// service-config style list, [{"name": config}, ...], of which the first
// policy registered in grpc's balancer registry is used, its config parsed
// by its own builder. balancer/outlier and balancer/recycle share it.
package childlb

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/serviceconfig"
)

// Policy is a child load-balancing policy with its parsed config.
type Policy struct {
	// Name is the name the policy is registered under in grpc-go's
	// balancer registry ("round_robin", "trellis_random").
	Name string
	// Config is the policy's parsed config; nil for a policy whose builder
	// does not implement balancer.ConfigParser.
	Config serviceconfig.LoadBalancingConfig
}

// MarshalJSON encodes the child policy as a one-entry service config list,
// [{"name": config}], with a nil Config as {}. It is for inspection and
// round trips; a Config that does not encode to its own JSON form does not
// survive them.
func (c Policy) MarshalJSON() ([]byte, error) {
	cfg := json.RawMessage("{}")
	if c.Config != nil {
		js, err := json.Marshal(c.Config)
		if err != nil {
			return nil, fmt.Errorf("childPolicy %q: %w", c.Name, err)
		}
		cfg = js
	}
	return json.Marshal([]map[string]json.RawMessage{{c.Name: cfg}})
}

// Parse picks the first registered policy of a service config style list
// and parses its config with the policy's own builder. Errors start with
// "childPolicy"; callers prefix their package name.
func Parse(js json.RawMessage) (Policy, error) {
	if len(js) == 0 || string(js) == "null" {
		return Policy{}, errors.New(`childPolicy is required, for example [{"round_robin":{}}]`)
	}
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(js, &list); err != nil {
		return Policy{}, fmt.Errorf("childPolicy %s: must be a list of {\"policy name\": config} objects: %w", js, err)
	}
	if len(list) == 0 {
		return Policy{}, errors.New(`childPolicy is empty, want for example [{"round_robin":{}}]`)
	}
	var unknown []string
	for i, entry := range list {
		if len(entry) != 1 {
			return Policy{}, fmt.Errorf("childPolicy[%d] has %d entries, must name exactly one policy", i, len(entry))
		}
		for name, cfgJSON := range entry {
			b := balancer.Get(name)
			if b == nil {
				unknown = append(unknown, fmt.Sprintf("%q", name))
				continue
			}
			child := Policy{Name: b.Name()}
			if p, ok := b.(balancer.ConfigParser); ok {
				cfg, err := p.ParseConfig(cfgJSON)
				if err != nil {
					return Policy{}, fmt.Errorf("childPolicy %q: %w", name, err)
				}
				child.Config = cfg
			}
			return child, nil
		}
	}
	return Policy{}, fmt.Errorf("childPolicy: no registered policy among %s", strings.Join(unknown, ", "))
}
