package translate

import (
	"fmt"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3ratelimitpb "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	v3localratelimitpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3exprpb "github.com/envoyproxy/go-control-plane/envoy/extensions/rate_limit_descriptors/expr/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/ratelimit"
)

// Local rate limits travel as Envoy's local_ratelimit HTTP filter:
//
//   - Client side (DestinationRule trellis.io/rate-limit, VirtualService
//     trellis.io/route-rate-limit): the API listener carries the filter
//     without a bucket (a no-op by itself), and the route configuration
//     enables it with a per-filter config — on the virtual host for the
//     service's limit, on a route for the route's, which replaces the
//     service's for calls on that route (Envoy's most-specific-wins). The
//     per-filter configs are wrapped in a FilterConfig marked optional and
//     the listener filter is optional, so clients without the filter
//     (grpc-go's own) ignore them instead of rejecting the resources.
//   - Server side (DestinationRule trellis.io/server-rate-limit): the
//     server listener of each endpoint of the service carries the filter
//     with its bucket, before the router (after authentication and
//     authorization, so refused calls take no tokens). perCaller adds a
//     wildcard descriptor on ratelimit.CallerDescriptorKey, filled by a CEL
//     expression with the peer certificate's URI SAN (the SPIFFE ID);
//     plaintext callers produce no descriptor and share the filter's own
//     bucket.
//
// The names both sides read (the filter's, the caller descriptor's) are in
// internal/ratelimit.
const (
	clientStatPrefix = "trellis_client_rate_limit"
	serverStatPrefix = "trellis_server_rate_limit"
)

// TokenBucket returns the Envoy token bucket of a rate-limit annotation:
// Tokens() tokens at most, RequestsPerSecond added every second.
func TokenBucket(r config.RateLimit) *v3typepb.TokenBucket {
	return &v3typepb.TokenBucket{
		MaxTokens:     r.Tokens(),
		TokensPerFill: wrapperspb.UInt32(r.RequestsPerSecond),
		FillInterval:  durationpb.New(time.Second),
	}
}

// allRequests is a runtime fraction of 100 %: filter_enabled and
// filter_enforced default to 0 % when unset.
func allRequests(key string) *v3corepb.RuntimeFractionalPercent {
	return &v3corepb.RuntimeFractionalPercent{
		DefaultValue: &v3typepb.FractionalPercent{Numerator: 100, Denominator: v3typepb.FractionalPercent_HUNDRED},
		RuntimeKey:   key,
	}
}

func localRateLimit(prefix string, r *config.RateLimit) *v3localratelimitpb.LocalRateLimit {
	lrl := &v3localratelimitpb.LocalRateLimit{StatPrefix: prefix}
	if r == nil {
		return lrl // a listener filter without a bucket: only per-route configs limit
	}
	lrl.TokenBucket = TokenBucket(*r)
	lrl.FilterEnabled = allRequests(prefix + "_enabled")
	lrl.FilterEnforced = allRequests(prefix + "_enforced")
	lrl.RateLimitedAsResourceExhausted = true
	return lrl
}

// perRouteRateLimit is the optional per-filter config of a client limit.
func perRouteRateLimit(r config.RateLimit) *anypb.Any {
	return mustAny(&v3routepb.FilterConfig{Config: mustAny(localRateLimit(clientStatPrefix, &r)), IsOptional: true})
}

// clientRateLimits enables the client-side limits of a service's route
// configuration: the DestinationRule's on the virtual host, the
// VirtualService's (vs may be nil) on the routes they name. It reports
// whether the configuration limits anything, so that the listener needs the
// filter.
func (b *builder) clientRateLimits(host string, vs *config.VirtualService, vh *v3routepb.VirtualHost) bool {
	limited := false
	if dr := b.ruleFor(host); dr != nil {
		if r := config.ClientRateLimit(dr); r != nil {
			vh.TypedPerFilterConfig = map[string]*anypb.Any{ratelimit.FilterName: perRouteRateLimit(*r)}
			limited = true
		}
	}
	if vs == nil {
		return limited
	}
	routeLimits := config.RouteRateLimits(vs)
	for _, r := range vh.Routes {
		l, ok := routeLimits[r.Name]
		if !ok {
			continue
		}
		if r.TypedPerFilterConfig == nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		// Routes made from one HTTPRoute share its map; they take the
		// same value.
		r.TypedPerFilterConfig[ratelimit.FilterName] = perRouteRateLimit(l)
		limited = true
	}
	return limited
}

// ruleFor returns the DestinationRule of a canonical host, or nil.
func (b *builder) ruleFor(host string) *config.DestinationRule {
	if dr, ok := b.rules[host]; ok {
		return dr
	}
	for _, dr := range b.set.DestinationRules {
		if config.CanonicalHost(dr.Spec.Host, dr.Namespace) == host {
			return dr
		}
	}
	return nil
}

// withLocalRateLimitFilter returns an API listener with the (optional,
// bucketless) local_ratelimit filter inserted before its router.
func withLocalRateLimitFilter(l *v3listenerpb.Listener) *v3listenerpb.Listener {
	hcm := new(v3hcmpb.HttpConnectionManager)
	if err := l.GetApiListener().GetApiListener().UnmarshalTo(hcm); err != nil {
		panic(fmt.Sprintf("translate: API listener %s: %v", l.GetName(), err))
	}
	hcm.HttpFilters = insertBeforeRouter(hcm.HttpFilters, &v3hcmpb.HttpFilter{
		Name:       ratelimit.FilterName,
		ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(localRateLimit(clientStatPrefix, nil))},
		IsOptional: true,
	})
	l.ApiListener.ApiListener = mustAny(hcm)
	return l
}

// insertBeforeRouter inserts f before the last filter (the router).
func insertBeforeRouter(filters []*v3hcmpb.HttpFilter, f *v3hcmpb.HttpFilter) []*v3hcmpb.HttpFilter {
	n := len(filters)
	if n == 0 {
		return []*v3hcmpb.HttpFilter{f, routerFilter()}
	}
	out := make([]*v3hcmpb.HttpFilter, 0, n+1)
	out = append(out, filters[:n-1]...)
	return append(out, f, filters[n-1])
}

// serverRateLimit adds the server-side limit of the service host (a
// canonical host), if its DestinationRule sets one, to the HTTP filters of
// one of its endpoints.
func (b *builder) serverRateLimit(host string, filters []*v3hcmpb.HttpFilter) []*v3hcmpb.HttpFilter {
	dr := b.ruleFor(host)
	if dr == nil {
		return filters
	}
	limit := config.ServerRateLimit(dr)
	if limit == nil {
		return filters
	}
	return insertBeforeRouter(filters, &v3hcmpb.HttpFilter{
		Name:       ratelimit.FilterName,
		ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(ServerLocalRateLimit(*limit))},
		// Servers without the filter (grpc-go's xDS server) skip it.
		IsOptional: true,
	})
}

// ServerLocalRateLimit returns the local_ratelimit configuration of a
// server limit.
func ServerLocalRateLimit(r config.RateLimit) *v3localratelimitpb.LocalRateLimit {
	lrl := localRateLimit(serverStatPrefix, &r)
	if !r.PerCaller {
		return lrl
	}
	lrl.Descriptors = []*v3ratelimitpb.LocalRateLimitDescriptor{{
		Entries:     []*v3ratelimitpb.RateLimitDescriptor_Entry{{Key: ratelimit.CallerDescriptorKey}}, // no value: one bucket per caller
		TokenBucket: TokenBucket(r),
	}}
	lrl.RateLimits = []*v3routepb.RateLimit{{
		Actions: []*v3routepb.RateLimit_Action{{
			ActionSpecifier: &v3routepb.RateLimit_Action_Extension{Extension: &v3corepb.TypedExtensionConfig{
				Name: ratelimit.ExprDescriptorExtension,
				TypedConfig: mustAny(&v3exprpb.Descriptor{
					DescriptorKey: ratelimit.CallerDescriptorKey,
					ExprSpecifier: &v3exprpb.Descriptor_Text{Text: ratelimit.CallerExpression},
					SkipIfError:   true, // plaintext: no descriptor, the shared bucket
				}),
			}},
		}},
	}}
	lrl.MaxDynamicDescriptors = wrapperspb.UInt32(ratelimit.MaxCallers)
	// A caller's calls take from its own bucket only, not also from the
	// shared one.
	lrl.AlwaysConsumeDefaultTokenBucket = wrapperspb.Bool(false)
	return lrl
}
