package xdsroute

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"context"
	"fmt"
	"testing"

	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/authz"
)

// TestHeaderMatchersAgreeWithAuthz: a header matcher decides the same in
// a route (HTTP) as in an authorization policy: a repeated header is its
// values joined with ",", a missing one is absent (or empty with
// treat_missing_header_as_empty), inverted matches invert that. A request
// cannot take a route on one reading of its headers and pass authorization
// on another. Both compile their matchers with package internal/matcher;
// this holds the adapters (how each reads a request's headers) to it.
func TestHeaderMatchersAgreeWithAuthz(t *testing.T) {
	sm := func(p *v3matcherpb.StringMatcher) *v3routepb.HeaderMatcher_StringMatch {
		return &v3routepb.HeaderMatcher_StringMatch{StringMatch: p}
	}
	rangeMatch := func(lo, hi int64) *v3routepb.HeaderMatcher_RangeMatch {
		return &v3routepb.HeaderMatcher_RangeMatch{RangeMatch: &v3typepb.Int64Range{Start: lo, End: hi}}
	}
	exact := sm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: "public"}})
	matchers := []*v3routepb.HeaderMatcher{
		{Name: "x-tenant", HeaderMatchSpecifier: exact},
		{Name: "x-tenant", HeaderMatchSpecifier: exact, InvertMatch: true},
		{Name: "x-tenant", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: "secret,public"}},
		{Name: "x-tenant", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PrefixMatch{PrefixMatch: "public"}},
		{Name: "x-tenant", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_SuffixMatch{SuffixMatch: "public"}},
		{Name: "x-tenant", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ContainsMatch{ContainsMatch: ","}},
		{Name: "x-tenant", HeaderMatchSpecifier: sm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: "PUBLIC"}, IgnoreCase: true})},
		{Name: "x-tenant", HeaderMatchSpecifier: sm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: "[a-z]+"}}})},
		{Name: "x-tenant", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &v3matcherpb.RegexMatcher{Regex: ".*public"}}},
		{Name: "x-tenant", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true}},
		{Name: "x-tenant", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: false}},
		{Name: "x-tenant", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true},
		{Name: "x-tenant", HeaderMatchSpecifier: sm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: ""}}), TreatMissingHeaderAsEmpty: true},
		{Name: "x-tenant", HeaderMatchSpecifier: exact, TreatMissingHeaderAsEmpty: true, InvertMatch: true},
		// Since both compile with internal/matcher: every specifier, range
		// included, with ignore_case, invert_match and
		// treat_missing_header_as_empty.
		{Name: "x-tenant", HeaderMatchSpecifier: rangeMatch(0, 10)},
		{Name: "x-tenant", HeaderMatchSpecifier: rangeMatch(0, 10), InvertMatch: true},
		{Name: "x-tenant", HeaderMatchSpecifier: rangeMatch(-10, 10), TreatMissingHeaderAsEmpty: true, InvertMatch: true},
		{Name: "x-tenant", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: "public"}, InvertMatch: true},
		{Name: "x-tenant", HeaderMatchSpecifier: sm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: "PUB"}, IgnoreCase: true})},
		{Name: "x-tenant", HeaderMatchSpecifier: sm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Suffix{Suffix: "LIC"}, IgnoreCase: true})},
		{Name: "x-tenant", HeaderMatchSpecifier: sm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Contains{Contains: "K"}, IgnoreCase: true})},
		{Name: "x-tenant", HeaderMatchSpecifier: sm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Contains{Contains: ","}}), InvertMatch: true, TreatMissingHeaderAsEmpty: true},
		{Name: "x-tenant", HeaderMatchSpecifier: sm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: "[+-]?[0-9]+"}}}), InvertMatch: true},
		{Name: "x-tenant", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: false}, InvertMatch: true, TreatMissingHeaderAsEmpty: true},
	}
	requests := []map[string][]string{
		nil,
		{"x-tenant": {"public"}},
		{"x-tenant": {"secret", "public"}},
		{"x-tenant": {"public", "secret"}},
		{"x-tenant": {"public", "public"}},
		{"x-tenant": {"secret,public"}},
		{"x-tenant": {""}},
		{"x-tenant": {"", ""}},
		{"x-tenant": {}},
		{"x-other": {"public"}},
		{"x-tenant": {"5"}},
		{"x-tenant": {"+5"}},
		{"x-tenant": {"-5"}},
		{"x-tenant": {"10"}},
		{"x-tenant": {"5", "5"}},
		{"x-tenant": {"PUBLIC"}},
		{"x-tenant": {"k"}},
		{"x-tenant": {"\u212a"}},
	}
	for i, hm := range matchers {
		rc := &v3routepb.RouteConfiguration{VirtualHosts: []*v3routepb.VirtualHost{{Domains: []string{"*"}, Routes: []*v3routepb.Route{
			route("matched", prefix("/", hm)),
			route("default", prefix("/")),
		}}}}
		tbl := table(rc, "reviews:9080")
		e, err := authz.New([]*v3rbacpb.RBAC{{Action: v3rbacpb.RBAC_ALLOW, Policies: map[string]*v3rbacpb.Policy{"p": {
			Permissions: []*v3rbacpb.Permission{{Rule: &v3rbacpb.Permission_Header{Header: proto.Clone(hm).(*v3routepb.HeaderMatcher)}}},
			Principals:  []*v3rbacpb.Principal{{Identifier: &v3rbacpb.Principal_Any{Any: true}}},
		}}}})
		if err != nil {
			t.Fatalf("matcher %d: authz.New() = %v", i, err)
		}
		for _, headers := range requests {
			_, got, _ := tbl.LookupHTTP(context.Background(), "/x", headers)
			routed := got == "matched"
			allowed := e.Authorize(&authz.Request{Method: "GET", Path: "/x", Headers: headers}).Allowed
			if routed != allowed {
				t.Errorf("matcher %d (%v) on %s: route matched %v, authorization matched %v", i, hm, fmt.Sprint(headers), routed, allowed)
			}
		}
	}
}
