package secpolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3jwtauthnpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	securityv1beta1 "istio.io/api/security/v1beta1"
)

// DefaultJWKSTimeout is the JWKS fetch timeout of a jwtRule that sets no
// timeout, as in Istio.
const DefaultJWKSTimeout = 5 * time.Second

// DefaultJWKSCacheDuration is how long a fetched remote JWKS is trusted
// before it is fetched again (Envoy's default).
const DefaultJWKSCacheDuration = 10 * time.Minute

// NamedRequestAuthentication is one Istio RequestAuthentication resource
// with its identity. The zero value has no spec and is rejected by
// RequestAuthentications.
type NamedRequestAuthentication struct {
	Name      string
	Namespace string
	Spec      *securityv1beta1.RequestAuthentication
}

func (n NamedRequestAuthentication) key() string { return n.Namespace + "/" + n.Name }

// RequestAuthentications translates the RequestAuthentication resources
// already selected for one workload (their selectors are not looked at)
// into one Envoy jwt_authn filter config.
//
// Every jwtRule becomes a JwtProvider named "<namespace>/<name>/<index>";
// resources are taken in (namespace, name) order so the output is
// deterministic. The single requirement rule has Istio's shape: for one
// provider, "provider OR allow_missing"; for several, "P1 OR ... OR Pn OR
// (P1 OR allow_missing) AND ... AND (Pn OR allow_missing)". So a request
// without a token passes authentication and a request with an invalid
// token fails it.
//
// It returns nil and no error when the resources hold no jwtRules. A field
// Trellis does not implement (fromCookies, outputClaimToHeaders, targetRef,
// targetRefs, OIDC discovery) is an error naming the resource and the field:
//
//	request authentication "default/jwt": jwtRules[0].fromCookies: not supported
func RequestAuthentications(list []NamedRequestAuthentication) (*v3jwtauthnpb.JwtAuthentication, error) {
	sorted := slices.Clone(list)
	slices.SortStableFunc(sorted, func(a, b NamedRequestAuthentication) int {
		return strings.Compare(a.key(), b.key())
	})
	providers := map[string]*v3jwtauthnpb.JwtProvider{}
	var names []string
	for _, ra := range sorted {
		if err := raCheckSpec(ra.Spec); err != nil {
			return nil, fmt.Errorf("request authentication %q: %w", ra.key(), err)
		}
		for i, rule := range ra.Spec.GetJwtRules() {
			p, err := raJWTProvider(rule)
			if err != nil {
				return nil, fmt.Errorf("request authentication %q: jwtRules[%d]%w", ra.key(), i, err)
			}
			name := fmt.Sprintf("%s/%d", ra.key(), i)
			providers[name] = p
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	return &v3jwtauthnpb.JwtAuthentication{
		Providers: providers,
		Rules: []*v3jwtauthnpb.RequirementRule{{
			Match: &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &v3jwtauthnpb.RequirementRule_Requires{
				Requires: IstioJWTRequirement(names),
			},
		}},
	}, nil
}

// IstioJWTRequirement returns Istio's requirement over the named providers:
// a request passes with no token or with a token valid for one of them.
func IstioJWTRequirement(names []string) *v3jwtauthnpb.JwtRequirement {
	provider := func(n string) *v3jwtauthnpb.JwtRequirement {
		return &v3jwtauthnpb.JwtRequirement{RequiresType: &v3jwtauthnpb.JwtRequirement_ProviderName{ProviderName: n}}
	}
	orMissing := func(n string) *v3jwtauthnpb.JwtRequirement {
		return &v3jwtauthnpb.JwtRequirement{RequiresType: &v3jwtauthnpb.JwtRequirement_RequiresAny{
			RequiresAny: &v3jwtauthnpb.JwtRequirementOrList{Requirements: []*v3jwtauthnpb.JwtRequirement{
				provider(n),
				{RequiresType: &v3jwtauthnpb.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}},
			}},
		}}
	}
	if len(names) == 1 {
		return orMissing(names[0])
	}
	var anyOf, allOf []*v3jwtauthnpb.JwtRequirement
	for _, n := range names {
		anyOf = append(anyOf, provider(n))
		allOf = append(allOf, orMissing(n))
	}
	anyOf = append(anyOf, &v3jwtauthnpb.JwtRequirement{RequiresType: &v3jwtauthnpb.JwtRequirement_RequiresAll{
		RequiresAll: &v3jwtauthnpb.JwtRequirementAndList{Requirements: allOf},
	}})
	return &v3jwtauthnpb.JwtRequirement{RequiresType: &v3jwtauthnpb.JwtRequirement_RequiresAny{
		RequiresAny: &v3jwtauthnpb.JwtRequirementOrList{Requirements: anyOf},
	}}
}

func raCheckSpec(spec *securityv1beta1.RequestAuthentication) error {
	switch {
	case spec == nil:
		return errors.New("spec: required")
	case spec.GetTargetRef() != nil:
		return errors.New("targetRef: not supported")
	case len(spec.GetTargetRefs()) > 0:
		return errors.New("targetRefs: not supported")
	}
	return nil
}

// raJWTProvider translates one jwtRule. Its errors start with the field path
// inside the rule (".issuer: required") or ": " for the rule as a whole.
func raJWTProvider(rule *securityv1beta1.JWTRule) (*v3jwtauthnpb.JwtProvider, error) {
	switch {
	case rule == nil:
		return nil, errors.New(": must not be null")
	case rule.GetIssuer() == "":
		return nil, errors.New(".issuer: required")
	case len(rule.GetFromCookies()) > 0:
		return nil, errors.New(".fromCookies: not supported")
	case len(rule.GetOutputClaimToHeaders()) > 0:
		return nil, errors.New(".outputClaimToHeaders: not supported")
	case rule.GetJwks() != "" && rule.GetJwksUri() != "":
		return nil, errors.New(": jwks and jwksUri are mutually exclusive")
	case rule.GetJwks() == "" && rule.GetJwksUri() == "":
		return nil, errors.New(": jwksUri or jwks is required (OIDC discovery is not supported)")
	}
	p := &v3jwtauthnpb.JwtProvider{
		Issuer:               rule.GetIssuer(),
		Forward:              rule.GetForwardOriginalToken(),
		ForwardPayloadHeader: rule.GetOutputPayloadToHeader(),
	}
	for i, aud := range rule.GetAudiences() {
		if aud == "" {
			return nil, fmt.Errorf(".audiences[%d]: must not be empty", i)
		}
		p.Audiences = append(p.Audiences, aud)
	}
	for i, h := range rule.GetFromHeaders() {
		if !raValidHeaderName(h.GetName()) {
			return nil, fmt.Errorf(".fromHeaders[%d].name: invalid header name %q", i, h.GetName())
		}
		p.FromHeaders = append(p.FromHeaders, &v3jwtauthnpb.JwtHeader{Name: h.GetName(), ValuePrefix: h.GetPrefix()})
	}
	for i, q := range rule.GetFromParams() {
		if q == "" {
			return nil, fmt.Errorf(".fromParams[%d]: must not be empty", i)
		}
		p.FromParams = append(p.FromParams, q)
	}
	if h := rule.GetOutputPayloadToHeader(); h != "" && !raValidHeaderName(h) {
		return nil, fmt.Errorf(".outputPayloadToHeader: invalid header name %q", h)
	}

	if jwks := rule.GetJwks(); jwks != "" {
		if rule.GetTimeout() != nil {
			return nil, errors.New(".timeout: only valid with jwksUri")
		}
		if err := raCheckJWKSShape(jwks); err != nil {
			return nil, fmt.Errorf(".jwks: %w", err)
		}
		p.JwksSourceSpecifier = &v3jwtauthnpb.JwtProvider_LocalJwks{LocalJwks: &v3corepb.DataSource{
			Specifier: &v3corepb.DataSource_InlineString{InlineString: jwks},
		}}
		return p, nil
	}

	u, err := url.Parse(rule.GetJwksUri())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf(".jwksUri: %q is not an http(s) URL", rule.GetJwksUri())
	}
	timeout := DefaultJWKSTimeout
	if d := rule.GetTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return nil, fmt.Errorf(".timeout: must be a positive duration")
		}
		timeout = d.AsDuration()
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	p.JwksSourceSpecifier = &v3jwtauthnpb.JwtProvider_RemoteJwks{RemoteJwks: &v3jwtauthnpb.RemoteJwks{
		HttpUri: &v3corepb.HttpUri{
			Uri: u.String(),
			// Trellis servers fetch the JWKS directly; the cluster only
			// names the host for standard xDS consumers.
			HttpUpstreamType: &v3corepb.HttpUri_Cluster{Cluster: net.JoinHostPort(u.Hostname(), port)},
			Timeout:          durationpb.New(timeout),
		},
		CacheDuration: durationpb.New(DefaultJWKSCacheDuration),
	}}
	return p, nil
}

// raCheckJWKSShape reports whether s is a JSON object with a non-empty "keys"
// array. The keys themselves are checked by the verifier.
func raCheckJWKSShape(s string) error {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(s), &set); err != nil {
		return fmt.Errorf("invalid JSON Web Key Set: %w", err)
	}
	if len(set.Keys) == 0 {
		return errors.New("invalid JSON Web Key Set: no keys")
	}
	return nil
}

// raValidHeaderName reports whether s is an RFC 9110 token.
func raValidHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
