package urlpath

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid reports a request path that has no canonical form: it does
// not begin with '/', or it holds an encoded slash or backslash, a raw
// backslash, a control character or a malformed percent escape. Callers must
// deny such requests.
var ErrInvalid = errors.New("urlpath: invalid request path")

// Canonical returns the canonical form of a raw request path (an HTTP
// request-target in origin form or a gRPC :path), the form in which
// authorization policies and routes match it. It follows Envoy's
// normalize_path and merge_slashes with decoding of unreserved characters:
//
//   - the query (from the first '?') and the fragment (from the first '#')
//     are dropped;
//   - percent escapes of unreserved characters (ALPHA, DIGIT, '-', '.', '_',
//     '~') are decoded ("/%61dmin" is "/admin"); other escapes are kept, with
//     upper-case hex digits ("%3a" is "%3A");
//   - bytes outside ASCII are percent-encoded;
//   - runs of '/' are merged into one;
//   - "." and ".." segments are resolved; ".." never climbs above the root
//     ("/../a" is "/a").
//
// Case is kept: paths are case-sensitive, as in Istio, so "/ADMIN" and
// "/admin" are different paths. The path must begin with '/' (a gRPC path
// "pkg.Svc/Method" without one is rejected, not repaired). Encoded slashes
// and backslashes ("%2F", "%5C"), raw backslashes, encoded or raw NUL and
// other control characters, and malformed escapes are rejected with an error
// wrapping [ErrInvalid]; they are the classic ways around a path rule.
//
// The result begins with '/', holds no "//" and no "." or ".." segment, and
// Canonical(result) returns result unchanged.
func Canonical(raw string) (string, error) {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if !strings.HasPrefix(raw, "/") {
		return "", fmt.Errorf("%w: %q does not begin with '/'", ErrInvalid, raw)
	}
	if isCanonical(raw) {
		return raw, nil // the common case: nothing to decode, merge or resolve
	}
	// First pass: decode and validate byte by byte into decoded, in which a
	// '/' is always a real separator.
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "", fmt.Errorf("%w: malformed percent escape at offset %d", ErrInvalid, i)
			}
			d := unhex(raw[i+1])<<4 | unhex(raw[i+2])
			switch {
			case d == '/' || d == '\\':
				return "", fmt.Errorf("%w: encoded slash or backslash at offset %d", ErrInvalid, i)
			case d < 0x20 || d == 0x7f:
				return "", fmt.Errorf("%w: encoded control character at offset %d", ErrInvalid, i)
			case isUnreserved(d):
				b.WriteByte(d)
			default:
				writeEscape(&b, d)
			}
			i += 2
		case c == '\\':
			return "", fmt.Errorf("%w: backslash at offset %d", ErrInvalid, i)
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("%w: control character at offset %d", ErrInvalid, i)
		case c >= 0x80:
			writeEscape(&b, c)
		default:
			b.WriteByte(c)
		}
	}
	return resolveSegments(b.String()), nil
}

// isCanonical reports whether p, which begins with '/', is its own canonical
// form: no byte to decode, encode or reject, no empty segment but the last
// (a trailing slash), and no "." or ".." segment.
func isCanonical(p string) bool {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '%' || c == '\\' || c < 0x20 || c >= 0x7f:
			return false
		case c == '/' && i+1 < len(p):
			next := p[i+1:]
			switch {
			case next[0] == '/':
				return false // an empty segment before another
			case next[0] == '.' && (len(next) == 1 || next[1] == '/'):
				return false // "."
			case next[0] == '.' && next[1] == '.' && (len(next) == 2 || next[2] == '/'):
				return false // ".."
			}
		}
	}
	return true
}

// resolveSegments merges slashes and resolves dot segments of p, which
// begins with '/'.
func resolveSegments(p string) string {
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for _, s := range segs {
		trailing = false
		switch s {
		case "":
			trailing = true
		case ".":
			trailing = true
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = true
		default:
			out = append(out, s)
		}
	}
	res := "/" + strings.Join(out, "/")
	if trailing && len(out) > 0 {
		res += "/"
	}
	return res
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// isUnreserved reports whether c is an unreserved character of RFC 3986.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func writeEscape(b *strings.Builder, c byte) {
	const hex = "0123456789ABCDEF"
	b.WriteByte('%')
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&0xf])
}
