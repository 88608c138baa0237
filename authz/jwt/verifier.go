package jwt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3jwtauthnpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/proto"
)

// Defaults applied when the configuration leaves a value zero.
const (
	// DefaultMaxTokenSize caps the length of a token, in bytes, when the
	// provider sets no jwt_cache_config.jwt_max_token_size.
	DefaultMaxTokenSize = 64 << 10
	// DefaultClockSkew is the leeway on exp and nbf when the provider sets
	// no clock_skew_seconds (Envoy's default).
	DefaultClockSkew = 60 * time.Second
	// DefaultCacheDuration is how long a fetched remote JWKS is used when
	// remote_jwks sets no cache_duration (Envoy's default).
	DefaultCacheDuration = 10 * time.Minute
	// DefaultFetchTimeout bounds one JWKS fetch when http_uri sets no
	// timeout.
	DefaultFetchTimeout = 5 * time.Second
	// DefaultMinRefetchInterval is the least time between two fetches of
	// one remote JWKS that are not due to cache expiry: after a failure, or
	// for a token with an unknown kid.
	DefaultMinRefetchInterval = 5 * time.Second
)

// maxJWKSSize caps a fetched JWKS document.
const maxJWKSSize = 1 << 20

var (
	// ErrInvalidToken is returned by Verify when the request carries a
	// token that no provider accepts, including when the provider's JWKS
	// cannot be fetched. Servers answer UNAUTHENTICATED (gRPC) or 401
	// (HTTP) without the error's detail, which is for logs.
	ErrInvalidToken = errors.New("jwt: invalid token")
	// ErrUnsupported is wrapped by New's error for configuration Trellis
	// does not implement.
	ErrUnsupported = errors.New("not supported")
)

// timeNow is the clock of the Verifiers created afterwards; tests replace it.
var timeNow = time.Now

// Option configures a Verifier.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	client             *http.Client
	logger             *slog.Logger
	minRefetchInterval time.Duration
}

// WithHTTPClient sets the client that fetches remote JWKS. If nil or not
// given, a client with no special configuration is used (fetch timeouts
// come from the configuration).
func WithHTTPClient(c *http.Client) Option {
	return optionFunc(func(o *options) { o.client = c })
}

// WithLogger sets the logger for JWKS fetch failures and rejected tokens.
// If nil or not given, nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.logger = l })
}

// WithMinRefetchInterval sets the least time between two fetches of one
// remote JWKS that are not due to cache expiry (a failed fetch, or a token
// whose kid is not in the cached set). If zero or not given,
// DefaultMinRefetchInterval.
func WithMinRefetchInterval(d time.Duration) Option {
	return optionFunc(func(o *options) { o.minRefetchInterval = d })
}

// Verifier authenticates requests against an Envoy jwt_authn configuration
// with Istio RequestAuthentication semantics. It is safe for concurrent
// use; Close stops its background JWKS fetches.
type Verifier struct {
	providers []*provider // sorted by name
	logger    *slog.Logger
	now       func() time.Time

	life   context.Context // canceled by Close
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed and wg.Add
	closed bool
	wg     sync.WaitGroup
}

type headerLocation struct {
	name   string
	prefix string
}

type provider struct {
	name          string
	issuer        string
	audiences     []string
	requireExp    bool
	skew          time.Duration
	maxSize       int
	forward       bool
	payloadHeader string
	padPayload    bool
	headers       []headerLocation
	params        []string
	keys          keySource
}

// New returns a Verifier for cfg, which must have Istio's shape (as
// produced by the control plane from RequestAuthentication): providers
// plus one rule matching prefix "/" that requires, for every provider,
// "provider OR allow_missing". Fields Trellis does not implement are an
// error wrapping ErrUnsupported.
//
// Inline JWKS (local_jwks) are parsed here; remote JWKS are fetched in the
// background, so New never blocks. Call Close when done.
func New(cfg *v3jwtauthnpb.JwtAuthentication, opts ...Option) (*Verifier, error) {
	o := options{minRefetchInterval: DefaultMinRefetchInterval}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.client == nil {
		o.client = &http.Client{}
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.minRefetchInterval <= 0 {
		o.minRefetchInterval = DefaultMinRefetchInterval
	}
	if cfg == nil {
		return nil, errors.New("jwt: configuration is nil")
	}
	switch {
	case cfg.GetFilterStateRules() != nil:
		return nil, fmt.Errorf("jwt: filter_state_rules: %w", ErrUnsupported)
	case len(cfg.GetRequirementMap()) > 0:
		return nil, fmt.Errorf("jwt: requirement_map: %w", ErrUnsupported)
	case cfg.GetBypassCorsPreflight():
		return nil, fmt.Errorf("jwt: bypass_cors_preflight: %w", ErrUnsupported)
	case cfg.GetStripFailureResponse():
		return nil, fmt.Errorf("jwt: strip_failure_response: %w", ErrUnsupported)
	case len(cfg.GetProviders()) == 0:
		return nil, errors.New("jwt: providers: at least one is required")
	}
	if err := checkRules(cfg); err != nil {
		return nil, fmt.Errorf("jwt: rules: %w", err)
	}

	life, cancel := context.WithCancel(context.Background())
	v := &Verifier{logger: o.logger, now: timeNow, life: life, cancel: cancel}
	for name, pc := range cfg.GetProviders() {
		p, err := v.newProvider(name, pc, &o)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("jwt: provider %q: %w", name, err)
		}
		v.providers = append(v.providers, p)
	}
	slices.SortFunc(v.providers, func(a, b *provider) int { return strings.Compare(a.name, b.name) })
	for _, p := range v.providers {
		if r, ok := p.keys.(*remoteKeys); ok {
			r.prefetch()
		}
	}
	return v, nil
}

// Close stops background JWKS fetches and waits for them to return. Later
// tokens of remote-JWKS providers whose cache has expired are rejected. It
// is idempotent and always returns nil.
func (v *Verifier) Close() error {
	v.mu.Lock()
	v.closed = true
	v.mu.Unlock()
	v.cancel()
	v.wg.Wait()
	return nil
}

// goAsync runs f in a goroutine that Close waits for; it reports false,
// without running f, once the Verifier is closed.
func (v *Verifier) goAsync(f func()) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return false
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		f()
	}()
	return true
}

func (v *Verifier) newProvider(name string, pc *v3jwtauthnpb.JwtProvider, o *options) (*provider, error) {
	switch {
	case pc == nil:
		return nil, errors.New("must not be null")
	case pc.GetIssuer() == "":
		return nil, errors.New("issuer: required")
	case pc.GetSubjects() != nil:
		return nil, fmt.Errorf("subjects: %w", ErrUnsupported)
	case pc.GetMaxLifetime() != nil:
		return nil, fmt.Errorf("max_lifetime: %w", ErrUnsupported)
	case len(pc.GetFromCookies()) > 0:
		return nil, fmt.Errorf("from_cookies: %w", ErrUnsupported)
	case pc.GetNormalizePayloadInMetadata() != nil:
		return nil, fmt.Errorf("normalize_payload_in_metadata: %w", ErrUnsupported)
	case pc.GetHeaderInMetadata() != "":
		return nil, fmt.Errorf("header_in_metadata: %w", ErrUnsupported)
	case pc.GetFailedStatusInMetadata() != "":
		return nil, fmt.Errorf("failed_status_in_metadata: %w", ErrUnsupported)
	case len(pc.GetClaimToHeaders()) > 0:
		return nil, fmt.Errorf("claim_to_headers: %w", ErrUnsupported)
	case pc.GetClearRouteCache():
		return nil, fmt.Errorf("clear_route_cache: %w", ErrUnsupported)
	}
	p := &provider{
		name:          name,
		issuer:        pc.GetIssuer(),
		audiences:     slices.Clone(pc.GetAudiences()),
		requireExp:    pc.GetRequireExpiration(),
		skew:          DefaultClockSkew,
		maxSize:       DefaultMaxTokenSize,
		forward:       pc.GetForward(),
		payloadHeader: pc.GetForwardPayloadHeader(),
		padPayload:    pc.GetPadForwardPayloadHeader(),
		params:        slices.Clone(pc.GetFromParams()),
	}
	if s := pc.GetClockSkewSeconds(); s > 0 {
		p.skew = time.Duration(s) * time.Second
	}
	if n := pc.GetJwtCacheConfig().GetJwtMaxTokenSize(); n > 0 {
		p.maxSize = int(n)
	}
	for i, h := range pc.GetFromHeaders() {
		if h.GetName() == "" {
			return nil, fmt.Errorf("from_headers[%d].name: required", i)
		}
		p.headers = append(p.headers, headerLocation{name: h.GetName(), prefix: h.GetValuePrefix()})
	}
	for i, q := range p.params {
		if q == "" {
			return nil, fmt.Errorf("from_params[%d]: must not be empty", i)
		}
	}
	if len(p.headers) == 0 && len(p.params) == 0 {
		// Envoy's and Istio's default token locations.
		p.headers = []headerLocation{{name: "Authorization", prefix: "Bearer "}}
		p.params = []string{"access_token"}
	}

	switch src := pc.GetJwksSourceSpecifier().(type) {
	case *v3jwtauthnpb.JwtProvider_LocalJwks:
		data, err := inlineData(src.LocalJwks)
		if err != nil {
			return nil, fmt.Errorf("local_jwks: %w", err)
		}
		set, err := parseKeySet(data)
		if err != nil {
			return nil, fmt.Errorf("local_jwks: %w", err)
		}
		p.keys = staticKeys{set: set}
	case *v3jwtauthnpb.JwtProvider_RemoteJwks:
		r, err := v.newRemoteKeys(src.RemoteJwks, o)
		if err != nil {
			return nil, fmt.Errorf("remote_jwks: %w", err)
		}
		p.keys = r
	default:
		return nil, errors.New("local_jwks or remote_jwks: required")
	}
	return p, nil
}

func inlineData(ds *v3corepb.DataSource) ([]byte, error) {
	if ds.GetWatchedDirectory() != nil {
		return nil, fmt.Errorf("watched_directory: %w", ErrUnsupported)
	}
	switch s := ds.GetSpecifier().(type) {
	case *v3corepb.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *v3corepb.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case nil:
		return nil, errors.New("inline_string or inline_bytes: required")
	default:
		return nil, fmt.Errorf("only inline_string and inline_bytes are supported: %w", ErrUnsupported)
	}
}

func (v *Verifier) newRemoteKeys(rc *v3jwtauthnpb.RemoteJwks, o *options) (*remoteKeys, error) {
	switch {
	case rc == nil:
		return nil, errors.New("must not be null")
	case rc.GetAsyncFetch() != nil:
		return nil, fmt.Errorf("async_fetch: %w", ErrUnsupported)
	case rc.GetRetryPolicy() != nil:
		return nil, fmt.Errorf("retry_policy: %w", ErrUnsupported)
	}
	uri := rc.GetHttpUri().GetUri()
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("http_uri.uri: %q is not an http(s) URL", uri)
	}
	r := &remoteKeys{
		uri:         uri,
		timeout:     DefaultFetchTimeout,
		ttl:         DefaultCacheDuration,
		minInterval: o.minRefetchInterval,
		client:      o.client,
		logger:      o.logger,
		v:           v,
	}
	if d := rc.GetHttpUri().GetTimeout(); d != nil {
		if d.CheckValid() != nil || d.AsDuration() < 0 {
			return nil, errors.New("http_uri.timeout: must be a non-negative duration")
		}
		if d.AsDuration() > 0 {
			r.timeout = d.AsDuration()
		}
	}
	if d := rc.GetCacheDuration(); d != nil {
		if d.CheckValid() != nil || d.AsDuration() <= 0 {
			return nil, errors.New("cache_duration: must be a positive duration")
		}
		r.ttl = d.AsDuration()
	}
	return r, nil
}

// checkRules accepts only Istio's requirement: one rule on prefix "/"
// requiring, for each provider, "provider OR allow_missing" (see
// secpolicy.IstioJWTRequirement), and naming every provider exactly once.
func checkRules(cfg *v3jwtauthnpb.JwtAuthentication) error {
	rules := cfg.GetRules()
	if len(rules) != 1 {
		return fmt.Errorf("exactly one rule is required, got %d", len(rules))
	}
	prefixSlash := &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"}}
	if !proto.Equal(rules[0].GetMatch(), prefixSlash) {
		return fmt.Errorf("match other than prefix \"/\": %w", ErrUnsupported)
	}
	names, ok := istioShape(rules[0].GetRequires())
	if !ok {
		return fmt.Errorf("requirement other than each provider OR allow_missing: %w", ErrUnsupported)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			return fmt.Errorf("provider %q named twice", n)
		}
		if cfg.GetProviders()[n] == nil {
			return fmt.Errorf("unknown provider %q", n)
		}
		seen[n] = true
	}
	if len(seen) != len(cfg.GetProviders()) {
		return errors.New("every provider must be named in the requirement")
	}
	return nil
}

func istioShape(req *v3jwtauthnpb.JwtRequirement) ([]string, bool) {
	if n, ok := orMissing(req); ok {
		return []string{n}, true
	}
	anyOf := req.GetRequiresAny().GetRequirements()
	if len(anyOf) < 3 {
		return nil, false
	}
	all := anyOf[len(anyOf)-1].GetRequiresAll().GetRequirements()
	if len(all) != len(anyOf)-1 {
		return nil, false
	}
	var names []string
	for i, r := range anyOf[:len(anyOf)-1] {
		pn, ok := r.GetRequiresType().(*v3jwtauthnpb.JwtRequirement_ProviderName)
		if !ok {
			return nil, false
		}
		if n, ok := orMissing(all[i]); !ok || n != pn.ProviderName {
			return nil, false
		}
		names = append(names, pn.ProviderName)
	}
	return names, true
}

// orMissing matches {requires_any: [{provider_name: N}, {allow_missing: {}}]}.
func orMissing(req *v3jwtauthnpb.JwtRequirement) (string, bool) {
	rs := req.GetRequiresAny().GetRequirements()
	if len(rs) != 2 || rs[1].GetAllowMissing() == nil {
		return "", false
	}
	pn, ok := rs[0].GetRequiresType().(*v3jwtauthnpb.JwtRequirement_ProviderName)
	if !ok {
		return "", false
	}
	return pn.ProviderName, true
}

// discard drains and closes a response body.
func discard(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxJWKSSize))
	_ = body.Close()
}
