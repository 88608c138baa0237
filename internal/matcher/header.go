package matcher

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"strings"
	"sync"
	"unsafe"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

type headerKind uint8

const (
	headerValue   headerKind = iota // a string matcher on the value
	headerRange                     // range_match
	headerPresent                   // present_match
)

// Header is a compiled Envoy route HeaderMatcher.
type Header struct {
	name         string
	kind         headerKind
	str          String // headerValue
	lo, hi       int64  // headerRange: [lo, hi)
	present      bool   // headerPresent: present_match
	invert       bool
	missingEmpty bool // treat_missing_header_as_empty, for value and range matchers
}

// CompileHeader compiles an Envoy route HeaderMatcher, with Envoy's
// semantics:
//
//   - the name is matched case-insensitively (it is lower-cased here, as
//     Envoy does; request header names must be lower-case);
//   - a repeated header is matched as its values joined with "," (Envoy's
//     rule since CVE-2020-25017, and grpc-go's);
//   - a missing header matches no value or range matcher, inverted or not,
//     unless treat_missing_header_as_empty makes it the empty value;
//     present_match ignores treat_missing_header_as_empty;
//   - range_match takes an optional sign and decimal digits, the whole value;
//   - a value holding NUL matches no value or range matcher (Envoy never
//     sees one; it is refused before matching).
//
// The deprecated exact_match, prefix_match, suffix_match, contains_match and
// safe_regex_match are understood; exact_match "" matches only the empty
// value, as grpc-go reads it. An unset specifier is refused, as grpc-go
// refuses it.
func CompileHeader(h *v3routepb.HeaderMatcher) (*Header, error) {
	if h == nil {
		return nil, invalid("", "not set")
	}
	name := h.GetName()
	if name == "" {
		return nil, invalid("name", "empty")
	}
	if strings.ContainsAny(name, "\x00\r\n") {
		return nil, invalid("name", "%q holds NUL, CR or LF", name)
	}
	out := &Header{name: lowerASCII(name), invert: h.GetInvertMatch()}
	var str *String
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *v3routepb.HeaderMatcher_ExactMatch:
		str = newString(kindExact, false, s.ExactMatch)
	case *v3routepb.HeaderMatcher_PrefixMatch:
		str, err = nonEmpty("prefix_match", kindPrefix, false, s.PrefixMatch)
	case *v3routepb.HeaderMatcher_SuffixMatch:
		str, err = nonEmpty("suffix_match", kindSuffix, false, s.SuffixMatch)
	case *v3routepb.HeaderMatcher_ContainsMatch:
		str, err = nonEmpty("contains_match", kindContains, false, s.ContainsMatch)
	case *v3routepb.HeaderMatcher_SafeRegexMatch:
		str, err = compileRegex("safe_regex_match", s.SafeRegexMatch)
	case *v3routepb.HeaderMatcher_StringMatch:
		str, err = compileString("string_match", s.StringMatch)
	case *v3routepb.HeaderMatcher_RangeMatch:
		out.kind = headerRange
		out.lo, out.hi = s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *v3routepb.HeaderMatcher_PresentMatch:
		out.kind = headerPresent
		out.present = s.PresentMatch
	case nil:
		return nil, invalid("", "no match specifier set")
	default:
		return nil, unsupported("header_match_specifier")
	}
	if err != nil {
		return nil, err
	}
	if str != nil {
		out.str = *str
	}
	out.missingEmpty = h.GetTreatMissingHeaderAsEmpty() && out.kind != headerPresent
	return out, nil
}

// Name returns the lower-case name of the header the matcher reads.
func (h *Header) Name() string { return h.name }

// TreatsMissingAsEmpty reports whether a missing header is matched as the
// empty value (treat_missing_header_as_empty on a value or range matcher).
func (h *Header) TreatsMissingAsEmpty() bool { return h.missingEmpty }

// Match reports whether a request carrying values for the header matches:
// none (nil or empty) when the request lacks it, several when it repeats
// it, matched as their comma-joined value.
func (h *Header) Match(values []string) bool {
	switch len(values) {
	case 0:
		return h.MatchMissing()
	case 1:
		return h.MatchValue(values[0])
	}
	if h.kind == headerPresent {
		return h.present != h.invert
	}
	bp := joinPool.Get().(*[]byte)
	b := (*bp)[:0]
	for i, v := range values {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, v...)
	}
	// The joined value lives in the pooled buffer only while it is matched;
	// no matcher keeps its input (regexp forgets it when it returns).
	ok := h.MatchValue(unsafe.String(unsafe.SliceData(b), len(b)))
	if cap(b) <= maxPooledJoin {
		*bp = b
		joinPool.Put(bp)
	}
	return ok
}

// MatchValue reports whether a request whose header has the single value v
// matches.
func (h *Header) MatchValue(v string) bool {
	var ok bool
	switch h.kind {
	case headerPresent:
		ok = h.present
	case headerRange:
		n, valid := parseInt(v)
		ok = valid && h.lo <= n && n < h.hi
	default:
		ok = strings.IndexByte(v, 0) < 0 && h.str.Match(v)
	}
	return ok != h.invert
}

// MatchMissing reports whether a request lacking the header matches.
func (h *Header) MatchMissing() bool {
	switch {
	case h.kind == headerPresent:
		return !h.present != h.invert
	case h.missingEmpty:
		return h.MatchValue("")
	}
	return false
}

// joinPool holds the buffers repeated headers are joined in; buffers grown
// past maxPooledJoin are left to the garbage collector.
var joinPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

const maxPooledJoin = 64 << 10

// parseInt parses a whole value as range_match reads it: an optional '+' or
// '-' and decimal digits, within int64. Unlike strconv.ParseInt it does not
// allocate on failure.
func parseInt(s string) (int64, bool) {
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if s == "" {
		return 0, false
	}
	const cutoff = 1 << 63 // the magnitude of the most negative int64
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (cutoff-d)/10 { // n*10 + d > cutoff
			return 0, false
		}
		n = n*10 + d
	}
	if neg {
		return -int64(n), true // -(1<<63) wraps to itself, as it should
	}
	if n > cutoff-1 {
		return 0, false
	}
	return int64(n), true
}
