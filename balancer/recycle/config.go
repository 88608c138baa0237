package recycle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"

	"google.golang.org/grpc/serviceconfig"

	"github.com/trellismesh/trellis/internal/childlb"
)

// Config is the configuration of the policy, as ParseConfig returns it. Its
// JSON form (the service config entry, or the value of the xDS TypedStruct)
// is
//
//	{
//	  "maxRequestsPerConnection": 1000,
//	  "childPolicy": [{"round_robin": {}}]
//	}
//
// where both fields are required.
type Config struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	// MaxRequestsPerConnection is how many RPCs a connection carries before
	// it is replaced by a new connection to the same address and drained
	// (Istio's connectionPool.http.maxRequestsPerConnection, Envoy's
	// max_requests_per_connection). An RPC counts when it is picked onto a
	// connection. ParseConfig requires at least 1; the zero value makes the
	// balancer reject the config (unlike Istio, where 0 means unlimited: to
	// never recycle, do not use this policy).
	MaxRequestsPerConnection uint32 `json:"maxRequestsPerConnection"`

	// ChildPolicy balances RPCs over the endpoints. In JSON it is a list of
	// {"policy_name": config} objects, in grpc service config style: the
	// first policy registered with grpc-go is used, and its config is parsed
	// by its builder. Required: the zero value makes the balancer reject the
	// config.
	ChildPolicy ChildPolicy `json:"childPolicy"`
}

// ChildPolicy is a child load-balancing policy with its parsed config.
type ChildPolicy = childlb.Policy

// rawConfig is what ParseConfig decodes: numbers as float64, because a
// config that came through xDS is a google.protobuf.Struct whose numbers
// are doubles, and pointers to tell absent fields from zeros.
type rawConfig struct {
	MaxRequestsPerConnection *float64        `json:"maxRequestsPerConnection"`
	ChildPolicy              json.RawMessage `json:"childPolicy"`
}

// parseConfig is the builder's ParseConfig.
func parseConfig(js json.RawMessage) (*Config, error) {
	js = bytes.TrimSpace(js)
	if len(js) == 0 {
		js = []byte("{}")
	}
	var raw rawConfig
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("recycle: config %s: %w", js, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("recycle: config %s: must be a single JSON object", js)
	}
	cfg := &Config{}
	switch v := raw.MaxRequestsPerConnection; {
	case v == nil:
		return nil, errors.New("recycle: maxRequestsPerConnection is required, for example 1000")
	case *v != math.Trunc(*v):
		return nil, fmt.Errorf("recycle: maxRequestsPerConnection is %v, must be a whole number", *v)
	case *v < 1:
		return nil, fmt.Errorf("recycle: maxRequestsPerConnection is %v, must be at least 1", *v)
	case *v > math.MaxUint32:
		return nil, fmt.Errorf("recycle: maxRequestsPerConnection is %v, must be at most %d", *v, uint32(math.MaxUint32))
	default:
		cfg.MaxRequestsPerConnection = uint32(*v)
	}
	var err error
	if cfg.ChildPolicy, err = parseChildPolicy(raw.ChildPolicy); err != nil {
		return nil, err
	}
	return cfg, nil
}

// parseChildPolicy parses the childPolicy list (see childlb.Parse).
func parseChildPolicy(js json.RawMessage) (ChildPolicy, error) {
	p, err := childlb.Parse(js)
	if err != nil {
		return ChildPolicy{}, fmt.Errorf("recycle: %w", err)
	}
	return p, nil
}
