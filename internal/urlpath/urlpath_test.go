package urlpath

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonical(t *testing.T) {
	tests := []struct {
		raw     string
		want    string
		wantErr bool
	}{
		{raw: "/", want: "/"},
		{raw: "/admin", want: "/admin"},
		{raw: "//admin", want: "/admin"},
		{raw: "///admin//x", want: "/admin/x"},
		{raw: "/x/../admin", want: "/admin"},
		{raw: "/./admin", want: "/admin"},
		{raw: "/../../admin", want: "/admin"},
		{raw: "/%2e%2e/admin", want: "/admin"},
		{raw: "/%2E/admin", want: "/admin"},
		{raw: "/%61dmin", want: "/admin"},
		{raw: "/%7Euser", want: "/~user"},
		{raw: "/admin?x=1", want: "/admin"},
		{raw: "/admin#frag", want: "/admin"},
		{raw: "/admin/", want: "/admin/"},
		{raw: "/admin/.", want: "/admin/"},
		{raw: "/admin/x/..", want: "/admin/"},
		{raw: "/ADMIN", want: "/ADMIN"},
		{raw: "/a%3ab", want: "/a%3Ab"},
		{raw: "/a%25b", want: "/a%25b"},
		{raw: "/a%2561", want: "/a%2561"},
		{raw: "/caf\xc3\xa9", want: "/caf%C3%A9"},
		{raw: "/pkg.Svc/Method", want: "/pkg.Svc/Method"},
		{raw: "", wantErr: true},
		{raw: "pkg.Svc/Method", wantErr: true},
		{raw: "admin", wantErr: true},
		{raw: "?/admin", wantErr: true},
		{raw: "%2Fadmin", wantErr: true},
		{raw: "/%2Fadmin", wantErr: true},
		{raw: "/%2fadmin", wantErr: true},
		{raw: "/%5Cadmin", wantErr: true},
		{raw: "/\\admin", wantErr: true},
		{raw: "\\admin", wantErr: true},
		{raw: "/ad\x00min", wantErr: true},
		{raw: "/ad%00min", wantErr: true},
		{raw: "/ad\nmin", wantErr: true},
		{raw: "/ad%0amin", wantErr: true},
		{raw: "/ad%", wantErr: true},
		{raw: "/ad%6", wantErr: true},
		{raw: "/ad%zz", wantErr: true},
	}
	for _, tt := range tests {
		got, err := Canonical(tt.raw)
		if tt.wantErr {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Canonical(%q) = %q, %v, want error wrapping ErrInvalid", tt.raw, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Canonical(%q) = %q, %v, want %q, nil", tt.raw, got, err, tt.want)
		}
	}
}

// checkCanonical reports what is wrong with p as a canonical path.
func checkCanonical(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return "does not begin with '/'"
	case strings.Contains(p, "//"):
		return "holds \"//\""
	case strings.Contains(p, "/./") || strings.HasSuffix(p, "/."):
		return "holds a \".\" segment"
	case strings.Contains(p, "/../") || strings.HasSuffix(p, "/.."):
		return "holds a \"..\" segment"
	case strings.ContainsAny(p, "?#\\\x00"):
		return "holds '?', '#', '\\' or NUL"
	}
	return ""
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{
		"/", "/admin", "//admin", "/x/../admin", "/./admin", "%2Fadmin", "/%61dmin",
		"/admin#x", "/admin?x", "/ADMIN", "\\admin", "pkg.Svc/Method", "/a/%2e%2e/b",
		"/a/.%2e/b", "/%25", "/\xff", "/a//./../b/", "/..", "/.", "/%2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := Canonical(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Canonical(%q) = %v, want an error wrapping ErrInvalid", raw, err)
			}
			return
		}
		if msg := checkCanonical(got); msg != "" {
			t.Fatalf("Canonical(%q) = %q, which %s", raw, got, msg)
		}
		again, err := Canonical(got)
		if err != nil || again != got {
			t.Fatalf("Canonical(%q) = %q, %v, want %q, nil (idempotent)", got, again, err, got)
		}
	})
}

// FuzzCanonicalFastPath checks that a path Canonical returns as it is
// (its fast path) is what the full decoding and resolution would make of
// it.
func FuzzCanonicalFastPath(f *testing.F) {
	for _, s := range []string{
		"/", "/a", "/a/", "/a//", "//a", "/a/./b", "/a/../b", "/.", "/..", "/.a", "/..a",
		"/a.", "/a/.b/", "/a/b/..", "/a/b/.", "/%61", "/a\x7f", "/\xe2\x82\xac", "/a\\b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if !strings.HasPrefix(p, "/") || !isCanonical(p) {
			return
		}
		if strings.ContainsAny(p, "%\\") {
			t.Fatalf("isCanonical(%q) = true for a path with an escape or a backslash", p)
		}
		for i := 0; i < len(p); i++ {
			if p[i] < 0x20 || p[i] >= 0x7f {
				t.Fatalf("isCanonical(%q) = true for a path with byte %#x", p, p[i])
			}
		}
		if got := resolveSegments(p); got != p {
			t.Fatalf("isCanonical(%q) = true, but its segments resolve to %q", p, got)
		}
	})
}
