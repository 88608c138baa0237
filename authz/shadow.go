package authz

import (
	"fmt"
	"strings"

	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
)

// Shadow evaluates shadow rules: the RBAC configs an Envoy RBAC filter
// carries in shadow_rules, into which Istio translates dry-run
// AuthorizationPolicies (annotated istio.io/dry-run: "true"). Each config
// is evaluated on its own, as the filter that carries it evaluates it, and
// what it would decide is reported, never enforced. It is immutable once
// built and safe for concurrent use. A nil *Shadow holds no rules.
type Shadow struct {
	configs []shadowConfig
}

type shadowConfig struct {
	action v3rbacpb.RBAC_Action
	engine *Engine
}

// ShadowDecision is what one shadow config would decide of a request.
type ShadowDecision struct {
	// Action is the config's action: RBAC_DENY, RBAC_ALLOW or RBAC_LOG.
	Action v3rbacpb.RBAC_Action
	// Allowed is what the config alone would decide: a DENY config denies
	// a request one of its policies matches, an ALLOW config denies one
	// none of its policies matches, a LOG config allows every request.
	// Malformed requests (see [Engine.Authorize]) are denied.
	Allowed bool
	// Policy names the policy that decided (the matching DENY or ALLOW
	// policy); empty when none did.
	Policy string
	// Reason says why, for logs. Never send it to the peer.
	Reason string
	// Audit lists, for a LOG config, the policies that matched, sorted.
	Audit []string
}

// NewShadow compiles shadow rules, validated exactly as [New] validates
// rules: a matcher the engine does not implement fails with an error
// wrapping [ErrUnsupported], a malformed one with [ErrInvalidPolicy], so
// that a shadow rule is never silently evaluated as something else.
func NewShadow(rules []*v3rbacpb.RBAC, opts ...Option) (*Shadow, error) {
	s := &Shadow{}
	for i, cfg := range rules {
		e, err := New([]*v3rbacpb.RBAC{cfg}, opts...)
		if err != nil {
			return nil, shadowError(err, i)
		}
		s.configs = append(s.configs, shadowConfig{action: cfg.GetAction(), engine: e})
	}
	return s, nil
}

// shadowError makes an error of New on the one config i name it as shadow
// config i: "authz: shadow rbac[1] (ALLOW) policy ...".
func shadowError(err error, i int) error {
	pe, ok := err.(*policyError)
	if !ok {
		return err
	}
	cp := *pe
	cp.where = fmt.Sprintf("shadow rbac[%d]", i) + strings.TrimPrefix(cp.where, "rbac[0]")
	return &cp
}

// Evaluate returns what each shadow config would decide of r, in the
// order of the configs. It decides nothing itself: the caller's decision
// is the one of its enforced [Engine].
func (s *Shadow) Evaluate(r *Request) []ShadowDecision {
	if s == nil || len(s.configs) == 0 {
		return nil
	}
	out := make([]ShadowDecision, 0, len(s.configs))
	for _, c := range s.configs {
		d := c.engine.Authorize(r)
		out = append(out, ShadowDecision{Action: c.action, Allowed: d.Allowed, Policy: d.Policy, Reason: d.Reason, Audit: d.Audit})
	}
	return out
}
