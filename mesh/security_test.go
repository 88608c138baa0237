package mesh

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	xdsmatcherpb "github.com/cncf/xds/go/xds/type/matcher/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3rbachttppb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// listenerWithRBAC is a plaintext server listener with one RBAC filter.
func listenerWithRBAC(t *testing.T, rbac *v3rbachttppb.RBAC) *v3listenerpb.Listener {
	t.Helper()
	f, err := anypb.New(rbac)
	if err != nil {
		t.Fatal(err)
	}
	hcm, err := anypb.New(&v3hcmpb.HttpConnectionManager{HttpFilters: []*v3hcmpb.HttpFilter{
		{Name: "envoy.filters.http.rbac", ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: f}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &v3listenerpb.Listener{FilterChains: []*v3listenerpb.FilterChain{{
		Name:    "plaintext",
		Filters: []*v3listenerpb.Filter{{Name: "hcm", ConfigType: &v3listenerpb.Filter_TypedConfig{TypedConfig: hcm}}},
	}}}
}

// TestCompilePolicyShadowRules: a server reads an RBAC filter's
// shadow_rules as rules to report, not to enforce: with shadow rules only,
// the call that they would deny is admitted; a shadow rule it cannot
// evaluate, or a shadow_matcher, makes the policy unusable (refused, as
// an unknown rule is), never silently dropped.
func TestCompilePolicyShadowRules(t *testing.T) {
	denyAll := &v3rbacpb.RBAC{Action: v3rbacpb.RBAC_DENY, Policies: map[string]*v3rbacpb.Policy{"ns/deny-all[0]": {
		Permissions: []*v3rbacpb.Permission{{Rule: &v3rbacpb.Permission_Any{Any: true}}},
		Principals:  []*v3rbacpb.Principal{{Identifier: &v3rbacpb.Principal_Any{Any: true}}},
	}}}
	o := newOptions(nil, ServerOption.applyServer)
	p, err := compilePolicy(listenerWithRBAC(t, &v3rbachttppb.RBAC{ShadowRules: denyAll, ShadowRulesStatPrefix: "istio_dry_run_deny_"}), nil, o)
	if err != nil {
		t.Fatalf("compilePolicy(shadow rules) = %v", err)
	}
	if p.authz != nil || p.shadow == nil || !p.readsRequest() {
		t.Fatalf("compilePolicy(shadow rules) = authz %v, shadow %v, readsRequest %v; want no enforced rules, shadow rules, reading the request", p.authz, p.shadow, p.readsRequest())
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	c := &call{method: "GET", path: "/admin", headers: map[string][]string{}}
	if _, err := p.check(context.Background(), log, nil, c); err != nil {
		t.Errorf("check() under a shadow DENY of everything = %v, want admitted", err)
	}
	if got := logs.String(); !strings.Contains(got, `msg="mesh: dry-run policy decision (not enforced)" action=DENY policy=ns/deny-all[0] decision=deny path=/admin`) {
		t.Errorf("check() logged %q, want the would-be denial by ns/deny-all[0]", got)
	}

	unsupported := &v3rbacpb.RBAC{Action: v3rbacpb.RBAC_DENY, Policies: map[string]*v3rbacpb.Policy{"p": {
		Permissions: []*v3rbacpb.Permission{{Rule: &v3rbacpb.Permission_RequestedServerName{RequestedServerName: &v3matcherpb.StringMatcher{}}}},
		Principals:  []*v3rbacpb.Principal{{Identifier: &v3rbacpb.Principal_Any{Any: true}}},
	}}}
	for name, rbac := range map[string]*v3rbachttppb.RBAC{
		"unsupported shadow rule": {ShadowRules: unsupported},
		"shadow matcher":          {ShadowMatcher: &xdsmatcherpb.Matcher{}},
		"matcher":                 {Matcher: &xdsmatcherpb.Matcher{}},
	} {
		if _, err := compilePolicy(listenerWithRBAC(t, rbac), nil, o); err == nil {
			t.Errorf("compilePolicy(%s) = nil error, want the policy refused", name)
		}
	}
}
