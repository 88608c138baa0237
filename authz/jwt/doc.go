// Package jwt authenticates requests by JSON Web Token, as Istio's
// RequestAuthentication does, for gRPC and HTTP servers.
//
// The control plane translates RequestAuthentication into the standard
// Envoy jwt_authn filter config (a JwtAuthentication with one JwtProvider
// per jwtRule) and sends it on the server listener. A server builds a
// Verifier from it and verifies every request:
//
//	v, err := jwt.New(cfg, jwt.WithLogger(logger))
//	if err != nil {
//		return err // unsupported or invalid config: refuse it
//	}
//	defer v.Close()
//
//	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
//		res, err := v.Verify(r.Context(), r.Header, r.URL.Query())
//		if err != nil { // errors.Is(err, jwt.ErrInvalidToken)
//			http.Error(w, "unauthorized", http.StatusUnauthorized)
//			return
//		}
//		res.Rewrite(r.Header) // strip the token, set the payload header
//		// res.Principal ("iss/sub") and res.Claims feed authorization.
//	})
//
// Semantics are Istio's:
//
//   - A request without a token passes authentication with an empty
//     Result; only an authorization policy that requires a request
//     principal denies it.
//   - A token is looked for in each provider's from_headers (with
//     value_prefix) and from_params; a provider with neither uses
//     "Authorization: Bearer <token>" and the query parameter
//     "access_token". A token must be valid for a provider whose issuer
//     equals its iss claim and whose locations hold it; otherwise Verify
//     fails with ErrInvalidToken. Two different tokens in one request are
//     rejected.
//   - Signatures are checked only with keys from that provider's JWKS. Each
//     key is pinned to the algorithms of its type (RSA: RS256/384/512 and
//     PS256/384/512; EC P-256: ES256, P-384: ES384, P-521: ES512; Ed25519:
//     EdDSA), or to exactly its "alg" if set. "none" and HMAC are always
//     rejected. A token with a kid must match a key's kid.
//   - exp is optional unless require_expiration is set; exp and nbf are
//     checked with clock_skew_seconds of leeway (60 s by default). aud must
//     intersect the provider's audiences when it has any. Tokens over
//     DefaultMaxTokenSize (or jwt_max_token_size) are rejected unparsed.
//
// Remote JWKS fail closed. They are fetched in the background from New,
// then again when the cache (cache_duration, 10 minutes by default)
// expires. A set stays in use until its cache expires even if a refetch
// fails; with no unexpired set the provider's tokens are rejected, never
// checked against another provider's keys. A token with an unknown kid
// triggers a refetch at most once per WithMinRefetchInterval, so a key
// rotation at the issuer is picked up without waiting for expiry.
//
// Configuration Trellis does not implement (cookies, claim_to_headers,
// requirement shapes other than Istio's, remote fetch retry policies, ...)
// makes New fail with an error wrapping ErrUnsupported rather than be
// ignored.
package jwt
