package xdsroute

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"context"
	"testing"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// BenchmarkLookup measures matching a call against a route table whose
// routes use each kind of matcher before the one that matches: a
// case-insensitive prefix, a regex, header matchers (exact, ignore_case,
// regex, range, present) on a single and on a repeated header.
func BenchmarkLookup(b *testing.B) {
	str := func(name string, m *v3matcherpb.StringMatcher) *v3routepb.HeaderMatcher {
		return &v3routepb.HeaderMatcher{Name: name, HeaderMatchSpecifier: &v3routepb.HeaderMatcher_StringMatch{StringMatch: m}}
	}
	rc := &v3routepb.RouteConfiguration{VirtualHosts: []*v3routepb.VirtualHost{{Domains: []string{"*"}, Routes: []*v3routepb.Route{
		route("nocase", &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/PKG.Ratings/"}, CaseSensitive: wrapperspb.Bool(false)}),
		route("regex", &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: "/pkg\\.Admin/.*"}}}),
		route("exact", prefix("/", str("x-user", &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: "jason"}}))),
		route("fold", prefix("/", str("x-user", &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: "ANN"}, IgnoreCase: true}))),
		route("hregex", prefix("/", str("x-user", &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: "b[a-z]+"}}}))),
		route("present", prefix("/", &v3routepb.HeaderMatcher{Name: "x-debug", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true}})),
		route("default", prefix("/")),
	}}}}
	tbl := table(rc, "reviews:9080")
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		md   metadata.MD
		want string
	}{
		{"single", metadata.Pairs("x-user", "ken"), "default"},
		{"repeated", metadata.Pairs("x-user", "ken", "x-user", "jason"), "default"},
	} {
		b.Run("grpc/"+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, got, _ := tbl.Lookup(ctx, "/pkg.Reviews/Get", bc.md); got != bc.want {
					b.Fatalf("Lookup() = %q, want %q", got, bc.want)
				}
			}
		})
		b.Run("http/"+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, got, _ := tbl.LookupHTTP(ctx, "/pkg.Reviews/Get", bc.md); got != bc.want {
					b.Fatalf("LookupHTTP() = %q, want %q", got, bc.want)
				}
			}
		})
	}
}
