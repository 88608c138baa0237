package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// minRSABits is the smallest RSA key accepted from a JWKS.
const minRSABits = 2048

// verificationKey is one public key of a JWKS with the algorithms it may
// verify.
type verificationKey struct {
	kid  string
	pub  any // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	algs []jose.SignatureAlgorithm
}

// keySet is an immutable parsed JWKS.
type keySet struct {
	keys []verificationKey
}

// keySource yields the current keys of one provider. refresh asks for a
// fetch even if the cached set has not expired (an unknown kid); sources
// may rate-limit it.
type keySource interface {
	keySet(ctx context.Context, refresh bool) (*keySet, error)
}

type staticKeys struct{ set *keySet }

func (s staticKeys) keySet(context.Context, bool) (*keySet, error) { return s.set, nil }

// parseKeySet parses a JWKS document, keeping only public signing keys and
// pinning each to the algorithms its type allows (exactly its "alg" if
// set). Unusable entries (symmetric keys, encryption keys, unknown types,
// RSA under 2048 bits) are skipped; a set with no usable key is an error.
func parseKeySet(data []byte) (*keySet, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	set := &keySet{}
	for _, rk := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(rk); err != nil {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, algs := publicKeyAlgs(k.Key)
		if pub == nil {
			continue
		}
		if k.Algorithm != "" {
			alg := jose.SignatureAlgorithm(k.Algorithm)
			if !slices.Contains(algs, alg) {
				continue
			}
			algs = []jose.SignatureAlgorithm{alg}
		}
		set.keys = append(set.keys, verificationKey{kid: k.KeyID, pub: pub, algs: algs})
	}
	if len(set.keys) == 0 {
		return nil, errors.New("JSON Web Key Set has no usable signing key")
	}
	return set, nil
}

func publicKeyAlgs(key any) (any, []jose.SignatureAlgorithm) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return publicKeyAlgs(&k.PublicKey)
	case *rsa.PublicKey:
		if k.N == nil || k.N.BitLen() < minRSABits {
			return nil, nil
		}
		return k, []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512}
	case *ecdsa.PrivateKey:
		return publicKeyAlgs(&k.PublicKey)
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return k, []jose.SignatureAlgorithm{jose.ES256}
		case elliptic.P384():
			return k, []jose.SignatureAlgorithm{jose.ES384}
		case elliptic.P521():
			return k, []jose.SignatureAlgorithm{jose.ES512}
		}
	case ed25519.PrivateKey:
		return publicKeyAlgs(k.Public())
	case ed25519.PublicKey:
		if len(k) == ed25519.PublicKeySize {
			return k, []jose.SignatureAlgorithm{jose.EdDSA}
		}
	}
	return nil, nil
}

// remoteKeys is a JWKS fetched over HTTP(S) and cached for ttl.
//
// Policy (fail closed): a good set is used until ttl after it was fetched;
// a failed refetch keeps the previous set only for the rest of its ttl.
// With no unexpired set, tokens are rejected. Fetches other than for an
// expired cache (after a failure, or for an unknown kid) are at least
// minInterval apart; concurrent callers share one fetch.
type remoteKeys struct {
	uri         string
	timeout     time.Duration
	ttl         time.Duration
	minInterval time.Duration
	client      *http.Client
	logger      *slog.Logger
	v           *Verifier

	mu          sync.Mutex
	set         *keySet
	fetchedAt   time.Time // of set
	lastAttempt time.Time
	lastErr     error         // of the last fetch; nil if it succeeded
	inflight    chan struct{} // closed when the running fetch ends
}

func (r *remoteKeys) prefetch() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.startFetchLocked(r.v.now())
}

func (r *remoteKeys) keySet(ctx context.Context, refresh bool) (*keySet, error) {
	r.mu.Lock()
	now := r.v.now()
	fresh := r.set != nil && now.Before(r.fetchedAt.Add(r.ttl))
	if fresh && !refresh {
		set := r.set
		r.mu.Unlock()
		return set, nil
	}
	if r.inflight == nil {
		// An expired (or never fetched) cache is fetched at once unless the
		// last attempt failed recently; a refresh of a fresh cache waits
		// minInterval since the last attempt.
		tooSoon := !r.lastAttempt.IsZero() && now.Sub(r.lastAttempt) < r.minInterval && (fresh || r.lastErr != nil)
		if tooSoon || !r.startFetchLocked(now) {
			set, err := r.currentLocked(now)
			r.mu.Unlock()
			return set, err
		}
	}
	done := r.inflight
	r.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for JWKS %s: %w", r.uri, ctx.Err())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.currentLocked(r.v.now())
}

func (r *remoteKeys) currentLocked(now time.Time) (*keySet, error) {
	if r.set != nil && now.Before(r.fetchedAt.Add(r.ttl)) {
		return r.set, nil
	}
	if r.lastErr != nil {
		return nil, fmt.Errorf("JWKS %s unavailable: %w", r.uri, r.lastErr)
	}
	return nil, fmt.Errorf("JWKS %s unavailable", r.uri)
}

// startFetchLocked starts a background fetch; it reports false if the
// Verifier is closed.
func (r *remoteKeys) startFetchLocked(now time.Time) bool {
	if r.inflight != nil {
		return true
	}
	done := make(chan struct{})
	ok := r.v.goAsync(func() {
		ctx, cancel := context.WithTimeout(r.v.life, r.timeout)
		set, err := fetchKeySet(ctx, r.client, r.uri)
		cancel()
		r.mu.Lock()
		if err != nil {
			r.lastErr = err
			r.logger.Warn("jwt: JWKS fetch failed", "uri", r.uri, "error", err)
		} else {
			r.set, r.fetchedAt, r.lastErr = set, r.v.now(), nil
		}
		r.inflight = nil
		r.mu.Unlock()
		close(done)
	})
	if !ok {
		r.lastErr = errors.New("verifier closed")
		return false
	}
	r.inflight = done
	r.lastAttempt = now
	return true
}

func fetchKeySet(ctx context.Context, client *http.Client, uri string) (*keySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer discard(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSSize {
		return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSSize)
	}
	return parseKeySet(body)
}
