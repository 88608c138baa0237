package matcher

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// refValid is the reference's reading of Envoy's validation rules: a
// non-empty header name without NUL, CR or LF; a specifier; non-empty
// prefixes, suffixes and substrings; regular expressions that are
// non-empty, at most MaxRegexLen bytes and valid on their own.
func refValid(h *v3routepb.HeaderMatcher) bool {
	if h.GetName() == "" || strings.ContainsAny(h.GetName(), "\x00\r\n") {
		return false
	}
	validRegex := func(r *v3matcherpb.RegexMatcher) bool {
		if r.GetRegex() == "" || len(r.GetRegex()) > MaxRegexLen {
			return false
		}
		_, err := regexp.Compile(r.GetRegex())
		return err == nil
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *v3routepb.HeaderMatcher_ExactMatch, *v3routepb.HeaderMatcher_RangeMatch, *v3routepb.HeaderMatcher_PresentMatch:
		return true
	case *v3routepb.HeaderMatcher_PrefixMatch:
		return s.PrefixMatch != ""
	case *v3routepb.HeaderMatcher_SuffixMatch:
		return s.SuffixMatch != ""
	case *v3routepb.HeaderMatcher_ContainsMatch:
		return s.ContainsMatch != ""
	case *v3routepb.HeaderMatcher_SafeRegexMatch:
		return validRegex(s.SafeRegexMatch)
	case *v3routepb.HeaderMatcher_StringMatch:
		switch p := s.StringMatch.GetMatchPattern().(type) {
		case *v3matcherpb.StringMatcher_Exact:
			return true
		case *v3matcherpb.StringMatcher_Prefix:
			return p.Prefix != ""
		case *v3matcherpb.StringMatcher_Suffix:
			return p.Suffix != ""
		case *v3matcherpb.StringMatcher_Contains:
			return p.Contains != ""
		case *v3matcherpb.StringMatcher_SafeRegex:
			return validRegex(p.SafeRegex)
		}
	}
	return false
}

// reference is a straightforward reading of Envoy's HeaderMatcher: the
// values joined with ",", a missing header matching nothing but
// present_match:false (or the empty value, with
// treat_missing_header_as_empty), ASCII case folding by lower-casing both
// sides, strconv for range_match, a NUL poisoning the value, and
// invert_match applied last.
func reference(t testing.TB, h *v3routepb.HeaderMatcher, values []string) bool {
	t.Helper()
	lower := func(s string) string {
		b := []byte(s)
		for i, c := range b {
			if 'A' <= c && c <= 'Z' {
				b[i] = c + 32
			}
		}
		return string(b)
	}
	present := len(values) > 0
	value := strings.Join(values, ",")
	if p, ok := h.GetHeaderMatchSpecifier().(*v3routepb.HeaderMatcher_PresentMatch); ok {
		return (present == p.PresentMatch) != h.GetInvertMatch()
	}
	if !present && !h.GetTreatMissingHeaderAsEmpty() {
		return false
	}
	str := func(m *v3matcherpb.StringMatcher) bool {
		v := value
		if m.GetIgnoreCase() {
			v = lower(v)
		}
		norm := func(p string) string {
			if m.GetIgnoreCase() {
				return lower(p)
			}
			return p
		}
		switch p := m.GetMatchPattern().(type) {
		case *v3matcherpb.StringMatcher_Exact:
			return v == norm(p.Exact)
		case *v3matcherpb.StringMatcher_Prefix:
			return strings.HasPrefix(v, norm(p.Prefix))
		case *v3matcherpb.StringMatcher_Suffix:
			return strings.HasSuffix(v, norm(p.Suffix))
		case *v3matcherpb.StringMatcher_Contains:
			return strings.Contains(v, norm(p.Contains))
		case *v3matcherpb.StringMatcher_SafeRegex:
			return fullMatch(p.SafeRegex.GetRegex(), value)
		}
		t.Fatalf("reference: string matcher %v", m)
		return false
	}
	var ok bool
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *v3routepb.HeaderMatcher_ExactMatch:
		ok = value == s.ExactMatch
	case *v3routepb.HeaderMatcher_PrefixMatch:
		ok = strings.HasPrefix(value, s.PrefixMatch)
	case *v3routepb.HeaderMatcher_SuffixMatch:
		ok = strings.HasSuffix(value, s.SuffixMatch)
	case *v3routepb.HeaderMatcher_ContainsMatch:
		ok = strings.Contains(value, s.ContainsMatch)
	case *v3routepb.HeaderMatcher_SafeRegexMatch:
		ok = fullMatch(s.SafeRegexMatch.GetRegex(), value)
	case *v3routepb.HeaderMatcher_StringMatch:
		ok = str(s.StringMatch)
	case *v3routepb.HeaderMatcher_RangeMatch:
		n, err := strconv.ParseInt(value, 10, 64)
		ok = err == nil && s.RangeMatch.GetStart() <= n && n < s.RangeMatch.GetEnd()
	default:
		t.Fatalf("reference: specifier %T", s)
	}
	if strings.Contains(value, "\x00") {
		ok = false
	}
	return ok != h.GetInvertMatch()
}

// fullMatch reports whether expr matches the whole of v, without anchoring
// it: leftmost-longest finds a match from 0 to len(v) if there is one.
func fullMatch(expr, v string) bool {
	re := regexp.MustCompile(expr)
	re.Longest()
	loc := re.FindStringIndex(v)
	return loc != nil && loc[0] == 0 && loc[1] == len(v)
}

// fuzzMatcher builds the header matcher the fuzz inputs describe.
func fuzzMatcher(kind uint8, pattern string, flags uint8, lo, hi int64) *v3routepb.HeaderMatcher {
	h := &v3routepb.HeaderMatcher{
		Name:                      "x-h",
		InvertMatch:               flags&1 != 0,
		TreatMissingHeaderAsEmpty: flags&2 != 0,
	}
	if flags&8 != 0 {
		h.Name = "X-H"
	}
	sm := func(m *v3matcherpb.StringMatcher) *v3routepb.HeaderMatcher_StringMatch {
		m.IgnoreCase = flags&4 != 0
		return &v3routepb.HeaderMatcher_StringMatch{StringMatch: m}
	}
	switch kind % 12 {
	case 0:
		h.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: pattern}
	case 1:
		h.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_PrefixMatch{PrefixMatch: pattern}
	case 2:
		h.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_SuffixMatch{SuffixMatch: pattern}
	case 3:
		h.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_ContainsMatch{ContainsMatch: pattern}
	case 4:
		h.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &v3matcherpb.RegexMatcher{Regex: pattern}}
	case 5:
		h.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_RangeMatch{RangeMatch: &v3typepb.Int64Range{Start: lo, End: hi}}
	case 6:
		h.HeaderMatchSpecifier = &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: flags&16 != 0}
	case 7:
		h.HeaderMatchSpecifier = sm(exact(pattern))
	case 8:
		h.HeaderMatchSpecifier = sm(prefix(pattern))
	case 9:
		h.HeaderMatchSpecifier = sm(suffix(pattern))
	case 10:
		h.HeaderMatchSpecifier = sm(contains(pattern))
	case 11:
		h.HeaderMatchSpecifier = sm(regex(pattern))
	}
	return h
}

// FuzzHeaderMatcher checks compiled header matchers against the reference
// implementation above: CompileHeader refuses exactly what the reference
// holds invalid, and every matcher it compiles decides as the reference
// does. values is split on ";" into up to n%4 values (0: header missing).
func FuzzHeaderMatcher(f *testing.F) {
	for _, s := range []struct {
		kind    uint8
		pattern string
		flags   uint8
		lo, hi  int64
		values  string
		n       uint8
	}{
		{0, "a", 0, 0, 0, "a", 1},
		{0, "a,b", 0, 0, 0, "a;b", 2},
		{0, "", 2, 0, 0, "", 0},
		{1, "ab", 1, 0, 0, "abc", 1},
		{2, "bc", 0, 0, 0, "x;abc", 2},
		{3, ",", 0, 0, 0, "a;b;c", 3},
		{4, "[a-z]+", 0, 0, 0, "abc", 1},
		{4, "a)|(.*", 0, 0, 0, "abc", 1},
		{4, "^$", 2, 0, 0, "", 0},
		{5, "", 0, -10, 0, "-1", 1},
		{5, "", 3, 0, 10, "", 0},
		{5, "", 0, 0, 10, "+5", 1},
		{5, "", 0, -1 << 63, 1<<63 - 1, "-9223372036854775808", 1},
		{5, "", 0, 0, 1<<63 - 1, "9223372036854775808", 1},
		{6, "", 16, 0, 0, "", 0},
		{6, "", 17, 0, 0, "x", 1},
		{6, "", 2, 0, 0, "", 0},
		{7, "PUBLIC", 4, 0, 0, "public", 1},
		{7, "k", 4, 0, 0, "\u212a", 1},
		{8, "Bear", 4, 0, 0, "bearer x", 1},
		{9, "ING", 12, 0, 0, "thing", 1},
		{10, "MiD", 5, 0, 0, "amidst;MID", 2},
		{11, "a+", 4, 0, 0, "AA", 1},
		{1, "a", 0, 0, 0, "a\x00", 1},
		{1, "a", 1, 0, 0, "a\x00;ab", 2},
	} {
		f.Add(s.kind, s.pattern, s.flags, s.lo, s.hi, s.values, s.n)
	}
	f.Fuzz(func(t *testing.T, kind uint8, pattern string, flags uint8, lo, hi int64, raw string, n uint8) {
		h := fuzzMatcher(kind, pattern, flags, lo, hi)
		var values []string
		if n%4 > 0 {
			values = strings.SplitN(raw, ";", int(n%4))
		}
		m, err := CompileHeader(h)
		if valid := refValid(h); (err == nil) != valid {
			t.Fatalf("CompileHeader(%v) = %v, reference says valid %v", h, err, valid)
		}
		if err != nil {
			return
		}
		if m.Name() != "x-h" {
			t.Fatalf("CompileHeader(%v).Name() = %q, want x-h", h, m.Name())
		}
		if got, want := m.Match(values), reference(t, h, values); got != want {
			t.Fatalf("CompileHeader(%v).Match(%q) = %v, reference %v", h, values, got, want)
		}
	})
}
