package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3jwtauthnpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/trellismesh/trellis/internal/secpolicy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testIssuer = "https://issuer.example"
	testAud    = "reviews"
)

var (
	rsaKey    = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA() })
	rsaKey2   = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA() })
	ecKey     = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC() })
	testStart = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

func mustRSA() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEC() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// fakeClock is the Verifier clock in tests; Advance moves it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// useFakeClock makes Verifiers created afterwards in this test use a fake
// clock starting at testStart.
func useFakeClock(t *testing.T) *fakeClock {
	t.Helper()
	c := &fakeClock{now: testStart}
	old := timeNow
	timeNow = c.Now
	t.Cleanup(func() { timeNow = old })
	return c
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func jwk(key any, kid, alg string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg, Use: "sig"}
}

func jwksJSON(t testing.TB, keys ...jose.JSONWebKey) string {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatalf("json.Marshal(JWKS) = %v", err)
	}
	return string(b)
}

// defaultJWKS holds the public RSA key "rsa1" and EC key "ec1".
func defaultJWKS(t testing.TB) string {
	return jwksJSON(t, jwk(&rsaKey().PublicKey, "rsa1", ""), jwk(&ecKey().PublicKey, "ec1", ""))
}

func sign(t testing.TB, key any, alg jose.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatalf("jose.NewSigner(%s) = %v", alg, err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatalf("json.Marshal(claims) = %v", err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatalf("Sign() = %v", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatalf("CompactSerialize() = %v", err)
	}
	return tok
}

// claims returns valid claims at testStart, with overrides (nil deletes).
func claims(overrides map[string]any) map[string]any {
	c := map[string]any{
		"iss": testIssuer,
		"sub": "alice",
		"aud": []any{testAud},
		"azp": "web",
		"exp": float64(testStart.Add(time.Hour).Unix()),
		"nbf": float64(testStart.Add(-time.Hour).Unix()),
	}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func localProvider(jwks string) *v3jwtauthnpb.JwtProvider {
	return &v3jwtauthnpb.JwtProvider{
		Issuer:    testIssuer,
		Audiences: []string{testAud},
		JwksSourceSpecifier: &v3jwtauthnpb.JwtProvider_LocalJwks{LocalJwks: &v3corepb.DataSource{
			Specifier: &v3corepb.DataSource_InlineString{InlineString: jwks},
		}},
	}
}

func remoteProvider(uri string) *v3jwtauthnpb.JwtProvider {
	return &v3jwtauthnpb.JwtProvider{
		Issuer: testIssuer,
		JwksSourceSpecifier: &v3jwtauthnpb.JwtProvider_RemoteJwks{RemoteJwks: &v3jwtauthnpb.RemoteJwks{
			HttpUri:       &v3corepb.HttpUri{Uri: uri, HttpUpstreamType: &v3corepb.HttpUri_Cluster{Cluster: "jwks"}, Timeout: durationpb.New(5 * time.Second)},
			CacheDuration: durationpb.New(10 * time.Minute),
		}},
	}
}

// istioConfig wraps providers in Istio's requirement.
func istioConfig(providers map[string]*v3jwtauthnpb.JwtProvider) *v3jwtauthnpb.JwtAuthentication {
	var names []string
	for n := range providers {
		names = append(names, n)
	}
	return &v3jwtauthnpb.JwtAuthentication{
		Providers: providers,
		Rules: []*v3jwtauthnpb.RequirementRule{{
			Match:           &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &v3jwtauthnpb.RequirementRule_Requires{Requires: secpolicy.IstioJWTRequirement(names)},
		}},
	}
}

func newVerifier(t *testing.T, cfg *v3jwtauthnpb.JwtAuthentication, opts ...Option) *Verifier {
	t.Helper()
	v, err := New(cfg, opts...)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

func TestVerifyAcceptsValidRS256AndES256Tokens(t *testing.T) {
	useFakeClock(t)
	v := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": localProvider(defaultJWKS(t))}))
	c := claims(map[string]any{"groups": []any{"admins"}})
	tests := []struct {
		name string
		tok  string
	}{
		{"RS256", sign(t, rsaKey(), jose.RS256, "rsa1", c)},
		{"PS384", sign(t, rsaKey(), jose.PS384, "rsa1", c)},
		{"ES256", sign(t, ecKey(), jose.ES256, "ec1", c)},
		{"ES256 without kid", sign(t, ecKey(), jose.ES256, "", c)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(testContext(t), bearer(tt.tok), nil)
			if err != nil {
				t.Fatalf("Verify(%s token) = %v, want nil error", tt.name, err)
			}
			want := Result{
				Provider:     "p",
				Issuer:       testIssuer,
				Subject:      "alice",
				Presenter:    "web",
				Principal:    testIssuer + "/alice",
				Audiences:    []string{testAud},
				Claims:       c,
				StripHeaders: []string{"Authorization"},
			}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("Verify(%s token) mismatch (-got +want):\n%s", tt.name, diff)
			}
			if !got.Authenticated() {
				t.Errorf("Verify(%s token).Authenticated() = false, want true", tt.name)
			}
		})
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestVerifyRejectsForgedAndInvalidTokens(t *testing.T) {
	clock := useFakeClock(t)
	// rsa1 accepts the RSA family; rsa-rs256 is pinned to RS256 by "alg".
	jwks := jwksJSON(t, jwk(&rsaKey().PublicKey, "rsa1", ""), jwk(&ecKey().PublicKey, "ec1", ""),
		jwk(&rsaKey2().PublicKey, "rsa-rs256", "RS256"))
	p := localProvider(jwks)
	p.RequireExpiration = true
	v := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": p}))

	pubDER, err := x509.MarshalPKIXPublicKey(&rsaKey().PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	payload, _ := json.Marshal(claims(nil))
	now := clock.Now()
	otherRSA := mustRSA()

	tests := []struct {
		name string
		tok  string
	}{
		{"alg none", b64(`{"alg":"none","kid":"rsa1"}`) + "." + b64(string(payload)) + "."},
		{"alg none without kid", b64(`{"alg":"none"}`) + "." + b64(string(payload)) + "."},
		{"HS256 with RSA public key PEM as secret", sign(t, pubPEM, jose.HS256, "rsa1", claims(nil))},
		{"HS256 with RSA public key DER as secret", sign(t, pubDER, jose.HS256, "", claims(nil))},
		{"unknown kid", sign(t, rsaKey(), jose.RS256, "nope", claims(nil))},
		{"right kid, other key", sign(t, otherRSA, jose.RS256, "rsa1", claims(nil))},
		{"no kid, other key", sign(t, otherRSA, jose.RS256, "", claims(nil))},
		{"EC signature under RSA kid", sign(t, ecKey(), jose.ES256, "rsa1", claims(nil))},
		{"alg outside key's pinned alg", sign(t, rsaKey2(), jose.PS256, "rsa-rs256", claims(nil))},
		{"wrong aud", sign(t, rsaKey(), jose.RS256, "rsa1", claims(map[string]any{"aud": "ratings"}))},
		{"missing aud", sign(t, rsaKey(), jose.RS256, "rsa1", claims(map[string]any{"aud": nil}))},
		{"wrong iss", sign(t, rsaKey(), jose.RS256, "rsa1", claims(map[string]any{"iss": "https://evil.example"}))},
		{"missing iss", sign(t, rsaKey(), jose.RS256, "rsa1", claims(map[string]any{"iss": nil}))},
		{"expired beyond skew", sign(t, rsaKey(), jose.RS256, "rsa1", claims(map[string]any{"exp": float64(now.Add(-61 * time.Second).Unix())}))},
		{"missing exp with require_expiration", sign(t, rsaKey(), jose.RS256, "rsa1", claims(map[string]any{"exp": nil}))},
		{"exp not a number", sign(t, rsaKey(), jose.RS256, "rsa1", claims(map[string]any{"exp": "tomorrow"}))},
		{"not yet valid beyond skew", sign(t, rsaKey(), jose.RS256, "rsa1", claims(map[string]any{"nbf": float64(now.Add(61 * time.Second).Unix())}))},
		{"sub not a string", sign(t, rsaKey(), jose.RS256, "rsa1", claims(map[string]any{"sub": 7.0}))},
		{"garbage", "not-a-jwt"},
		{"three garbage segments", "a.b.c"},
		{"JSON serialization", `{"payload":"e30","signatures":[]}`},
		{"oversize", sign(t, rsaKey(), jose.RS256, "rsa1", claims(map[string]any{"pad": strings.Repeat("x", DefaultMaxTokenSize)}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(testContext(t), bearer(tt.tok), nil)
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("Verify(%s) = %+v, %v, want error %v", tt.name, got, err, ErrInvalidToken)
			}
		})
	}
}

func TestVerifyClockSkewIsAllowed(t *testing.T) {
	clock := useFakeClock(t)
	p := localProvider(defaultJWKS(t))
	p.ClockSkewSeconds = 30
	v := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": p}))
	now := clock.Now()
	tests := []struct {
		name   string
		claims map[string]any
		ok     bool
	}{
		{"expired within skew", claims(map[string]any{"exp": float64(now.Add(-29 * time.Second).Unix())}), true},
		{"expired beyond skew", claims(map[string]any{"exp": float64(now.Add(-31 * time.Second).Unix())}), false},
		{"nbf within skew", claims(map[string]any{"nbf": float64(now.Add(29 * time.Second).Unix())}), true},
		{"nbf beyond skew", claims(map[string]any{"nbf": float64(now.Add(31 * time.Second).Unix())}), false},
		{"no exp", claims(map[string]any{"exp": nil}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(testContext(t), bearer(sign(t, rsaKey(), jose.RS256, "rsa1", tt.claims)), nil)
			if got := err == nil; got != tt.ok {
				t.Errorf("Verify(%s) error = %v, want ok %v", tt.name, err, tt.ok)
			}
		})
	}
}

func TestVerifyFindsTokenInConfiguredLocations(t *testing.T) {
	useFakeClock(t)
	custom := localProvider(defaultJWKS(t))
	custom.FromHeaders = []*v3jwtauthnpb.JwtHeader{{Name: "X-Jwt-Assertion", ValuePrefix: "Token "}}
	custom.FromParams = []string{"jwt"}
	vCustom := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": custom}))
	vDefault := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": localProvider(defaultJWKS(t))}))
	tok := sign(t, rsaKey(), jose.RS256, "rsa1", claims(nil))
	tok2 := sign(t, ecKey(), jose.ES256, "ec1", claims(nil))

	tests := []struct {
		name      string
		v         *Verifier
		headers   map[string][]string
		query     url.Values
		wantErr   error
		wantPrinc string
		wantStrip []string
	}{
		{"custom header with prefix", vCustom, http.Header{"X-Jwt-Assertion": {"Token " + tok}}, nil, nil, testIssuer + "/alice", []string{"X-Jwt-Assertion"}},
		{"custom header, gRPC metadata key", vCustom, map[string][]string{"x-jwt-assertion": {"token " + tok}}, nil, nil, testIssuer + "/alice", []string{"x-jwt-assertion"}},
		{"custom query param", vCustom, nil, url.Values{"jwt": {tok}}, nil, testIssuer + "/alice", nil},
		{"custom header without prefix is no token", vCustom, http.Header{"X-Jwt-Assertion": {tok}}, nil, nil, "", nil},
		{"default location ignored by custom provider", vCustom, bearer("garbage"), url.Values{"access_token": {"garbage"}}, nil, "", nil},
		{"default bearer header", vDefault, bearer(tok), nil, nil, testIssuer + "/alice", []string{"Authorization"}},
		{"default access_token param", vDefault, nil, url.Values{"access_token": {tok}}, nil, testIssuer + "/alice", nil},
		{"same token in two locations", vDefault, bearer(tok), url.Values{"access_token": {tok}}, nil, testIssuer + "/alice", []string{"Authorization"}},
		{"two different valid tokens", vDefault, bearer(tok), url.Values{"access_token": {tok2}}, ErrInvalidToken, "", nil},
		{"valid and invalid token", vDefault, bearer(tok), url.Values{"access_token": {"garbage"}}, ErrInvalidToken, "", nil},
		{"repeated header with two tokens", vDefault, http.Header{"Authorization": {"Bearer " + tok, "Bearer " + tok2}}, nil, ErrInvalidToken, "", nil},
		{"basic auth is no token", vDefault, http.Header{"Authorization": {"Basic YWxpY2U6cHc="}}, nil, nil, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.v.Verify(testContext(t), tt.headers, tt.query)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify(%v, %v) = %v, want error %v", tt.headers, tt.query, err, tt.wantErr)
			}
			if got.Principal != tt.wantPrinc {
				t.Errorf("Verify(%v, %v).Principal = %q, want %q", tt.headers, tt.query, got.Principal, tt.wantPrinc)
			}
			if diff := cmp.Diff(got.StripHeaders, tt.wantStrip); diff != "" {
				t.Errorf("Verify(%v, %v).StripHeaders mismatch (-got +want):\n%s", tt.headers, tt.query, diff)
			}
		})
	}
}

func TestVerifyWithoutTokenPassesUnauthenticated(t *testing.T) {
	useFakeClock(t)
	p := localProvider(defaultJWKS(t))
	p.ForwardPayloadHeader = "X-Jwt-Payload"
	v := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": p}))
	got, err := v.Verify(testContext(t), http.Header{"X-Jwt-Payload": {"spoofed"}}, url.Values{"q": {"1"}})
	if err != nil {
		t.Fatalf("Verify(no token) = %v, want nil", err)
	}
	want := Result{StripHeaders: []string{"X-Jwt-Payload"}}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Verify(no token) mismatch (-got +want):\n%s", diff)
	}
	if got.Authenticated() {
		t.Errorf("Verify(no token).Authenticated() = true, want false")
	}
}

func TestResultRewriteStripsTokenAndSpoofedPayload(t *testing.T) {
	useFakeClock(t)
	tok := sign(t, rsaKey(), jose.RS256, "rsa1", claims(nil))
	payloadSeg := strings.Split(tok, ".")[1]
	rawPayload, err := base64.RawURLEncoding.DecodeString(payloadSeg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		forward bool
		pad     bool
		want    http.Header
	}{
		{"strip token", false, false, http.Header{"X-Jwt-Payload": {payloadSeg}, "Other": {"1"}}},
		{"forward token", true, false, http.Header{"Authorization": {"Bearer " + tok}, "X-Jwt-Payload": {payloadSeg}, "Other": {"1"}}},
		{"padded payload", false, true, http.Header{"X-Jwt-Payload": {base64.URLEncoding.EncodeToString(rawPayload)}, "Other": {"1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := localProvider(defaultJWKS(t))
			p.Forward = tt.forward
			p.ForwardPayloadHeader = "x-jwt-payload"
			p.PadForwardPayloadHeader = tt.pad
			v := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": p}))
			h := bearer(tok)
			h.Set("X-Jwt-Payload", "spoofed")
			h.Set("Other", "1")
			res, err := v.Verify(testContext(t), h, nil)
			if err != nil {
				t.Fatalf("Verify() = %v", err)
			}
			res.Rewrite(h)
			if diff := cmp.Diff(h, tt.want); diff != "" {
				t.Errorf("Rewrite() headers mismatch (-got +want):\n%s", diff)
			}
		})
	}
}

func TestVerifyTriesEveryProviderOfTheIssuer(t *testing.T) {
	useFakeClock(t)
	// Two providers share the issuer and the location; only the second
	// holds the signing key. A third provider has another issuer.
	other := localProvider(jwksJSON(t, jwk(&rsaKey().PublicKey, "rsa1", "")))
	other.Issuer = "https://other.example"
	v := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{
		"a": localProvider(jwksJSON(t, jwk(&rsaKey2().PublicKey, "rsa2", ""))),
		"b": localProvider(defaultJWKS(t)),
		"c": other,
	}))
	got, err := v.Verify(testContext(t), bearer(sign(t, rsaKey(), jose.RS256, "rsa1", claims(nil))), nil)
	if err != nil {
		t.Fatalf("Verify() = %v, want nil", err)
	}
	if got.Provider != "b" {
		t.Errorf("Verify().Provider = %q, want %q", got.Provider, "b")
	}
	// A token of issuer a signed with c's key is never checked against c's keys.
	_, err = v.Verify(testContext(t), bearer(sign(t, rsaKey2(), jose.RS256, "rsa1", claims(map[string]any{"iss": "https://other.example"}))), nil)
	if !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify(other issuer, wrong key) = %v, want %v", err, ErrInvalidToken)
	}
}

func TestVerifyAcceptsTranslatedRequestAuthentication(t *testing.T) {
	useFakeClock(t)
	cfg, err := secpolicy.RequestAuthentications([]secpolicy.NamedRequestAuthentication{{
		Name: "jwt", Namespace: "default",
		Spec: &securityv1beta1.RequestAuthentication{JwtRules: []*securityv1beta1.JWTRule{
			{Issuer: "https://other.example", Jwks: jwksJSON(t, jwk(&rsaKey2().PublicKey, "rsa2", ""))},
			{Issuer: testIssuer, Audiences: []string{testAud}, Jwks: defaultJWKS(t),
				FromHeaders: []*securityv1beta1.JWTHeader{{Name: "x-token"}}},
		}},
	}})
	if err != nil {
		t.Fatalf("RequestAuthentications() = %v", err)
	}
	v := newVerifier(t, cfg)
	got, err := v.Verify(testContext(t), http.Header{"X-Token": {sign(t, ecKey(), jose.ES256, "ec1", claims(nil))}}, nil)
	if err != nil {
		t.Fatalf("Verify() = %v, want nil", err)
	}
	if want := "default/jwt/1"; got.Provider != want {
		t.Errorf("Verify().Provider = %q, want %q", got.Provider, want)
	}
}

func TestNewRejectsUnsupportedConfig(t *testing.T) {
	valid := func() *v3jwtauthnpb.JwtAuthentication {
		return istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": localProvider(defaultJWKS(t))})
	}
	p := func(c *v3jwtauthnpb.JwtAuthentication) *v3jwtauthnpb.JwtProvider { return c.Providers["p"] }
	tests := []struct {
		name        string
		mutate      func(*v3jwtauthnpb.JwtAuthentication)
		unsupported bool
		wantText    string
	}{
		{"claim_to_headers", func(c *v3jwtauthnpb.JwtAuthentication) {
			p(c).ClaimToHeaders = []*v3jwtauthnpb.JwtClaimToHeader{{HeaderName: "x-sub", ClaimName: "sub"}}
		}, true, `jwt: provider "p": claim_to_headers: not supported`},
		{"from_cookies", func(c *v3jwtauthnpb.JwtAuthentication) { p(c).FromCookies = []string{"session"} }, true, "from_cookies"},
		{"max_lifetime", func(c *v3jwtauthnpb.JwtAuthentication) { p(c).MaxLifetime = durationpb.New(time.Hour) }, true, "max_lifetime"},
		{"bypass_cors_preflight", func(c *v3jwtauthnpb.JwtAuthentication) { c.BypassCorsPreflight = true }, true, "bypass_cors_preflight"},
		{"requirement_map", func(c *v3jwtauthnpb.JwtAuthentication) {
			c.RequirementMap = map[string]*v3jwtauthnpb.JwtRequirement{"r": {}}
		}, true, "requirement_map"},
		{"allow_missing_or_failed", func(c *v3jwtauthnpb.JwtAuthentication) {
			c.Rules[0].RequirementType = &v3jwtauthnpb.RequirementRule_Requires{Requires: &v3jwtauthnpb.JwtRequirement{
				RequiresType: &v3jwtauthnpb.JwtRequirement_AllowMissingOrFailed{},
			}}
		}, true, "requirement other than each provider OR allow_missing"},
		{"provider only (token required)", func(c *v3jwtauthnpb.JwtAuthentication) {
			c.Rules[0].RequirementType = &v3jwtauthnpb.RequirementRule_Requires{Requires: &v3jwtauthnpb.JwtRequirement{
				RequiresType: &v3jwtauthnpb.JwtRequirement_ProviderName{ProviderName: "p"},
			}}
		}, true, "requirement other than"},
		{"no rules", func(c *v3jwtauthnpb.JwtAuthentication) { c.Rules = nil }, false, "exactly one rule is required"},
		{"path match", func(c *v3jwtauthnpb.JwtAuthentication) {
			c.Rules[0].Match = &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/api"}}
		}, true, "match other than prefix"},
		{"unknown provider in rule", func(c *v3jwtauthnpb.JwtAuthentication) {
			c.Rules[0].RequirementType = &v3jwtauthnpb.RequirementRule_Requires{Requires: secpolicy.IstioJWTRequirement([]string{"q"})}
		}, false, `unknown provider "q"`},
		{"filename jwks", func(c *v3jwtauthnpb.JwtAuthentication) {
			p(c).JwksSourceSpecifier = &v3jwtauthnpb.JwtProvider_LocalJwks{LocalJwks: &v3corepb.DataSource{
				Specifier: &v3corepb.DataSource_Filename{Filename: "/etc/jwks.json"},
			}}
		}, true, "local_jwks"},
		{"remote retry_policy", func(c *v3jwtauthnpb.JwtAuthentication) {
			c.Providers["p"] = remoteProvider("https://issuer.example/jwks")
			c.Providers["p"].GetRemoteJwks().RetryPolicy = &v3corepb.RetryPolicy{}
		}, true, "retry_policy"},
		{"remote not http", func(c *v3jwtauthnpb.JwtAuthentication) {
			c.Providers["p"] = remoteProvider("file:///etc/jwks.json")
		}, false, "is not an http(s) URL"},
		{"no issuer", func(c *v3jwtauthnpb.JwtAuthentication) { p(c).Issuer = "" }, false, "issuer: required"},
		{"no jwks source", func(c *v3jwtauthnpb.JwtAuthentication) { p(c).JwksSourceSpecifier = nil }, false, "local_jwks or remote_jwks: required"},
		{"jwks garbage", func(c *v3jwtauthnpb.JwtAuthentication) { c.Providers["p"] = localProvider("{") }, false, "not a JSON Web Key Set"},
		{"jwks with only an HMAC key", func(c *v3jwtauthnpb.JwtAuthentication) {
			c.Providers["p"] = localProvider(jwksJSON(t, jose.JSONWebKey{Key: []byte(strings.Repeat("k", 32)), KeyID: "h", Algorithm: "HS256"}))
		}, false, "no usable signing key"},
		{"jwks with a 1024-bit RSA key", func(c *v3jwtauthnpb.JwtAuthentication) {
			small, err := rsa.GenerateKey(rand.Reader, 1024)
			if err != nil {
				t.Fatal(err)
			}
			c.Providers["p"] = localProvider(jwksJSON(t, jwk(&small.PublicKey, "small", "")))
		}, false, "no usable signing key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.mutate(cfg)
			v, err := New(cfg)
			if err == nil {
				v.Close()
				t.Fatalf("New(%s) = nil error, want error containing %q", tt.name, tt.wantText)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("New(%s) = %v, want error containing %q", tt.name, err, tt.wantText)
			}
			if got := errors.Is(err, ErrUnsupported); got != tt.unsupported {
				t.Errorf("errors.Is(New(%s), ErrUnsupported) = %v, want %v", tt.name, got, tt.unsupported)
			}
		})
	}
	if _, err := New(nil); err == nil {
		t.Errorf("New(nil) = nil error, want error")
	}
}

// jwksServer is a real JWKS endpoint on 127.0.0.1 whose answer tests change.
type jwksServer struct {
	srv *httptest.Server

	mu     sync.Mutex
	status int
	body   string
	hits   int
}

func newJWKSServer(t *testing.T, body string) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK, body: body}
	s.srv = httptest.NewServer(s)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *jwksServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits++
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(s.status)
	_, _ = w.Write([]byte(s.body))
}

func (s *jwksServer) set(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

func (s *jwksServer) Hits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

func TestRemoteJWKSFailsClosed(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(t *testing.T, s *jwksServer) (restore func())
		// recoverAfter is how long after the restore the good keys are
		// used: a failed fetch is retried after the refetch interval, a
		// good-but-wrong set is replaced when its cache expires.
		recoverAfter time.Duration
	}{
		{"endpoint down", func(t *testing.T, s *jwksServer) func() {
			addr := s.srv.Listener.Addr().String()
			s.srv.Close()
			return func() {
				lis, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("net.Listen(%s) = %v", addr, err)
				}
				srv := httptest.NewUnstartedServer(s)
				srv.Listener.Close()
				srv.Listener = lis
				srv.Start()
				t.Cleanup(srv.Close)
			}
		}, 0},
		{"status 500", func(t *testing.T, s *jwksServer) func() {
			s.set(http.StatusInternalServerError, defaultJWKS(t))
			return func() { s.set(http.StatusOK, defaultJWKS(t)) }
		}, 0},
		{"garbage JSON", func(t *testing.T, s *jwksServer) func() {
			s.set(http.StatusOK, `{"keys": [`)
			return func() { s.set(http.StatusOK, defaultJWKS(t)) }
		}, 0},
		{"only another issuer's key", func(t *testing.T, s *jwksServer) func() {
			s.set(http.StatusOK, jwksJSON(t, jwk(&rsaKey2().PublicKey, "rsa1", "")))
			return func() { s.set(http.StatusOK, defaultJWKS(t)) }
		}, 10 * time.Minute},
		{"HMAC key only", func(t *testing.T, s *jwksServer) func() {
			s.set(http.StatusOK, jwksJSON(t, jose.JSONWebKey{Key: []byte(strings.Repeat("k", 32)), KeyID: "rsa1"}))
			return func() { s.set(http.StatusOK, defaultJWKS(t)) }
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := useFakeClock(t)
			s := newJWKSServer(t, defaultJWKS(t))
			restore := tt.break_(t, s)
			// A second provider with a good inline key for the same issuer
			// and location must not make the remote provider's token pass.
			v := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{
				"remote": remoteProvider(s.srv.URL + "/jwks"),
				"local":  localProvider(jwksJSON(t, jwk(&rsaKey2().PublicKey, "other", ""))),
			}))
			tok := sign(t, rsaKey(), jose.RS256, "rsa1", claims(nil))
			for i := range 2 {
				if _, err := v.Verify(testContext(t), bearer(tok), nil); !errors.Is(err, ErrInvalidToken) {
					t.Fatalf("Verify() attempt %d with broken JWKS = %v, want %v", i, err, ErrInvalidToken)
				}
			}
			restore()
			clock.Advance(max(tt.recoverAfter, DefaultMinRefetchInterval))
			res, err := v.Verify(testContext(t), bearer(tok), nil)
			if err != nil {
				t.Fatalf("Verify() after JWKS recovered = %v, want nil", err)
			}
			if res.Provider != "remote" {
				t.Errorf("Verify().Provider = %q, want %q", res.Provider, "remote")
			}
		})
	}
}

func TestRemoteJWKSKeyRotationAfterUnknownKid(t *testing.T) {
	clock := useFakeClock(t)
	s := newJWKSServer(t, jwksJSON(t, jwk(&rsaKey().PublicKey, "rsa1", "")))
	v := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": remoteProvider(s.srv.URL)}))
	ctx := testContext(t)
	if _, err := v.Verify(ctx, bearer(sign(t, rsaKey(), jose.RS256, "rsa1", claims(nil))), nil); err != nil {
		t.Fatalf("Verify(rsa1) = %v, want nil", err)
	}
	if got := s.Hits(); got != 1 {
		t.Fatalf("JWKS fetches after first token = %d, want 1", got)
	}

	// The issuer rotates to ec1.
	s.set(http.StatusOK, jwksJSON(t, jwk(&ecKey().PublicKey, "ec1", "")))
	rotated := sign(t, ecKey(), jose.ES256, "ec1", claims(nil))
	// The first fetch was just now: the unknown kid is rate-limited.
	if _, err := v.Verify(ctx, bearer(rotated), nil); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify(ec1) within the refetch interval = %v, want %v", err, ErrInvalidToken)
	}
	if got := s.Hits(); got != 1 {
		t.Fatalf("JWKS fetches within the refetch interval = %d, want 1", got)
	}
	clock.Advance(DefaultMinRefetchInterval)
	if _, err := v.Verify(ctx, bearer(rotated), nil); err != nil {
		t.Fatalf("Verify(ec1) after the refetch interval = %v, want nil", err)
	}
	if got := s.Hits(); got != 2 {
		t.Fatalf("JWKS fetches after rotation = %d, want 2", got)
	}
	// A flood of unknown kids costs no more fetches.
	for i := range 10 {
		if _, err := v.Verify(ctx, bearer(sign(t, ecKey(), jose.ES256, "unknown", claims(nil))), nil); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("Verify(unknown kid #%d) = %v, want %v", i, err, ErrInvalidToken)
		}
	}
	if got := s.Hits(); got != 2 {
		t.Errorf("JWKS fetches after unknown-kid flood = %d, want 2", got)
	}
	// The old key is gone after rotation.
	if _, err := v.Verify(ctx, bearer(sign(t, rsaKey(), jose.RS256, "rsa1", claims(nil))), nil); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify(rsa1) after rotation = %v, want %v", err, ErrInvalidToken)
	}
}

func TestRemoteJWKSCacheExpiry(t *testing.T) {
	clock := useFakeClock(t)
	s := newJWKSServer(t, defaultJWKS(t))
	p := remoteProvider(s.srv.URL)
	p.GetRemoteJwks().CacheDuration = durationpb.New(time.Minute)
	v := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": p}))
	ctx := testContext(t)
	tok := sign(t, rsaKey(), jose.RS256, "rsa1", claims(nil))
	if _, err := v.Verify(ctx, bearer(tok), nil); err != nil {
		t.Fatalf("Verify() = %v, want nil", err)
	}
	// The endpoint breaks; the cached set serves until it expires.
	s.set(http.StatusServiceUnavailable, "")
	clock.Advance(59 * time.Second)
	if _, err := v.Verify(ctx, bearer(tok), nil); err != nil {
		t.Fatalf("Verify() before cache expiry = %v, want nil", err)
	}
	if got := s.Hits(); got != 1 {
		t.Errorf("JWKS fetches before cache expiry = %d, want 1", got)
	}
	clock.Advance(time.Second)
	if _, err := v.Verify(ctx, bearer(tok), nil); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify() after cache expiry with endpoint down = %v, want %v", err, ErrInvalidToken)
	}
	if got := s.Hits(); got != 2 {
		t.Errorf("JWKS fetches after cache expiry = %d, want 2", got)
	}
}

func TestRemoteJWKSConcurrentVerifiesShareOneFetch(t *testing.T) {
	useFakeClock(t)
	s := newJWKSServer(t, defaultJWKS(t))
	v := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": remoteProvider(s.srv.URL)}))
	tok := sign(t, ecKey(), jose.ES256, "ec1", claims(nil))
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := v.Verify(ctx, bearer(tok), nil)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Verify() = %v, want nil", err)
		}
	}
	if got := s.Hits(); got != 1 {
		t.Errorf("JWKS fetches = %d, want 1", got)
	}
}

func TestCloseIsIdempotentAndFailsClosed(t *testing.T) {
	useFakeClock(t)
	s := newJWKSServer(t, "")
	s.set(http.StatusInternalServerError, "")
	v, err := New(istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": remoteProvider(s.srv.URL)}),
		WithHTTPClient(s.srv.Client()), WithLogger(nil))
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	for i := range 2 {
		if err := v.Close(); err != nil {
			t.Fatalf("Close() #%d = %v, want nil", i, err)
		}
	}
	s.set(http.StatusOK, defaultJWKS(t))
	if _, err := v.Verify(testContext(t), bearer(sign(t, rsaKey(), jose.RS256, "rsa1", claims(nil))), nil); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify() after Close = %v, want %v", err, ErrInvalidToken)
	}
}

func TestVerifyHonoursContextWhileFetching(t *testing.T) {
	useFakeClock(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	v := newVerifier(t, istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": remoteProvider(srv.URL)}))
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	_, err := v.Verify(ctx, bearer(sign(t, rsaKey(), jose.RS256, "rsa1", claims(nil))), nil)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify(canceled ctx) = %v, want %v and %v", err, ErrInvalidToken, context.Canceled)
	}
}
