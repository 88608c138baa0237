package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Annotations that set local rate limits. Istio has no local rate-limit
// API, so Trellis reads these annotations of Istio resources; each value
// is JSON, validated strictly (unknown keys and non-positive numbers are
// rejected).
const (
	// RateLimitAnnotation, on a DestinationRule, limits every client's
	// calls to the rule's service (client side, each client process on
	// its own, per service port): a RateLimit without perCaller.
	RateLimitAnnotation = "trellis.io/rate-limit"
	// ServerRateLimitAnnotation, on a DestinationRule, limits the calls
	// each server of the rule's service accepts: a RateLimit, in total or,
	// with perCaller, per caller identity.
	ServerRateLimitAnnotation = "trellis.io/server-rate-limit"
	// RouteRateLimitAnnotation, on a VirtualService, limits every client's
	// calls taking named HTTP routes: a JSON object from route name
	// (spec.http[].name) to RateLimit without perCaller.
	RouteRateLimitAnnotation = "trellis.io/route-rate-limit"
)

// MaxRequestsPerSecond bounds RateLimit.RequestsPerSecond and Burst.
const MaxRequestsPerSecond = 1_000_000

// RateLimit is a token bucket as the rate-limit annotations write it:
//
//	{"requestsPerSecond": 100, "burst": 20, "perCaller": true}
type RateLimit struct {
	// RequestsPerSecond is the sustained rate: a whole number from 1 to
	// MaxRequestsPerSecond.
	RequestsPerSecond uint32 `json:"requestsPerSecond"`
	// Burst is how many calls may pass at once after a quiet period (the
	// bucket's capacity). If zero, RequestsPerSecond.
	Burst uint32 `json:"burst,omitempty"`
	// PerCaller gives each caller identity (the SPIFFE ID of an mTLS peer)
	// a bucket of its own; plaintext callers share one. Server limits only.
	PerCaller bool `json:"perCaller,omitempty"`
}

// Tokens returns the bucket's capacity: Burst, or RequestsPerSecond if
// Burst is zero.
func (r RateLimit) Tokens() uint32 {
	if r.Burst == 0 {
		return r.RequestsPerSecond
	}
	return r.Burst
}

// ClientRateLimit returns the client-side limit a DestinationRule's
// RateLimitAnnotation sets, nil if none. The Set's rules are valid.
func ClientRateLimit(dr *DestinationRule) *RateLimit {
	r, _ := parseRateLimit(dr.Annotations, RateLimitAnnotation, false)
	return r
}

// ServerRateLimit returns the server-side limit a DestinationRule's
// ServerRateLimitAnnotation sets, nil if none.
func ServerRateLimit(dr *DestinationRule) *RateLimit {
	r, _ := parseRateLimit(dr.Annotations, ServerRateLimitAnnotation, true)
	return r
}

// RouteRateLimits returns the per-route limits a VirtualService's
// RouteRateLimitAnnotation sets, by route name; nil if none.
func RouteRateLimits(vs *VirtualService) map[string]RateLimit {
	m, _ := parseRouteRateLimits(vs.Annotations)
	return m
}

func annotationField(key string) string { return "metadata.annotations[" + quote(key) + "]" }

// decodeStrict decodes one JSON value into v, rejecting unknown keys and
// trailing data.
func decodeStrict(s string, v any) error {
	d := json.NewDecoder(strings.NewReader(s))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

func parseRateLimit(annotations map[string]string, key string, server bool) (*RateLimit, error) {
	s, ok := annotations[key]
	if !ok {
		return nil, nil
	}
	return decodeRateLimit([]byte(s), server)
}

func decodeRateLimit(data []byte, server bool) (*RateLimit, error) {
	// Pointers tell a key written as 0 from a key left out.
	var raw struct {
		RequestsPerSecond *uint32 `json:"requestsPerSecond"`
		Burst             *uint32 `json:"burst"`
		PerCaller         *bool   `json:"perCaller"`
	}
	if err := decodeStrict(string(data), &raw); err != nil {
		return nil, fmt.Errorf("want %s: %w", rateLimitSyntax(server), jsonErrorText(err))
	}
	var r RateLimit
	switch {
	case raw.RequestsPerSecond == nil:
		return nil, errors.New("requestsPerSecond is required")
	case *raw.RequestsPerSecond == 0 || *raw.RequestsPerSecond > MaxRequestsPerSecond:
		return nil, fmt.Errorf("requestsPerSecond must be a whole number from 1 to %d, not %d", MaxRequestsPerSecond, *raw.RequestsPerSecond)
	}
	r.RequestsPerSecond = *raw.RequestsPerSecond
	if raw.Burst != nil {
		if *raw.Burst == 0 || *raw.Burst > MaxRequestsPerSecond {
			return nil, fmt.Errorf("burst must be a whole number from 1 to %d, not %d", MaxRequestsPerSecond, *raw.Burst)
		}
		r.Burst = *raw.Burst
	}
	if raw.PerCaller != nil {
		if !server {
			return nil, fmt.Errorf("perCaller applies to %s only", ServerRateLimitAnnotation)
		}
		r.PerCaller = *raw.PerCaller
	}
	return &r, nil
}

func rateLimitSyntax(server bool) string {
	if server {
		return `{"requestsPerSecond": N, "burst": N, "perCaller": true|false}`
	}
	return `{"requestsPerSecond": N, "burst": N}`
}

// jsonErrorText makes encoding/json's errors read as the user wrote the
// annotation (no Go types, no struct names).
func jsonErrorText(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Errorf("got a JSON %s, not an object", te.Value)
		}
		return fmt.Errorf("%s: %s is not a valid value", te.Field, te.Value)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	msg = strings.Replace(msg, "unknown field", "unknown key", 1)
	return errors.New(msg)
}

func parseRouteRateLimits(annotations map[string]string) (map[string]RateLimit, error) {
	s, ok := annotations[RouteRateLimitAnnotation]
	if !ok {
		return nil, nil
	}
	var raw map[string]json.RawMessage
	if err := decodeStrict(s, &raw); err != nil {
		return nil, fmt.Errorf(`want {"<route name>": {"requestsPerSecond": N, "burst": N}, ...}: %w`, jsonErrorText(err))
	}
	if len(raw) == 0 {
		return nil, errors.New("no route is limited")
	}
	out := make(map[string]RateLimit, len(raw))
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		r, err := decodeRateLimit(bytes.TrimSpace(raw[name]), false)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", name, err)
		}
		out[name] = *r
	}
	return out, nil
}

// validateDestinationRuleRateLimits checks a DestinationRule's
// rate-limit annotations.
func validateDestinationRuleRateLimits(p *problems, annotations map[string]string) {
	for _, a := range []struct {
		key    string
		server bool
	}{{RateLimitAnnotation, false}, {ServerRateLimitAnnotation, true}} {
		if _, err := parseRateLimit(annotations, a.key, a.server); err != nil {
			p.add(annotationField(a.key), "%v", err)
		}
	}
	if _, ok := annotations[RouteRateLimitAnnotation]; ok {
		p.add(annotationField(RouteRateLimitAnnotation), "belongs on a VirtualService; on a DestinationRule use %s or %s", RateLimitAnnotation, ServerRateLimitAnnotation)
	}
}

// validateVirtualServiceRateLimits checks a VirtualService's rate-limit
// annotation: every route it names must be one of the service's named
// HTTP routes.
func validateVirtualServiceRateLimits(p *problems, vs *VirtualService) {
	for _, key := range []string{RateLimitAnnotation, ServerRateLimitAnnotation} {
		if _, ok := vs.Annotations[key]; ok {
			p.add(annotationField(key), "belongs on a DestinationRule; on a VirtualService use %s", RouteRateLimitAnnotation)
		}
	}
	limits, err := parseRouteRateLimits(vs.Annotations)
	if err != nil {
		p.add(annotationField(RouteRateLimitAnnotation), "%v", err)
		return
	}
	names := map[string]bool{}
	for _, r := range vs.Spec.GetHttp() {
		names[r.GetName()] = true
	}
	for _, name := range slices.Sorted(maps.Keys(limits)) {
		if !names[name] {
			p.add(annotationField(RouteRateLimitAnnotation), "route %q: no HTTP route of this VirtualService has that name", name)
		}
	}
}
