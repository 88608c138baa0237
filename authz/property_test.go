package authz

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellismesh/trellis/internal/urlpath"
)

// gen draws random policies over a small universe of requests, so that
// random policies match a fair share of them.
type gen struct {
	r *rand.Rand
	n int // policy counter for unique names
}

func (g *gen) pick(s []string) string { return s[g.r.IntN(len(s))] }

var (
	uPrincipals = []string{"", "spiffe://td/ns/a/sa/x", "spiffe://td/ns/b/sa/y", "spiffe://td/ns/a/sa/y"}
	uPaths      = []string{"/a", "/b", "/a/x", "/admin"}
	uMethods    = []string{"GET", "POST"}
	uHeaders    = [][]string{nil, {"1"}, {"2"}, {"1", "2"}}
	uIPs        = []string{"10.0.0.1", "10.0.1.1", "192.168.1.1"}
	uPorts      = []int{80, 443}
)

func (g *gen) permission(depth int) *v3rbacpb.Permission {
	k := g.r.IntN(7)
	if depth == 0 {
		k = g.r.IntN(4)
	}
	exact := func(s string) *v3matcherpb.StringMatcher {
		return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: s}}
	}
	switch k {
	case 0:
		return anyPerm
	case 1:
		return &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_Header{Header: &v3routepb.HeaderMatcher{
			Name: ":method", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_StringMatch{StringMatch: exact(g.pick(uMethods))}}}}
	case 2:
		m := exact(g.pick(uPaths))
		if g.r.IntN(2) == 0 {
			m = &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: g.pick(uPaths)}}
		}
		return &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_UrlPath{UrlPath: &v3matcherpb.PathMatcher{Rule: &v3matcherpb.PathMatcher_Path{Path: m}}}}
	case 3:
		return &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_DestinationPort{DestinationPort: uint32(uPorts[g.r.IntN(len(uPorts))])}}
	case 4:
		return &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_AndRules{AndRules: &v3rbacpb.Permission_Set{Rules: []*v3rbacpb.Permission{g.permission(depth - 1), g.permission(depth - 1)}}}}
	case 5:
		return &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_OrRules{OrRules: &v3rbacpb.Permission_Set{Rules: []*v3rbacpb.Permission{g.permission(depth - 1), g.permission(depth - 1)}}}}
	default:
		return &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_NotRule{NotRule: g.permission(depth - 1)}}
	}
}

func (g *gen) principal(depth int) *v3rbacpb.Principal {
	k := g.r.IntN(7)
	if depth == 0 {
		k = g.r.IntN(4)
	}
	switch k {
	case 0:
		return anyID
	case 1:
		return sm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: g.pick([]string{"spiffe://td/ns/a/", "spiffe://td/ns/b/", "spiffe://"})}})
	case 2:
		return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_DirectRemoteIp{DirectRemoteIp: &v3corepb.CidrRange{
			AddressPrefix: g.pick(uIPs), PrefixLen: wrapperspb.UInt32(uint32(g.pick2(16, 24, 32)))}}}
	case 3:
		return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Header{Header: &v3routepb.HeaderMatcher{
			Name: "x", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: g.pick([]string{"1", "2"})}}}}
	case 4:
		return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_AndIds{AndIds: &v3rbacpb.Principal_Set{Ids: []*v3rbacpb.Principal{g.principal(depth - 1), g.principal(depth - 1)}}}}
	case 5:
		return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_OrIds{OrIds: &v3rbacpb.Principal_Set{Ids: []*v3rbacpb.Principal{g.principal(depth - 1), g.principal(depth - 1)}}}}
	default:
		return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_NotId{NotId: g.principal(depth - 1)}}
	}
}

func (g *gen) pick2(v ...int) int { return v[g.r.IntN(len(v))] }

// config returns an RBAC config of action with 1..3 random policies.
func (g *gen) config(action v3rbacpb.RBAC_Action) *v3rbacpb.RBAC {
	cfg := &v3rbacpb.RBAC{Action: action, Policies: map[string]*v3rbacpb.Policy{}}
	for range 1 + g.r.IntN(3) {
		g.n++
		cfg.Policies[fmt.Sprintf("p%d", g.n)] = &v3rbacpb.Policy{
			Permissions: []*v3rbacpb.Permission{g.permission(2)},
			Principals:  []*v3rbacpb.Principal{g.principal(2)},
		}
	}
	return cfg
}

// universe is every request over the small value sets.
func universe() []Request {
	var out []Request
	for _, p := range uPrincipals {
		for _, path := range uPaths {
			for _, m := range uMethods {
				for _, h := range uHeaders {
					for _, ip := range uIPs {
						for _, port := range uPorts {
							r := Request{Principal: p, Path: path, Method: m, SourceIP: netip.MustParseAddr(ip), DestinationPort: port}
							if h != nil {
								r.Headers = map[string][]string{"x": h}
							}
							out = append(out, r)
						}
					}
				}
			}
		}
	}
	return out
}

func allowedSet(t *testing.T, cfgs []*v3rbacpb.RBAC, reqs []Request) []bool {
	t.Helper()
	e, err := New(cfgs)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	out := make([]bool, len(reqs))
	for i := range reqs {
		out[i] = e.Authorize(&reqs[i]).Allowed
	}
	return out
}

// randomSet draws 1..2 DENY configs (maybe none) and 1..2 ALLOW configs.
func (g *gen) randomSet() []*v3rbacpb.RBAC {
	var cfgs []*v3rbacpb.RBAC
	for range g.r.IntN(3) {
		cfgs = append(cfgs, g.config(v3rbacpb.RBAC_DENY))
	}
	for range 1 + g.r.IntN(2) {
		cfgs = append(cfgs, g.config(v3rbacpb.RBAC_ALLOW))
	}
	return cfgs
}

const propertyTrials = 80

func TestPropertyAddingAllowNeverShrinksAllowed(t *testing.T) {
	g := &gen{r: rand.New(rand.NewPCG(1, 2))}
	reqs := universe()
	for trial := range propertyTrials {
		set := g.randomSet()
		before := allowedSet(t, set, reqs)
		after := allowedSet(t, append(set, g.config(v3rbacpb.RBAC_ALLOW)), reqs)
		for i := range reqs {
			if before[i] && !after[i] {
				t.Fatalf("trial %d: Authorize(%+v) = allowed before adding an ALLOW policy, denied after", trial, reqs[i])
			}
		}
	}
}

func TestPropertyAddingDenyNeverGrowsAllowed(t *testing.T) {
	g := &gen{r: rand.New(rand.NewPCG(3, 4))}
	reqs := universe()
	for trial := range propertyTrials {
		set := g.randomSet()
		before := allowedSet(t, set, reqs)
		after := allowedSet(t, append(set, g.config(v3rbacpb.RBAC_DENY)), reqs)
		for i := range reqs {
			if after[i] && !before[i] {
				t.Fatalf("trial %d: Authorize(%+v) = denied before adding a DENY policy, allowed after", trial, reqs[i])
			}
		}
	}
}

func TestPropertyDenyPrecedence(t *testing.T) {
	g := &gen{r: rand.New(rand.NewPCG(5, 6))}
	reqs := universe()
	matchedDeny := 0
	for trial := range propertyTrials {
		deny := g.config(v3rbacpb.RBAC_DENY)
		denyOnly := allowedSet(t, []*v3rbacpb.RBAC{deny}, reqs)
		// Everything allowed, many times over, and audited: still denied.
		full := allowedSet(t, []*v3rbacpb.RBAC{
			g.config(v3rbacpb.RBAC_ALLOW), rbac(v3rbacpb.RBAC_ALLOW, "all", permPolicy(anyPerm)), deny, g.config(v3rbacpb.RBAC_LOG),
		}, reqs)
		for i := range reqs {
			if !denyOnly[i] {
				matchedDeny++
				if full[i] {
					t.Fatalf("trial %d: Authorize(%+v) = allowed although a DENY policy matches", trial, reqs[i])
				}
			}
		}
	}
	if matchedDeny == 0 {
		t.Fatalf("no random DENY policy matched any request; the generator is broken")
	}
}

func TestPropertyLogNeverChangesDecision(t *testing.T) {
	g := &gen{r: rand.New(rand.NewPCG(7, 8))}
	reqs := universe()
	for trial := range propertyTrials {
		set := g.randomSet()
		before := allowedSet(t, set, reqs)
		after := allowedSet(t, append(set, g.config(v3rbacpb.RBAC_LOG)), reqs)
		for i := range reqs {
			if before[i] != after[i] {
				t.Fatalf("trial %d: Authorize(%+v) = %v before adding a LOG policy, %v after", trial, reqs[i], before[i], after[i])
			}
		}
	}
}

// FuzzAuthorize sends random requests against a fixed policy set that denies
// /admin and /admin/*: nothing panics, a path with no canonical form is never
// allowed, a canonical equivalent of /admin is never allowed, and a raw path
// is decided exactly as its canonical form.
func FuzzAuthorize(f *testing.F) {
	e := engineFor(f, allowAll, denyAdmin, `
metadata: {name: deny-evil, namespace: ns}
spec:
  action: DENY
  rules:
  - from: [{source: {namespaces: [evil]}}]
  - when: [{key: "request.headers[x-user]", values: ["root*"]}]`, `
metadata: {name: audit, namespace: ns}
spec: {action: AUDIT, rules: [{to: [{operation: {methods: [DELETE]}}]}]}`)
	for _, s := range []struct{ path, method, principal, header string }{
		{"/admin", "GET", "", ""},
		{"//admin", "POST", "spiffe://cluster.local/ns/a/sa/b", "bob"},
		{"/x/../admin", "DELETE", "", "root"},
		{"/%61dmin?x", "GET", "spiffe://cluster.local/ns/evil/sa/b", "x\x00"},
		{"\\admin", "GET", "", ""},
		{"%2Fadmin", "GET", "", ""},
		{"/ok", "GET", "", ""},
	} {
		f.Add(s.path, s.method, s.principal, s.header)
	}
	f.Fuzz(func(t *testing.T, path, method, principal, header string) {
		r := Request{Path: path, Method: method, Principal: principal, Headers: map[string][]string{"x-user": {header}}}
		got := e.Authorize(&r)
		canon, err := urlpath.Canonical(path)
		if err != nil {
			if got.Allowed {
				t.Fatalf("Authorize(path %q) = %+v, want denied (no canonical form: %v)", path, got, err)
			}
			return
		}
		if (canon == "/admin" || strings.HasPrefix(canon, "/admin/")) && got.Allowed {
			t.Fatalf("Authorize(path %q, canonical %q) = %+v, want denied", path, canon, got)
		}
		r.Path = canon
		if again := e.Authorize(&r); again.Allowed != got.Allowed || again.Policy != got.Policy {
			t.Fatalf("Authorize(path %q) = %+v, but Authorize(canonical %q) = %+v", path, got, canon, again)
		}
	})
}
