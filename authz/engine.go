package authz

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"

	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"

	"github.com/trellismesh/trellis/internal/matcher"
	"github.com/trellismesh/trellis/internal/urlpath"
)

// Errors returned by [New], wrapped with the RBAC config, policy and field
// they concern.
var (
	// ErrUnsupported reports a matcher kind or field the engine does not
	// implement. It is never ignored: the whole policy set is refused.
	ErrUnsupported = errors.New("authz: not supported")
	// ErrInvalidPolicy reports a malformed policy: a missing matcher, a bad
	// or oversized regular expression, a bad CIDR range.
	ErrInvalidPolicy = errors.New("authz: invalid policy")
)

// policyError is an error of New: kind is ErrUnsupported or
// ErrInvalidPolicy, where names the config, policy and field.
type policyError struct {
	kind  error
	where string
	msg   string
}

func (e *policyError) Error() string { return "authz: " + e.where + ": " + e.msg }

func (e *policyError) Unwrap() error { return e.kind }

// MaxRegexLen is the longest safe_regex, in bytes, that [New] accepts (the
// limit routes are held to as well).
const MaxRegexLen = matcher.MaxRegexLen

// Request is what the engine knows about one request. Its zero value is a
// request with no identity, no address and an invalid (empty) path, which
// every engine denies.
type Request struct {
	// Principal is the peer's SPIFFE ID from its mTLS certificate, as a URI
	// ("spiffe://td/ns/x/sa/y"); empty when the peer is not authenticated.
	Principal string
	// SourceIP is the peer's address on the connection. The engine never
	// trusts forwarding headers: remote_ip and direct_remote_ip both match
	// SourceIP. If invalid (zero), no IP matcher matches.
	SourceIP netip.Addr
	// DestinationPort is the local port the request arrived on.
	DestinationPort int
	// Method is the HTTP method ("POST" for gRPC); it is the ":method"
	// header for header matchers.
	Method string
	// Path is the raw request path (HTTP request-target or gRPC :path). The
	// engine canonicalises it with [urlpath.Canonical] and denies the
	// request when that fails; callers pass it unmodified.
	Path string
	// Host is the ":authority" (or "host") header.
	Host string
	// Headers holds the request headers. Names are matched case-insensitively
	// (lower-case names are fastest; an http.Header works too). A header
	// matcher sees the values of a repeated header joined with "," (no
	// space), as Envoy and grpc-go do: "x-tenant: secret" and "x-tenant:
	// public" are "secret,public", which an exact match on "public" does not
	// match. A request with a NUL, CR or LF in any header value is
	// denied.
	Headers map[string][]string
	// RequestPrincipal is "iss/sub" of a verified JWT; empty when there is
	// none.
	RequestPrincipal string
	// Claims are the claims of the verified JWT (nil when there is none):
	// strings, lists of strings, nested objects as map[string]any.
	// request.auth.audiences reads "aud" and request.auth.presenter "azp".
	Claims map[string]any
}

// Decision is the outcome of [Engine.Authorize].
type Decision struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// Policy names the policy that decided: the matching DENY policy, or the
	// matching ALLOW policy. Empty when no policy decided (no ALLOW policy
	// exists, none matched, or the request was invalid).
	Policy string
	// Reason says why, for logs. Never send it to the peer.
	Reason string
	// Audit lists the LOG (Istio AUDIT) policies that matched, sorted. They
	// never change Allowed.
	Audit []string
}

// Option configures an [Engine].
type Option interface {
	apply(*options)
}

type options struct {
	logger *slog.Logger
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithLogger sets the logger of the engine. If nil or unset, the engine logs
// nothing.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.logger = l })
}

// Engine evaluates requests against a set of RBAC policies. It is immutable
// once built and safe for concurrent use. A nil *Engine holds no policies.
type Engine struct {
	deny     []compiledPolicy
	allow    []compiledPolicy
	log      []compiledPolicy
	hasAllow bool // an ALLOW config exists, even an empty one
	logger   *slog.Logger
}

type compiledPolicy struct {
	name        string
	permissions []rule // ORed
	principals  []rule // ORed
}

func (p *compiledPolicy) match(in *input) bool {
	return anyMatch(p.permissions, in) && anyMatch(p.principals, in)
}

// New compiles the RBAC configs into an engine. Configs of the same action
// are merged: a request is denied if any DENY policy matches; otherwise, if
// any ALLOW config exists (even one with no policies), it is allowed only
// if an ALLOW policy matches; otherwise it is allowed. LOG policies are
// reported in [Decision.Audit] and never change the decision.
//
// Every config is validated: a matcher kind or field the engine does not
// implement makes New fail with an error wrapping [ErrUnsupported] and
// naming the policy and field; a malformed one fails with [ErrInvalidPolicy].
// Regular expressions are compiled here, once.
func New(policies []*v3rbacpb.RBAC, opts ...Option) (*Engine, error) {
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	e := &Engine{logger: o.logger}
	if e.logger == nil {
		e.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for i, cfg := range policies {
		if cfg == nil {
			return nil, &policyError{ErrInvalidPolicy, fmt.Sprintf("rbac[%d]", i), "nil config"}
		}
		if cfg.GetAuditLoggingOptions() != nil {
			return nil, &policyError{ErrUnsupported, fmt.Sprintf("rbac[%d].audit_logging_options", i), "not supported"}
		}
		names := make([]string, 0, len(cfg.GetPolicies()))
		for name := range cfg.GetPolicies() {
			names = append(names, name)
		}
		slices.Sort(names)
		var compiled []compiledPolicy
		for _, name := range names {
			c := &compiler{path: fmt.Sprintf("rbac[%d] (%s) policy %q", i, cfg.GetAction(), name)}
			p, err := c.policy(name, cfg.GetPolicies()[name])
			if err != nil {
				return nil, err
			}
			compiled = append(compiled, p)
		}
		switch cfg.GetAction() {
		case v3rbacpb.RBAC_ALLOW:
			e.allow = append(e.allow, compiled...)
			e.hasAllow = true
		case v3rbacpb.RBAC_DENY:
			e.deny = append(e.deny, compiled...)
		case v3rbacpb.RBAC_LOG:
			e.log = append(e.log, compiled...)
		default:
			return nil, &policyError{ErrUnsupported, fmt.Sprintf("rbac[%d].action", i), fmt.Sprintf("%v not supported", cfg.GetAction())}
		}
	}
	slices.SortStableFunc(e.log, func(a, b compiledPolicy) int { return strings.Compare(a.name, b.name) })
	e.logger.Debug("authz: engine built", "deny", len(e.deny), "allow", len(e.allow), "log", len(e.log), "allowConfig", e.hasAllow)
	return e, nil
}

// input is a validated request with its canonical path.
type input struct {
	r    *Request
	path string
}

// Authorize decides whether r may proceed. A nil, malformed (path without a
// canonical form, NUL in a header value) request is denied whatever the
// policies say.
func (e *Engine) Authorize(r *Request) Decision {
	if r == nil {
		return Decision{Reason: "nil request"}
	}
	path, err := urlpath.Canonical(r.Path)
	if err != nil {
		return Decision{Reason: err.Error()}
	}
	lower := true
	for name, vals := range r.Headers {
		for _, v := range vals {
			if strings.ContainsAny(v, "\x00\r\n") {
				return Decision{Reason: fmt.Sprintf("invalid value of header %q", name)}
			}
		}
		lower = lower && !hasUpper(name)
	}
	if e == nil {
		return Decision{Allowed: true, Reason: "no policies"}
	}
	in := &input{r: r, path: path}
	if !lower {
		// Headers under mixed-case names (an http.Header, say) are merged
		// under lower-case ones, so no matcher can miss them; in the order
		// of their names, so that the joined value is always the same.
		cp := *r
		cp.Headers = make(map[string][]string, len(r.Headers))
		for _, name := range slices.Sorted(maps.Keys(r.Headers)) {
			k := strings.ToLower(name)
			cp.Headers[k] = append(cp.Headers[k], r.Headers[name]...)
		}
		in.r = &cp
	}
	var audit []string
	for i := range e.log {
		if e.log[i].match(in) {
			audit = append(audit, e.log[i].name)
		}
	}
	for i := range e.deny {
		if e.deny[i].match(in) {
			return Decision{Policy: e.deny[i].name, Reason: "matched DENY policy", Audit: audit}
		}
	}
	if !e.hasAllow {
		return Decision{Allowed: true, Reason: "no ALLOW policy", Audit: audit}
	}
	for i := range e.allow {
		if e.allow[i].match(in) {
			return Decision{Allowed: true, Policy: e.allow[i].name, Reason: "matched ALLOW policy", Audit: audit}
		}
	}
	return Decision{Reason: "no ALLOW policy matched", Audit: audit}
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
