package jwt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// signatureAlgorithms are the only algorithms a token may name. "none" and
// the HMAC family are absent: a JWKS public key is never an HMAC secret.
var signatureAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

var errUnknownKID = errors.New("unknown kid")

// Result is the outcome of a successful Verify. The zero value (Issuer "")
// means the request carried no token: it is unauthenticated but not
// rejected, as in Istio, and only an authorization policy requiring a
// request principal denies it.
type Result struct {
	// Provider is the name of the provider that accepted the token.
	Provider string
	// Issuer, Subject and Presenter are the iss, sub and azp claims.
	Issuer    string
	Subject   string
	Presenter string
	// Principal is Istio's request principal "iss/sub"; empty if either
	// claim is.
	Principal string
	// Audiences is the aud claim (a string claim gives one element).
	Audiences []string
	// Claims is the whole verified payload, decoded with encoding/json
	// (numbers are float64).
	Claims map[string]any

	// StripHeaders names request headers the server must remove before
	// passing the request on: those that carried the token unless the
	// provider forwards it, and every provider's payload header (so a
	// client cannot spoof one). Set even when no token was present.
	StripHeaders []string
	// PayloadHeader, if not empty, is the header to set to Payload, the
	// token's base64url payload (forward_payload_header).
	PayloadHeader string
	Payload       string
}

// Authenticated reports whether the request carried a valid token.
func (r Result) Authenticated() bool { return r.Issuer != "" }

// Rewrite applies StripHeaders and PayloadHeader to h, the headers of the
// request the server passes on. gRPC servers apply the same fields to the
// incoming metadata (lower-case keys) themselves.
func (r Result) Rewrite(h http.Header) {
	for _, name := range r.StripHeaders {
		h.Del(name)
	}
	if r.PayloadHeader != "" {
		h.Set(r.PayloadHeader, r.Payload)
	}
}

type foundToken struct {
	providers []*provider // whose locations hold it, in name order
	headers   []string    // header names it came from
}

// Verify authenticates one request from its headers (http.Header or gRPC
// metadata; names match case-insensitively) and query parameters.
//
// No token in any provider's locations: Result{} and nil. Exactly one
// token (the same string in several locations counts once): it must be
// valid for a provider whose issuer equals its iss and whose locations
// hold it, or the error wraps ErrInvalidToken. More than one distinct
// token is rejected with ErrInvalidToken: which one would be the principal
// is undefined, and ignoring one could hide an invalid credential.
//
// Verify blocks only while a remote JWKS is being fetched, until ctx is
// done.
func (v *Verifier) Verify(ctx context.Context, headers map[string][]string, query url.Values) (Result, error) {
	tokens := map[string]*foundToken{}
	note := func(tok string, p *provider, header string) {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			return
		}
		f := tokens[tok]
		if f == nil {
			f = &foundToken{}
			tokens[tok] = f
		}
		if !slices.Contains(f.providers, p) {
			f.providers = append(f.providers, p)
		}
		if header != "" && !slices.Contains(f.headers, header) {
			f.headers = append(f.headers, header)
		}
	}
	for _, p := range v.providers {
		for _, loc := range p.headers {
			for name, values := range headers {
				if !strings.EqualFold(name, loc.name) {
					continue
				}
				for _, val := range values {
					if len(val) < len(loc.prefix) || !strings.EqualFold(val[:len(loc.prefix)], loc.prefix) {
						continue
					}
					note(val[len(loc.prefix):], p, name)
				}
			}
		}
		for _, param := range p.params {
			for _, val := range query[param] {
				note(val, p, "")
			}
		}
	}

	var res Result
	for _, p := range v.providers {
		if p.payloadHeader != "" && !slices.Contains(res.StripHeaders, p.payloadHeader) {
			res.StripHeaders = append(res.StripHeaders, p.payloadHeader)
		}
	}
	switch len(tokens) {
	case 0:
		return res, nil
	case 1:
	default:
		return Result{}, fmt.Errorf("%w: %d different tokens in one request", ErrInvalidToken, len(tokens))
	}
	var (
		token string
		found *foundToken
	)
	for t, f := range tokens {
		token, found = t, f
	}
	p, claims, err := v.verifyToken(ctx, token, found.providers)
	if err != nil {
		v.logger.Debug("jwt: token rejected", "error", err)
		return Result{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if !p.forward {
		for _, h := range found.headers {
			if !slices.Contains(res.StripHeaders, h) {
				res.StripHeaders = append(res.StripHeaders, h)
			}
		}
	}
	res.Provider = p.name
	res.Claims = claims
	res.Issuer, _ = claims["iss"].(string)
	res.Subject, _ = claims["sub"].(string)
	res.Presenter, _ = claims["azp"].(string)
	res.Audiences, _ = audienceClaim(claims["aud"])
	if res.Issuer != "" && res.Subject != "" {
		res.Principal = res.Issuer + "/" + res.Subject
	}
	if p.payloadHeader != "" {
		res.PayloadHeader = p.payloadHeader
		res.Payload = strings.Split(token, ".")[1]
		if p.padPayload {
			if raw, err := base64.RawURLEncoding.DecodeString(res.Payload); err == nil {
				res.Payload = base64.URLEncoding.EncodeToString(raw)
			}
		}
	}
	return res, nil
}

// verifyToken finds the provider that accepts token among candidates and
// returns it with the verified claims.
func (v *Verifier) verifyToken(ctx context.Context, token string, candidates []*provider) (*provider, map[string]any, error) {
	limit := 0
	for _, p := range candidates {
		limit = max(limit, p.maxSize)
	}
	if len(token) > limit {
		return nil, nil, fmt.Errorf("token of %d bytes exceeds %d", len(token), limit)
	}
	jws, err := jose.ParseSignedCompact(token, signatureAlgorithms)
	if err != nil {
		return nil, nil, fmt.Errorf("malformed token: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, nil, errors.New("malformed token: want one signature")
	}
	// The issuer only selects the providers to try; nothing else of the
	// payload is trusted before the signature is checked.
	var unverified struct {
		Iss any `json:"iss"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &unverified); err != nil {
		return nil, nil, fmt.Errorf("malformed payload: %w", err)
	}
	iss, ok := unverified.Iss.(string)
	if !ok || iss == "" {
		return nil, nil, errors.New("iss claim missing or not a string")
	}
	var firstErr error
	for _, p := range candidates {
		if p.issuer != iss {
			continue
		}
		claims, err := v.verifyWith(ctx, p, token, jws)
		if err == nil {
			return p, claims, nil
		}
		if firstErr == nil {
			firstErr = fmt.Errorf("provider %q: %w", p.name, err)
		}
	}
	if firstErr == nil {
		firstErr = fmt.Errorf("issuer %q is not accepted where the token was found", iss)
	}
	return nil, nil, firstErr
}

func (v *Verifier) verifyWith(ctx context.Context, p *provider, token string, jws *jose.JSONWebSignature) (map[string]any, error) {
	if len(token) > p.maxSize {
		return nil, fmt.Errorf("token of %d bytes exceeds %d", len(token), p.maxSize)
	}
	set, err := p.keys.keySet(ctx, false)
	if err != nil {
		return nil, err
	}
	payload, err := verifySignature(jws, set)
	if errors.Is(err, errUnknownKID) {
		// Perhaps the issuer rotated its keys: refetch (rate-limited).
		if set, err = p.keys.keySet(ctx, true); err != nil {
			return nil, err
		}
		payload, err = verifySignature(jws, set)
	}
	if err != nil {
		return nil, err
	}
	return checkClaims(p, payload, v.now())
}

// verifySignature checks the signature with the keys of set whose kid
// matches the token's (all keys if the token has none) and whose pinned
// algorithms include the token's alg.
func verifySignature(jws *jose.JSONWebSignature, set *keySet) ([]byte, error) {
	h := jws.Signatures[0].Protected
	alg := jose.SignatureAlgorithm(h.Algorithm)
	kidKnown := false
	for _, k := range set.keys {
		if h.KeyID != "" && k.kid != h.KeyID {
			continue
		}
		kidKnown = true
		if !slices.Contains(k.algs, alg) {
			continue
		}
		if payload, err := jws.Verify(k.pub); err == nil {
			return payload, nil
		}
	}
	if !kidKnown && h.KeyID != "" {
		return nil, fmt.Errorf("%w %q", errUnknownKID, h.KeyID)
	}
	return nil, fmt.Errorf("no key verifies the %s signature", alg)
}

func checkClaims(p *provider, payload []byte, now time.Time) (map[string]any, error) {
	var claims map[string]any
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, errors.New("payload is not a JSON object")
	}
	if dec.More() {
		return nil, errors.New("payload is not a JSON object")
	}
	if iss, _ := claims["iss"].(string); iss != p.issuer {
		return nil, fmt.Errorf("iss %q, want %q", iss, p.issuer)
	}
	for _, c := range []string{"sub", "azp"} {
		if v, ok := claims[c]; ok {
			if _, isString := v.(string); !isString {
				return nil, fmt.Errorf("%s claim is not a string", c)
			}
		}
	}
	aud, ok := audienceClaim(claims["aud"])
	if !ok {
		return nil, errors.New("aud claim is not a string or array of strings")
	}
	if len(p.audiences) > 0 && !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(p.audiences, a) }) {
		return nil, fmt.Errorf("aud %q, want one of %q", aud, p.audiences)
	}
	exp, hasExp, err := numericDate(claims, "exp")
	if err != nil {
		return nil, err
	}
	switch {
	case !hasExp && p.requireExp:
		return nil, errors.New("exp claim required")
	case hasExp && now.After(exp.Add(p.skew)):
		return nil, fmt.Errorf("expired at %v", exp.UTC())
	}
	nbf, hasNbf, err := numericDate(claims, "nbf")
	if err != nil {
		return nil, err
	}
	if hasNbf && now.Add(p.skew).Before(nbf) {
		return nil, fmt.Errorf("not valid before %v", nbf.UTC())
	}
	if _, _, err := numericDate(claims, "iat"); err != nil {
		return nil, err
	}
	return claims, nil
}

// audienceClaim returns the aud claim as a list; ok is false if it is
// neither absent, a string, nor an array of strings.
func audienceClaim(v any) ([]string, bool) {
	switch a := v.(type) {
	case nil:
		return nil, true
	case string:
		return []string{a}, true
	case []any:
		out := make([]string, 0, len(a))
		for _, e := range a {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

// maxNumericDate keeps huge dates inside time.Time's range.
const maxNumericDate = 1 << 40

func numericDate(claims map[string]any, name string) (time.Time, bool, error) {
	v, ok := claims[name]
	if !ok {
		return time.Time{}, false, nil
	}
	f, ok := v.(float64)
	if !ok || math.IsNaN(f) {
		return time.Time{}, false, fmt.Errorf("%s claim is not a number", name)
	}
	f = max(min(f, maxNumericDate), -maxNumericDate)
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}
