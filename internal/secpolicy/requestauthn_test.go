package secpolicy

import (
	"testing"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3jwtauthnpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
)

const raTestJWKS = `{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`

func raNamed(name string, rules ...*securityv1beta1.JWTRule) NamedRequestAuthentication {
	return NamedRequestAuthentication{Name: name, Namespace: "default", Spec: &securityv1beta1.RequestAuthentication{JwtRules: rules}}
}

func raConfig(providers map[string]*v3jwtauthnpb.JwtProvider, names ...string) *v3jwtauthnpb.JwtAuthentication {
	return &v3jwtauthnpb.JwtAuthentication{
		Providers: providers,
		Rules: []*v3jwtauthnpb.RequirementRule{{
			Match:           &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &v3jwtauthnpb.RequirementRule_Requires{Requires: IstioJWTRequirement(names)},
		}},
	}
}

func raLocal(jwks string) *v3jwtauthnpb.JwtProvider_LocalJwks {
	return &v3jwtauthnpb.JwtProvider_LocalJwks{LocalJwks: &v3corepb.DataSource{
		Specifier: &v3corepb.DataSource_InlineString{InlineString: jwks},
	}}
}

func raRemote(uri, cluster string, timeout time.Duration) *v3jwtauthnpb.JwtProvider_RemoteJwks {
	return &v3jwtauthnpb.JwtProvider_RemoteJwks{RemoteJwks: &v3jwtauthnpb.RemoteJwks{
		HttpUri: &v3corepb.HttpUri{
			Uri:              uri,
			HttpUpstreamType: &v3corepb.HttpUri_Cluster{Cluster: cluster},
			Timeout:          durationpb.New(timeout),
		},
		CacheDuration: durationpb.New(DefaultJWKSCacheDuration),
	}}
}

func TestRequestAuthenticationsMapsSupportedFields(t *testing.T) {
	tests := []struct {
		name string
		list []NamedRequestAuthentication
		want *v3jwtauthnpb.JwtAuthentication
	}{
		{
			name: "no resources",
			want: nil,
		},
		{
			name: "resource without rules",
			list: []NamedRequestAuthentication{raNamed("empty")},
			want: nil,
		},
		{
			name: "inline jwks with defaults",
			list: []NamedRequestAuthentication{raNamed("jwt", &securityv1beta1.JWTRule{Issuer: "iss", Jwks: raTestJWKS})},
			want: raConfig(map[string]*v3jwtauthnpb.JwtProvider{
				"default/jwt/0": {Issuer: "iss", JwksSourceSpecifier: raLocal(raTestJWKS)},
			}, "default/jwt/0"),
		},
		{
			name: "every supported field",
			list: []NamedRequestAuthentication{raNamed("jwt", &securityv1beta1.JWTRule{
				Issuer:                "https://accounts.example",
				Audiences:             []string{"reviews", "ratings"},
				JwksUri:               "https://accounts.example/jwks.json",
				FromHeaders:           []*securityv1beta1.JWTHeader{{Name: "x-jwt-assertion", Prefix: "Token "}, {Name: "x-raw"}},
				FromParams:            []string{"jwt"},
				OutputPayloadToHeader: "x-jwt-payload",
				ForwardOriginalToken:  true,
				Timeout:               durationpb.New(2 * time.Second),
			})},
			want: raConfig(map[string]*v3jwtauthnpb.JwtProvider{
				"default/jwt/0": {
					Issuer:               "https://accounts.example",
					Audiences:            []string{"reviews", "ratings"},
					JwksSourceSpecifier:  raRemote("https://accounts.example/jwks.json", "accounts.example:443", 2*time.Second),
					FromHeaders:          []*v3jwtauthnpb.JwtHeader{{Name: "x-jwt-assertion", ValuePrefix: "Token "}, {Name: "x-raw"}},
					FromParams:           []string{"jwt"},
					ForwardPayloadHeader: "x-jwt-payload",
					Forward:              true,
				},
			}, "default/jwt/0"),
		},
		{
			name: "http jwksUri with port and default timeout",
			list: []NamedRequestAuthentication{raNamed("jwt", &securityv1beta1.JWTRule{Issuer: "iss", JwksUri: "http://127.0.0.1:8080/keys"})},
			want: raConfig(map[string]*v3jwtauthnpb.JwtProvider{
				"default/jwt/0": {Issuer: "iss", JwksSourceSpecifier: raRemote("http://127.0.0.1:8080/keys", "127.0.0.1:8080", DefaultJWKSTimeout)},
			}, "default/jwt/0"),
		},
		{
			name: "several resources in name order, selector ignored",
			list: []NamedRequestAuthentication{
				{Name: "b", Namespace: "prod", Spec: &securityv1beta1.RequestAuthentication{
					Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}},
					JwtRules: []*securityv1beta1.JWTRule{{Issuer: "i3", Jwks: raTestJWKS}},
				}},
				raNamed("a", &securityv1beta1.JWTRule{Issuer: "i1", Jwks: raTestJWKS}, &securityv1beta1.JWTRule{Issuer: "i2", Jwks: raTestJWKS}),
			},
			want: raConfig(map[string]*v3jwtauthnpb.JwtProvider{
				"default/a/0": {Issuer: "i1", JwksSourceSpecifier: raLocal(raTestJWKS)},
				"default/a/1": {Issuer: "i2", JwksSourceSpecifier: raLocal(raTestJWKS)},
				"prod/b/0":    {Issuer: "i3", JwksSourceSpecifier: raLocal(raTestJWKS)},
			}, "default/a/0", "default/a/1", "prod/b/0"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RequestAuthentications(tt.list)
			if err != nil {
				t.Fatalf("RequestAuthentications(%s) = %v, want nil error", tt.name, err)
			}
			if diff := cmp.Diff(got, tt.want, protocmp.Transform()); diff != "" {
				t.Errorf("RequestAuthentications(%s) mismatch (-got +want):\n%s", tt.name, diff)
			}
			if got != nil {
				// A standard consumer (Envoy's own validation rules) accepts it.
				if err := got.ValidateAll(); err != nil {
					t.Errorf("RequestAuthentications(%s).ValidateAll() = %v, want nil", tt.name, err)
				}
			}
		})
	}
}

func TestIstioJWTRequirementShape(t *testing.T) {
	p := func(n string) *v3jwtauthnpb.JwtRequirement {
		return &v3jwtauthnpb.JwtRequirement{RequiresType: &v3jwtauthnpb.JwtRequirement_ProviderName{ProviderName: n}}
	}
	orMissing := func(n string) *v3jwtauthnpb.JwtRequirement {
		return &v3jwtauthnpb.JwtRequirement{RequiresType: &v3jwtauthnpb.JwtRequirement_RequiresAny{
			RequiresAny: &v3jwtauthnpb.JwtRequirementOrList{Requirements: []*v3jwtauthnpb.JwtRequirement{
				p(n), {RequiresType: &v3jwtauthnpb.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}},
			}},
		}}
	}
	tests := []struct {
		names []string
		want  *v3jwtauthnpb.JwtRequirement
	}{
		{[]string{"a"}, orMissing("a")},
		{[]string{"a", "b"}, &v3jwtauthnpb.JwtRequirement{RequiresType: &v3jwtauthnpb.JwtRequirement_RequiresAny{
			RequiresAny: &v3jwtauthnpb.JwtRequirementOrList{Requirements: []*v3jwtauthnpb.JwtRequirement{
				p("a"), p("b"),
				{RequiresType: &v3jwtauthnpb.JwtRequirement_RequiresAll{RequiresAll: &v3jwtauthnpb.JwtRequirementAndList{
					Requirements: []*v3jwtauthnpb.JwtRequirement{orMissing("a"), orMissing("b")},
				}}},
			}},
		}}},
	}
	for _, tt := range tests {
		got := IstioJWTRequirement(tt.names)
		if diff := cmp.Diff(got, tt.want, protocmp.Transform()); diff != "" {
			t.Errorf("IstioJWTRequirement(%q) mismatch (-got +want):\n%s", tt.names, diff)
		}
	}
}

func TestRequestAuthenticationsRejectsUnsupportedFields(t *testing.T) {
	rule := func(mutate func(*securityv1beta1.JWTRule)) NamedRequestAuthentication {
		r := &securityv1beta1.JWTRule{Issuer: "iss", Jwks: raTestJWKS}
		mutate(r)
		return raNamed("jwt", &securityv1beta1.JWTRule{Issuer: "ok", Jwks: raTestJWKS}, r)
	}
	tests := []struct {
		name string
		ra   NamedRequestAuthentication
		want string
	}{
		{"fromCookies", rule(func(r *securityv1beta1.JWTRule) { r.FromCookies = []string{"session"} }),
			`request authentication "default/jwt": jwtRules[1].fromCookies: not supported`},
		{"outputClaimToHeaders", rule(func(r *securityv1beta1.JWTRule) {
			r.OutputClaimToHeaders = []*securityv1beta1.ClaimToHeader{{Header: "x-sub", Claim: "sub"}}
		}), `request authentication "default/jwt": jwtRules[1].outputClaimToHeaders: not supported`},
		{"targetRef", NamedRequestAuthentication{Name: "jwt", Namespace: "default", Spec: &securityv1beta1.RequestAuthentication{
			TargetRef: &typev1beta1.PolicyTargetReference{Kind: "Gateway", Name: "gw"},
		}}, `request authentication "default/jwt": targetRef: not supported`},
		{"targetRefs", NamedRequestAuthentication{Name: "jwt", Namespace: "default", Spec: &securityv1beta1.RequestAuthentication{
			TargetRefs: []*typev1beta1.PolicyTargetReference{{Kind: "Service", Name: "s"}},
		}}, `request authentication "default/jwt": targetRefs: not supported`},
		{"nil spec", NamedRequestAuthentication{Name: "jwt", Namespace: "default"},
			`request authentication "default/jwt": spec: required`},
		{"nil rule", raNamed("jwt", nil), `request authentication "default/jwt": jwtRules[0]: must not be null`},
		{"no issuer", rule(func(r *securityv1beta1.JWTRule) { r.Issuer = "" }),
			`request authentication "default/jwt": jwtRules[1].issuer: required`},
		{"jwks and jwksUri", rule(func(r *securityv1beta1.JWTRule) { r.JwksUri = "https://x.example/jwks" }),
			`request authentication "default/jwt": jwtRules[1]: jwks and jwksUri are mutually exclusive`},
		{"neither jwks nor jwksUri", rule(func(r *securityv1beta1.JWTRule) { r.Jwks = "" }),
			`request authentication "default/jwt": jwtRules[1]: jwksUri or jwks is required (OIDC discovery is not supported)`},
		{"jwksUri not http", rule(func(r *securityv1beta1.JWTRule) { r.Jwks = ""; r.JwksUri = "file:///etc/jwks.json" }),
			`request authentication "default/jwt": jwtRules[1].jwksUri: "file:///etc/jwks.json" is not an http(s) URL`},
		{"jwksUri without host", rule(func(r *securityv1beta1.JWTRule) { r.Jwks = ""; r.JwksUri = "https:///jwks" }),
			`request authentication "default/jwt": jwtRules[1].jwksUri: "https:///jwks" is not an http(s) URL`},
		{"jwks not JSON", rule(func(r *securityv1beta1.JWTRule) { r.Jwks = "{" }),
			`request authentication "default/jwt": jwtRules[1].jwks: invalid JSON Web Key Set: unexpected end of JSON input`},
		{"jwks without keys", rule(func(r *securityv1beta1.JWTRule) { r.Jwks = `{"keys":[]}` }),
			`request authentication "default/jwt": jwtRules[1].jwks: invalid JSON Web Key Set: no keys`},
		{"timeout with inline jwks", rule(func(r *securityv1beta1.JWTRule) { r.Timeout = durationpb.New(time.Second) }),
			`request authentication "default/jwt": jwtRules[1].timeout: only valid with jwksUri`},
		{"zero timeout", rule(func(r *securityv1beta1.JWTRule) {
			r.Jwks, r.JwksUri, r.Timeout = "", "https://x.example/jwks", durationpb.New(0)
		}), `request authentication "default/jwt": jwtRules[1].timeout: must be a positive duration`},
		{"empty audience", rule(func(r *securityv1beta1.JWTRule) { r.Audiences = []string{"a", ""} }),
			`request authentication "default/jwt": jwtRules[1].audiences[1]: must not be empty`},
		{"bad header name", rule(func(r *securityv1beta1.JWTRule) {
			r.FromHeaders = []*securityv1beta1.JWTHeader{{Name: "bad name"}}
		}), `request authentication "default/jwt": jwtRules[1].fromHeaders[0].name: invalid header name "bad name"`},
		{"empty param", rule(func(r *securityv1beta1.JWTRule) { r.FromParams = []string{""} }),
			`request authentication "default/jwt": jwtRules[1].fromParams[0]: must not be empty`},
		{"bad payload header", rule(func(r *securityv1beta1.JWTRule) { r.OutputPayloadToHeader = "x:y" }),
			`request authentication "default/jwt": jwtRules[1].outputPayloadToHeader: invalid header name "x:y"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RequestAuthentications([]NamedRequestAuthentication{raNamed("fine", &securityv1beta1.JWTRule{Issuer: "i", Jwks: raTestJWKS}), tt.ra})
			if err == nil {
				t.Fatalf("RequestAuthentications(%s) = %v, nil, want error %q", tt.name, got, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("RequestAuthentications(%s) = %q, want %q", tt.name, err, tt.want)
			}
		})
	}
}
