package xdsroute

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"context"
	"testing"
	"time"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func route(name string, m *v3routepb.RouteMatch) *v3routepb.Route {
	return &v3routepb.Route{Name: name, Match: m}
}

func prefix(p string, headers ...*v3routepb.HeaderMatcher) *v3routepb.RouteMatch {
	return &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: p}, Headers: headers}
}

// table returns a Table holding rc, as if the control plane had sent it.
func table(rc *v3routepb.RouteConfiguration, authority string) *Table[string] {
	name := func(_ *v3routepb.VirtualHost, r *v3routepb.Route) string { return r.GetName() }
	t := &Table[string]{authority: authority, convert: name, ready: make(chan struct{})}
	t.install(rc)
	return t
}

func TestLookup(t *testing.T) {
	exact := func(name, v string) *v3routepb.HeaderMatcher {
		return &v3routepb.HeaderMatcher{Name: name, HeaderMatchSpecifier: &v3routepb.HeaderMatcher_StringMatch{
			StringMatch: &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: v}}}}
	}
	rc := &v3routepb.RouteConfiguration{VirtualHosts: []*v3routepb.VirtualHost{
		{Domains: []string{"*"}, Routes: []*v3routepb.Route{route("catch-all-host", prefix(""))}},
		{Domains: []string{"reviews:9080", "reviews"}, Routes: []*v3routepb.Route{
			route("exact", &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Path{Path: "/pkg.Reviews/Get"}}),
			route("nocase", &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/PKG.Ratings/"}, CaseSensitive: wrapperspb.Bool(false)}),
			route("regex", &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: "/pkg\\.Admin/.*"}}}),
			route("header", prefix("/", exact("x-user", "jason"))),
			route("binary", prefix("/", &v3routepb.HeaderMatcher{Name: "x-bin", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true}})),
			route("grpc-content", prefix("/pkg.Content/", &v3routepb.HeaderMatcher{Name: "content-type", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PrefixMatch{PrefixMatch: "application/grpc"}})),
			route("inverted", prefix("/pkg.Inv/", &v3routepb.HeaderMatcher{Name: "x-debug", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true})),
			route("default", prefix("/")),
		}},
	}}
	tests := []struct {
		method string
		md     metadata.MD
		want   string
	}{
		{"/pkg.Reviews/Get", nil, "exact"},
		{"/pkg.Reviews/GetAll", nil, "default"},
		{"/pkg.ratings/Rate", nil, "nocase"},
		{"/pkg.Admin/Drop", nil, "regex"},
		{"/pkg.AdminX/Drop", nil, "default"},
		{"/pkg.Reviews/List", metadata.Pairs("x-user", "jason"), "header"},
		{"/pkg.Reviews/List", metadata.Pairs("x-user", "jason", "x-user", "ann"), "default"}, // joined "jason,ann"
		{"/pkg.Reviews/List", metadata.Pairs("x-bin", "1"), "default"},                       // binary headers never match
		{"/pkg.Content/Get", nil, "grpc-content"},
		{"/pkg.Inv/Get", nil, "inverted"},
		{"/pkg.Inv/Get", metadata.Pairs("x-debug", "1"), "default"},
	}
	tbl := table(rc, "reviews:9080")
	for _, tc := range tests {
		_, got, ok := tbl.Lookup(context.Background(), tc.method, tc.md)
		if !ok || got != tc.want {
			t.Errorf("Lookup(%q, %v) = %q, %v; want %q", tc.method, tc.md, got, ok, tc.want)
		}
		// The same call with its metadata in the outgoing context.
		ctx := metadata.NewOutgoingContext(context.Background(), tc.md)
		if _, got, ok := tbl.LookupOutgoing(ctx, tc.method); !ok || got != tc.want {
			t.Errorf("LookupOutgoing(%q) with outgoing %v = %q, %v; want %q", tc.method, tc.md, got, ok, tc.want)
		}
	}
	// The virtual host is chosen by authority; an unknown one takes "*".
	if _, got, _ := table(rc, "ratings:9080").Lookup(context.Background(), "/pkg.Reviews/Get", nil); got != "catch-all-host" {
		t.Errorf("Lookup on authority ratings:9080 = %q, want catch-all-host", got)
	}
}

// TestLookupHTTPFuncMakesHeadersOnlyWhenMatched: the headers of a lazy
// lookup are made once, and only when a route it tries has header
// matchers; the outcome is LookupHTTP's.
func TestLookupHTTPFuncMakesHeadersOnlyWhenMatched(t *testing.T) {
	exact := func(name, v string) *v3routepb.HeaderMatcher {
		return &v3routepb.HeaderMatcher{Name: name, HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: v}}
	}
	rc := &v3routepb.RouteConfiguration{VirtualHosts: []*v3routepb.VirtualHost{{Domains: []string{"*"}, Routes: []*v3routepb.Route{
		route("plain", prefix("/plain")),
		route("user", prefix("/", exact("x-user", "jason"))),
		route("method", prefix("/", exact(":method", "POST"))),
		route("default", prefix("/")),
	}}}}
	tbl := table(rc, "reviews:9080")
	for _, tc := range []struct {
		path    string
		headers map[string][]string
		want    string
		made    int
	}{
		{"/plain/x", map[string][]string{"x-user": {"jason"}}, "plain", 0},
		{"/x", map[string][]string{"x-user": {"jason"}}, "user", 1},
		{"/x", map[string][]string{":method": {"POST"}}, "method", 1},
		{"/x", nil, "default", 1},
	} {
		made := 0
		_, got, ok := tbl.LookupHTTPFunc(context.Background(), tc.path, func() map[string][]string { made++; return tc.headers })
		if !ok || got != tc.want || made != tc.made {
			t.Errorf("LookupHTTPFunc(%q, %v) = %q, %v, headers made %d times; want %q, true, %d", tc.path, tc.headers, got, ok, made, tc.want, tc.made)
		}
		if _, want, _ := tbl.LookupHTTP(context.Background(), tc.path, tc.headers); want != got {
			t.Errorf("LookupHTTPFunc(%q, %v) = %q, LookupHTTP = %q", tc.path, tc.headers, got, want)
		}
	}
}

func TestPickVirtualHost(t *testing.T) {
	vhs := []*v3routepb.VirtualHost{
		{Name: "any", Domains: []string{"*"}},
		{Name: "prefix", Domains: []string{"reviews*"}},
		{Name: "suffix", Domains: []string{"*:9080"}},
		{Name: "longer-suffix", Domains: []string{"*ings:9080"}},
		{Name: "exact", Domains: []string{"Reviews:9080"}},
	}
	for authority, want := range map[string]string{
		"reviews:9080": "exact",
		"ratings:9080": "longer-suffix",
		"details:9080": "suffix",
		"reviews:9090": "prefix",
		"other":        "any",
	} {
		if got := pickVirtualHost(vhs, authority).GetName(); got != want {
			t.Errorf("pickVirtualHost(%q) = %q, want %q", authority, got, want)
		}
	}
}

// TestLookupWaitsForRoutes: before the routes arrive a lookup waits, within
// its context, and matches nothing if they don't come.
func TestLookupWaitsForRoutes(t *testing.T) {
	tbl := &Table[string]{authority: "a", convert: func(_ *v3routepb.VirtualHost, r *v3routepb.Route) string { return r.GetName() }, ready: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, ok := tbl.Lookup(ctx, "/x/y", nil); ok {
		t.Errorf("Lookup before any routes = ok, want no match")
	}
	if ctx.Err() == nil {
		t.Errorf("Lookup returned before its context ended, want it to wait for routes")
	}
	done := make(chan string)
	go func() {
		_, got, _ := tbl.Lookup(context.Background(), "/x/y", nil)
		done <- got
	}()
	tbl.install(&v3routepb.RouteConfiguration{VirtualHosts: []*v3routepb.VirtualHost{{Domains: []string{"*"}, Routes: []*v3routepb.Route{route("r", prefix("/"))}}}})
	if got := <-done; got != "r" {
		t.Errorf("Lookup waiting for routes = %q, want r", got)
	}
}
