package authz

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/trellismesh/trellis/internal/matcher"
)

// rule is one compiled permission or principal.
type rule func(*input) bool

func anyMatch(ms []rule, in *input) bool {
	for _, m := range ms {
		if m(in) {
			return true
		}
	}
	return false
}

func allMatch(ms []rule, in *input) bool {
	for _, m := range ms {
		if !m(in) {
			return false
		}
	}
	return true
}

// Keys of the istio_authn metadata that principals may match.
const (
	authnFilter         = "istio_authn"
	keyRequestPrincipal = "request.auth.principal"
	keyAudiences        = "request.auth.audiences"
	keyPresenter        = "request.auth.presenter"
	keyClaims           = "request.auth.claims"
)

// compiler compiles one policy; path is the field path for errors.
type compiler struct {
	path string
}

func (c *compiler) unsupported(field string) error {
	return &policyError{ErrUnsupported, c.path + ": " + field, "not supported"}
}

func (c *compiler) invalid(field, format string, args ...any) error {
	return &policyError{ErrInvalidPolicy, c.path + ": " + field, fmt.Sprintf(format, args...)}
}

func (c *compiler) policy(name string, p *v3rbacpb.Policy) (compiledPolicy, error) {
	out := compiledPolicy{name: name}
	if p == nil {
		return out, c.invalid("policy", "nil")
	}
	if p.GetCondition() != nil || p.GetCheckedCondition() != nil || p.GetCelConfig() != nil {
		return out, c.unsupported("condition (CEL)")
	}
	if len(p.GetPermissions()) == 0 {
		return out, c.invalid("permissions", "empty")
	}
	if len(p.GetPrincipals()) == 0 {
		return out, c.invalid("principals", "empty")
	}
	for i, perm := range p.GetPermissions() {
		m, err := c.permission(fmt.Sprintf("permissions[%d]", i), perm)
		if err != nil {
			return out, err
		}
		out.permissions = append(out.permissions, m)
	}
	for i, prin := range p.GetPrincipals() {
		m, err := c.principal(fmt.Sprintf("principals[%d]", i), prin)
		if err != nil {
			return out, err
		}
		out.principals = append(out.principals, m)
	}
	return out, nil
}

func (c *compiler) permissionSet(field string, rules []*v3rbacpb.Permission) ([]rule, error) {
	if len(rules) == 0 {
		return nil, c.invalid(field, "empty set")
	}
	ms := make([]rule, 0, len(rules))
	for i, r := range rules {
		m, err := c.permission(fmt.Sprintf("%s[%d]", field, i), r)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

func (c *compiler) permission(field string, p *v3rbacpb.Permission) (rule, error) {
	switch r := p.GetRule().(type) {
	case *v3rbacpb.Permission_Any:
		if !r.Any {
			return nil, c.invalid(field+".any", "must be true")
		}
		return func(*input) bool { return true }, nil
	case *v3rbacpb.Permission_AndRules:
		ms, err := c.permissionSet(field+".and_rules.rules", r.AndRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func(in *input) bool { return allMatch(ms, in) }, nil
	case *v3rbacpb.Permission_OrRules:
		ms, err := c.permissionSet(field+".or_rules.rules", r.OrRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func(in *input) bool { return anyMatch(ms, in) }, nil
	case *v3rbacpb.Permission_NotRule:
		m, err := c.permission(field+".not_rule", r.NotRule)
		if err != nil {
			return nil, err
		}
		return func(in *input) bool { return !m(in) }, nil
	case *v3rbacpb.Permission_Header:
		return c.header(field+".header", r.Header)
	case *v3rbacpb.Permission_UrlPath:
		return c.urlPath(field+".url_path", r.UrlPath)
	case *v3rbacpb.Permission_DestinationPort:
		port := int(r.DestinationPort)
		if port == 0 || port > 65535 {
			return nil, c.invalid(field+".destination_port", "%d out of range", port)
		}
		return func(in *input) bool { return in.r.DestinationPort == port }, nil
	case *v3rbacpb.Permission_DestinationPortRange:
		start, end := int(r.DestinationPortRange.GetStart()), int(r.DestinationPortRange.GetEnd())
		if start < 0 || end <= start {
			return nil, c.invalid(field+".destination_port_range", "[%d, %d) is empty", start, end)
		}
		return func(in *input) bool { return start <= in.r.DestinationPort && in.r.DestinationPort < end }, nil
	case nil:
		return nil, c.invalid(field, "no rule set")
	default:
		return nil, c.unsupported(field + "." + ruleName(p.ProtoReflect().WhichOneof(p.ProtoReflect().Descriptor().Oneofs().ByName("rule"))))
	}
}

func (c *compiler) principalSet(field string, ids []*v3rbacpb.Principal) ([]rule, error) {
	if len(ids) == 0 {
		return nil, c.invalid(field, "empty set")
	}
	ms := make([]rule, 0, len(ids))
	for i, id := range ids {
		m, err := c.principal(fmt.Sprintf("%s[%d]", field, i), id)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

func (c *compiler) principal(field string, p *v3rbacpb.Principal) (rule, error) {
	switch id := p.GetIdentifier().(type) {
	case *v3rbacpb.Principal_Any:
		if !id.Any {
			return nil, c.invalid(field+".any", "must be true")
		}
		return func(*input) bool { return true }, nil
	case *v3rbacpb.Principal_AndIds:
		ms, err := c.principalSet(field+".and_ids.ids", id.AndIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(in *input) bool { return allMatch(ms, in) }, nil
	case *v3rbacpb.Principal_OrIds:
		ms, err := c.principalSet(field+".or_ids.ids", id.OrIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(in *input) bool { return anyMatch(ms, in) }, nil
	case *v3rbacpb.Principal_NotId:
		m, err := c.principal(field+".not_id", id.NotId)
		if err != nil {
			return nil, err
		}
		return func(in *input) bool { return !m(in) }, nil
	case *v3rbacpb.Principal_Authenticated_:
		if id.Authenticated == nil {
			return nil, c.invalid(field+".authenticated", "nil")
		}
		if id.Authenticated.GetPrincipalName() == nil {
			return func(in *input) bool { return in.r.Principal != "" }, nil
		}
		sm, err := c.stringMatcher(field+".authenticated.principal_name", id.Authenticated.GetPrincipalName())
		if err != nil {
			return nil, err
		}
		return func(in *input) bool { return in.r.Principal != "" && sm(in.r.Principal) }, nil
	case *v3rbacpb.Principal_SourceIp:
		return c.cidr(field+".source_ip", id.SourceIp)
	case *v3rbacpb.Principal_DirectRemoteIp:
		return c.cidr(field+".direct_remote_ip", id.DirectRemoteIp)
	case *v3rbacpb.Principal_RemoteIp:
		return c.cidr(field+".remote_ip", id.RemoteIp)
	case *v3rbacpb.Principal_Header:
		return c.header(field+".header", id.Header)
	case *v3rbacpb.Principal_UrlPath:
		return c.urlPath(field+".url_path", id.UrlPath)
	case *v3rbacpb.Principal_Metadata:
		return c.metadata(field+".metadata", id.Metadata)
	case nil:
		return nil, c.invalid(field, "no identifier set")
	default:
		return nil, c.unsupported(field + "." + ruleName(p.ProtoReflect().WhichOneof(p.ProtoReflect().Descriptor().Oneofs().ByName("identifier"))))
	}
}

func ruleName(fd interface{ TextName() string }) string {
	if fd == nil {
		return "?"
	}
	return fd.TextName()
}

func (c *compiler) cidr(field string, r *v3corepb.CidrRange) (rule, error) {
	addr, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil {
		return nil, c.invalid(field+".address_prefix", "%v", err)
	}
	if addr.Zone() != "" {
		return nil, c.invalid(field+".address_prefix", "zone not allowed")
	}
	addr = addr.Unmap()
	bits := addr.BitLen()
	if r.GetPrefixLen() != nil {
		if l := int(r.GetPrefixLen().GetValue()); l <= bits {
			bits = l
		} else {
			return nil, c.invalid(field+".prefix_len", "%d exceeds address length", l)
		}
	}
	prefix, err := addr.Prefix(bits)
	if err != nil {
		return nil, c.invalid(field, "%v", err)
	}
	return func(in *input) bool {
		ip := in.r.SourceIP
		return ip.IsValid() && prefix.Contains(ip.Unmap().WithZone(""))
	}, nil
}

func (c *compiler) urlPath(field string, p *v3matcherpb.PathMatcher) (rule, error) {
	if err := c.strict(field+".path", p.GetPath()); err != nil {
		return nil, err
	}
	sm, err := matcher.CompilePath(p)
	if err != nil {
		return nil, c.compileError(field, err)
	}
	return func(in *input) bool { return sm.Match(in.path) }, nil
}

// header compiles an Envoy route HeaderMatcher with package
// internal/matcher, as routes compile theirs. The pseudo-headers ":method",
// ":authority" (and "host") and ":path" read Request.Method, Request.Host
// and the canonical path.
func (c *compiler) header(field string, h *v3routepb.HeaderMatcher) (rule, error) {
	if h == nil {
		return nil, c.invalid(field, "nil")
	}
	name := h.GetName()
	if name == "" || name != strings.ToLower(name) {
		return nil, c.invalid(field+".name", "%q must be non-empty and lower-case", name)
	}
	if err := c.strict(field+".string_match", h.GetStringMatch()); err != nil {
		return nil, err
	}
	hm, err := matcher.CompileHeader(h)
	if err != nil {
		return nil, c.compileError(field, err)
	}
	switch name {
	case ":method":
		return func(in *input) bool {
			if in.r.Method == "" {
				return hm.MatchMissing()
			}
			return hm.MatchValue(in.r.Method)
		}, nil
	case ":authority", "host":
		return func(in *input) bool {
			if in.r.Host != "" {
				return hm.MatchValue(in.r.Host)
			}
			return hm.Match(in.r.Headers[name])
		}, nil
	case ":path":
		return func(in *input) bool { return hm.MatchValue(in.path) }, nil
	}
	return func(in *input) bool { return hm.Match(in.r.Headers[name]) }, nil
}

// stringMatcher compiles an Envoy StringMatcher with package
// internal/matcher.
func (c *compiler) stringMatcher(field string, s *v3matcherpb.StringMatcher) (func(string) bool, error) {
	if s == nil {
		return nil, c.invalid(field, "nil")
	}
	if err := c.strict(field, s); err != nil {
		return nil, err
	}
	sm, err := matcher.CompileString(s)
	if err != nil {
		return nil, c.compileError(field, err)
	}
	return sm.Match, nil
}

// strict refuses what Envoy accepts but a policy should not say: ignore_case
// on a safe_regex, which Envoy ignores (the regex stays case-sensitive) and
// a policy author likely meant otherwise. Refusing it keeps the engine fail
// closed.
func (c *compiler) strict(field string, s *v3matcherpb.StringMatcher) error {
	if s.GetIgnoreCase() && s.GetSafeRegex() != nil {
		return c.unsupported(field + ".ignore_case with safe_regex")
	}
	return nil
}

// compileError turns an error of package internal/matcher on the message
// at field into an error of New.
func (c *compiler) compileError(field string, err error) error {
	var me *matcher.Error
	if !errors.As(err, &me) {
		return c.invalid(field, "%v", err)
	}
	if me.Field != "" {
		field += "." + me.Field
	}
	if errors.Is(me, matcher.ErrUnsupported) {
		return c.unsupported(field)
	}
	return c.invalid(field, "%s", me.Msg)
}

// metadata compiles a MetadataMatcher over the istio_authn (JWT) results.
func (c *compiler) metadata(field string, m *v3matcherpb.MetadataMatcher) (rule, error) {
	if m == nil {
		return nil, c.invalid(field, "nil")
	}
	if m.GetFilter() != authnFilter {
		return nil, c.unsupported(fmt.Sprintf("%s.filter %q (only %q)", field, m.GetFilter(), authnFilter))
	}
	var keys []string
	for i, seg := range m.GetPath() {
		k := seg.GetKey()
		if k == "" {
			return nil, c.invalid(fmt.Sprintf("%s.path[%d]", field, i), "empty key")
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, c.invalid(field+".path", "empty")
	}
	switch keys[0] {
	case keyRequestPrincipal, keyAudiences, keyPresenter:
		if len(keys) != 1 {
			return nil, c.invalid(field+".path", "%q takes no sub-keys", keys[0])
		}
	case keyClaims:
		if len(keys) < 2 {
			return nil, c.invalid(field+".path", "%q needs a claim name", keys[0])
		}
	default:
		return nil, c.unsupported(fmt.Sprintf("%s.path[0] %q", field, keys[0]))
	}
	vm, err := c.valueMatcher(field+".value", m.GetValue())
	if err != nil {
		return nil, err
	}
	invert := m.GetInvert()
	return func(in *input) bool {
		return vm(authnValue(in.r, keys)) != invert
	}, nil
}

// authnValue returns the JWT result at keys, nil if absent.
func authnValue(r *Request, keys []string) any {
	switch keys[0] {
	case keyRequestPrincipal:
		if r.RequestPrincipal == "" {
			return nil
		}
		return r.RequestPrincipal
	case keyAudiences:
		return r.Claims["aud"]
	case keyPresenter:
		return r.Claims["azp"]
	}
	var v any = r.Claims
	for _, k := range keys[1:] {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		if v, ok = m[k]; !ok {
			return nil
		}
	}
	return v
}

// valueMatcher compiles a ValueMatcher. A list_match applied to a single
// string treats it as a list of one, as Istio's authn filter stores every
// claim as a list.
func (c *compiler) valueMatcher(field string, v *v3matcherpb.ValueMatcher) (func(any) bool, error) {
	if v == nil {
		return nil, c.invalid(field, "nil")
	}
	switch p := v.GetMatchPattern().(type) {
	case *v3matcherpb.ValueMatcher_StringMatch:
		sm, err := c.stringMatcher(field+".string_match", p.StringMatch)
		if err != nil {
			return nil, err
		}
		return func(x any) bool {
			s, ok := x.(string)
			return ok && sm(s)
		}, nil
	case *v3matcherpb.ValueMatcher_PresentMatch:
		b := p.PresentMatch
		return func(x any) bool { return (x != nil) == b }, nil
	case *v3matcherpb.ValueMatcher_ListMatch:
		one, err := c.valueMatcher(field+".list_match.one_of", p.ListMatch.GetOneOf())
		if err != nil {
			return nil, err
		}
		return func(x any) bool {
			switch l := x.(type) {
			case string:
				return one(l)
			case []string:
				for _, e := range l {
					if one(e) {
						return true
					}
				}
			case []any:
				for _, e := range l {
					if one(e) {
						return true
					}
				}
			}
			return false
		}, nil
	case *v3matcherpb.ValueMatcher_OrMatch:
		var ms []func(any) bool
		for i, sub := range p.OrMatch.GetValueMatchers() {
			m, err := c.valueMatcher(fmt.Sprintf("%s.or_match.value_matchers[%d]", field, i), sub)
			if err != nil {
				return nil, err
			}
			ms = append(ms, m)
		}
		if len(ms) == 0 {
			return nil, c.invalid(field+".or_match", "empty")
		}
		return func(x any) bool {
			for _, m := range ms {
				if m(x) {
					return true
				}
			}
			return false
		}, nil
	case *v3matcherpb.ValueMatcher_BoolMatch:
		b := p.BoolMatch
		return func(x any) bool {
			v, ok := x.(bool)
			return ok && v == b
		}, nil
	case nil:
		return nil, c.invalid(field, "no match pattern set")
	default:
		return nil, c.unsupported(field + ".match_pattern (null_match, double_match)")
	}
}
