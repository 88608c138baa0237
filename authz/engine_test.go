package authz

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var (
	anyPerm = &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_Any{Any: true}}
	anyID   = &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Any{Any: true}}
)

func permPolicy(p *v3rbacpb.Permission) *v3rbacpb.Policy {
	return &v3rbacpb.Policy{Permissions: []*v3rbacpb.Permission{p}, Principals: []*v3rbacpb.Principal{anyID}}
}

func idPolicy(id *v3rbacpb.Principal) *v3rbacpb.Policy {
	return &v3rbacpb.Policy{Permissions: []*v3rbacpb.Permission{anyPerm}, Principals: []*v3rbacpb.Principal{id}}
}

func rbac(action v3rbacpb.RBAC_Action, name string, p *v3rbacpb.Policy) *v3rbacpb.RBAC {
	return &v3rbacpb.RBAC{Action: action, Policies: map[string]*v3rbacpb.Policy{name: p}}
}

func sm(s *v3matcherpb.StringMatcher) *v3rbacpb.Principal {
	return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Authenticated_{Authenticated: &v3rbacpb.Principal_Authenticated{PrincipalName: s}}}
}

func re(r string) *v3matcherpb.StringMatcher {
	return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: r}}}
}

func TestNewRejectsInvalidRBAC(t *testing.T) {
	meta := func(filter string, keys ...string) *v3rbacpb.Principal {
		var path []*v3matcherpb.MetadataMatcher_PathSegment
		for _, k := range keys {
			path = append(path, &v3matcherpb.MetadataMatcher_PathSegment{Segment: &v3matcherpb.MetadataMatcher_PathSegment_Key{Key: k}})
		}
		return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Metadata{Metadata: &v3matcherpb.MetadataMatcher{
			Filter: filter, Path: path,
			Value: &v3matcherpb.ValueMatcher{MatchPattern: &v3matcherpb.ValueMatcher_PresentMatch{PresentMatch: true}},
		}}}
	}
	tests := []struct {
		name    string
		cfg     *v3rbacpb.RBAC
		wantErr error
		wantMsg string // a substring naming the field
	}{
		{"unknown permission kind", rbac(v3rbacpb.RBAC_DENY, "p", permPolicy(&v3rbacpb.Permission{Rule: &v3rbacpb.Permission_RequestedServerName{
			RequestedServerName: &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: "a"}}}})),
			ErrUnsupported, `policy "p": permissions[0].requested_server_name`},
		{"permission metadata", rbac(v3rbacpb.RBAC_DENY, "p", permPolicy(&v3rbacpb.Permission{Rule: &v3rbacpb.Permission_Metadata{Metadata: &v3matcherpb.MetadataMatcher{}}})),
			ErrUnsupported, `permissions[0].metadata`},
		{"destination ip", rbac(v3rbacpb.RBAC_ALLOW, "p", permPolicy(&v3rbacpb.Permission{Rule: &v3rbacpb.Permission_DestinationIp{DestinationIp: &v3corepb.CidrRange{AddressPrefix: "10.0.0.1"}}})),
			ErrUnsupported, `permissions[0].destination_ip`},
		{"nested unknown kind", rbac(v3rbacpb.RBAC_DENY, "p", permPolicy(&v3rbacpb.Permission{Rule: &v3rbacpb.Permission_NotRule{NotRule: &v3rbacpb.Permission{
			Rule: &v3rbacpb.Permission_UriTemplate{UriTemplate: &v3corepb.TypedExtensionConfig{Name: "x"}}}}})),
			ErrUnsupported, `permissions[0].not_rule.uri_template`},
		{"empty permission", rbac(v3rbacpb.RBAC_DENY, "p", permPolicy(&v3rbacpb.Permission{})), ErrInvalidPolicy, `permissions[0]: no rule set`},
		{"unknown principal kind", rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(&v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_FilterState{FilterState: &v3matcherpb.FilterStateMatcher{}}})),
			ErrUnsupported, `principals[0].filter_state`},
		{"upper-case header name", rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(&v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Header{Header: &v3routepb.HeaderMatcher{
			Name: "X-User", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true}}}})),
			ErrInvalidPolicy, `principals[0].header.name`},
		{"bad regex", rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(sm(re("a(")))), ErrInvalidPolicy, `principals[0].authenticated.principal_name.safe_regex.regex`},
		{"oversize regex", rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(sm(re(strings.Repeat("a", MaxRegexLen+1))))), ErrInvalidPolicy, `exceeds the limit`},
		{"regex with ignore_case", rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(sm(&v3matcherpb.StringMatcher{IgnoreCase: true,
			MatchPattern: &v3matcherpb.StringMatcher_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: "a"}}}))), ErrUnsupported, `ignore_case with safe_regex`},
		{"custom string matcher", rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(sm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Custom{}}))),
			ErrUnsupported, `principal_name.custom`},
		{"empty string matcher", rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(sm(&v3matcherpb.StringMatcher{}))), ErrInvalidPolicy, `no match pattern`},
		{"metadata of another filter", rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(meta("envoy.filters.http.jwt_authn", "request.auth.principal"))),
			ErrUnsupported, `principals[0].metadata.filter`},
		{"unknown metadata key", rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(meta("istio_authn", "source.user"))), ErrUnsupported, `metadata.path[0] "source.user"`},
		{"claims without name", rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(meta("istio_authn", "request.auth.claims"))), ErrInvalidPolicy, `needs a claim name`},
		{"bad cidr", rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(&v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_RemoteIp{RemoteIp: &v3corepb.CidrRange{
			AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(33)}}})), ErrInvalidPolicy, `remote_ip.prefix_len`},
		{"CEL condition", rbac(v3rbacpb.RBAC_DENY, "p", &v3rbacpb.Policy{Permissions: []*v3rbacpb.Permission{anyPerm},
			Principals: []*v3rbacpb.Principal{anyID}, CelConfig: &v3corepb.CelExpressionConfig{}}), ErrUnsupported, `condition`},
		{"no principals", rbac(v3rbacpb.RBAC_DENY, "p", &v3rbacpb.Policy{Permissions: []*v3rbacpb.Permission{anyPerm}}), ErrInvalidPolicy, `principals: empty`},
		{"empty and_rules", rbac(v3rbacpb.RBAC_DENY, "p", permPolicy(&v3rbacpb.Permission{Rule: &v3rbacpb.Permission_AndRules{AndRules: &v3rbacpb.Permission_Set{}}})),
			ErrInvalidPolicy, `and_rules.rules: empty set`},
		{"audit logging options", &v3rbacpb.RBAC{AuditLoggingOptions: &v3rbacpb.RBAC_AuditLoggingOptions{}}, ErrUnsupported, `audit_logging_options`},
		{"unknown action", &v3rbacpb.RBAC{Action: 7}, ErrUnsupported, `action`},
		{"nil config", nil, ErrInvalidPolicy, `nil config`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := New([]*v3rbacpb.RBAC{tt.cfg})
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("New(%v) = %v, %v, want error %v containing %q", tt.cfg, e, err, tt.wantErr, tt.wantMsg)
			}
		})
	}
}

func TestMatchers(t *testing.T) {
	str := func(m *v3matcherpb.StringMatcher) *v3rbacpb.Principal { return sm(m) }
	hdr := func(h *v3routepb.HeaderMatcher) *v3rbacpb.Principal {
		return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Header{Header: h}}
	}
	claim := func(v *v3matcherpb.ValueMatcher, keys ...string) *v3rbacpb.Principal {
		var path []*v3matcherpb.MetadataMatcher_PathSegment
		for _, k := range keys {
			path = append(path, &v3matcherpb.MetadataMatcher_PathSegment{Segment: &v3matcherpb.MetadataMatcher_PathSegment_Key{Key: k}})
		}
		return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Metadata{Metadata: &v3matcherpb.MetadataMatcher{Filter: "istio_authn", Path: path, Value: v}}}
	}
	strVal := func(s string) *v3matcherpb.ValueMatcher {
		return &v3matcherpb.ValueMatcher{MatchPattern: &v3matcherpb.ValueMatcher_StringMatch{StringMatch: &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: s}}}}
	}
	principal := func(p string) Request { return Request{Path: "/", Principal: p} }
	tests := []struct {
		name string
		id   *v3rbacpb.Principal
		req  Request
		want bool
	}{
		{"exact ignore_case", str(&v3matcherpb.StringMatcher{IgnoreCase: true, MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: "spiffe://TD/a"}}), principal("spiffe://td/A"), true},
		{"exact case", str(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: "spiffe://TD/a"}}), principal("spiffe://td/A"), false},
		{"prefix ignore_case", str(&v3matcherpb.StringMatcher{IgnoreCase: true, MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: "SPIFFE://"}}), principal("spiffe://x"), true},
		{"suffix", str(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Suffix{Suffix: "/sa/b"}}), principal("spiffe://x/sa/b"), true},
		{"contains ignore_case", str(&v3matcherpb.StringMatcher{IgnoreCase: true, MatchPattern: &v3matcherpb.StringMatcher_Contains{Contains: "/NS/"}}), principal("spiffe://x/ns/y"), true},
		{"regex is anchored", str(re("spiffe://td")), principal("spiffe://td/ns/a"), false},
		{"regex alternation is anchored", str(re("a|spiffe://td")), principal("spiffe://td/ns/a"), false},
		{"authenticated needs a principal", str(re(".*")), principal(""), false},
		{"header present false", hdr(&v3routepb.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: false}}), Request{Path: "/"}, true},
		{"header invert", hdr(&v3routepb.HeaderMatcher{Name: "x", InvertMatch: true, HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: "a"}}),
			Request{Path: "/", Headers: map[string][]string{"x": {"b"}}}, true},
		{"header missing as empty", hdr(&v3routepb.HeaderMatcher{Name: "x", TreatMissingHeaderAsEmpty: true, HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: ""}}),
			Request{Path: "/"}, true},
		{":authority is Host", hdr(&v3routepb.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_SuffixMatch{SuffixMatch: ".ns"}}),
			Request{Path: "/", Host: "svc.ns"}, true},
		{":path is canonical", hdr(&v3routepb.HeaderMatcher{Name: ":path", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: "/a"}}),
			Request{Path: "//x/../a?q"}, true},
		{"claim string vs list_match", claim(&v3matcherpb.ValueMatcher{MatchPattern: &v3matcherpb.ValueMatcher_ListMatch{ListMatch: &v3matcherpb.ListMatcher{
			MatchPattern: &v3matcherpb.ListMatcher_OneOf{OneOf: strVal("a")}}}}, "request.auth.claims", "g"), Request{Path: "/", Claims: map[string]any{"g": "a"}}, true},
		{"claim []string", claim(&v3matcherpb.ValueMatcher{MatchPattern: &v3matcherpb.ValueMatcher_ListMatch{ListMatch: &v3matcherpb.ListMatcher{
			MatchPattern: &v3matcherpb.ListMatcher_OneOf{OneOf: strVal("a")}}}}, "request.auth.claims", "g"), Request{Path: "/", Claims: map[string]any{"g": []string{"b", "a"}}}, true},
		{"string_match on a list never matches", claim(strVal("a"), "request.auth.claims", "g"), Request{Path: "/", Claims: map[string]any{"g": []any{"a"}}}, false},
		{"claim through a non-object", claim(strVal("a"), "request.auth.claims", "g", "h"), Request{Path: "/", Claims: map[string]any{"g": "a"}}, false},
		{"metadata invert", &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Metadata{Metadata: &v3matcherpb.MetadataMatcher{Filter: "istio_authn", Invert: true,
			Path:  []*v3matcherpb.MetadataMatcher_PathSegment{{Segment: &v3matcherpb.MetadataMatcher_PathSegment_Key{Key: "request.auth.principal"}}},
			Value: &v3matcherpb.ValueMatcher{MatchPattern: &v3matcherpb.ValueMatcher_PresentMatch{PresentMatch: true}}}}}, Request{Path: "/"}, true},
		{"source_ip v6 vs v4 block", &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_SourceIp{SourceIp: &v3corepb.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)}}},
			Request{Path: "/", SourceIP: netip.MustParseAddr("2001:db8::a00:1")}, false},
		{"not_id", &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_NotId{NotId: anyID}}, Request{Path: "/"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := New([]*v3rbacpb.RBAC{rbac(v3rbacpb.RBAC_ALLOW, "p", idPolicy(tt.id))})
			if err != nil {
				t.Fatalf("New() = %v", err)
			}
			if got := e.Authorize(&tt.req).Allowed; got != tt.want {
				t.Errorf("Authorize(%+v).Allowed = %v, want %v", tt.req, got, tt.want)
			}
		})
	}
}

// TestHeaderMatcherSkipsNUL checks the matcher itself, beneath the request
// validation of Authorize: a value holding NUL never matches, nor does the
// joined value of a repeated header one of whose values holds NUL.
func TestHeaderMatcherSkipsNUL(t *testing.T) {
	c := &compiler{path: "test"}
	m, err := c.header("h", &v3routepb.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PrefixMatch{PrefixMatch: "ok"}})
	if err != nil {
		t.Fatalf("header() = %v", err)
	}
	for _, tt := range []struct {
		vals []string
		want bool
	}{
		{[]string{"ok1"}, true},
		{[]string{"ok\x00"}, false},
		{[]string{"ok\x00", "ok2"}, false},
		{[]string{"ok1", "ok2"}, true},
	} {
		in := &input{r: &Request{Headers: map[string][]string{"x": tt.vals}}, path: "/"}
		if got := m(in); got != tt.want {
			t.Errorf("header matcher(%q) = %v, want %v", tt.vals, got, tt.want)
		}
	}
}

func TestAuthorizeInvalidRequests(t *testing.T) {
	e, err := New(nil)
	if err != nil {
		t.Fatalf("New(nil) = %v", err)
	}
	var nilEngine *Engine
	tests := []struct {
		name string
		e    *Engine
		req  *Request
		want Decision
	}{
		{"nil request", e, nil, Decision{Reason: "nil request"}},
		{"zero request", e, &Request{}, Decision{Reason: `urlpath: invalid request path: "" does not begin with '/'`}},
		{"NUL header", e, &Request{Path: "/", Headers: map[string][]string{"a": {"\x00"}}}, Decision{Reason: `invalid value of header "a"`}},
		{"no policies", e, &Request{Path: "/"}, Decision{Allowed: true, Reason: "no ALLOW policy"}},
		{"nil engine", nilEngine, &Request{Path: "/"}, Decision{Allowed: true, Reason: "no policies"}},
		{"nil engine, bad path", nilEngine, &Request{Path: "/%2F"}, Decision{Reason: "urlpath: invalid request path: encoded slash or backslash at offset 1"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.e.Authorize(tt.req), tt.want); diff != "" {
			t.Errorf("%s: Authorize() mismatch (-got +want):\n%s", tt.name, diff)
		}
	}
}
