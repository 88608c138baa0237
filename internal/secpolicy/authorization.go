package secpolicy

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3rbacfilterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/trellismesh/trellis/internal/urlpath"
)

// ErrInvalidAuthorizationPolicy is matched (with errors.Is) by every error of
// [AuthorizationPolicies]: a field Trellis does not implement or a value it
// cannot translate. The message names the policy and the field path.
var ErrInvalidAuthorizationPolicy = errors.New("secpolicy: invalid authorization policy")

// AuthzFilter is the metadata namespace of request authentication (JWT)
// results that translated policies match, as in Istio.
const AuthzFilter = "istio_authn"

// NamedAuthorizationPolicy is one Istio AuthorizationPolicy resource with its
// identity. The zero value has no spec and is rejected by
// [AuthorizationPolicies].
type NamedAuthorizationPolicy struct {
	Name      string
	Namespace string
	Spec      *securityv1beta1.AuthorizationPolicy
	// DryRun marks a policy annotated istio.io/dry-run: "true": it is
	// evaluated and its would-be decision reported, never enforced
	// ([AuthorizationFilters] puts it in shadow_rules).
	DryRun bool
}

// Stat prefixes of the shadow rules of dry-run policies, Istio's, so that
// Envoy's RBAC statistics read as they do under Istio
// ("istio_dry_run_allow_shadow_denied").
const (
	DryRunAllowStatPrefix = "istio_dry_run_allow_"
	DryRunDenyStatPrefix  = "istio_dry_run_deny_"
)

func (n NamedAuthorizationPolicy) key() string { return n.Namespace + "/" + n.Name }

// apError is an error of AuthorizationPolicies.
type apError struct {
	policy, field, msg string
}

func (e *apError) Error() string {
	return fmt.Sprintf("secpolicy: authorization policy %q: %s: %s", e.policy, e.field, e.msg)
}

func (e *apError) Is(target error) bool { return target == ErrInvalidAuthorizationPolicy }

// Selects reports whether policy p applies to a workload in namespace
// workloadNamespace with the given labels, by Istio's rules: a policy in the
// root namespace applies to workloads of every namespace, any other policy
// only to workloads of its own namespace; a selector's matchLabels must all
// be present, with the same values, among the workload's labels (an absent or
// empty selector selects every workload in scope). targetRef and targetRefs
// are not looked at here: [AuthorizationPolicies] rejects them, so such a
// policy fails closed instead of applying nowhere.
func Selects(p NamedAuthorizationPolicy, rootNamespace, workloadNamespace string, workloadLabels map[string]string) bool {
	if p.Namespace != workloadNamespace && (rootNamespace == "" || p.Namespace != rootNamespace) {
		return false
	}
	for k, v := range p.Spec.GetSelector().GetMatchLabels() {
		if got, ok := workloadLabels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// AuthorizationPolicies translates the AuthorizationPolicy resources that
// apply to one workload (see [Selects]) into Envoy RBAC configs: at most one
// each of DENY, ALLOW and LOG (Istio's AUDIT), in that order. Every rule
// becomes one RBAC policy named "<namespace>/<name>[<rule index>]".
//
// Istio's semantics are kept: the entries of from (and of to) are ORed; the
// fields of one source (or operation) are ANDed and the values of one field
// ORed; when conditions are ANDed, their values ORed and their notValues
// negated. An ALLOW policy with no rules yields an ALLOW config (possibly
// with no policies) and so allows nothing by itself; rules: [{}] allows
// everything. DENY and AUDIT policies without rules match nothing.
//
// Identities: a principal "td/ns/a/sa/b" matches the SPIFFE ID
// "spiffe://td/ns/a/sa/b" exactly (dots are literal); the trust domain
// "cluster.local" is Istio's alias of the local one and is rewritten to
// trustDomain when trustDomain is set. "*" matches any authenticated peer;
// "x*" and "*x" are prefix and suffix matches. Namespaces and service
// accounts match SPIFFE IDs of trustDomain (of any trust domain when
// trustDomain is empty). ipBlocks and remoteIpBlocks both match the peer's
// address: forwarding headers are never trusted.
//
// Paths match the canonical path (see [urlpath.Canonical]); a policy path that is
// not itself canonical ("/a//b", "/a/../b", "/a?x") could never match and is
// rejected, as is a path that does not begin with '/' or '*'.
//
// Supported when keys: request.headers[name], source.ip, remote.ip,
// source.namespace, source.principal, request.auth.principal,
// request.auth.audiences, request.auth.presenter, request.auth.claims[a]
// (and nested [a][b]...), destination.port. Rejected fields: action CUSTOM
// and provider, targetRef, targetRefs, source.trustDomains and
// notTrustDomains, operation.hosts and notHosts, path templates ("{*}"),
// wildcards inside values, any other when key. A rejected field is an error
// naming the policy and the field, matching ErrInvalidAuthorizationPolicy:
//
//	secpolicy: authorization policy "default/deny-admin": rules[0].to[0].operation.hosts: not supported
//
// Dry-run policies are left out (every one is still translated, so an
// invalid one is an error): [AuthorizationFilters] gives them as shadow
// rules.
func AuthorizationPolicies(policies []NamedAuthorizationPolicy, trustDomain string) ([]*v3rbacpb.RBAC, error) {
	enforced, _, err := translatePolicies(policies, trustDomain)
	return enforced, err
}

// AuthorizationFilters is [AuthorizationPolicies] for the RBAC HTTP filters
// of a server listener, as Istio builds them: at most one filter config
// per action (DENY, ALLOW, LOG, in that order), whose rules hold the
// enforced policies of the action and whose shadow_rules hold its dry-run
// policies (with shadow_rules_stat_prefix [DryRunDenyStatPrefix] or
// [DryRunAllowStatPrefix]). An action with dry-run policies only has no
// rules, so it enforces nothing: a dry-run ALLOW never denies the requests
// it does not match. Shadow rules are evaluated and never enforced (Envoy,
// and Trellis's servers, which log and count their decisions); grpc-go's
// RBAC filter ignores them.
func AuthorizationFilters(policies []NamedAuthorizationPolicy, trustDomain string) ([]*v3rbacfilterpb.RBAC, error) {
	enforced, shadow, err := translatePolicies(policies, trustDomain)
	if err != nil {
		return nil, err
	}
	var out []*v3rbacfilterpb.RBAC
	for _, a := range actionOrder {
		f := &v3rbacfilterpb.RBAC{}
		for _, cfg := range enforced {
			if cfg.GetAction() == a {
				f.Rules = cfg
			}
		}
		for _, cfg := range shadow {
			if cfg.GetAction() == a {
				f.ShadowRules = cfg
				f.ShadowRulesStatPrefix = map[v3rbacpb.RBAC_Action]string{v3rbacpb.RBAC_DENY: DryRunDenyStatPrefix, v3rbacpb.RBAC_ALLOW: DryRunAllowStatPrefix}[a]
			}
		}
		if f.Rules != nil || f.ShadowRules != nil {
			out = append(out, f)
		}
	}
	return out, nil
}

// actionOrder is the order of the configs AuthorizationPolicies returns.
var actionOrder = []v3rbacpb.RBAC_Action{v3rbacpb.RBAC_DENY, v3rbacpb.RBAC_ALLOW, v3rbacpb.RBAC_LOG}

// translatePolicies translates policies into the RBAC configs of the
// enforced policies and those of the dry-run ones, each at most one per
// action, in actionOrder.
func translatePolicies(policies []NamedAuthorizationPolicy, trustDomain string) (enforced, shadow []*v3rbacpb.RBAC, err error) {
	sorted := slices.Clone(policies)
	slices.SortStableFunc(sorted, func(a, b NamedAuthorizationPolicy) int {
		return strings.Compare(a.key(), b.key())
	})
	configs := [2]map[v3rbacpb.RBAC_Action]*v3rbacpb.RBAC{{}, {}} // enforced, dry run
	for _, p := range sorted {
		t := &apTranslator{policy: p.key(), namespace: p.Namespace, trustDomain: trustDomain}
		action, rules, err := t.translate(p.Spec)
		if err != nil {
			return nil, nil, err
		}
		set := configs[0]
		if p.DryRun {
			set = configs[1]
		}
		cfg := set[action]
		if cfg == nil {
			if len(rules) == 0 && action != v3rbacpb.RBAC_ALLOW {
				continue
			}
			cfg = &v3rbacpb.RBAC{Action: action, Policies: map[string]*v3rbacpb.Policy{}}
			set[action] = cfg
		}
		maps.Copy(cfg.Policies, rules)
	}
	for _, a := range actionOrder {
		if cfg := configs[0][a]; cfg != nil {
			enforced = append(enforced, cfg)
		}
		if cfg := configs[1][a]; cfg != nil {
			shadow = append(shadow, cfg)
		}
	}
	return enforced, shadow, nil
}

// apTranslator translates one AuthorizationPolicy.
type apTranslator struct {
	policy      string // namespace/name
	namespace   string
	trustDomain string
}

func (t *apTranslator) errorf(field, format string, args ...any) error {
	return &apError{policy: t.policy, field: field, msg: fmt.Sprintf(format, args...)}
}

func (t *apTranslator) unsupported(field string) error {
	return &apError{policy: t.policy, field: field, msg: "not supported"}
}

func (t *apTranslator) translate(spec *securityv1beta1.AuthorizationPolicy) (v3rbacpb.RBAC_Action, map[string]*v3rbacpb.Policy, error) {
	if spec == nil {
		return 0, nil, t.errorf("spec", "missing")
	}
	if spec.GetTargetRef() != nil {
		return 0, nil, t.unsupported("targetRef")
	}
	if len(spec.GetTargetRefs()) > 0 {
		return 0, nil, t.unsupported("targetRefs")
	}
	if spec.GetProvider() != nil {
		return 0, nil, t.unsupported("provider")
	}
	var action v3rbacpb.RBAC_Action
	switch spec.GetAction() {
	case securityv1beta1.AuthorizationPolicy_ALLOW:
		action = v3rbacpb.RBAC_ALLOW
	case securityv1beta1.AuthorizationPolicy_DENY:
		action = v3rbacpb.RBAC_DENY
	case securityv1beta1.AuthorizationPolicy_AUDIT:
		action = v3rbacpb.RBAC_LOG
	default:
		return 0, nil, t.errorf("action", "%v not supported", spec.GetAction())
	}
	out := map[string]*v3rbacpb.Policy{}
	for i, rule := range spec.GetRules() {
		field := fmt.Sprintf("rules[%d]", i)
		if rule == nil {
			return 0, nil, t.errorf(field, "null rule")
		}
		p, err := t.rule(field, rule)
		if err != nil {
			return 0, nil, err
		}
		out[fmt.Sprintf("%s[%d]", t.policy, i)] = p
	}
	return action, out, nil
}

func (t *apTranslator) rule(field string, r *securityv1beta1.Rule) (*v3rbacpb.Policy, error) {
	var perms []*v3rbacpb.Permission
	var prins []*v3rbacpb.Principal

	var froms []*v3rbacpb.Principal
	for i, f := range r.GetFrom() {
		ff := fmt.Sprintf("%s.from[%d].source", field, i)
		if f.GetSource() == nil {
			return nil, t.errorf(ff, "must be set")
		}
		p, err := t.source(ff, f.GetSource())
		if err != nil {
			return nil, err
		}
		froms = append(froms, p)
	}
	if len(froms) > 0 {
		prins = append(prins, apOrIDs(froms))
	}

	var tos []*v3rbacpb.Permission
	for i, to := range r.GetTo() {
		tf := fmt.Sprintf("%s.to[%d].operation", field, i)
		if to.GetOperation() == nil {
			return nil, t.errorf(tf, "must be set")
		}
		p, err := t.operation(tf, to.GetOperation())
		if err != nil {
			return nil, err
		}
		tos = append(tos, p)
	}
	if len(tos) > 0 {
		perms = append(perms, apOrRules(tos))
	}

	for i, c := range r.GetWhen() {
		cf := fmt.Sprintf("%s.when[%d]", field, i)
		perm, prin, err := t.condition(cf, c)
		if err != nil {
			return nil, err
		}
		if perm != nil {
			perms = append(perms, perm)
		}
		if prin != nil {
			prins = append(prins, prin)
		}
	}

	policy := &v3rbacpb.Policy{}
	switch len(perms) {
	case 0:
		policy.Permissions = []*v3rbacpb.Permission{{Rule: &v3rbacpb.Permission_Any{Any: true}}}
	case 1:
		policy.Permissions = perms
	default:
		policy.Permissions = []*v3rbacpb.Permission{{Rule: &v3rbacpb.Permission_AndRules{AndRules: &v3rbacpb.Permission_Set{Rules: perms}}}}
	}
	switch len(prins) {
	case 0:
		policy.Principals = []*v3rbacpb.Principal{{Identifier: &v3rbacpb.Principal_Any{Any: true}}}
	case 1:
		policy.Principals = prins
	default:
		policy.Principals = []*v3rbacpb.Principal{{Identifier: &v3rbacpb.Principal_AndIds{AndIds: &v3rbacpb.Principal_Set{Ids: prins}}}}
	}
	return policy, nil
}

// apPrincipalField translates the values of one principal-side field.
type apPrincipalField struct {
	name   string
	values []string
	not    bool
	conv   func(field, v string) (*v3rbacpb.Principal, error)
}

func (t *apTranslator) source(field string, s *securityv1beta1.Source) (*v3rbacpb.Principal, error) {
	if len(s.GetTrustDomains()) > 0 {
		return nil, t.unsupported(field + ".trustDomains")
	}
	if len(s.GetNotTrustDomains()) > 0 {
		return nil, t.unsupported(field + ".notTrustDomains")
	}
	fields := []apPrincipalField{
		{"principals", s.GetPrincipals(), false, t.principal},
		{"notPrincipals", s.GetNotPrincipals(), true, t.principal},
		{"requestPrincipals", s.GetRequestPrincipals(), false, t.requestPrincipal},
		{"notRequestPrincipals", s.GetNotRequestPrincipals(), true, t.requestPrincipal},
		{"namespaces", s.GetNamespaces(), false, t.sourceNamespace},
		{"notNamespaces", s.GetNotNamespaces(), true, t.sourceNamespace},
		{"serviceAccounts", s.GetServiceAccounts(), false, t.serviceAccount},
		{"notServiceAccounts", s.GetNotServiceAccounts(), true, t.serviceAccount},
		{"ipBlocks", s.GetIpBlocks(), false, t.directIP},
		{"notIpBlocks", s.GetNotIpBlocks(), true, t.directIP},
		{"remoteIpBlocks", s.GetRemoteIpBlocks(), false, t.remoteIP},
		{"notRemoteIpBlocks", s.GetNotRemoteIpBlocks(), true, t.remoteIP},
	}
	var and []*v3rbacpb.Principal
	for _, f := range fields {
		if len(f.values) == 0 {
			continue
		}
		p, err := t.principalValues(field+"."+f.name, f.values, f.conv)
		if err != nil {
			return nil, err
		}
		if f.not {
			p = &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_NotId{NotId: p}}
		}
		and = append(and, p)
	}
	if len(and) == 0 {
		return nil, t.errorf(field, "must set at least one field")
	}
	return apAndIDs(and), nil
}

func (t *apTranslator) principalValues(field string, values []string, conv func(string, string) (*v3rbacpb.Principal, error)) (*v3rbacpb.Principal, error) {
	var or []*v3rbacpb.Principal
	for i, v := range values {
		p, err := conv(fmt.Sprintf("%s[%d]", field, i), v)
		if err != nil {
			return nil, err
		}
		or = append(or, p)
	}
	return apOrIDs(or), nil
}

func (t *apTranslator) operation(field string, o *securityv1beta1.Operation) (*v3rbacpb.Permission, error) {
	if len(o.GetHosts()) > 0 {
		return nil, t.unsupported(field + ".hosts")
	}
	if len(o.GetNotHosts()) > 0 {
		return nil, t.unsupported(field + ".notHosts")
	}
	fields := []struct {
		name   string
		values []string
		not    bool
		conv   func(field, v string) (*v3rbacpb.Permission, error)
	}{
		{"ports", o.GetPorts(), false, t.port},
		{"notPorts", o.GetNotPorts(), true, t.port},
		{"methods", o.GetMethods(), false, t.method},
		{"notMethods", o.GetNotMethods(), true, t.method},
		{"paths", o.GetPaths(), false, t.path},
		{"notPaths", o.GetNotPaths(), true, t.path},
	}
	var and []*v3rbacpb.Permission
	for _, f := range fields {
		if len(f.values) == 0 {
			continue
		}
		var or []*v3rbacpb.Permission
		for i, v := range f.values {
			p, err := f.conv(fmt.Sprintf("%s.%s[%d]", field, f.name, i), v)
			if err != nil {
				return nil, err
			}
			or = append(or, p)
		}
		p := apOrRules(or)
		if f.not {
			p = &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_NotRule{NotRule: p}}
		}
		and = append(and, p)
	}
	if len(and) == 0 {
		return nil, t.errorf(field, "must set at least one field")
	}
	return apAndRules(and), nil
}

var apClaimsKey = regexp.MustCompile(`^request\.auth\.claims((?:\[[^\[\]]+\])+)$`)
var apHeaderKey = regexp.MustCompile(`^request\.headers\[([^\[\]]+)\]$`)

// condition translates one when condition into a permission or a principal.
func (t *apTranslator) condition(field string, c *securityv1beta1.Condition) (*v3rbacpb.Permission, *v3rbacpb.Principal, error) {
	if c == nil {
		return nil, nil, t.errorf(field, "null condition")
	}
	if len(c.GetValues()) == 0 && len(c.GetNotValues()) == 0 {
		return nil, nil, t.errorf(field, "needs values or notValues")
	}
	key := c.GetKey()
	if key == "destination.port" {
		perm, err := t.permConditionValues(field, c, t.port)
		return perm, nil, err
	}
	var conv func(string, string) (*v3rbacpb.Principal, error)
	switch {
	case key == "source.ip":
		conv = t.directIP
	case key == "remote.ip":
		conv = t.remoteIP
	case key == "source.namespace":
		conv = t.sourceNamespace
	case key == "source.principal":
		conv = t.principal
	case key == "request.auth.principal":
		conv = t.requestPrincipal
	case key == "request.auth.audiences":
		conv = func(f, v string) (*v3rbacpb.Principal, error) {
			return t.metadataList(f, []string{"request.auth.audiences"}, v)
		}
	case key == "request.auth.presenter":
		conv = func(f, v string) (*v3rbacpb.Principal, error) {
			sm, err := t.wildcard(f, v)
			if err != nil {
				return nil, err
			}
			return apMetadata([]string{"request.auth.presenter"}, apValueString(sm)), nil
		}
	case apClaimsKey.MatchString(key):
		m := apClaimsKey.FindStringSubmatch(key)
		keys := append([]string{"request.auth.claims"}, strings.Split(strings.TrimSuffix(strings.TrimPrefix(m[1], "["), "]"), "][")...)
		conv = func(f, v string) (*v3rbacpb.Principal, error) { return t.metadataList(f, keys, v) }
	case apHeaderKey.MatchString(key):
		name := strings.ToLower(apHeaderKey.FindStringSubmatch(key)[1])
		conv = func(f, v string) (*v3rbacpb.Principal, error) {
			sm, err := t.wildcard(f, v)
			if err != nil {
				return nil, err
			}
			return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Header{Header: apHeader(name, sm)}}, nil
		}
	default:
		return nil, nil, t.errorf(field+".key", "%q not supported", key)
	}
	var and []*v3rbacpb.Principal
	if len(c.GetValues()) > 0 {
		p, err := t.principalValues(field+".values", c.GetValues(), conv)
		if err != nil {
			return nil, nil, err
		}
		and = append(and, p)
	}
	if len(c.GetNotValues()) > 0 {
		p, err := t.principalValues(field+".notValues", c.GetNotValues(), conv)
		if err != nil {
			return nil, nil, err
		}
		and = append(and, &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_NotId{NotId: p}})
	}
	return nil, apAndIDs(and), nil
}

func (t *apTranslator) permConditionValues(field string, c *securityv1beta1.Condition, conv func(string, string) (*v3rbacpb.Permission, error)) (*v3rbacpb.Permission, error) {
	var and []*v3rbacpb.Permission
	for _, part := range []struct {
		name string
		vals []string
		not  bool
	}{{"values", c.GetValues(), false}, {"notValues", c.GetNotValues(), true}} {
		if len(part.vals) == 0 {
			continue
		}
		var or []*v3rbacpb.Permission
		for i, v := range part.vals {
			p, err := conv(fmt.Sprintf("%s.%s[%d]", field, part.name, i), v)
			if err != nil {
				return nil, err
			}
			or = append(or, p)
		}
		p := apOrRules(or)
		if part.not {
			p = &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_NotRule{NotRule: p}}
		}
		and = append(and, p)
	}
	return apAndRules(and), nil
}

// wildcard translates an Istio string with an optional leading or trailing
// '*' into a StringMatcher; nil means "*" (presence).
func (t *apTranslator) wildcard(field, v string) (*v3matcherpb.StringMatcher, error) {
	switch {
	case v == "":
		return nil, t.errorf(field, "empty value")
	case v == "*":
		return nil, nil
	case strings.Count(v, "*") > 1:
		return nil, t.errorf(field, "%q: only one leading or trailing '*' is supported", v)
	case strings.HasPrefix(v, "*"):
		return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Suffix{Suffix: v[1:]}}, nil
	case strings.HasSuffix(v, "*"):
		return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: v[:len(v)-1]}}, nil
	case strings.Contains(v, "*"):
		return nil, t.errorf(field, "%q: only one leading or trailing '*' is supported", v)
	}
	return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: v}}, nil
}

// localTD rewrites Istio's "cluster.local" alias to the local trust domain.
func (t *apTranslator) localTD(principal string) string {
	if t.trustDomain == "" {
		return principal
	}
	if rest, ok := strings.CutPrefix(principal, "cluster.local/"); ok {
		return t.trustDomain + "/" + rest
	}
	return principal
}

func (t *apTranslator) principal(field, v string) (*v3rbacpb.Principal, error) {
	sm, err := t.wildcard(field, v)
	if err != nil {
		return nil, err
	}
	switch p := sm.GetMatchPattern().(type) {
	case *v3matcherpb.StringMatcher_Exact:
		p.Exact = "spiffe://" + t.localTD(p.Exact)
	case *v3matcherpb.StringMatcher_Prefix:
		p.Prefix = "spiffe://" + t.localTD(p.Prefix)
	}
	return apAuthenticated(sm), nil
}

// tdPattern is the regular expression of the trust domain in SPIFFE IDs.
func (t *apTranslator) tdPattern() string {
	if t.trustDomain == "" {
		return `[^/]+`
	}
	return regexp.QuoteMeta(t.trustDomain)
}

// segmentPattern turns an Istio value with optional '*' at either end into a
// regular expression for one path segment of a SPIFFE ID.
func (t *apTranslator) segmentPattern(field, v string) (string, error) {
	sm, err := t.wildcard(field, v)
	if err != nil {
		return "", err
	}
	lit := v
	if sm != nil {
		lit = sm.GetExact() + sm.GetPrefix() + sm.GetSuffix()
	}
	if strings.Contains(lit, "/") {
		return "", t.errorf(field, "%q must not contain '/'", v)
	}
	switch {
	case sm == nil:
		return `[^/]+`, nil
	case sm.GetPrefix() != "":
		return regexp.QuoteMeta(lit) + `[^/]*`, nil
	case sm.GetSuffix() != "":
		return `[^/]*` + regexp.QuoteMeta(lit), nil
	}
	return regexp.QuoteMeta(lit), nil
}

func (t *apTranslator) sourceNamespace(field, v string) (*v3rbacpb.Principal, error) {
	ns, err := t.segmentPattern(field, v)
	if err != nil {
		return nil, err
	}
	return apAuthenticated(apRegex(`spiffe://` + t.tdPattern() + `/ns/` + ns + `/sa/[^/]+`)), nil
}

func (t *apTranslator) serviceAccount(field, v string) (*v3rbacpb.Principal, error) {
	ns, sa, ok := strings.Cut(v, "/")
	if !ok {
		ns, sa = t.namespace, v
	}
	if ns == "" || sa == "" || strings.ContainsAny(sa, "/*") || strings.Contains(ns, "*") {
		return nil, t.errorf(field, "%q is not <namespace>/<serviceaccount> or <serviceaccount>", v)
	}
	return apAuthenticated(apRegex(`spiffe://` + t.tdPattern() + `/ns/` + regexp.QuoteMeta(ns) + `/sa/` + regexp.QuoteMeta(sa))), nil
}

func (t *apTranslator) requestPrincipal(field, v string) (*v3rbacpb.Principal, error) {
	sm, err := t.wildcard(field, v)
	if err != nil {
		return nil, err
	}
	return apMetadata([]string{"request.auth.principal"}, apValueString(sm)), nil
}

// metadataList matches a JWT value that may be a string or a list of strings.
func (t *apTranslator) metadataList(field string, keys []string, v string) (*v3rbacpb.Principal, error) {
	sm, err := t.wildcard(field, v)
	if err != nil {
		return nil, err
	}
	return apMetadata(keys, &v3matcherpb.ValueMatcher{MatchPattern: &v3matcherpb.ValueMatcher_ListMatch{
		ListMatch: &v3matcherpb.ListMatcher{MatchPattern: &v3matcherpb.ListMatcher_OneOf{OneOf: apValueString(sm)}},
	}}), nil
}

func (t *apTranslator) cidr(field, v string) (*v3corepb.CidrRange, error) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return &v3corepb.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return nil, t.errorf(field, "%q is not an IP address or CIDR block", v)
	}
	return &v3corepb.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))}, nil
}

func (t *apTranslator) directIP(field, v string) (*v3rbacpb.Principal, error) {
	r, err := t.cidr(field, v)
	if err != nil {
		return nil, err
	}
	return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_DirectRemoteIp{DirectRemoteIp: r}}, nil
}

func (t *apTranslator) remoteIP(field, v string) (*v3rbacpb.Principal, error) {
	r, err := t.cidr(field, v)
	if err != nil {
		return nil, err
	}
	return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_RemoteIp{RemoteIp: r}}, nil
}

func (t *apTranslator) port(field, v string) (*v3rbacpb.Permission, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return nil, t.errorf(field, "%q is not a port number", v)
	}
	return &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_DestinationPort{DestinationPort: uint32(n)}}, nil
}

func (t *apTranslator) method(field, v string) (*v3rbacpb.Permission, error) {
	sm, err := t.wildcard(field, v)
	if err != nil {
		return nil, err
	}
	return &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_Header{Header: apHeader(":method", sm)}}, nil
}

func (t *apTranslator) path(field, v string) (*v3rbacpb.Permission, error) {
	if strings.ContainsAny(v, "{}") {
		return nil, t.errorf(field, "%q: path templates not supported", v)
	}
	sm, err := t.wildcard(field, v)
	if err != nil {
		return nil, err
	}
	var check string
	switch {
	case sm == nil:
		sm = &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_Prefix{Prefix: "/"}}
	case sm.GetSuffix() != "":
		check = sm.GetSuffix()
		if !strings.HasPrefix(check, "/") {
			check = "/" + check
		}
	default:
		check = sm.GetExact() + sm.GetPrefix()
		if !strings.HasPrefix(check, "/") {
			return nil, t.errorf(field, "%q must begin with '/' or '*'", v)
		}
	}
	if check != "" {
		if c, err := urlpath.Canonical(check); err != nil {
			return nil, t.errorf(field, "%q: %v", v, err)
		} else if c != check {
			return nil, t.errorf(field, "%q is not in canonical form (%q) and would never match", v, c)
		}
	}
	return &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_UrlPath{UrlPath: &v3matcherpb.PathMatcher{
		Rule: &v3matcherpb.PathMatcher_Path{Path: sm},
	}}}, nil
}

func apAuthenticated(sm *v3matcherpb.StringMatcher) *v3rbacpb.Principal {
	return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Authenticated_{
		Authenticated: &v3rbacpb.Principal_Authenticated{PrincipalName: sm},
	}}
}

func apRegex(re string) *v3matcherpb.StringMatcher {
	return &v3matcherpb.StringMatcher{MatchPattern: &v3matcherpb.StringMatcher_SafeRegex{
		SafeRegex: &v3matcherpb.RegexMatcher{Regex: re},
	}}
}

// apHeader matches header name with sm; nil sm means presence.
func apHeader(name string, sm *v3matcherpb.StringMatcher) *v3routepb.HeaderMatcher {
	if sm == nil {
		return &v3routepb.HeaderMatcher{Name: name, HeaderMatchSpecifier: &v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	return &v3routepb.HeaderMatcher{Name: name, HeaderMatchSpecifier: &v3routepb.HeaderMatcher_StringMatch{StringMatch: sm}}
}

// apValueString matches a string value with sm; nil sm means presence.
func apValueString(sm *v3matcherpb.StringMatcher) *v3matcherpb.ValueMatcher {
	if sm == nil {
		return &v3matcherpb.ValueMatcher{MatchPattern: &v3matcherpb.ValueMatcher_PresentMatch{PresentMatch: true}}
	}
	return &v3matcherpb.ValueMatcher{MatchPattern: &v3matcherpb.ValueMatcher_StringMatch{StringMatch: sm}}
}

func apMetadata(keys []string, v *v3matcherpb.ValueMatcher) *v3rbacpb.Principal {
	path := make([]*v3matcherpb.MetadataMatcher_PathSegment, len(keys))
	for i, k := range keys {
		path[i] = &v3matcherpb.MetadataMatcher_PathSegment{Segment: &v3matcherpb.MetadataMatcher_PathSegment_Key{Key: k}}
	}
	return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_Metadata{Metadata: &v3matcherpb.MetadataMatcher{
		Filter: AuthzFilter, Path: path, Value: v,
	}}}
}

func apOrIDs(ids []*v3rbacpb.Principal) *v3rbacpb.Principal {
	if len(ids) == 1 {
		return ids[0]
	}
	return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_OrIds{OrIds: &v3rbacpb.Principal_Set{Ids: ids}}}
}

func apAndIDs(ids []*v3rbacpb.Principal) *v3rbacpb.Principal {
	if len(ids) == 1 {
		return ids[0]
	}
	return &v3rbacpb.Principal{Identifier: &v3rbacpb.Principal_AndIds{AndIds: &v3rbacpb.Principal_Set{Ids: ids}}}
}

func apOrRules(rules []*v3rbacpb.Permission) *v3rbacpb.Permission {
	if len(rules) == 1 {
		return rules[0]
	}
	return &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_OrRules{OrRules: &v3rbacpb.Permission_Set{Rules: rules}}}
}

func apAndRules(rules []*v3rbacpb.Permission) *v3rbacpb.Permission {
	if len(rules) == 1 {
		return rules[0]
	}
	return &v3rbacpb.Permission{Rule: &v3rbacpb.Permission_AndRules{AndRules: &v3rbacpb.Permission_Set{Rules: rules}}}
}
