package matcher

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Errors of the Compile functions, wrapped in an [*Error] naming the field.
var (
	// ErrUnsupported reports a matcher kind the package does not implement.
	ErrUnsupported = errors.New("matcher: not supported")
	// ErrInvalid reports a matcher Envoy would refuse: a missing or empty
	// pattern, a bad or oversized regular expression, an empty header name.
	ErrInvalid = errors.New("matcher: invalid")
)

// Error is an error of a Compile function. It wraps ErrUnsupported or
// ErrInvalid.
type Error struct {
	// Kind is ErrUnsupported or ErrInvalid.
	Kind error
	// Field is the path of the offending field below the compiled message
	// ("string_match.safe_regex.regex"); empty for the message itself.
	Field string
	// Msg says what is wrong with it.
	Msg string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return "matcher: " + e.Msg
	}
	return "matcher: " + e.Field + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Kind }

func invalid(field, format string, args ...any) error {
	return &Error{Kind: ErrInvalid, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func unsupported(field string) error {
	return &Error{Kind: ErrUnsupported, Field: field, Msg: "not supported"}
}

func join(parent, field string) string {
	if parent == "" {
		return field
	}
	return parent + "." + field
}

// MaxRegexLen is the longest safe_regex, in bytes, that the package
// compiles.
const MaxRegexLen = 1024

type stringKind uint8

const (
	kindExact stringKind = iota
	kindPrefix
	kindSuffix
	kindContains
	kindRegex
	kindSeparatedPrefix // a route's path_separated_prefix
)

// String is a compiled string matcher: an Envoy StringMatcher, a PathMatcher
// or a route's path specifier. Case-insensitive matchers fold ASCII letters
// only, as Envoy does.
type String struct {
	kind stringKind
	fold bool   // ignore_case; s is then ASCII lower-case
	s    string // the exact value, prefix, suffix or substring
	re   *regexp.Regexp
}

// Match reports whether v matches.
func (m *String) Match(v string) bool {
	switch m.kind {
	case kindExact:
		if m.fold {
			return len(v) == len(m.s) && hasPrefixFold(v, m.s)
		}
		return v == m.s
	case kindPrefix:
		if m.fold {
			return hasPrefixFold(v, m.s)
		}
		return strings.HasPrefix(v, m.s)
	case kindSuffix:
		if m.fold {
			return len(v) >= len(m.s) && hasPrefixFold(v[len(v)-len(m.s):], m.s)
		}
		return strings.HasSuffix(v, m.s)
	case kindContains:
		if m.fold {
			return containsFold(v, m.s)
		}
		return strings.Contains(v, m.s)
	case kindRegex:
		return m.re.MatchString(v)
	case kindSeparatedPrefix:
		if m.fold {
			if !hasPrefixFold(v, m.s) {
				return false
			}
		} else if !strings.HasPrefix(v, m.s) {
			return false
		}
		return len(v) == len(m.s) || v[len(m.s)] == '/'
	}
	return false
}

// CompileString compiles an Envoy StringMatcher. ignore_case folds ASCII
// letters and has no effect on safe_regex, as in Envoy.
func CompileString(m *v3matcherpb.StringMatcher) (*String, error) {
	return compileString("", m)
}

func compileString(field string, m *v3matcherpb.StringMatcher) (*String, error) {
	if m == nil {
		return nil, invalid(field, "not set")
	}
	fold := m.GetIgnoreCase()
	switch p := m.GetMatchPattern().(type) {
	case *v3matcherpb.StringMatcher_Exact:
		return newString(kindExact, fold, p.Exact), nil
	case *v3matcherpb.StringMatcher_Prefix:
		return nonEmpty(join(field, "prefix"), kindPrefix, fold, p.Prefix)
	case *v3matcherpb.StringMatcher_Suffix:
		return nonEmpty(join(field, "suffix"), kindSuffix, fold, p.Suffix)
	case *v3matcherpb.StringMatcher_Contains:
		return nonEmpty(join(field, "contains"), kindContains, fold, p.Contains)
	case *v3matcherpb.StringMatcher_SafeRegex:
		return compileRegex(join(field, "safe_regex"), p.SafeRegex)
	case *v3matcherpb.StringMatcher_Custom:
		return nil, unsupported(join(field, "custom"))
	case nil:
		return nil, invalid(field, "no match pattern set")
	default:
		return nil, unsupported(join(field, "match_pattern"))
	}
}

func newString(kind stringKind, fold bool, s string) *String {
	if fold {
		s = lowerASCII(s)
	}
	return &String{kind: kind, fold: fold, s: s}
}

// nonEmpty is newString for a pattern Envoy requires to be non-empty.
func nonEmpty(field string, kind stringKind, fold bool, s string) (*String, error) {
	if s == "" {
		return nil, invalid(field, "empty")
	}
	return newString(kind, fold, s), nil
}

// compileRegex compiles an RE2 expression that must match the whole value,
// as Envoy's safe_regex does. The expression must be valid on its own, so
// that it cannot break out of the anchoring ("a)|(.*" is refused, as RE2
// refuses it). google_re2.max_program_size, deprecated in Envoy, is not
// read; expressions are held to MaxRegexLen bytes instead.
func compileRegex(field string, r *v3matcherpb.RegexMatcher) (*String, error) {
	if r == nil {
		return nil, invalid(field, "not set")
	}
	expr := r.GetRegex()
	switch {
	case expr == "":
		return nil, invalid(field+".regex", "empty")
	case len(expr) > MaxRegexLen:
		return nil, invalid(field+".regex", "%d bytes exceeds the limit of %d", len(expr), MaxRegexLen)
	}
	tree, err := syntax.Parse(expr, syntax.Perl) // as regexp.Compile parses
	if err != nil {
		return nil, invalid(field+".regex", "%v", err)
	}
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		// A valid expression fails here only when a \Q without \E quotes
		// the closing ")$": anchor its parsed form instead.
		if re, err = regexp.Compile(`^(?:` + tree.String() + `)$`); err != nil {
			return nil, invalid(field+".regex", "%v", err)
		}
	}
	return &String{kind: kindRegex, re: re}, nil
}

// CompilePath compiles an Envoy PathMatcher (RBAC's url_path), to be
// matched against the request path without its query string.
func CompilePath(p *v3matcherpb.PathMatcher) (*String, error) {
	if p.GetPath() == nil {
		return nil, invalid("path", "not set")
	}
	return compileString("path", p.GetPath())
}

// CompileRoutePath compiles the path specifier of a route match (prefix,
// path, safe_regex or path_separated_prefix) with its case_sensitive, to
// be matched against the request path without its query string.
// case_sensitive has no effect on safe_regex, as in Envoy.
func CompileRoutePath(m *v3routepb.RouteMatch) (*String, error) {
	fold := m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()
	switch ps := m.GetPathSpecifier().(type) {
	case *v3routepb.RouteMatch_Prefix:
		return newString(kindPrefix, fold, ps.Prefix), nil
	case *v3routepb.RouteMatch_Path:
		return newString(kindExact, fold, ps.Path), nil
	case *v3routepb.RouteMatch_SafeRegex:
		return compileRegex("safe_regex", ps.SafeRegex)
	case *v3routepb.RouteMatch_PathSeparatedPrefix:
		p := ps.PathSeparatedPrefix
		if len(p) < 2 || strings.ContainsAny(p, "?#") || strings.HasSuffix(p, "/") {
			return nil, invalid("path_separated_prefix", "%q must be two bytes or more, hold no '?' or '#' and not end in '/'", p)
		}
		return newString(kindSeparatedPrefix, fold, p), nil
	case *v3routepb.RouteMatch_ConnectMatcher_:
		return nil, unsupported("connect_matcher")
	case *v3routepb.RouteMatch_PathMatchPolicy:
		return nil, unsupported("path_match_policy")
	case nil:
		return nil, invalid("path_specifier", "not set")
	default:
		return nil, unsupported("path_specifier")
	}
}

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// lowerASCII lower-cases the ASCII letters of s, as Envoy's
// absl::AsciiStrToLower.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lowerByte(b[j])
			}
			return string(b)
		}
	}
	return s
}

// hasPrefixFold reports whether v begins with lower, ASCII letters folded;
// lower is lower-case.
func hasPrefixFold(v, lower string) bool {
	if len(v) < len(lower) {
		return false
	}
	for i := 0; i < len(lower); i++ {
		if lowerByte(v[i]) != lower[i] {
			return false
		}
	}
	return true
}

// containsFold reports whether v contains lower, ASCII letters folded;
// lower is lower-case and non-empty.
func containsFold(v, lower string) bool {
	for i := 0; i+len(lower) <= len(v); i++ {
		if hasPrefixFold(v[i:], lower) {
			return true
		}
	}
	return false
}
