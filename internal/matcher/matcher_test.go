package matcher

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func exact(s string) *v3matcherpb.StringMatcher {
	return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *v3matcherpb.StringMatcher {
	return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: s}}
}

func suffix(s string) *v3matcherpb.StringMatcher {
	return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Suffix{Suffix: s}}
}

func contains(s string) *v3matcherpb.StringMatcher {
	return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Contains{Contains: s}}
}

func regex(s string) *v3matcherpb.StringMatcher {
	return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: s}}}
}

func fold(m *v3matcherpb.StringMatcher) *v3matcherpb.StringMatcher {
	m.IgnoreCase = true
	return m
}

func TestString(t *testing.T) {
	tests := []struct {
		m    *v3matcherpb.StringMatcher
		v    string
		want bool
	}{
		{exact("abc"), "abc", true},
		{exact("abc"), "abcd", false},
		{exact("abc"), "ABC", false},
		{exact(""), "", true},
		{exact(""), "a", false},
		{fold(exact("aBc")), "AbC", true},
		{fold(exact("abc")), "abcd", false},
		{prefix("ab"), "abc", true},
		{prefix("ab"), "a", false},
		{prefix("ab"), "Abc", false},
		{fold(prefix("AB")), "abc", true},
		{fold(prefix("ab")), "A", false},
		{suffix("bc"), "abc", true},
		{suffix("bc"), "aBC", false},
		{fold(suffix("BC")), "abc", true},
		{fold(suffix("bc")), "c", false},
		{contains("b"), "abc", true},
		{contains("x"), "abc", false},
		{fold(contains("B")), "abc", true},
		{fold(contains("BCD")), "abc", false},
		{fold(contains("c")), "", false},
		{regex("a.c"), "abc", true},
		{regex("a.c"), "xabc", false},      // anchored at the start
		{regex("a.c"), "abcx", false},      // and at the end
		{regex("a|b.c"), "axx", false},     // alternation stays anchored
		{fold(regex("abc")), "ABC", false}, // ignore_case has no effect on safe_regex
		{regex(`\Qa.b`), "a.b", true},      // \Q without \E quotes to the end, and stays anchored
		{regex(`\Qa.b`), "axb", false},
		{regex(`x\Q)|(.*`), "x)|(.*", true},
		{regex(`x\Q)|(.*`), "xyz", false},
		{fold(exact("k")), "\u212a", false},      // Kelvin sign: ASCII folding only
		{fold(exact("s")), "\u017f", false},      // long s
		{fold(exact("\u00e9")), "\u00c9", false}, // é is not folded
		{fold(exact("\u00e9")), "\u00e9", true},
		{fold(contains("k")), "x\u212ax", false},
	}
	for _, tt := range tests {
		m, err := CompileString(tt.m)
		if err != nil {
			t.Fatalf("CompileString(%v) = %v", tt.m, err)
		}
		if got := m.Match(tt.v); got != tt.want {
			t.Errorf("CompileString(%v).Match(%q) = %v, want %v", tt.m, tt.v, got, tt.want)
		}
	}
}

func TestCompilePath(t *testing.T) {
	m, err := CompilePath(&v3matcherpb.PathMatcher{Rule: &v3matcherpb.PathMatcher_Path{Path: prefix("/admin")}})
	if err != nil {
		t.Fatalf("CompilePath() = %v", err)
	}
	for v, want := range map[string]bool{"/admin": true, "/admin/x": true, "/adm": false, "/Admin": false} {
		if got := m.Match(v); got != want {
			t.Errorf("CompilePath(prefix /admin).Match(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestCompileRoutePath(t *testing.T) {
	insensitive := wrapperspb.Bool(false)
	tests := []struct {
		m    *v3routepb.RouteMatch
		v    string
		want bool
	}{
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/pkg.S/"}}, "/pkg.S/M", true},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/pkg.S/"}}, "/PKG.S/M", false},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: ""}}, "/anything", true},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/PKG.s/"}, CaseSensitive: insensitive}, "/pkg.S/M", true},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/PKG.s/"}, CaseSensitive: wrapperspb.Bool(true)}, "/pkg.S/M", false},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/k"}, CaseSensitive: insensitive}, "/\u212a", false},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Path{Path: "/pkg.S/M"}}, "/pkg.S/M", true},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Path{Path: "/pkg.S/M"}}, "/pkg.S/Mx", false},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Path{Path: "/pkg.S/M"}, CaseSensitive: insensitive}, "/PKG.s/m", true},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: "/pkg\\..*"}}}, "/pkg.S/M", true},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: "/pkg"}}}, "/pkg/x", false},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: "/pkg"}}, CaseSensitive: insensitive}, "/PKG", false},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/dev"}}, "/api/dev", true},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/dev"}}, "/api/dev/", true},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/dev"}}, "/api/dev/v1", true},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/dev"}}, "/api/developer", false},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/dev"}}, "/api/de", false},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/dev"}}, "/API/Dev/v1", false},
		{&v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/dev"}, CaseSensitive: insensitive}, "/API/Dev/v1", true},
	}
	for _, tt := range tests {
		m, err := CompileRoutePath(tt.m)
		if err != nil {
			t.Fatalf("CompileRoutePath(%v) = %v", tt.m, err)
		}
		if got := m.Match(tt.v); got != tt.want {
			t.Errorf("CompileRoutePath(%v).Match(%q) = %v, want %v", tt.m, tt.v, got, tt.want)
		}
	}
}

// hm builds a HeaderMatcher on "x-h" with the specifier s, then options.
func hm(s any, opts ...string) *v3routepb.HeaderMatcher {
	h := &v3routepb.HeaderMatcher{Name: "x-h"}
	switch s := s.(type) {
	case *v3matcherpb.StringMatcher:
		h.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_StringMatch{StringMatch: s}
	case v3routepb.HeaderMatcher_ExactMatch:
		h.HeaderMatchSpecifier = &s
	case v3routepb.HeaderMatcher_PrefixMatch:
		h.HeaderMatchSpecifier = &s
	case v3routepb.HeaderMatcher_SuffixMatch:
		h.HeaderMatchSpecifier = &s
	case v3routepb.HeaderMatcher_ContainsMatch:
		h.HeaderMatchSpecifier = &s
	case v3routepb.HeaderMatcher_SafeRegexMatch:
		h.HeaderMatchSpecifier = &s
	case v3routepb.HeaderMatcher_RangeMatch:
		h.HeaderMatchSpecifier = &s
	case v3routepb.HeaderMatcher_PresentMatch:
		h.HeaderMatchSpecifier = &s
	case nil:
	default:
		panic(fmt.Sprintf("hm(%T)", s))
	}
	for _, o := range opts {
		switch o {
		case "invert":
			h.InvertMatch = true
		case "missing-empty":
			h.TreatMissingHeaderAsEmpty = true
		default:
			h.Name = o
		}
	}
	return h
}

func rng(lo, hi int64) v3routepb.HeaderMatcher_RangeMatch {
	return v3routepb.HeaderMatcher_RangeMatch{RangeMatch: &v3typepb.Int64Range{Start: lo, End: hi}}
}

// TestHeader is the table of every header specifier, with invert_match,
// treat_missing_header_as_empty, repeated headers and NUL.
func TestHeader(t *testing.T) {
	type (
		exactM    = v3routepb.HeaderMatcher_ExactMatch
		prefixM   = v3routepb.HeaderMatcher_PrefixMatch
		suffixM   = v3routepb.HeaderMatcher_SuffixMatch
		containsM = v3routepb.HeaderMatcher_ContainsMatch
		regexM    = v3routepb.HeaderMatcher_SafeRegexMatch
		presentM  = v3routepb.HeaderMatcher_PresentMatch
	)
	re := func(s string) regexM { return regexM{SafeRegexMatch: &v3matcherpb.RegexMatcher{Regex: s}} }
	var missing []string
	tests := []struct {
		name   string
		m      *v3routepb.HeaderMatcher
		values []string
		want   bool
	}{
		{"exact_match", hm(exactM{ExactMatch: "a"}), []string{"a"}, true},
		{"exact_match other", hm(exactM{ExactMatch: "a"}), []string{"b"}, false},
		{"exact_match missing", hm(exactM{ExactMatch: "a"}), missing, false},
		{"exact_match empty", hm(exactM{ExactMatch: ""}), []string{""}, true},
		{"exact_match empty on a value", hm(exactM{ExactMatch: ""}), []string{"a"}, false},
		{"exact_match is case-sensitive", hm(exactM{ExactMatch: "a"}), []string{"A"}, false},
		{"prefix_match", hm(prefixM{PrefixMatch: "ab"}), []string{"abc"}, true},
		{"prefix_match other", hm(prefixM{PrefixMatch: "ab"}), []string{"acb"}, false},
		{"suffix_match", hm(suffixM{SuffixMatch: "bc"}), []string{"abc"}, true},
		{"suffix_match other", hm(suffixM{SuffixMatch: "bc"}), []string{"bca"}, false},
		{"contains_match", hm(containsM{ContainsMatch: "b"}), []string{"abc"}, true},
		{"contains_match other", hm(containsM{ContainsMatch: "d"}), []string{"abc"}, false},
		{"safe_regex_match", hm(re("[a-c]+")), []string{"abc"}, true},
		{"safe_regex_match is anchored", hm(re("[a-c]+")), []string{"abcd"}, false},
		{"string_match exact", hm(exact("a")), []string{"a"}, true},
		{"string_match exact ignore_case", hm(fold(exact("A"))), []string{"a"}, true},
		{"string_match prefix", hm(prefix("a")), []string{"ab"}, true},
		{"string_match prefix ignore_case", hm(fold(prefix("A"))), []string{"ab"}, true},
		{"string_match suffix", hm(suffix("b")), []string{"ab"}, true},
		{"string_match suffix ignore_case", hm(fold(suffix("B"))), []string{"ab"}, true},
		{"string_match contains", hm(contains("b")), []string{"abc"}, true},
		{"string_match contains ignore_case", hm(fold(contains("B"))), []string{"abc"}, true},
		{"string_match safe_regex", hm(regex("a+")), []string{"aa"}, true},
		{"string_match safe_regex ignore_case", hm(fold(regex("a+"))), []string{"AA"}, false},
		{"range_match", hm(rng(-10, 0)), []string{"-1"}, true},
		{"range_match end is exclusive", hm(rng(-10, 0)), []string{"0"}, false},
		{"range_match start is inclusive", hm(rng(-10, 0)), []string{"-10"}, true},
		{"range_match plus sign", hm(rng(0, 10)), []string{"+5"}, true},
		{"range_match leading zeros", hm(rng(0, 10)), []string{"0005"}, true},
		{"range_match int64 max", hm(rng(0, 1<<63-1)), []string{"9223372036854775806"}, true},
		{"range_match past int64", hm(rng(-1<<63, 1<<63-1)), []string{"9223372036854775808"}, false},
		{"range_match int64 min", hm(rng(-1<<63, 0)), []string{"-9223372036854775808"}, true},
		{"range_match not a number", hm(rng(0, 10)), []string{"somestring"}, false},
		{"range_match float", hm(rng(0, 20)), []string{"10.9"}, false},
		{"range_match trailing text", hm(rng(-10, 0)), []string{"-1somestring"}, false},
		{"range_match space", hm(rng(0, 10)), []string{" 5"}, false},
		{"range_match empty", hm(rng(-1, 1)), []string{""}, false},
		{"range_match sign only", hm(rng(-1, 1)), []string{"-"}, false},
		{"range_match missing", hm(rng(-1, 1)), missing, false},
		{"range_match inverted", hm(rng(-10, 0), "invert"), []string{"-1"}, false},
		{"range_match repeated", hm(rng(0, 10)), []string{"1", "2"}, false},
		{"present_match", hm(presentM{PresentMatch: true}), []string{""}, true},
		{"present_match missing", hm(presentM{PresentMatch: true}), missing, false},
		{"present_match false", hm(presentM{PresentMatch: false}), missing, true},
		{"present_match false present", hm(presentM{PresentMatch: false}), []string{"a"}, false},
		{"present_match inverted", hm(presentM{PresentMatch: true}, "invert"), missing, true},
		{"present_match inverted present", hm(presentM{PresentMatch: true}, "invert"), []string{"a"}, false},
		{"present_match false inverted", hm(presentM{PresentMatch: false}, "invert"), missing, false},
		{"present_match repeated", hm(presentM{PresentMatch: true}), []string{"a", "b"}, true},
		{"present_match ignores missing-empty", hm(presentM{PresentMatch: true}, "missing-empty"), missing, false},
		{"present_match false ignores missing-empty", hm(presentM{PresentMatch: false}, "missing-empty"), missing, true},
		{"empty values are missing", hm(presentM{PresentMatch: true}), []string{}, false},
		{"invert", hm(exact("a"), "invert"), []string{"b"}, true},
		{"invert on a match", hm(exact("a"), "invert"), []string{"a"}, false},
		{"invert on a missing header", hm(exact("a"), "invert"), missing, false},
		{"missing-empty", hm(exact(""), "missing-empty"), missing, true},
		{"missing-empty with a value", hm(exact(""), "missing-empty"), []string{"a"}, false},
		{"missing-empty inverted", hm(exact("a"), "missing-empty", "invert"), missing, true},
		{"missing-empty range inverted", hm(rng(0, 10), "missing-empty", "invert"), missing, true},
		{"missing-empty regex ^$", hm(regex("^$"), "missing-empty"), missing, true},
		{"repeated joined", hm(exact("a,b")), []string{"a", "b"}, true},
		{"repeated not one value", hm(exact("b")), []string{"a", "b"}, false},
		{"repeated with empty values", hm(exact(",")), []string{"", ""}, true},
		{"repeated three", hm(exact("a,,c")), []string{"a", "", "c"}, true},
		{"repeated prefix", hm(prefix("a,")), []string{"a", "b"}, true},
		{"repeated regex", hm(regex("[a-z]+,[a-z]+")), []string{"ab", "cd"}, true},
		{"repeated inverted", hm(exact("b"), "invert"), []string{"a", "b"}, true},
		{"NUL never matches", hm(prefix("a")), []string{"a\x00"}, false},
		{"NUL in a repeated header", hm(prefix("a")), []string{"a\x00", "ab"}, false},
		{"NUL inverted", hm(prefix("a"), "invert"), []string{"a\x00"}, true},
		{"pseudo-header", hm(exact("GET"), ":method"), []string{"GET"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := CompileHeader(tt.m)
			if err != nil {
				t.Fatalf("CompileHeader(%v) = %v", tt.m, err)
			}
			if got := m.Match(tt.values); got != tt.want {
				t.Errorf("CompileHeader(%v).Match(%q) = %v, want %v", tt.m, tt.values, got, tt.want)
			}
			if got, want := m.Match(tt.values), reference(t, tt.m, tt.values); got != want {
				t.Errorf("CompileHeader(%v).Match(%q) = %v, reference %v", tt.m, tt.values, got, want)
			}
		})
	}
}

func TestHeaderName(t *testing.T) {
	for name, want := range map[string]string{"x-user": "x-user", "X-User": "x-user", ":authority": ":authority", "X-\u00c9": "x-\u00c9"} {
		m, err := CompileHeader(&v3routepb.HeaderMatcher{Name: name, HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true}})
		if err != nil {
			t.Fatalf("CompileHeader(name %q) = %v", name, err)
		}
		if got := m.Name(); got != want {
			t.Errorf("CompileHeader(name %q).Name() = %q, want %q", name, got, want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	type result struct {
		Kind  string
		Field string
	}
	kind := func(err error) string {
		switch {
		case err == nil:
			return "ok"
		case errors.Is(err, ErrUnsupported):
			return "unsupported"
		case errors.Is(err, ErrInvalid):
			return "invalid"
		}
		return "other: " + err.Error()
	}
	field := func(err error) string {
		var e *Error
		if errors.As(err, &e) {
			return e.Field
		}
		return ""
	}
	compile := func(m any) error {
		var err error
		switch m := m.(type) {
		case *v3matcherpb.StringMatcher:
			_, err = CompileString(m)
		case *v3routepb.HeaderMatcher:
			_, err = CompileHeader(m)
		case *v3routepb.RouteMatch:
			_, err = CompileRoutePath(m)
		case *v3matcherpb.PathMatcher:
			_, err = CompilePath(m)
		}
		return err
	}
	re := func(s string) *v3routepb.RouteMatch {
		return &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_SafeRegex{SafeRegex: &v3matcherpb.RegexMatcher{Regex: s}}}
	}
	sep := func(s string) *v3routepb.RouteMatch {
		return &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: s}}
	}
	maxProgram := regex("a+")
	maxProgram.GetSafeRegex().EngineType = &v3matcherpb.RegexMatcher_GoogleRe2{GoogleRe2: &v3matcherpb.RegexMatcher_GoogleRE2{MaxProgramSize: wrapperspb.UInt32(1)}}
	tests := []struct {
		name string
		m    any
		want result
	}{
		{"string nil", (*v3matcherpb.StringMatcher)(nil), result{"invalid", ""}},
		{"string no pattern", &v3matcherpb.StringMatcher{}, result{"invalid", ""}},
		{"string empty prefix", prefix(""), result{"invalid", "prefix"}},
		{"string empty suffix", suffix(""), result{"invalid", "suffix"}},
		{"string empty contains", contains(""), result{"invalid", "contains"}},
		{"string empty exact", exact(""), result{"ok", ""}},
		{"string custom", &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Custom{}}, result{"unsupported", "custom"}},
		{"regex nil", &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_SafeRegex{}}, result{"invalid", "safe_regex"}},
		{"regex empty", regex(""), result{"invalid", "safe_regex.regex"}},
		{"regex bad", regex("a("), result{"invalid", "safe_regex.regex"}},
		{"regex breaking out of the anchors", regex("a)|(.*"), result{"invalid", "safe_regex.regex"}},
		{"regex at the limit", regex(strings.Repeat("a", MaxRegexLen)), result{"ok", ""}},
		{"regex over the limit", regex(strings.Repeat("a", MaxRegexLen+1)), result{"invalid", "safe_regex.regex"}},
		{"regex max_program_size is not read", maxProgram, result{"ok", ""}},
		{"regex ignore_case", fold(regex("a")), result{"ok", ""}},
		{"regex quoting to the end", regex(`\Q`), result{"ok", ""}},
		{"header nil", (*v3routepb.HeaderMatcher)(nil), result{"invalid", ""}},
		{"header no name", &v3routepb.HeaderMatcher{HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true}}, result{"invalid", "name"}},
		{"header name with LF", hm(exact("a"), "x\nh"), result{"invalid", "name"}},
		{"header no specifier", hm(nil), result{"invalid", ""}},
		{"header empty prefix_match", hm(v3routepb.HeaderMatcher_PrefixMatch{}), result{"invalid", "prefix_match"}},
		{"header empty suffix_match", hm(v3routepb.HeaderMatcher_SuffixMatch{}), result{"invalid", "suffix_match"}},
		{"header empty contains_match", hm(v3routepb.HeaderMatcher_ContainsMatch{}), result{"invalid", "contains_match"}},
		{"header bad safe_regex_match", hm(v3routepb.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &v3matcherpb.RegexMatcher{Regex: "("}}), result{"invalid", "safe_regex_match.regex"}},
		{"header bad string_match", hm(regex("(")), result{"invalid", "string_match.safe_regex.regex"}},
		{"header string_match custom", hm(&v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Custom{}}), result{"unsupported", "string_match.custom"}},
		{"header empty exact_match", hm(v3routepb.HeaderMatcher_ExactMatch{}), result{"ok", ""}},
		{"header empty range", hm(rng(1, 1)), result{"ok", ""}},
		{"route no path", &v3routepb.RouteMatch{}, result{"invalid", "path_specifier"}},
		{"route bad regex", re("a)|(b"), result{"invalid", "safe_regex.regex"}},
		{"route regex over the limit", re(strings.Repeat("a", MaxRegexLen+1)), result{"invalid", "safe_regex.regex"}},
		{"route connect_matcher", &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_ConnectMatcher_{ConnectMatcher: &v3routepb.RouteMatch_ConnectMatcher{}}}, result{"unsupported", "connect_matcher"}},
		{"route path_match_policy", &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_PathMatchPolicy{}}, result{"unsupported", "path_match_policy"}},
		{"route path_separated_prefix", sep("/a"), result{"ok", ""}},
		{"route path_separated_prefix too short", sep("/"), result{"invalid", "path_separated_prefix"}},
		{"route path_separated_prefix trailing slash", sep("/a/"), result{"invalid", "path_separated_prefix"}},
		{"route path_separated_prefix query", sep("/a?b"), result{"invalid", "path_separated_prefix"}},
		{"route path_separated_prefix fragment", sep("/a#b"), result{"invalid", "path_separated_prefix"}},
		{"path no path", &v3matcherpb.PathMatcher{}, result{"invalid", "path"}},
		{"path empty prefix", &v3matcherpb.PathMatcher{Rule: &v3matcherpb.PathMatcher_Path{Path: prefix("")}}, result{"invalid", "path.prefix"}},
	}
	for _, tt := range tests {
		err := compile(tt.m)
		if diff := cmp.Diff(result{kind(err), field(err)}, tt.want); diff != "" {
			t.Errorf("%s: compile(%v) = %v, mismatch (-got +want):\n%s", tt.name, tt.m, err, diff)
		}
	}
}
