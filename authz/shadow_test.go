package authz

import (
	"errors"
	"testing"

	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/trellismesh/trellis/internal/secpolicy"
)

// filtersFor translates Istio policies (YAML documents; dryRun[i] marks
// docs[i] as annotated istio.io/dry-run: "true") as the control plane does
// for a server listener, and builds the enforced engine and the shadow of
// its RBAC filters.
func filtersFor(t testing.TB, dryRun []bool, docs ...string) (*Engine, *Shadow) {
	t.Helper()
	var ps []secpolicy.NamedAuthorizationPolicy
	for i, d := range docs {
		p := parsePolicy(t, d)
		p.DryRun = dryRun[i]
		ps = append(ps, p)
	}
	filters, err := secpolicy.AuthorizationFilters(ps, "cluster.local")
	if err != nil {
		t.Fatalf("AuthorizationFilters() = %v", err)
	}
	var rules, shadow []*v3rbacpb.RBAC
	for _, f := range filters {
		if f.GetRules() != nil {
			rules = append(rules, f.GetRules())
		}
		if f.GetShadowRules() != nil {
			shadow = append(shadow, f.GetShadowRules())
		}
	}
	e, err := New(rules)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	s, err := NewShadow(shadow)
	if err != nil {
		t.Fatalf("NewShadow() = %v", err)
	}
	return e, s
}

// TestDryRunPoliciesDecideNothing: dry-run policies report what they would
// decide, each action on its own as its RBAC filter would, and never change
// the enforced decision: a dry-run DENY that matches leaves the request
// allowed, a dry-run ALLOW does not deny the requests it does not match.
func TestDryRunPoliciesDecideNothing(t *testing.T) {
	const (
		denyAdmin = `
metadata: {name: deny-admin, namespace: ns}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin*"]}}]}]}`
		allowReviews = `
metadata: {name: allow-reviews, namespace: ns}
spec: {action: ALLOW, rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/reviews]}}]}]}`
		auditDelete = `
metadata: {name: audit-delete, namespace: ns}
spec: {action: AUDIT, rules: [{to: [{operation: {methods: [DELETE]}}]}]}`
	)
	e, s := filtersFor(t, []bool{true, true, true}, denyAdmin, allowReviews, auditDelete)
	reviews, other := "spiffe://cluster.local/ns/default/sa/reviews", "spiffe://cluster.local/ns/default/sa/other"
	for _, tt := range []struct {
		name      string
		req       Request
		want      []ShadowDecision
		malformed bool // denied whatever the policies (the server would not consult an engine without rules)
	}{
		{"admin from reviews", Request{Method: "GET", Path: "/admin/x", Principal: reviews}, []ShadowDecision{
			{Action: v3rbacpb.RBAC_DENY, Policy: "ns/deny-admin[0]", Reason: "matched DENY policy"},
			{Action: v3rbacpb.RBAC_ALLOW, Allowed: true, Policy: "ns/allow-reviews[0]", Reason: "matched ALLOW policy"},
			{Action: v3rbacpb.RBAC_LOG, Allowed: true, Reason: "no ALLOW policy"},
		}, false},
		{"public from another", Request{Method: "DELETE", Path: "/public", Principal: other}, []ShadowDecision{
			{Action: v3rbacpb.RBAC_DENY, Allowed: true, Reason: "no ALLOW policy"},
			{Action: v3rbacpb.RBAC_ALLOW, Reason: "no ALLOW policy matched"},
			{Action: v3rbacpb.RBAC_LOG, Allowed: true, Reason: "no ALLOW policy", Audit: []string{"ns/audit-delete[0]"}},
		}, false},
		{"malformed path", Request{Method: "GET", Path: "/%2Fadmin", Principal: reviews}, []ShadowDecision{
			{Action: v3rbacpb.RBAC_DENY, Reason: "urlpath: invalid request path: encoded slash or backslash at offset 1"},
			{Action: v3rbacpb.RBAC_ALLOW, Reason: "urlpath: invalid request path: encoded slash or backslash at offset 1"},
			{Action: v3rbacpb.RBAC_LOG, Reason: "urlpath: invalid request path: encoded slash or backslash at offset 1"},
		}, true},
	} {
		if d := e.Authorize(&tt.req); !tt.malformed && (!d.Allowed || d.Policy != "") {
			t.Errorf("%s: enforced Authorize() = %+v, want allowed by no policy (only dry-run policies exist)", tt.name, d)
		}
		if diff := cmp.Diff(s.Evaluate(&tt.req), tt.want); diff != "" {
			t.Errorf("%s: Evaluate() mismatch (-got +want):\n%s", tt.name, diff)
		}
	}

	// Beside enforced policies, the enforced decision is theirs alone.
	e, s = filtersFor(t, []bool{true, false}, denyAdmin, allowReviews)
	req := Request{Method: "GET", Path: "/admin", Principal: reviews}
	if d := e.Authorize(&req); !d.Allowed || d.Policy != "ns/allow-reviews[0]" {
		t.Errorf("enforced Authorize(admin from reviews) = %+v, want allowed by ns/allow-reviews[0]", d)
	}
	if got := s.Evaluate(&req); len(got) != 1 || got[0].Allowed || got[0].Policy != "ns/deny-admin[0]" {
		t.Errorf("Evaluate(admin from reviews) = %+v, want one DENY decision by ns/deny-admin[0]", got)
	}
	if got := (*Shadow)(nil).Evaluate(&req); got != nil {
		t.Errorf("nil Shadow: Evaluate() = %v, want nil", got)
	}
}

// TestNewShadowRejectsUnsupported: a shadow rule the engine cannot
// evaluate is refused as a rule would be, naming the config and field.
func TestNewShadowRejectsUnsupported(t *testing.T) {
	ok := &v3rbacpb.RBAC{Action: v3rbacpb.RBAC_DENY}
	bad := &v3rbacpb.RBAC{Action: v3rbacpb.RBAC_ALLOW, Policies: map[string]*v3rbacpb.Policy{"p": {
		Permissions: []*v3rbacpb.Permission{{Rule: &v3rbacpb.Permission_RequestedServerName{RequestedServerName: &v3matcherpb.StringMatcher{}}}},
		Principals:  []*v3rbacpb.Principal{{Identifier: &v3rbacpb.Principal_Any{Any: true}}},
	}}}
	_, err := NewShadow([]*v3rbacpb.RBAC{ok, bad})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("NewShadow(requested_server_name) = %v, want ErrUnsupported", err)
	}
	if want := `authz: shadow rbac[1] (ALLOW) policy "p": permissions[0].requested_server_name: not supported`; err.Error() != want {
		t.Errorf("NewShadow() error = %q, want %q", err, want)
	}
}
