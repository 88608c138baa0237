package secpolicy

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	securityv1beta1 "istio.io/api/security/v1beta1"
	"sigs.k8s.io/yaml"
)

// apSpec parses an AuthorizationPolicy spec written in YAML.
func apSpec(t *testing.T, y string) *securityv1beta1.AuthorizationPolicy {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatalf("YAMLToJSON(%q) = %v", y, err)
	}
	if string(j) == "null" {
		j = []byte("{}")
	}
	spec := &securityv1beta1.AuthorizationPolicy{}
	if err := protojson.Unmarshal(j, spec); err != nil {
		t.Fatalf("protojson.Unmarshal(%s) = %v", j, err)
	}
	return spec
}

func TestAuthorizationPoliciesRejectsUnsupported(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want string
	}{
		{"hosts", `{rules: [{to: [{operation: {hosts: [a.example]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].to[0].operation.hosts: not supported`},
		{"notHosts", `{rules: [{to: [{operation: {paths: [/a], notHosts: [a.example]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].to[0].operation.notHosts: not supported`},
		{"custom action", `{action: CUSTOM, provider: {name: ext}, rules: [{}]}`,
			`secpolicy: authorization policy "default/p": provider: not supported`},
		{"custom action without provider", `{action: CUSTOM, rules: [{}]}`,
			`secpolicy: authorization policy "default/p": action: CUSTOM not supported`},
		{"targetRefs", `{targetRefs: [{kind: Gateway, name: gw}]}`,
			`secpolicy: authorization policy "default/p": targetRefs: not supported`},
		{"trustDomains", `{rules: [{from: [{source: {trustDomains: [td]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].from[0].source.trustDomains: not supported`},
		{"unknown when key", `{rules: [{when: [{key: connection.sni, values: [a]}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].when[0].key: "connection.sni" not supported`},
		{"destination.ip", `{rules: [{}, {when: [{key: destination.ip, values: [10.0.0.1]}]}]}`,
			`secpolicy: authorization policy "default/p": rules[1].when[0].key: "destination.ip" not supported`},
		{"when without values", `{rules: [{when: [{key: source.ip}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].when[0]: needs values or notValues`},
		{"empty source", `{rules: [{from: [{source: {}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].from[0].source: must set at least one field`},
		{"missing operation", `{rules: [{to: [{}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].to[0].operation: must be set`},
		{"wildcard inside", `{rules: [{from: [{source: {principals: ["a*b"]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].from[0].source.principals[0]: "a*b": only one leading or trailing '*' is supported`},
		{"path template", `{rules: [{to: [{operation: {paths: ["/a/{*}"]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].to[0].operation.paths[0]: "/a/{*}": path templates not supported`},
		{"path without slash", `{rules: [{to: [{operation: {paths: ["pkg.Svc/Method"]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].to[0].operation.paths[0]: "pkg.Svc/Method" must begin with '/' or '*'`},
		{"non-canonical path", `{rules: [{to: [{operation: {notPaths: ["/a//b"]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].to[0].operation.notPaths[0]: "/a//b" is not in canonical form ("/a/b") and would never match`},
		{"path with query", `{rules: [{to: [{operation: {paths: ["/a?x=1"]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].to[0].operation.paths[0]: "/a?x=1" is not in canonical form ("/a") and would never match`},
		{"bad port", `{rules: [{to: [{operation: {ports: ["http"]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].to[0].operation.ports[0]: "http" is not a port number`},
		{"bad ip block", `{rules: [{from: [{source: {ipBlocks: ["10.0.0.0/33"]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].from[0].source.ipBlocks[0]: "10.0.0.0/33" is not an IP address or CIDR block`},
		{"namespace with slash", `{rules: [{from: [{source: {namespaces: ["a/b"]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].from[0].source.namespaces[0]: "a/b" must not contain '/'`},
		{"service account wildcard", `{rules: [{from: [{source: {serviceAccounts: ["ns/*"]}}]}]}`,
			`secpolicy: authorization policy "default/p": rules[0].from[0].source.serviceAccounts[0]: "ns/*" is not <namespace>/<serviceaccount> or <serviceaccount>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []NamedAuthorizationPolicy{{Name: "p", Namespace: "default", Spec: apSpec(t, tt.spec)}}
			got, err := AuthorizationPolicies(in, "cluster.local")
			if err == nil {
				t.Fatalf("AuthorizationPolicies(%s) = %v, nil, want error %q", tt.spec, got, tt.want)
			}
			if !errors.Is(err, ErrInvalidAuthorizationPolicy) {
				t.Errorf("AuthorizationPolicies(%s) = %v, want an error matching ErrInvalidAuthorizationPolicy", tt.spec, err)
			}
			if diff := cmp.Diff(err.Error(), tt.want); diff != "" {
				t.Errorf("AuthorizationPolicies(%s) error mismatch (-got +want):\n%s", tt.spec, diff)
			}
		})
	}
}

func TestAuthorizationPoliciesRejectsMissingSpec(t *testing.T) {
	_, err := AuthorizationPolicies([]NamedAuthorizationPolicy{{Name: "p", Namespace: "ns"}}, "")
	if !errors.Is(err, ErrInvalidAuthorizationPolicy) {
		t.Errorf("AuthorizationPolicies(no spec) = %v, want ErrInvalidAuthorizationPolicy", err)
	}
}

// summary is the shape of translated configs: action -> policy names.
func summary(cfgs []*v3rbacpb.RBAC) []string {
	var out []string
	for _, c := range cfgs {
		out = append(out, c.GetAction().String())
		names := make([]string, 0)
		for n := range c.GetPolicies() {
			names = append(names, n)
		}
		slices.Sort(names)
		b, _ := json.Marshal(names)
		out = append(out, string(b))
	}
	return out
}

func TestAuthorizationPoliciesShape(t *testing.T) {
	tests := []struct {
		name     string
		policies map[string]string // name -> spec, all in namespace "ns"
		want     []string
	}{
		{"nothing", nil, nil},
		{"empty ALLOW still yields an ALLOW config", map[string]string{"allow-nothing": `{}`},
			[]string{"ALLOW", `[]`}},
		{"rule-less DENY and AUDIT yield nothing", map[string]string{"d": `{action: DENY}`, "a": `{action: AUDIT}`}, nil},
		{"one policy per rule, ordered DENY ALLOW LOG", map[string]string{
			"d":  `{action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}, {from: [{source: {namespaces: [evil]}}]}]}`,
			"al": `{rules: [{}]}`,
			"au": `{action: AUDIT, rules: [{to: [{operation: {methods: [DELETE]}}]}]}`,
		}, []string{"DENY", `["ns/d[0]","ns/d[1]"]`, "ALLOW", `["ns/al[0]"]`, "LOG", `["ns/au[0]"]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in []NamedAuthorizationPolicy
			for name, spec := range tt.policies {
				in = append(in, NamedAuthorizationPolicy{Name: name, Namespace: "ns", Spec: apSpec(t, spec)})
			}
			got, err := AuthorizationPolicies(in, "cluster.local")
			if err != nil {
				t.Fatalf("AuthorizationPolicies() = %v", err)
			}
			if diff := cmp.Diff(summary(got), tt.want); diff != "" {
				t.Errorf("AuthorizationPolicies() shape mismatch (-got +want):\n%s", diff)
			}
		})
	}
}

func authenticated(sm *v3matcherpb.StringMatcher) *v3rbacpb.Principal {
	return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Authenticated_{Authenticated: &v3rbacpb.Principal_Authenticated{PrincipalName: sm}}}
}

func exact(s string) *v3matcherpb.StringMatcher {
	return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: s}}
}

func regex(s string) *v3matcherpb.StringMatcher {
	return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: s}}}
}

// TestAuthorizationPoliciesIdentityMatchers pins the identity matchers: dots
// are literal (never an unquoted regex), "cluster.local" is the local trust
// domain, namespaces are quoted into an anchored pattern.
func TestAuthorizationPoliciesIdentityMatchers(t *testing.T) {
	anyPerm := []*v3rbacpb.Permission{{Rule: &v3rbacpb.Permission_Any{Any: true}}}
	tests := []struct {
		name        string
		trustDomain string
		source      string
		want        *v3rbacpb.Principal
	}{
		{"principal", "", `{principals: [cluster.local/ns/a/sa/b]}`, authenticated(exact("spiffe://cluster.local/ns/a/sa/b"))},
		{"principal alias", "example.org", `{principals: [cluster.local/ns/a/sa/b]}`, authenticated(exact("spiffe://example.org/ns/a/sa/b"))},
		{"foreign principal kept", "example.org", `{principals: [other.org/ns/a/sa/b]}`, authenticated(exact("spiffe://other.org/ns/a/sa/b"))},
		{"any principal", "", `{principals: ["*"]}`, authenticated(nil)},
		{"principal prefix", "", `{principals: ["cluster.local/ns/a/*"]}`,
			authenticated(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: "spiffe://cluster.local/ns/a/"}})},
		{"principal suffix", "", `{principals: ["*/sa/b"]}`,
			authenticated(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Suffix{Suffix: "/sa/b"}})},
		{"namespace", "cluster.local", `{namespaces: [foo.bar]}`, authenticated(regex(`spiffe://cluster\.local/ns/foo\.bar/sa/[^/]+`))},
		{"namespace any trust domain", "", `{namespaces: [foo]}`, authenticated(regex(`spiffe://[^/]+/ns/foo/sa/[^/]+`))},
		{"service account", "cluster.local", `{serviceAccounts: [sa1]}`, authenticated(regex(`spiffe://cluster\.local/ns/ns/sa/sa1`))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []NamedAuthorizationPolicy{{Name: "p", Namespace: "ns", Spec: apSpec(t, `{rules: [{from: [{source: `+tt.source+`}]}]}`)}}
			got, err := AuthorizationPolicies(in, tt.trustDomain)
			if err != nil {
				t.Fatalf("AuthorizationPolicies() = %v", err)
			}
			want := []*v3rbacpb.RBAC{{Action: v3rbacpb.RBAC_ALLOW, Policies: map[string]*v3rbacpb.Policy{
				"ns/p[0]": {Permissions: anyPerm, Principals: []*v3rbacpb.Principal{tt.want}},
			}}}
			if diff := cmp.Diff(got, want, protocmp.Transform()); diff != "" {
				t.Errorf("AuthorizationPolicies(%s) mismatch (-got +want):\n%s", tt.source, diff)
			}
		})
	}
}

func TestSelects(t *testing.T) {
	sel := func(labels map[string]string) *securityv1beta1.AuthorizationPolicy {
		s := apSpec(t, `{}`)
		if labels != nil {
			s = apSpec(t, `{selector: {matchLabels: {}}}`)
			s.Selector.MatchLabels = labels
		}
		return s
	}
	labels := map[string]string{"app": "reviews", "version": "v2"}
	tests := []struct {
		name string
		p    NamedAuthorizationPolicy
		want bool
	}{
		{"same namespace, no selector", NamedAuthorizationPolicy{Namespace: "default", Spec: sel(nil)}, true},
		{"other namespace", NamedAuthorizationPolicy{Namespace: "other", Spec: sel(nil)}, false},
		{"root namespace is mesh-wide", NamedAuthorizationPolicy{Namespace: "istio-system", Spec: sel(nil)}, true},
		{"root namespace with selector", NamedAuthorizationPolicy{Namespace: "istio-system", Spec: sel(map[string]string{"app": "reviews"})}, true},
		{"subset match", NamedAuthorizationPolicy{Namespace: "default", Spec: sel(map[string]string{"app": "reviews"})}, true},
		{"value differs", NamedAuthorizationPolicy{Namespace: "default", Spec: sel(map[string]string{"app": "ratings"})}, false},
		{"label missing", NamedAuthorizationPolicy{Namespace: "default", Spec: sel(map[string]string{"tier": "web"})}, false},
	}
	for _, tt := range tests {
		if got := Selects(tt.p, "istio-system", "default", labels); got != tt.want {
			t.Errorf("Selects(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
	if got := Selects(NamedAuthorizationPolicy{Namespace: "", Spec: sel(nil)}, "", "default", labels); got {
		t.Errorf("Selects(empty root namespace) = %v, want false", got)
	}
}

// TestAuthorizationFiltersDryRun: dry-run policies go into the shadow rules
// of their action's filter, never into its rules; an action with dry-run
// policies only has no rules (it enforces nothing: a dry-run ALLOW must not
// deny what it does not match), as Istio builds them.
func TestAuthorizationFiltersDryRun(t *testing.T) {
	type filter struct {
		Rules, Shadow []string // action and policy names, as summary gives them
		Prefix        string
	}
	tests := []struct {
		name     string
		policies []NamedAuthorizationPolicy // specs filled in below
		want     []filter
	}{
		{"nothing", nil, nil},
		{"enforced only", []NamedAuthorizationPolicy{{Name: "d"}, {Name: "al"}}, []filter{
			{Rules: []string{"DENY", `["ns/d[0]"]`}},
			{Rules: []string{"ALLOW", `["ns/al[0]"]`}},
		}},
		{"dry-run DENY beside an enforced one", []NamedAuthorizationPolicy{{Name: "d"}, {Name: "d2", DryRun: true}}, []filter{
			{Rules: []string{"DENY", `["ns/d[0]"]`}, Shadow: []string{"DENY", `["ns/d2[0]"]`}, Prefix: DryRunDenyStatPrefix},
		}},
		{"dry-run ALLOW only enforces nothing", []NamedAuthorizationPolicy{{Name: "al", DryRun: true}}, []filter{
			{Shadow: []string{"ALLOW", `["ns/al[0]"]`}, Prefix: DryRunAllowStatPrefix},
		}},
		{"dry-run ALLOW without rules: a shadow that allows nothing", []NamedAuthorizationPolicy{{Name: "empty", DryRun: true}}, []filter{
			{Shadow: []string{"ALLOW", `[]`}, Prefix: DryRunAllowStatPrefix},
		}},
		{"dry-run AUDIT", []NamedAuthorizationPolicy{{Name: "au", DryRun: true}, {Name: "al"}}, []filter{
			{Rules: []string{"ALLOW", `["ns/al[0]"]`}},
			{Shadow: []string{"LOG", `["ns/au[0]"]`}},
		}},
	}
	specs := map[string]string{
		"d":     `{action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}`,
		"d2":    `{action: DENY, rules: [{to: [{operation: {paths: [/debug]}}]}]}`,
		"al":    `{rules: [{to: [{operation: {paths: [/public]}}]}]}`,
		"empty": `{}`,
		"au":    `{action: AUDIT, rules: [{}]}`,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in []NamedAuthorizationPolicy
			for _, p := range tt.policies {
				p.Namespace, p.Spec = "ns", apSpec(t, specs[p.Name])
				in = append(in, p)
			}
			got, err := AuthorizationFilters(in, "cluster.local")
			if err != nil {
				t.Fatalf("AuthorizationFilters() = %v", err)
			}
			var shapes []filter
			for _, f := range got {
				var s filter
				if f.GetRules() != nil {
					s.Rules = summary([]*v3rbacpb.RBAC{f.GetRules()})
				}
				if f.GetShadowRules() != nil {
					s.Shadow = summary([]*v3rbacpb.RBAC{f.GetShadowRules()})
				}
				s.Prefix = f.GetShadowRulesStatPrefix()
				shapes = append(shapes, s)
			}
			if diff := cmp.Diff(shapes, tt.want); diff != "" {
				t.Errorf("AuthorizationFilters() shape mismatch (-got +want):\n%s", diff)
			}
			// AuthorizationPolicies gives the enforced rules only.
			enforced, err := AuthorizationPolicies(in, "cluster.local")
			if err != nil {
				t.Fatalf("AuthorizationPolicies() = %v", err)
			}
			var want []*v3rbacpb.RBAC
			for _, f := range got {
				if f.GetRules() != nil {
					want = append(want, f.GetRules())
				}
			}
			if diff := cmp.Diff(enforced, want, protocmp.Transform()); diff != "" {
				t.Errorf("AuthorizationPolicies() mismatch with the filters' rules (-got +want):\n%s", diff)
			}
		})
	}
}

func TestAuthorizationFiltersRejectsInvalidDryRunPolicy(t *testing.T) {
	in := []NamedAuthorizationPolicy{{Name: "p", Namespace: "default", DryRun: true, Spec: apSpec(t, `{rules: [{to: [{operation: {hosts: [x]}}]}]}`)}}
	for name, f := range map[string]func([]NamedAuthorizationPolicy, string) (any, error){
		"AuthorizationFilters":  func(p []NamedAuthorizationPolicy, td string) (any, error) { return AuthorizationFilters(p, td) },
		"AuthorizationPolicies": func(p []NamedAuthorizationPolicy, td string) (any, error) { return AuthorizationPolicies(p, td) },
	} {
		if _, err := f(in, ""); !errors.Is(err, ErrInvalidAuthorizationPolicy) {
			t.Errorf("%s(invalid dry-run policy) = %v, want ErrInvalidAuthorizationPolicy", name, err)
		}
	}
}
