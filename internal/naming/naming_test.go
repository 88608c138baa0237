package naming

import (
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		want string // error text; empty if valid
	}{
		{"reviews", ""},
		{"a", ""},
		{"reviews-v2", ""},
		{"0ab", ""},
		{strings.Repeat("a", 63), ""},
		{strings.Repeat("a", 64), `"` + strings.Repeat("a", 64) + `" is not a valid name (lowercase letters, digits and '-', at most 63)`},
		{"", `"" is not a valid name (lowercase letters, digits and '-', at most 63)`},
		{"Reviews", `"Reviews" is not a valid name (lowercase letters, digits and '-', at most 63)`},
		{"reviews.shop", `"reviews.shop" is not a valid name (lowercase letters, digits and '-', at most 63)`},
		{"-reviews", `"-reviews" is not a valid name (lowercase letters, digits and '-', at most 63)`},
		{"reviews-", `"reviews-" is not a valid name (lowercase letters, digits and '-', at most 63)`},
		{"re_views", `"re_views" is not a valid name (lowercase letters, digits and '-', at most 63)`},
	}
	for _, tt := range tests {
		got := ""
		if err := ValidateName(tt.name); err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("ValidateName(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestValidateLabels(t *testing.T) {
	tests := []struct {
		labels map[string]string
		want   string // error text; empty if valid
	}{
		{nil, ""},
		{map[string]string{"app": "reviews", "version": "v1", "example.com/tier": "Gold_1.x", "empty": ""}, ""},
		{map[string]string{strings.Repeat("k", 63): strings.Repeat("v", 63)}, ""},
		{map[string]string{"bad key": "v"}, `"bad key" is not a valid label key`},
		{map[string]string{"-app": "v"}, `"-app" is not a valid label key`},
		{map[string]string{"": "v"}, `"" is not a valid label key`},
		{map[string]string{"Example.com/app": "v"}, `"Example.com/app" is not a valid label key`},
		{map[string]string{"app": "not ok"}, `label "app": "not ok" is not a valid label value`},
		{map[string]string{"app": "-v"}, `label "app": "-v" is not a valid label value`},
		{map[string]string{"app": strings.Repeat("v", 64)}, `label "app": "` + strings.Repeat("v", 64) + `" is not a valid label value`},
	}
	for _, tt := range tests {
		got := ""
		if err := ValidateLabels(tt.labels); err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("ValidateLabels(%q) = %q, want %q", tt.labels, got, tt.want)
		}
	}
}

func TestIsDNS1123Subdomain(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want bool
	}{
		{"reviews", true},
		{"reviews.shop.svc.cluster.local", true},
		{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63), true},
		{strings.Repeat("a.", 126) + "a", true}, // 253
		{strings.Repeat("a.", 127) + "a", false},
		{strings.Repeat("a", 64), true}, // as in Kubernetes, only the whole name is bounded
		{"", false},
		{"Reviews.shop", false},
		{"reviews..shop", false},
		{"reviews.", false},
		{".reviews", false},
	} {
		if got := IsDNS1123Subdomain(tt.s); got != tt.want {
			t.Errorf("IsDNS1123Subdomain(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}
