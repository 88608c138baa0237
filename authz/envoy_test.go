package authz

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"errors"
	"strings"
	"testing"

	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestEnvoyMatcherSemantics holds the cases where the engine's matchers
// changed when they moved onto package internal/matcher, shared with
// routing, and took Envoy's semantics where the two used to differ.
func TestEnvoyMatcherSemantics(t *testing.T) {
	hdr := func(h *v3routepb.HeaderMatcher) *v3rbacpb.Principal {
		return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Header{Header: h}}
	}
	x := func(vals ...string) Request {
		if vals == nil {
			return Request{Path: "/"}
		}
		return Request{Path: "/", Headers: map[string][]string{"x": vals}}
	}
	rangeMatch := func(lo, hi int64) *v3routepb.HeaderMatcher {
		return &v3routepb.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &v3routepb.HeaderMatcher_RangeMatch{RangeMatch: &v3typepb.Int64Range{Start: lo, End: hi}}}
	}
	foldExact := func(s string) *v3rbacpb.Principal {
		return sm(&v3matcherpb.StringMatcher{IgnoreCase: true, MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: s}})
	}
	tests := []struct {
		name string
		id   *v3rbacpb.Principal
		req  Request
		want bool
	}{
		// range_match was refused (ErrUnsupported); routes matched it.
		{"range match", hdr(rangeMatch(1, 2)), x("1"), true},
		{"range match end exclusive", hdr(rangeMatch(1, 2)), x("2"), false},
		{"range match plus sign", hdr(rangeMatch(1, 10)), x("+5"), true},
		{"range match not a number", hdr(rangeMatch(1, 10)), x("5x"), false},
		{"range match repeated", hdr(rangeMatch(1, 10)), x("1", "2"), false},
		// An inverted value matcher used to match a missing header; in
		// Envoy (and grpc-go) a missing header matches no value matcher,
		// inverted or not, unless treat_missing_header_as_empty is set.
		{"inverted matcher on a missing header", hdr(&v3routepb.HeaderMatcher{Name: "x", InvertMatch: true,
			HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: "a"}}), x(), false},
		{"inverted matcher on a missing header, missing as empty", hdr(&v3routepb.HeaderMatcher{Name: "x", InvertMatch: true, TreatMissingHeaderAsEmpty: true,
			HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: "a"}}), x(), true},
		{"inverted range on a missing header", hdr(func() *v3routepb.HeaderMatcher { h := rangeMatch(0, 10); h.InvertMatch = true; return h }()), x(), false},
		// ignore_case folded Unicode (strings.EqualFold); Envoy folds
		// ASCII letters only.
		{"ignore_case folds ASCII", foldExact("spiffe://td/K"), principal("spiffe://TD/k"), true},
		{"ignore_case does not fold the Kelvin sign", foldExact("spiffe://td/k"), principal("spiffe://td/\u212a"), false},
		{"ignore_case does not fold long s", foldExact("spiffe://td/s"), principal("spiffe://td/\u017f"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := New([]*v3rbacpb.RBAC{rbac(v3rbacpb.RBAC_ALLOW, "p", idPolicy(tt.id))})
			if err != nil {
				t.Fatalf("New() = %v", err)
			}
			if got := e.Authorize(&tt.req).Allowed; got != tt.want {
				t.Errorf("Authorize(%+v).Allowed = %v, want %v", tt.req, got, tt.want)
			}
		})
	}
}

func principal(p string) Request { return Request{Path: "/", Principal: p} }

// TestEnvoyMatcherValidation holds the policies New refuses, or accepts,
// since its matchers follow Envoy's validation rules.
func TestEnvoyMatcherValidation(t *testing.T) {
	hdr := func(s v3routepb.HeaderMatcher_PrefixMatch) *v3rbacpb.Principal {
		return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Header{Header: &v3routepb.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &s}}}
	}
	maxProgram := re("a+")
	maxProgram.GetSafeRegex().EngineType = &v3matcherpb.RegexMatcher_GoogleRe2{GoogleRe2: &v3matcherpb.RegexMatcher_GoogleRE2{MaxProgramSize: wrapperspb.UInt32(100)}}
	tests := []struct {
		name    string
		id      *v3rbacpb.Principal
		wantErr error  // nil: accepted
		wantMsg string // a substring naming the field
	}{
		// Accepted, matching unanchored ("^(?:a)|(.*)$"); RE2 refuses it.
		{"regex breaking out of the anchors", sm(re("a)|(.*")), ErrInvalidPolicy, `principal_name.safe_regex.regex`},
		// Accepted, matching only ""; Envoy requires a non-empty regex.
		{"empty regex", sm(re("")), ErrInvalidPolicy, `principal_name.safe_regex.regex`},
		// Accepted, matching every value; Envoy requires a non-empty prefix.
		{"empty deprecated prefix_match", hdr(v3routepb.HeaderMatcher_PrefixMatch{}), ErrInvalidPolicy, `principals[0].header.prefix_match`},
		// Refused (ErrUnsupported); deprecated in Envoy, not read by
		// grpc-go or by routes: the MaxRegexLen limit applies instead.
		{"max_program_size", sm(maxProgram), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New([]*v3rbacpb.RBAC{rbac(v3rbacpb.RBAC_DENY, "p", idPolicy(tt.id))})
			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("New() = %v, want no error", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("New() = %v, want error %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
		})
	}
}
