package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellismesh/trellis/internal/matcher"
	"github.com/trellismesh/trellis/internal/naming"
)

// MaxRegexLength caps the length of a regular expression in a match. Longer
// expressions are rejected so that hostile configuration cannot make route
// matching expensive. It is the limit the matchers of routes and policies
// are compiled with (package internal/matcher).
const MaxRegexLength = matcher.MaxRegexLen

// ClusterDomain is the DNS suffix of canonical service hostnames.
const ClusterDomain = "svc.cluster.local"

// CanonicalHost returns the canonical form of a service host written in
// namespace ns: a bare name ("reviews") means the service of that name in ns
// ("reviews.ns.svc.cluster.local"); anything with a dot is taken as written.
// Hostnames are case-insensitive and returned in lower case.
func CanonicalHost(host, ns string) string {
	host = strings.ToLower(host)
	if !strings.Contains(host, ".") {
		return host + "." + ns + "." + ClusterDomain
	}
	return host
}

var headerName = regexp.MustCompile(`^[a-z0-9!#$%&'*+\-.^_|~` + "`" + `]+$`)

func itoa(i int) string { return strconv.Itoa(i) }

// problems collects errors for one resource.
type problems struct {
	meta Meta
	errs []error
}

func (p *problems) add(field, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.meta.File, Line: p.meta.Line, Resource: p.meta.String(), Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) host(field, h string) {
	switch {
	case h == "":
		p.add(field, "required")
	case strings.Contains(h, "*"):
		p.add(field, "wildcard hosts are not supported")
	case !naming.IsDNS1123Subdomain(strings.ToLower(h)):
		p.add(field, "%q is not a valid hostname", h)
	}
}

func (p *problems) labels(field string, labels map[string]string) {
	for k, v := range labels {
		if !naming.IsLabelKey(k) {
			p.add(field+"["+quote(k)+"]", "%q is not a valid label key", k)
		}
		if !naming.IsLabelValue(v) {
			p.add(field+"["+quote(k)+"]", "%q is not a valid label value", v)
		}
	}
}

func (p *problems) address(field, addr string) {
	if addr == "" {
		p.add(field, "required")
		return
	}
	if _, err := netip.ParseAddr(addr); err != nil {
		p.add(field, "%q is not an IP address (DNS names and unix sockets are not supported)", addr)
	}
}

// subjectAltNames checks a list of subject alternative names a client
// pins: each must be a SPIFFE ID, the only name a mesh certificate
// carries.
func (p *problems) subjectAltNames(field string, sans []string) {
	for i, san := range sans {
		if _, err := spiffeid.FromString(san); err != nil {
			p.add(fmt.Sprintf("%s[%d]", field, i), "%q is not a SPIFFE ID such as spiffe://cluster.local/ns/default/sa/reviews (mesh certificates carry only SPIFFE IDs)", san)
		}
	}
}

func (p *problems) stringMatch(field string, m *networking.StringMatch, allowEmpty bool) {
	switch t := m.GetMatchType().(type) {
	case nil:
		if !allowEmpty {
			p.add(field, "one of exact, prefix or regex is required")
		}
	case *networking.StringMatch_Regex:
		if len(t.Regex) > MaxRegexLength {
			p.add(field+".regex", "regex is %d bytes long, the limit is %d", len(t.Regex), MaxRegexLength)
		} else if _, err := regexp.Compile(t.Regex); err != nil {
			p.add(field+".regex", "invalid regex: %v", err)
		}
	}
}

func validateServiceEntry(se *ServiceEntry) []error {
	p := &problems{meta: se.Meta}
	s := se.Spec
	if len(s.Hosts) == 0 {
		p.add("spec.hosts", "at least one host is required")
	}
	for i, h := range s.Hosts {
		p.host(fmt.Sprintf("spec.hosts[%d]", i), h)
	}
	if len(s.Ports) == 0 {
		p.add("spec.ports", "at least one port is required")
	}
	numbers, names := map[uint32]bool{}, map[string]bool{}
	for i, port := range s.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		switch {
		case port.Number == 0 || port.Number > 65535:
			p.add(f+".number", "must be between 1 and 65535")
		case numbers[port.Number]:
			p.add(f+".number", "port %d is listed twice", port.Number)
		}
		numbers[port.Number] = true
		if port.Name != "" {
			if names[port.Name] {
				p.add(f+".name", "port name %q is listed twice", port.Name)
			}
			names[port.Name] = true
		}
		if port.TargetPort > 65535 {
			p.add(f+".targetPort", "must be between 1 and 65535")
		}
		switch strings.ToUpper(port.Protocol) {
		case "", "GRPC", "HTTP", "HTTP2":
		default:
			p.add(f+".protocol", "protocol %q is not supported (want GRPC, HTTP or HTTP2)", port.Protocol)
		}
	}
	if s.Resolution != networking.ServiceEntry_STATIC {
		p.add("spec.resolution", "%s is not supported: set resolution: STATIC (endpoints are listed, selected WorkloadEntries, or self-registered)", s.Resolution)
	}
	if len(s.Endpoints) > 0 && s.WorkloadSelector != nil {
		p.add("spec.workloadSelector", "cannot be set together with endpoints")
	}
	if s.WorkloadSelector != nil {
		if len(s.WorkloadSelector.Labels) == 0 {
			p.add("spec.workloadSelector.labels", "at least one label is required")
		}
		p.labels("spec.workloadSelector.labels", s.WorkloadSelector.Labels)
	}
	for i, ep := range s.Endpoints {
		f := fmt.Sprintf("spec.endpoints[%d]", i)
		validateWorkload(p, f, ep, names)
	}
	p.subjectAltNames("spec.subjectAltNames", s.SubjectAltNames)
	return p.errs
}

// validateWorkload checks a WorkloadEntry spec; portNames, when non-nil, are
// the port names its ports map may use.
func validateWorkload(p *problems, f string, w *networking.WorkloadEntry, portNames map[string]bool) {
	p.address(f+".address", w.Address)
	for name, num := range w.Ports {
		pf := f + ".ports[" + quote(name) + "]"
		if num == 0 || num > 65535 {
			p.add(pf, "must be between 1 and 65535")
		}
		if portNames != nil && !portNames[name] {
			p.add(pf, "no port of the ServiceEntry is named %q", name)
		}
	}
	p.labels(f+".labels", w.Labels)
	if sa := w.ServiceAccount; sa != "" && !naming.IsDNS1123Subdomain(sa) {
		p.add(f+".serviceAccount", "%q is not a valid service account name (a DNS-1123 subdomain)", sa)
	}
	if w.Locality != "" && len(strings.Split(w.Locality, "/")) > 3 {
		p.add(f+".locality", "%q has more than region/zone/subzone", w.Locality)
	}
}

func validateWorkloadEntry(we *WorkloadEntry) []error {
	p := &problems{meta: we.Meta}
	validateWorkload(p, "spec", we.Spec, nil)
	return p.errs
}

func validateVirtualService(vs *VirtualService) []error {
	p := &problems{meta: vs.Meta}
	s := vs.Spec
	if len(s.Hosts) == 0 {
		p.add("spec.hosts", "at least one host is required")
	}
	for i, h := range s.Hosts {
		p.host(fmt.Sprintf("spec.hosts[%d]", i), h)
	}
	if len(s.Http) == 0 {
		p.add("spec.http", "at least one HTTP route is required")
	}
	for i, r := range s.Http {
		f := fmt.Sprintf("spec.http[%d]", i)
		for j, m := range r.Match {
			mf := fmt.Sprintf("%s.match[%d]", f, j)
			if m.Uri != nil {
				p.stringMatch(mf+".uri", m.Uri, false)
			}
			for name, hm := range m.Headers {
				hf := mf + ".headers[" + quote(name) + "]"
				if !headerName.MatchString(name) {
					p.add(hf, "%q is not a valid lower-case header name", name)
				}
				p.stringMatch(hf, hm, true)
			}
			p.labels(mf+".sourceLabels", m.SourceLabels)
			if m.Port > 65535 {
				p.add(mf+".port", "must be between 1 and 65535")
			}
		}
		validateRouteBehaviour(p, f, r)
		if len(r.Route) == 0 {
			p.add(f+".route", "at least one destination is required")
		}
		sum := int32(0)
		for j, d := range r.Route {
			df := fmt.Sprintf("%s.route[%d]", f, j)
			if d.Destination == nil {
				p.add(df+".destination", "required")
				continue
			}
			p.host(df+".destination.host", d.Destination.Host)
			if d.Destination.Subset != "" && !naming.IsDNS1123Label(d.Destination.Subset) {
				p.add(df+".destination.subset", "%q is not a valid subset name", d.Destination.Subset)
			}
			if n := d.Destination.GetPort().GetNumber(); d.Destination.Port != nil && (n == 0 || n > 65535) {
				p.add(df+".destination.port.number", "must be between 1 and 65535")
			}
			if d.Weight < 0 {
				p.add(df+".weight", "must not be negative")
			}
			sum += d.Weight
		}
		if len(r.Route) > 1 && sum != 100 {
			p.add(f+".route", "weights sum to %d, want 100", sum)
		}
		if len(r.Route) == 1 && r.Route[0].Weight != 0 && r.Route[0].Weight != 100 {
			p.add(f+".route[0].weight", "a single destination takes all traffic: weight must be 100 or unset, not %d", r.Route[0].Weight)
		}
	}
	validateVirtualServiceRateLimits(p, vs)
	return p.errs
}

func validateDestinationRule(dr *DestinationRule) []error {
	p := &problems{meta: dr.Meta}
	s := dr.Spec
	p.host("spec.host", s.Host)
	names := map[string]bool{}
	for i, sub := range s.Subsets {
		f := fmt.Sprintf("spec.subsets[%d]", i)
		switch {
		case sub.Name == "":
			p.add(f+".name", "required")
		case !naming.IsDNS1123Label(sub.Name):
			p.add(f+".name", "%q is not a valid subset name", sub.Name)
		case names[sub.Name]:
			p.add(f+".name", "subset %q is defined twice", sub.Name)
		}
		names[sub.Name] = true
		if len(sub.Labels) == 0 {
			p.add(f+".labels", "a subset must select workloads by at least one label")
		}
		p.labels(f+".labels", sub.Labels)
		validateTrafficPolicy(p, f+".trafficPolicy", sub.TrafficPolicy)
	}
	validateTrafficPolicy(p, "spec.trafficPolicy", s.TrafficPolicy)
	validateDestinationRuleRateLimits(p, dr.Annotations)
	validateLoadBalancerAnnotation(p, dr)
	return p.errs
}

// validateSet checks each resource, then the rules that span resources:
// unique names, one DestinationRule and one VirtualService per host, and
// subsets that VirtualServices route to being defined.
func validateSet(set *Set) []error {
	var errs []error
	seen := map[string]Meta{}
	dup := func(m Meta) {
		key := m.String()
		if first, ok := seen[key]; ok {
			errs = append(errs, &Error{File: m.File, Line: m.Line, Resource: key, Msg: fmt.Sprintf("duplicate resource: also defined at %s:%d", first.File, first.Line)})
			return
		}
		seen[key] = m
	}
	for _, r := range set.ServiceEntries {
		dup(r.Meta)
		errs = append(errs, validateServiceEntry(r)...)
	}
	for _, r := range set.WorkloadEntries {
		dup(r.Meta)
		errs = append(errs, validateWorkloadEntry(r)...)
	}
	for _, r := range set.VirtualServices {
		dup(r.Meta)
		errs = append(errs, validateVirtualService(r)...)
	}
	for _, r := range set.DestinationRules {
		dup(r.Meta)
		errs = append(errs, validateDestinationRule(r)...)
	}
	for _, r := range set.PeerAuthentications {
		dup(r.Meta)
		errs = append(errs, validatePeerAuthentication(r)...)
	}
	for _, r := range set.AuthorizationPolicies {
		dup(r.Meta)
		errs = append(errs, validateAuthorizationPolicy(r)...)
	}
	for _, r := range set.RequestAuthentications {
		dup(r.Meta)
		errs = append(errs, validateRequestAuthentication(r)...)
	}
	if len(errs) > 0 {
		return errs
	}

	errs = append(errs, validatePeerAuthenticationSet(set.PeerAuthentications)...)
	subsets := map[string]map[string]bool{} // canonical host -> subset names
	drByHost := map[string]*DestinationRule{}
	for _, dr := range set.DestinationRules {
		h := CanonicalHost(dr.Spec.Host, dr.Namespace)
		if first, ok := drByHost[h]; ok {
			p := &problems{meta: dr.Meta}
			p.add("spec.host", "host %s already has %s (%s:%d)", dr.Spec.Host, first.Meta, first.File, first.Line)
			errs = append(errs, p.errs...)
			continue
		}
		drByHost[h] = dr
		subsets[h] = map[string]bool{}
		for _, s := range dr.Spec.Subsets {
			subsets[h][s.Name] = true
		}
	}
	vsByHost := map[string]*VirtualService{}
	for _, vs := range set.VirtualServices {
		p := &problems{meta: vs.Meta}
		for i, host := range vs.Spec.Hosts {
			h := CanonicalHost(host, vs.Namespace)
			if first, ok := vsByHost[h]; ok && first != vs {
				p.add(fmt.Sprintf("spec.hosts[%d]", i), "host %s is already routed by %s (%s:%d)", host, first.Meta, first.File, first.Line)
			}
			vsByHost[h] = vs
		}
		for i, r := range vs.Spec.Http {
			for j, d := range r.Route {
				subset := d.Destination.Subset
				if subset == "" {
					continue
				}
				h := CanonicalHost(d.Destination.Host, vs.Namespace)
				if !subsets[h][subset] {
					p.add(fmt.Sprintf("spec.http[%d].route[%d].destination.subset", i, j), "subset %q of host %s is not defined by any DestinationRule", subset, d.Destination.Host)
				}
			}
		}
		errs = append(errs, p.errs...)
	}
	return errs
}

// MaxRetries is the largest retries.attempts accepted: grpc-go makes at most
// five attempts of a call, so more retries could not be honoured.
const MaxRetries = 4

// RetryOnGRPC maps the retryOn conditions Trellis implements for gRPC to
// their meaning. The gRPC status names are retried by grpc-go's retry
// policy; connect-failure and refused-stream are covered by gRPC's
// transparent retry of calls that never reached a server.
var RetryOnGRPC = map[string]string{
	"unavailable":        "UNAVAILABLE",
	"cancelled":          "CANCELLED",
	"deadline-exceeded":  "DEADLINE_EXCEEDED",
	"resource-exhausted": "RESOURCE_EXHAUSTED",
	"internal":           "INTERNAL",
	"connect-failure":    "",
	"refused-stream":     "",
}

// RetryOnHTTP are the retryOn conditions the HTTP client implements beyond
// the gRPC ones; an HTTP status code (100 to 599) is one too, as in Istio.
var RetryOnHTTP = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "connect-failure": true,
	"retriable-4xx": true, "refused-stream": true, "retriable-status-codes": true,
}

// RetryOnSupported reports whether cond is a retryOn condition Trellis
// implements, for gRPC or HTTP.
func RetryOnSupported(cond string) bool {
	if _, ok := RetryOnGRPC[cond]; ok || RetryOnHTTP[cond] {
		return true
	}
	n, err := strconv.Atoi(cond)
	return err == nil && n >= 100 && n <= 599
}

// GRPCCodes maps gRPC status code names, as Istio writes them in
// fault.abort.grpcStatus, to their numbers.
var GRPCCodes = map[string]uint32{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
	"NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
	"FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
	"INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

func (p *problems) positiveDuration(field string, d interface{ AsDuration() time.Duration }, set bool) {
	if set && d.AsDuration() <= 0 {
		p.add(field, "must be positive, not %v", d.AsDuration())
	}
}

func (p *problems) percentage(field string, pct *networking.Percent) {
	if pct != nil && (pct.Value < 0 || pct.Value > 100) {
		p.add(field+".value", "%v is not between 0 and 100", pct.Value)
	}
}

// validateRouteBehaviour checks an HTTP route's timeout, retries and fault.
func validateRouteBehaviour(p *problems, f string, r *networking.HTTPRoute) {
	if r.Timeout != nil && r.Timeout.AsDuration() < 0 {
		p.add(f+".timeout", "must not be negative, not %v", r.Timeout.AsDuration())
	}
	if rt := r.Retries; rt != nil {
		if rt.Attempts < 0 || rt.Attempts > MaxRetries {
			p.add(f+".retries.attempts", "%d is not between 0 and %d (gRPC makes at most %d attempts of a call)", rt.Attempts, MaxRetries, MaxRetries+1)
		}
		for _, cond := range strings.Split(rt.RetryOn, ",") {
			cond = strings.TrimSpace(cond)
			if !RetryOnSupported(cond) && cond != "" {
				p.add(f+".retries.retryOn", "%q is not supported (supported: unavailable, cancelled, deadline-exceeded, resource-exhausted, internal, connect-failure, refused-stream, 5xx, gateway-error, reset, retriable-4xx, retriable-status-codes, and HTTP status codes such as 503)", cond)
			}
		}
		p.positiveDuration(f+".retries.backoff", rt.Backoff, rt.Backoff != nil)
		p.positiveDuration(f+".retries.perTryTimeout", rt.PerTryTimeout, rt.PerTryTimeout != nil)
	}
	if ft := r.Fault; ft != nil {
		if ft.Delay == nil && ft.Abort == nil {
			p.add(f+".fault", "needs a delay or an abort")
		}
		if d := ft.Delay; d != nil {
			fd := d.GetFixedDelay()
			if fd == nil {
				p.add(f+".fault.delay.fixedDelay", "required")
			} else {
				p.positiveDuration(f+".fault.delay.fixedDelay", fd, true)
			}
			p.percentage(f+".fault.delay.percentage", d.Percentage)
		}
		if a := ft.Abort; a != nil {
			switch e := a.ErrorType.(type) {
			case *networking.HTTPFaultInjection_Abort_HttpStatus:
				if e.HttpStatus < 200 || e.HttpStatus > 599 {
					p.add(f+".fault.abort.httpStatus", "%d is not an HTTP status between 200 and 599", e.HttpStatus)
				}
			case *networking.HTTPFaultInjection_Abort_GrpcStatus:
				if c, ok := GRPCCodes[e.GrpcStatus]; !ok || c == 0 {
					p.add(f+".fault.abort.grpcStatus", "%q is not a gRPC error code name such as UNAVAILABLE", e.GrpcStatus)
				}
			default:
				p.add(f+".fault.abort", "httpStatus or grpcStatus is required")
			}
			p.percentage(f+".fault.abort.percentage", a.Percentage)
		}
	}
}

// MaxRingSize is the largest ring grpc-go builds for ring hash.
const MaxRingSize = 8 * 1024 * 1024

func validateTrafficPolicy(p *problems, f string, tp *networking.TrafficPolicy) {
	if tp == nil {
		return
	}
	validatePortPolicy(p, f, tp.LoadBalancer, tp.ConnectionPool, tp.OutlierDetection, tp.Tls)
	ports := map[uint32]bool{}
	for i, pl := range tp.PortLevelSettings {
		pf := fmt.Sprintf("%s.portLevelSettings[%d]", f, i)
		n := pl.GetPort().GetNumber()
		switch {
		case n == 0 || n > 65535:
			p.add(pf+".port.number", "must be between 1 and 65535")
		case ports[n]:
			p.add(pf+".port.number", "port %d has settings twice", n)
		}
		ports[n] = true
		validatePortPolicy(p, pf, pl.LoadBalancer, pl.ConnectionPool, pl.OutlierDetection, pl.Tls)
	}
}

func validatePortPolicy(p *problems, f string, lb *networking.LoadBalancerSettings, cp *networking.ConnectionPoolSettings, od *networking.OutlierDetection, tls *networking.ClientTLSSettings) {
	if tls != nil {
		switch tls.Mode {
		case networking.ClientTLSSettings_ISTIO_MUTUAL, networking.ClientTLSSettings_DISABLE:
		default:
			p.add(f+".tls.mode", "%s is not supported (supported: ISTIO_MUTUAL, DISABLE)", tls.Mode)
		}
		if len(tls.SubjectAltNames) > 0 && tls.Mode != networking.ClientTLSSettings_ISTIO_MUTUAL {
			p.add(f+".tls.subjectAltNames", "applies only with mode ISTIO_MUTUAL")
		}
		p.subjectAltNames(f+".tls.subjectAltNames", tls.SubjectAltNames)
	}
	if lb != nil {
		switch t := lb.LbPolicy.(type) {
		case *networking.LoadBalancerSettings_Simple:
			switch t.Simple {
			case networking.LoadBalancerSettings_UNSPECIFIED, networking.LoadBalancerSettings_ROUND_ROBIN,
				networking.LoadBalancerSettings_LEAST_REQUEST, networking.LoadBalancerSettings_RANDOM,
				//lint:ignore SA1019 LEAST_CONN is the old name of LEAST_REQUEST, still written by users.
				networking.LoadBalancerSettings_LEAST_CONN:
			default:
				p.add(f+".loadBalancer.simple", "%s is not supported (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM)", t.Simple)
			}
		case *networking.LoadBalancerSettings_ConsistentHash:
			ch := t.ConsistentHash
			switch k := ch.HashKey.(type) {
			case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
				if !headerName.MatchString(k.HttpHeaderName) {
					p.add(f+".loadBalancer.consistentHash.httpHeaderName", "%q is not a valid lower-case header name", k.HttpHeaderName)
				}
			case *networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
				if !k.UseSourceIp {
					p.add(f+".loadBalancer.consistentHash.useSourceIp", "must be true when set")
				}
			default:
				p.add(f+".loadBalancer.consistentHash", "httpHeaderName or useSourceIp is required")
			}
			if n := ch.GetRingHash().GetMinimumRingSize(); n > MaxRingSize {
				p.add(f+".loadBalancer.consistentHash.ringHash.minimumRingSize", "%d is larger than %d", n, MaxRingSize)
			}
			if od != nil {
				p.add(f+".outlierDetection", "cannot be combined with consistentHash load balancing")
			}
		}
	}
	if ls := lb.GetLocalityLbSetting(); ls != nil {
		lf := f + ".loadBalancer.localityLbSetting"
		if len(ls.Distribute) > 0 && len(ls.Failover) > 0 {
			p.add(lf, "distribute and failover cannot both be set")
		}
		for i, d := range ls.Distribute {
			df := fmt.Sprintf("%s.distribute[%d]", lf, i)
			if !validLocalityPattern(d.From) {
				p.add(df+".from", "%q is not a locality pattern such as \"region/zone/*\"", d.From)
			}
			sum := uint32(0)
			for to, w := range d.To {
				if !validLocalityPattern(to) {
					p.add(df+".to["+quote(to)+"]", "%q is not a locality pattern such as \"region/zone/*\"", to)
				}
				sum += w
			}
			if sum != 100 {
				p.add(df+".to", "weights sum to %d, want 100", sum)
			}
		}
		for i, fo := range ls.Failover {
			ff := fmt.Sprintf("%s.failover[%d]", lf, i)
			if fo.From == "" || strings.Contains(fo.From, "/") {
				p.add(ff+".from", "%q is not a region", fo.From)
			}
			if fo.To == "" || strings.Contains(fo.To, "/") {
				p.add(ff+".to", "%q is not a region", fo.To)
			}
			if fo.From == fo.To {
				p.add(ff, "a region cannot fail over to itself")
			}
		}
	}
	if cp != nil && cp.Http != nil && cp.Http.Http2MaxRequests < 0 {
		p.add(f+".connectionPool.http.http2MaxRequests", "must not be negative")
	}
	if n := cp.GetHttp().GetMaxRequestsPerConnection(); n < 0 {
		p.add(f+".connectionPool.http.maxRequestsPerConnection", "must not be negative")
	} else if n > 0 && lb.GetConsistentHash() != nil {
		p.add(f+".connectionPool.http.maxRequestsPerConnection", "cannot be combined with consistentHash load balancing")
	}
	if od != nil {
		if od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100 {
			p.add(f+".outlierDetection.maxEjectionPercent", "%d is not between 0 and 100", od.MaxEjectionPercent)
		}
		if od.MinHealthPercent < 0 || od.MinHealthPercent > 100 {
			p.add(f+".outlierDetection.minHealthPercent", "%d is not between 0 and 100", od.MinHealthPercent)
		}
		p.positiveDuration(f+".outlierDetection.interval", od.Interval, od.Interval != nil)
		p.positiveDuration(f+".outlierDetection.baseEjectionTime", od.BaseEjectionTime, od.BaseEjectionTime != nil)
	}
}

// validLocalityPattern reports whether s is "region", "region/zone" or
// "region/zone/subzone", where a part may be "*".
func validLocalityPattern(s string) bool {
	parts := strings.Split(s, "/")
	if s == "" || len(parts) > 3 {
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
	}
	return true
}
