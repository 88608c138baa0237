package xdsroute

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"context"
	"strings"
	"testing"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestEnvoyMatcherSemantics holds the cases where route matching changed
// when it moved onto package internal/matcher, shared with authorization,
// and took Envoy's semantics (and validation rules) where the two used to
// differ. A route whose matcher is refused never matches.
func TestEnvoyMatcherSemantics(t *testing.T) {
	str := func(m *v3matcherpb.StringMatcher) *v3routepb.RouteMatch {
		return prefix("/", &v3routepb.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_StringMatch{StringMatch: m}})
	}
	header := func(h *v3routepb.HeaderMatcher) *v3routepb.RouteMatch { return prefix("/", h) }
	rangeMatch := func(lo, hi int64) *v3routepb.HeaderMatcher {
		return &v3routepb.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_RangeMatch{RangeMatch: &v3typepb.Int64Range{Start: lo, End: hi}}}
	}
	regexPath := func(re string) *v3routepb.RouteMatch {
		return &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: re}}}
	}
	sep := &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/dev"}}
	x := func(v ...string) map[string][]string { return map[string][]string{"x": v} }
	tests := []struct {
		name    string
		m       *v3routepb.RouteMatch
		path    string
		headers map[string][]string
		grpc    bool
		want    bool
	}{
		// An inverted value matcher used to match a missing header; in
		// Envoy (and grpc-go) it does not, unless
		// treat_missing_header_as_empty is set (over HTTP).
		{"inverted exact on a missing header", header(&v3routepb.HeaderMatcher{Name: "x", InvertMatch: true,
			HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: "a"}}), "/", nil, false, false},
		{"inverted exact on a missing header, gRPC", header(&v3routepb.HeaderMatcher{Name: "x", InvertMatch: true,
			HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: "a"}}), "/", nil, true, false},
		{"inverted exact on a missing header, missing as empty", header(&v3routepb.HeaderMatcher{Name: "x", InvertMatch: true, TreatMissingHeaderAsEmpty: true,
			HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: "a"}}), "/", nil, false, true},
		{"inverted range on a missing header", header(func() *v3routepb.HeaderMatcher { h := rangeMatch(0, 10); h.InvertMatch = true; return h }()), "/", nil, false, false},
		// range_match took no '+' and at most 18 digits; Envoy takes an
		// optional sign and any int64.
		{"range plus sign", header(rangeMatch(0, 10)), "/", x("+5"), false, true},
		{"range of 19 digits", header(rangeMatch(0, 1<<63-1)), "/", x("1000000000000000000"), false, true},
		{"range int64 min", header(rangeMatch(-1<<63, 0)), "/", x("-9223372036854775808"), false, true},
		// ignore_case and case_sensitive false folded Unicode
		// (strings.ToLower); Envoy folds ASCII letters only.
		{"ignore_case folds ASCII", str(&v3matcherpb.StringMatcher{IgnoreCase: true, MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: "K"}}), "/", x("k"), false, true},
		{"ignore_case does not fold the Kelvin sign", str(&v3matcherpb.StringMatcher{IgnoreCase: true, MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: "k"}}), "/", x("\u212a"), false, false},
		{"case-insensitive prefix does not fold the Kelvin sign", &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/k"}, CaseSensitive: wrapperspb.Bool(false)}, "/\u212a", nil, false, false},
		// Refused now, as Envoy's validation refuses them; they matched
		// every value.
		{"empty string prefix", str(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Prefix{}}), "/", x("a"), false, false},
		{"empty string contains", str(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Contains{}}), "/", x("a"), false, false},
		{"empty deprecated suffix_match", header(&v3routepb.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_SuffixMatch{}}), "/", x("a"), false, false},
		{"empty header name", header(&v3routepb.HeaderMatcher{HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: false}}), "/", nil, false, false},
		// Regular expressions are held to the limits authorization has
		// always enforced: valid on their own ("a)|(.*" matched every
		// path), at most 1024 bytes.
		{"regex breaking out of the anchors", regexPath("/a)|(.*"), "/anything", nil, false, false},
		{"regex over 1024 bytes", regexPath("/" + strings.Repeat("a", 1024)), "/" + strings.Repeat("a", 1024), nil, false, false},
		{"regex of 1024 bytes", regexPath("/" + strings.Repeat("a", 1023)), "/" + strings.Repeat("a", 1023), nil, false, true},
		// path_separated_prefix routes never matched.
		{"path_separated_prefix", sep, "/api/dev/v1", nil, false, true},
		{"path_separated_prefix exact", sep, "/api/dev", nil, false, true},
		{"path_separated_prefix not a segment", sep, "/api/developer", nil, false, false},
		// A binary header never matched over gRPC, even present_match
		// false; grpc-go drops binary headers before matching, so they are
		// absent.
		{"binary header is absent over gRPC", header(&v3routepb.HeaderMatcher{Name: "x-bin", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: false}}),
			"/", map[string][]string{"x-bin": {"1"}}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &v3routepb.RouteConfiguration{VirtualHosts: []*v3routepb.VirtualHost{{Domains: []string{"*"}, Routes: []*v3routepb.Route{
				route("matched", tt.m),
				route("default", prefix("/")),
			}}}}
			tbl := table(rc, "reviews:9080")
			var got string
			if tt.grpc {
				_, got, _ = tbl.Lookup(context.Background(), tt.path, tt.headers)
			} else {
				_, got, _ = tbl.LookupHTTP(context.Background(), tt.path, tt.headers)
			}
			if matched := got == "matched"; matched != tt.want {
				t.Errorf("lookup(%q, %v) took route %q; want matched %v", tt.path, tt.headers, got, tt.want)
			}
		})
	}
}
