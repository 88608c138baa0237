package authz

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	securityv1beta1 "istio.io/api/security/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/secpolicy"
)

// parsePolicy parses an AuthorizationPolicy written as YAML with metadata
// and spec.
func parsePolicy(t testing.TB, doc string) secpolicy.NamedAuthorizationPolicy {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatalf("YAMLToJSON(%q) = %v", doc, err)
	}
	var obj struct {
		Metadata struct{ Name, Namespace string }
		Spec     json.RawMessage
	}
	if err := json.Unmarshal(j, &obj); err != nil {
		t.Fatalf("json.Unmarshal(%s) = %v", j, err)
	}
	spec := &securityv1beta1.AuthorizationPolicy{}
	if len(obj.Spec) > 0 && string(obj.Spec) != "null" {
		if err := protojson.Unmarshal(obj.Spec, spec); err != nil {
			t.Fatalf("protojson.Unmarshal(%s) = %v", obj.Spec, err)
		}
	}
	return secpolicy.NamedAuthorizationPolicy{Name: obj.Metadata.Name, Namespace: obj.Metadata.Namespace, Spec: spec}
}

// engineFor translates Istio policies (YAML documents) and builds an engine.
func engineFor(t testing.TB, docs ...string) *Engine {
	t.Helper()
	var ps []secpolicy.NamedAuthorizationPolicy
	for _, d := range docs {
		ps = append(ps, parsePolicy(t, d))
	}
	rbacs, err := secpolicy.AuthorizationPolicies(ps, "cluster.local")
	if err != nil {
		t.Fatalf("AuthorizationPolicies() = %v", err)
	}
	e, err := New(rbacs)
	if err != nil {
		t.Fatalf("New(%v) = %v", rbacs, err)
	}
	return e
}

const (
	allowAll = `
metadata: {name: allow-all, namespace: ns}
spec: {rules: [{}]}`
	denyAdmin = `
metadata: {name: deny-admin, namespace: ns}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin, /admin/*]}}]}]`
)

// base returns a well-formed request from an authenticated peer.
func base() Request {
	return Request{
		Principal:       "spiffe://cluster.local/ns/front/sa/web",
		SourceIP:        netip.MustParseAddr("10.1.2.3"),
		DestinationPort: 8080,
		Method:          "GET",
		Path:            "/api/items",
		Host:            "svc.ns",
	}
}

func with(f func(*Request)) Request {
	r := base()
	f(&r)
	return r
}

type check struct {
	name    string
	req     Request
	allowed bool
	policy  string
}

type scenario struct {
	name     string
	policies []string
	checks   []check
}

func runScenarios(t *testing.T, scenarios []scenario) {
	t.Helper()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			e := engineFor(t, sc.policies...)
			for _, c := range sc.checks {
				got := e.Authorize(&c.req)
				if got.Allowed != c.allowed || got.Policy != c.policy {
					t.Errorf("%s: Authorize(%+v) = %+v, want Allowed %v Policy %q", c.name, c.req, got, c.allowed, c.policy)
				}
			}
		})
	}
}

func TestAuthorizeIstioSemantics(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "no ALLOW policy allows", policies: nil, checks: []check{
			{"any request", base(), true, ""},
		}},
		{name: "ALLOW exists but no match denies", policies: []string{`
metadata: {name: only-get, namespace: ns}
spec: {rules: [{to: [{operation: {methods: [GET]}}]}]}`}, checks: []check{
			{"GET", base(), true, "ns/only-get[0]"},
			{"POST", with(func(r *Request) { r.Method = "POST" }), false, ""},
		}},
		{name: "empty ALLOW spec allows nothing", policies: []string{`
metadata: {name: allow-nothing, namespace: ns}
spec: {}`}, checks: []check{
			{"any request", base(), false, ""},
		}},
		{name: "empty ALLOW spec beside another ALLOW", policies: []string{`
metadata: {name: allow-nothing, namespace: ns}
spec: {}`, `
metadata: {name: only-get, namespace: ns}
spec: {rules: [{to: [{operation: {methods: [GET]}}]}]}`}, checks: []check{
			{"GET", base(), true, "ns/only-get[0]"},
			{"POST", with(func(r *Request) { r.Method = "POST" }), false, ""},
		}},
		{name: "rules [{}] allows all", policies: []string{allowAll}, checks: []check{
			{"authenticated", base(), true, "ns/allow-all[0]"},
			{"anonymous", with(func(r *Request) { r.Principal = ""; r.SourceIP = netip.Addr{} }), true, "ns/allow-all[0]"},
		}},
		{name: "empty DENY spec matches nothing", policies: []string{`
metadata: {name: deny-nothing, namespace: ns}
spec: {action: DENY}`}, checks: []check{
			{"any request", base(), true, ""},
		}},
		{name: "DENY wins over ALLOW", policies: []string{allowAll, denyAdmin}, checks: []check{
			{"admin", with(func(r *Request) { r.Path = "/admin" }), false, "ns/deny-admin[0]"},
			{"other", base(), true, "ns/allow-all[0]"},
		}},
		{name: "AUDIT never changes the decision", policies: []string{`
metadata: {name: audit-all, namespace: ns}
spec: {action: AUDIT, rules: [{}]}`}, checks: []check{
			{"allowed stays allowed", base(), true, ""},
		}},
		{name: "AUDIT beside a default deny", policies: []string{`
metadata: {name: audit-all, namespace: ns}
spec: {action: AUDIT, rules: [{}]}`, `
metadata: {name: allow-nothing, namespace: ns}
spec: {}`}, checks: []check{
			{"denied stays denied", base(), false, ""},
		}},
		{name: "allow by principal", policies: []string{`
metadata: {name: p, namespace: ns}
spec: {rules: [{from: [{source: {principals: [cluster.local/ns/front/sa/web]}}]}]}`}, checks: []check{
			{"that principal", base(), true, "ns/p[0]"},
			{"other sa", with(func(r *Request) { r.Principal = "spiffe://cluster.local/ns/front/sa/other" }), false, ""},
			{"no mTLS", with(func(r *Request) { r.Principal = "" }), false, ""},
		}},
		{name: "principal dots are literal", policies: []string{`
metadata: {name: p, namespace: ns}
spec: {rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/b]}}]}]}`}, checks: []check{
			{"exact", with(func(r *Request) { r.Principal = "spiffe://cluster.local/ns/a/sa/b" }), true, "ns/p[0]"},
			{"dot replaced", with(func(r *Request) { r.Principal = "spiffe://clusterXlocal/ns/a/sa/b" }), false, ""},
			{"extra suffix", with(func(r *Request) { r.Principal = "spiffe://cluster.local/ns/a/sa/bb" }), false, ""},
		}},
		{name: "namespace dots are literal", policies: []string{`
metadata: {name: p, namespace: ns}
spec: {rules: [{from: [{source: {namespaces: [team.a]}}]}]}`}, checks: []check{
			{"same namespace", with(func(r *Request) { r.Principal = "spiffe://cluster.local/ns/team.a/sa/x" }), true, "ns/p[0]"},
			{"dot replaced", with(func(r *Request) { r.Principal = "spiffe://cluster.local/ns/teamXa/sa/x" }), false, ""},
			{"trust domain with dot replaced", with(func(r *Request) { r.Principal = "spiffe://clusterXlocal/ns/team.a/sa/x" }), false, ""},
			{"namespace as sa", with(func(r *Request) { r.Principal = "spiffe://cluster.local/ns/b/sa/team.a" }), false, ""},
		}},
		{name: "deny by namespace", policies: []string{allowAll, `
metadata: {name: d, namespace: ns}
spec: {action: DENY, rules: [{from: [{source: {notNamespaces: [front]}}]}]}`}, checks: []check{
			{"front", base(), true, "ns/allow-all[0]"},
			{"back", with(func(r *Request) { r.Principal = "spiffe://cluster.local/ns/back/sa/web" }), false, "ns/d[0]"},
			{"no mTLS", with(func(r *Request) { r.Principal = "" }), false, "ns/d[0]"},
		}},
		{name: "allow gRPC method path", policies: []string{`
metadata: {name: p, namespace: ns}
spec: {rules: [{to: [{operation: {methods: [POST], paths: [/pkg.Svc/Get, "/pkg.Admin/*"]}}]}]}`}, checks: []check{
			{"Get", with(func(r *Request) { r.Method = "POST"; r.Path = "/pkg.Svc/Get" }), true, "ns/p[0]"},
			{"admin prefix", with(func(r *Request) { r.Method = "POST"; r.Path = "/pkg.Admin/Reset" }), true, "ns/p[0]"},
			{"Put", with(func(r *Request) { r.Method = "POST"; r.Path = "/pkg.Svc/Put" }), false, ""},
			{"GET method", with(func(r *Request) { r.Path = "/pkg.Svc/Get" }), false, ""},
		}},
		{name: "allow by header", policies: []string{`
metadata: {name: p, namespace: ns}
spec: {rules: [{when: [{key: "request.headers[X-Team]", values: [blue, "green-*"]}]}]}`}, checks: []check{
			{"blue", with(func(r *Request) { r.Headers = map[string][]string{"x-team": {"blue"}} }), true, "ns/p[0]"},
			{"green prefix", with(func(r *Request) { r.Headers = map[string][]string{"x-team": {"green-1"}} }), true, "ns/p[0]"},
			{"red", with(func(r *Request) { r.Headers = map[string][]string{"x-team": {"red"}} }), false, ""},
			{"missing", base(), false, ""},
		}},
		{name: "allow by JWT claim", policies: []string{`
metadata: {name: p, namespace: ns}
spec:
  rules:
  - when:
    - {key: "request.auth.claims[groups]", values: [admins]}
    - {key: "request.auth.claims[org][unit]", values: [sre]}`}, checks: []check{
			{"string and nested", with(func(r *Request) {
				r.Claims = map[string]any{"groups": "admins", "org": map[string]any{"unit": "sre"}}
			}), true, "ns/p[0]"},
			{"list claim", with(func(r *Request) {
				r.Claims = map[string]any{"groups": []any{"dev", "admins"}, "org": map[string]any{"unit": "sre"}}
			}), true, "ns/p[0]"},
			{"wrong group", with(func(r *Request) {
				r.Claims = map[string]any{"groups": []any{"dev"}, "org": map[string]any{"unit": "sre"}}
			}), false, ""},
			{"nested missing", with(func(r *Request) { r.Claims = map[string]any{"groups": "admins"} }), false, ""},
			{"non-string claim", with(func(r *Request) {
				r.Claims = map[string]any{"groups": true, "org": map[string]any{"unit": "sre"}}
			}), false, ""},
			{"no token", base(), false, ""},
		}},
		{name: "allow by request principal", policies: []string{`
metadata: {name: p, namespace: ns}
spec: {rules: [{from: [{source: {requestPrincipals: ["https://issuer.example/alice", "https://other.example/*"]}}]}]}`}, checks: []check{
			{"alice", with(func(r *Request) { r.RequestPrincipal = "https://issuer.example/alice" }), true, "ns/p[0]"},
			{"other issuer", with(func(r *Request) { r.RequestPrincipal = "https://other.example/bob" }), true, "ns/p[0]"},
			{"bob", with(func(r *Request) { r.RequestPrincipal = "https://issuer.example/bob" }), false, ""},
			{"no token", base(), false, ""},
		}},
		{name: "any request principal", policies: []string{`
metadata: {name: p, namespace: ns}
spec: {rules: [{from: [{source: {requestPrincipals: ["*"]}}]}]}`}, checks: []check{
			{"token", with(func(r *Request) { r.RequestPrincipal = "iss/sub" }), true, "ns/p[0]"},
			{"no token", base(), false, ""},
		}},
		{name: "allow by audience and presenter", policies: []string{`
metadata: {name: p, namespace: ns}
spec: {rules: [{when: [{key: request.auth.audiences, values: [api]}, {key: request.auth.presenter, values: [cli]}]}]}`}, checks: []check{
			{"list aud", with(func(r *Request) { r.Claims = map[string]any{"aud": []any{"x", "api"}, "azp": "cli"} }), true, "ns/p[0]"},
			{"wrong azp", with(func(r *Request) { r.Claims = map[string]any{"aud": "api", "azp": "web"} }), false, ""},
		}},
		{name: "allow by ipBlocks", policies: []string{`
metadata: {name: p, namespace: ns}
spec: {rules: [{from: [{source: {ipBlocks: [10.1.0.0/16, 192.168.0.7, "2001:db8::/32"]}}]}]}`}, checks: []check{
			{"in block", base(), true, "ns/p[0]"},
			{"single ip", with(func(r *Request) { r.SourceIP = netip.MustParseAddr("192.168.0.7") }), true, "ns/p[0]"},
			{"v4-mapped v6", with(func(r *Request) { r.SourceIP = netip.MustParseAddr("::ffff:10.1.9.9") }), true, "ns/p[0]"},
			{"v6", with(func(r *Request) { r.SourceIP = netip.MustParseAddr("2001:db8::1") }), true, "ns/p[0]"},
			{"outside", with(func(r *Request) { r.SourceIP = netip.MustParseAddr("10.2.0.1") }), false, ""},
			{"unknown", with(func(r *Request) { r.SourceIP = netip.Addr{} }), false, ""},
		}},
		{name: "when notValues and port", policies: []string{`
metadata: {name: p, namespace: ns}
spec: {rules: [{when: [{key: source.ip, notValues: [10.1.2.3]}, {key: destination.port, values: ["8080"]}]}]}`}, checks: []check{
			{"excluded ip", base(), false, ""},
			{"other ip", with(func(r *Request) { r.SourceIP = netip.MustParseAddr("10.1.2.4") }), true, "ns/p[0]"},
			{"other port", with(func(r *Request) { r.SourceIP = netip.MustParseAddr("10.1.2.4"); r.DestinationPort = 9090 }), false, ""},
		}},
		{name: "from entries ORed, fields ANDed", policies: []string{`
metadata: {name: p, namespace: ns}
spec:
  rules:
  - from:
    - source: {namespaces: [front], ipBlocks: [10.1.0.0/16]}
    - source: {principals: [cluster.local/ns/ops/sa/admin]}`}, checks: []check{
			{"front in block", base(), true, "ns/p[0]"},
			{"front outside block", with(func(r *Request) { r.SourceIP = netip.MustParseAddr("10.9.0.1") }), false, ""},
			{"ops admin anywhere", with(func(r *Request) {
				r.Principal = "spiffe://cluster.local/ns/ops/sa/admin"
				r.SourceIP = netip.MustParseAddr("10.9.0.1")
			}), true, "ns/p[0]"},
		}},
	})
}

func TestAuditReportsMatchedPolicies(t *testing.T) {
	e := engineFor(t, `
metadata: {name: audit-delete, namespace: ns}
spec: {action: AUDIT, rules: [{to: [{operation: {methods: [DELETE]}}]}]}`, denyAdmin)
	tests := []struct {
		req     Request
		allowed bool
		audit   []string
	}{
		{base(), true, nil},
		{with(func(r *Request) { r.Method = "DELETE" }), true, []string{"ns/audit-delete[0]"}},
		{with(func(r *Request) { r.Method = "DELETE"; r.Path = "/admin" }), false, []string{"ns/audit-delete[0]"}},
	}
	for _, tt := range tests {
		got := e.Authorize(&tt.req)
		if got.Allowed != tt.allowed || strings.Join(got.Audit, ",") != strings.Join(tt.audit, ",") {
			t.Errorf("Authorize(%s %s) = %+v, want Allowed %v Audit %v", tt.req.Method, tt.req.Path, got, tt.allowed, tt.audit)
		}
	}
}

func TestPathCanonicalisationBypassCannotReachDeniedAdmin(t *testing.T) {
	e := engineFor(t, allowAll, denyAdmin)
	for _, p := range []string{
		"/admin", "//admin", "/x/../admin", "/./admin", "%2Fadmin", "/%2Fadmin", "/%2fadmin",
		"/%61dmin", "/%61%64%6d%69%6e", "/admin#x", "/admin?x", "/admin?", "\\admin", "/\\admin",
		"/admin/", "/admin/./x", "/%2e%2e/admin", "/admin%00", "/admin/%2e", "admin", "",
	} {
		if got := e.Authorize(&Request{Method: "GET", Path: p}); got.Allowed {
			t.Errorf("Authorize(path %q) = %+v, want denied", p, got)
		}
	}
	if got := e.Authorize(&Request{Method: "GET", Path: "/adminx"}); !got.Allowed {
		t.Errorf("Authorize(path %q) = %+v, want allowed (not under /admin)", "/adminx", got)
	}
}

// TestPathCaseSensitivity documents that paths are case-sensitive, as in
// Istio: a DENY on "/admin" alone does not cover "/ADMIN", so a server whose
// handler is case-insensitive must use a default-deny ALLOW structure, which
// denies "/ADMIN" safely.
func TestPathCaseSensitivity(t *testing.T) {
	denyOnly := engineFor(t, allowAll, denyAdmin)
	if got := denyOnly.Authorize(&Request{Method: "GET", Path: "/ADMIN"}); !got.Allowed {
		t.Errorf("DENY /admin + allow-all: Authorize(/ADMIN) = %+v, want allowed (case-sensitive paths)", got)
	}
	defaultDeny := engineFor(t, denyAdmin, `
metadata: {name: public, namespace: ns}
spec: {rules: [{to: [{operation: {paths: ["/public/*"]}}]}]}`)
	for _, tt := range []struct {
		path    string
		allowed bool
	}{
		{"/ADMIN", false}, {"/Admin", false}, {"/admin", false}, {"/public/x", true}, {"/PUBLIC/x", false},
		{"/public/../admin", false}, {"/public/%2e%2e/ADMIN", false},
	} {
		if got := defaultDeny.Authorize(&Request{Method: "GET", Path: tt.path}); got.Allowed != tt.allowed {
			t.Errorf("default deny: Authorize(%q) = %+v, want Allowed %v", tt.path, got, tt.allowed)
		}
	}
}

func TestGRPCPathWithoutLeadingSlashCannotSlipPastDeny(t *testing.T) {
	e := engineFor(t, allowAll, `
metadata: {name: d, namespace: ns}
spec: {action: DENY, rules: [{to: [{operation: {paths: [/pkg.Svc/Method]}}]}]}`)
	for _, tt := range []struct {
		path    string
		allowed bool
	}{
		{"pkg.Svc/Method", false},
		{"/pkg.Svc/Method", false},
		{"//pkg.Svc/Method", false},
		{"/pkg.Svc//Method", false},
		{"/pkg.Svc/Other", true},
	} {
		if got := e.Authorize(&Request{Method: "POST", Path: tt.path}); got.Allowed != tt.allowed {
			t.Errorf("Authorize(%q) = %+v, want Allowed %v", tt.path, got, tt.allowed)
		}
	}
}

// TestRepeatedHeaderMatchesJoinedValue: a header matcher sees a repeated
// header as its values joined with "," (Envoy since CVE-2020-25017, and
// grpc-go), so that "x-tenant: secret" plus "x-tenant: public" cannot
// satisfy an ALLOW on "public" while the handler reads "secret". The same
// holds for DENY: "bob,admin" is not "admin" (as in Envoy; a policy that
// must catch any occurrence matches with a wildcard or on presence).
func TestRepeatedHeaderMatchesJoinedValue(t *testing.T) {
	allowPublic := engineFor(t, `
metadata: {name: public, namespace: ns}
spec: {action: ALLOW, rules: [{when: [{key: "request.headers[x-tenant]", values: [public]}]}]}`)
	denyAdmin := engineFor(t, allowAll, `
metadata: {name: d, namespace: ns}
spec: {action: DENY, rules: [{when: [{key: "request.headers[x-user]", values: [admin, "admin,*", "*,admin"]}]}]}`)
	denyExact := engineFor(t, allowAll, `
metadata: {name: d, namespace: ns}
spec: {action: DENY, rules: [{when: [{key: "request.headers[x-user]", values: [admin]}]}]}`)
	for _, tt := range []struct {
		name    string
		e       *Engine
		headers map[string][]string
		allowed bool
	}{
		{"allow: public", allowPublic, map[string][]string{"x-tenant": {"public"}}, true},
		{"allow: secret then public", allowPublic, map[string][]string{"x-tenant": {"secret", "public"}}, false},
		{"allow: public then secret", allowPublic, map[string][]string{"x-tenant": {"public", "secret"}}, false},
		{"allow: public twice", allowPublic, map[string][]string{"x-tenant": {"public", "public"}}, false},
		{"allow: one comma-separated value", allowPublic, map[string][]string{"x-tenant": {"secret,public"}}, false},
		{"allow: mixed-case names are one header", allowPublic, map[string][]string{"X-Tenant": {"secret"}, "x-tenant": {"public"}}, false},
		{"allow: empty list is absent", allowPublic, map[string][]string{"x-tenant": {}}, false},
		{"deny wildcards: bob then admin", denyAdmin, map[string][]string{"x-user": {"bob", "admin"}}, false},
		{"deny wildcards: admin then bob", denyAdmin, map[string][]string{"x-user": {"admin", "bob"}}, false},
		{"deny wildcards: bob", denyAdmin, map[string][]string{"x-user": {"bob"}}, true},
		{"deny exact: admin", denyExact, map[string][]string{"x-user": {"admin"}}, false},
		{"deny exact: bob then admin is bob,admin", denyExact, map[string][]string{"x-user": {"bob", "admin"}}, true},
		{"deny exact: absent", denyExact, nil, true},
	} {
		r := with(func(r *Request) { r.Headers = tt.headers })
		if got := tt.e.Authorize(&r); got.Allowed != tt.allowed {
			t.Errorf("%s: Authorize(%q) = %+v, want Allowed %v", tt.name, tt.headers, got, tt.allowed)
		}
	}
}

func TestNULHeaderValueNeverMatchesAllow(t *testing.T) {
	e := engineFor(t, `
metadata: {name: token, namespace: ns}
spec: {rules: [{when: [{key: "request.headers[x-token]", values: ["secret*"]}]}]}`, `
metadata: {name: not-admin, namespace: ns}
spec: {rules: [{when: [{key: "request.headers[x-user]", notValues: [admin]}]}]}`)
	for _, tt := range []struct {
		name    string
		headers map[string][]string
		allowed bool
	}{
		{"clean token", map[string][]string{"x-token": {"secret1"}, "x-user": {"admin"}}, true},
		{"NUL in token", map[string][]string{"x-token": {"secret\x00"}, "x-user": {"admin"}}, false},
		{"NUL in negated header", map[string][]string{"x-user": {"admin\x00"}}, false},
		{"NUL in second value", map[string][]string{"x-user": {"bob", "x\x00"}}, false},
		{"CRLF in value", map[string][]string{"x-token": {"secret\r\nx-user: bob"}}, false},
		{"plain user", map[string][]string{"x-user": {"bob"}}, true},
	} {
		r := with(func(r *Request) { r.Headers = tt.headers })
		if got := e.Authorize(&r); got.Allowed != tt.allowed {
			t.Errorf("%s: Authorize(%q) = %+v, want Allowed %v", tt.name, tt.headers, got, tt.allowed)
		}
	}
}

func TestMixedCaseHeaderNamesCannotDodgeDeny(t *testing.T) {
	e := engineFor(t, allowAll, `
metadata: {name: d, namespace: ns}
spec: {action: DENY, rules: [{when: [{key: "request.headers[X-User]", values: [admin]}]}]}`)
	for _, tt := range []struct {
		headers map[string][]string
		allowed bool
	}{
		{map[string][]string{"x-user": {"admin"}}, false},
		{map[string][]string{"X-User": {"admin"}}, false},
		{map[string][]string{"x-user": {}, "X-USER": {"admin"}}, false},
		{map[string][]string{"X-User": {"bob"}}, true},
	} {
		r := with(func(r *Request) { r.Headers = tt.headers })
		if got := e.Authorize(&r); got.Allowed != tt.allowed {
			t.Errorf("Authorize(%q) = %+v, want Allowed %v", tt.headers, got, tt.allowed)
		}
	}
}
