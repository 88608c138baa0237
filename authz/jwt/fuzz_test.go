package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	v3jwtauthnpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
)

// FuzzVerify feeds arbitrary token strings to a Verifier with inline RSA
// and EC keys. Verify must not panic, and whatever it accepts must carry a
// signature that the provider's own keys verify. The keys are fixed
// (testdata/fuzz-keys.json) so that valid seeds stay valid in every fuzz
// worker and in the kept corpus.
func FuzzVerify(f *testing.F) {
	timeNow = func() time.Time { return testStart }
	f.Cleanup(func() { timeNow = time.Now })
	data, err := os.ReadFile("testdata/fuzz-keys.json")
	if err != nil {
		f.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		f.Fatal(err)
	}
	rsaPriv := set.Key("rsa1")[0].Key.(*rsa.PrivateKey)
	ecPriv := set.Key("ec1")[0].Key.(*ecdsa.PrivateKey)
	good := sign(f, rsaPriv, jose.RS256, "rsa1", claims(nil))
	f.Add(good)
	f.Add(sign(f, ecPriv, jose.ES256, "ec1", claims(nil)))
	f.Add(sign(f, ecPriv, jose.ES256, "", claims(map[string]any{"aud": "reviews", "exp": nil})))
	f.Add(sign(f, []byte(strings.Repeat("s", 64)), jose.HS256, "rsa1", claims(nil)))
	f.Add(sign(f, rsaKey(), jose.RS256, "rsa1", claims(nil))) // another key, same kid
	f.Add(b64(`{"alg":"none"}`) + "." + b64(`{"iss":"https://issuer.example"}`) + ".")
	f.Add(b64(`{"alg":"RS256","kid":"rsa1","crit":["exp"]}`) + "." + strings.Split(good, ".")[1] + "." + strings.Split(good, ".")[2])
	f.Add(strings.Split(good, ".")[0] + "." + b64(`{"iss":"https://issuer.example","sub":"mallory"}`) + "." + strings.Split(good, ".")[2])
	f.Add("a.b.c")
	f.Add("")
	f.Add(`{"payload":"e30","signatures":[]}`)

	jwks := jwksJSON(f, jwk(&rsaPriv.PublicKey, "rsa1", ""), jwk(&ecPriv.PublicKey, "ec1", ""))
	v, err := New(istioConfig(map[string]*v3jwtauthnpb.JwtProvider{"p": localProvider(jwks)}))
	if err != nil {
		f.Fatalf("New() = %v", err)
	}
	f.Cleanup(func() { v.Close() })
	if res, err := v.Verify(context.Background(), bearer(good), nil); err != nil || !res.Authenticated() {
		f.Fatalf("Verify(good seed) = %+v, %v, want authenticated", res, err)
	}
	keys := []any{&rsaPriv.PublicKey, &ecPriv.PublicKey}

	f.Fuzz(func(t *testing.T, tok string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := v.Verify(ctx, http.Header{"Authorization": {"Bearer " + tok}}, url.Values{"access_token": {tok}})
		if err != nil || !res.Authenticated() {
			return
		}
		// Independent check: the token verifies under one of the keys.
		jws, perr := jose.ParseSignedCompact(strings.TrimSpace(tok), signatureAlgorithms)
		if perr != nil {
			t.Fatalf("Verify(%q) accepted a token go-jose cannot parse: %v", tok, perr)
		}
		for _, k := range keys {
			if _, verr := jws.Verify(k); verr == nil {
				return
			}
		}
		t.Fatalf("Verify(%q) = %+v, accepted without a valid signature", tok, res)
	})
}
