package mesh

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3localratelimitpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	v3exprpb "github.com/envoyproxy/go-control-plane/envoy/extensions/rate_limit_descriptors/expr/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellismesh/trellis/internal/ratelimit"
	"github.com/trellismesh/trellis/telemetry"
)

// Local rate limits arrive as Envoy's local_ratelimit HTTP filter: per
// virtual host or route on the client (typed_per_filter_config), on the
// server listener for servers. See internal/translate/ratelimit.go.

// errLimited refuses a call over a server's limit.
var errLimited = errors.New("rate limited")

// clientLimiter holds the buckets of every client-side limit in the
// process: the calls of all connections and transports to one service port
// share its buckets.
var clientLimiter = ratelimit.New(ratelimit.WithMaxKeys(4096))

// routeLimit is the client-side limit of a route: the bucket's key and
// parameters. A nil *routeLimit limits nothing.
type routeLimit struct {
	key   string
	limit ratelimit.Limit
}

// allow takes a token for one call.
func (l *routeLimit) allow() bool { return l == nil || clientLimiter.Allow(l.key, l.limit) }

// clientRouteLimit reads the limit of a route: its own local_ratelimit
// per-filter config, else its virtual host's (Envoy's most specific
// wins). A route-level limit has a bucket of its own; a virtual host's is
// shared by its routes. Configurations the client cannot honour limit
// nothing; the filter is optional.
func clientRouteLimit(vh *v3routepb.VirtualHost, r *v3routepb.Route) *routeLimit {
	if a := r.GetTypedPerFilterConfig()[ratelimit.FilterName]; a != nil {
		return limitOf(a, "route\x00"+vh.GetName()+"\x00"+r.GetName())
	}
	if a := vh.GetTypedPerFilterConfig()[ratelimit.FilterName]; a != nil {
		return limitOf(a, "vhost\x00"+vh.GetName())
	}
	return nil
}

func limitOf(a *anypb.Any, key string) *routeLimit {
	fc := new(v3routepb.FilterConfig)
	if a.MessageIs(fc) {
		if a.UnmarshalTo(fc) != nil {
			return nil
		}
		a = fc.GetConfig()
	}
	lrl := new(v3localratelimitpb.LocalRateLimit)
	if !a.MessageIs(lrl) || a.UnmarshalTo(lrl) != nil || !enforced(lrl) {
		return nil
	}
	lim, err := ratelimit.FromTokenBucket(lrl.GetTokenBucket())
	if err != nil {
		return nil
	}
	return &routeLimit{key: key, limit: lim}
}

// enforced reports whether a local_ratelimit config limits calls: it has a
// bucket, and is enabled and enforced (Envoy's defaults are 0 %; any
// other share counts as all calls).
func enforced(lrl *v3localratelimitpb.LocalRateLimit) bool {
	return lrl.GetTokenBucket() != nil &&
		lrl.GetFilterEnabled().GetDefaultValue().GetNumerator() > 0 &&
		lrl.GetFilterEnforced().GetDefaultValue().GetNumerator() > 0
}

// errClientLimited is what a gRPC call over a client-side limit fails with.
var errClientLimited = status.Error(codes.ResourceExhausted, "mesh: local rate limit exceeded")

// httpRouteWithLimit converts a route for the HTTP client, with its limit.
func httpRouteWithLimit(vh *v3routepb.VirtualHost, r *v3routepb.Route) *httpRoute {
	hr := httpRouteOf(r)
	if hr != nil {
		hr.limit = clientRouteLimit(vh, r)
	}
	return hr
}

// rateLimited takes a token for an HTTP request on route r; over the
// limit it answers 429 without sending the request, as Envoy's filter
// does.
func (t *Transport) rateLimited(req *http.Request, r *httpRoute) (*http.Response, bool) {
	if r.limit.allow() {
		return nil, false
	}
	closeBody(req)
	t.tel.Event(req.Context(), telemetry.EventRateLimited, req.URL.Host, "")
	return synthetic(req, http.StatusTooManyRequests, http.Header{"X-Envoy-Ratelimited": {"true"}}, "local_rate_limited"), true
}

// serverLimit is the limit of a server's port, from the local_ratelimit
// filter of its listener.
type serverLimit struct {
	cfg       *v3localratelimitpb.LocalRateLimit
	limit     ratelimit.Limit
	perCaller bool
	buckets   *ratelimit.Limiter
}

// compileServerLimit reads a server listener's local_ratelimit filter. It
// keeps old's buckets when the configuration did not change. It returns
// nil for a filter that limits nothing, and an error for one the server
// cannot honour, rather than ignore a limit.
func compileServerLimit(lrl *v3localratelimitpb.LocalRateLimit, old *serverLimit) (*serverLimit, error) {
	if !enforced(lrl) {
		return nil, nil
	}
	if old != nil && proto.Equal(old.cfg, lrl) {
		return old, nil
	}
	switch {
	case lrl.GetStatus() != nil && lrl.GetStatus().GetCode() != v3typepb.StatusCode_TooManyRequests:
		return nil, fmt.Errorf("local_ratelimit: status %v is not supported (429 only)", lrl.GetStatus().GetCode())
	case lrl.GetStage() != 0, lrl.GetLocalRateLimitPerDownstreamConnection(), lrl.GetLocalClusterRateLimit() != nil,
		lrl.GetVhRateLimits() != 0:
		return nil, errors.New("local_ratelimit: only token_bucket and per-caller descriptors are supported")
	}
	lim, err := ratelimit.FromTokenBucket(lrl.GetTokenBucket())
	if err != nil {
		return nil, fmt.Errorf("local_ratelimit: %w", err)
	}
	s := &serverLimit{cfg: lrl, limit: lim}
	if len(lrl.GetDescriptors()) > 0 || len(lrl.GetRateLimits()) > 0 {
		if err := perCallerForm(lrl, lim); err != nil {
			return nil, fmt.Errorf("local_ratelimit: %w", err)
		}
		s.perCaller = true
	}
	maxKeys := 1
	if s.perCaller {
		maxKeys = int(ratelimit.MaxCallers)
		if n := lrl.GetMaxDynamicDescriptors(); n != nil {
			maxKeys = int(max(n.GetValue(), 1))
		}
		maxKeys++ // plus the shared bucket of plaintext callers
	}
	s.buckets = ratelimit.New(ratelimit.WithMaxKeys(maxKeys))
	return s, nil
}

// perCallerForm checks that a config's descriptors are the one form the
// server implements: a wildcard descriptor keyed by the peer certificate's
// URI SAN, with its own bucket the same as the shared one.
func perCallerForm(lrl *v3localratelimitpb.LocalRateLimit, lim ratelimit.Limit) error {
	unsupported := errors.New("descriptors other than one per caller identity (" + ratelimit.CallerExpression + ") are not supported")
	if len(lrl.GetDescriptors()) != 1 || len(lrl.GetRateLimits()) != 1 || len(lrl.GetRateLimits()[0].GetActions()) != 1 ||
		lrl.GetAlwaysConsumeDefaultTokenBucket().GetValue() {
		return unsupported
	}
	d := lrl.GetDescriptors()[0]
	ext := lrl.GetRateLimits()[0].GetActions()[0].GetExtension()
	expr := new(v3exprpb.Descriptor)
	if ext == nil || ext.GetTypedConfig().UnmarshalTo(expr) != nil || expr.GetText() != ratelimit.CallerExpression ||
		len(d.GetEntries()) != 1 || d.GetEntries()[0].GetValue() != "" || d.GetEntries()[0].GetKey() != expr.GetDescriptorKey() {
		return unsupported
	}
	if own, err := ratelimit.FromTokenBucket(d.GetTokenBucket()); err != nil || own != lim {
		return errors.New("a caller's bucket different from the shared one is not supported")
	}
	return nil
}

// allow takes a token for call c: from the caller's bucket for a
// per-caller limit and an mTLS caller, else from the shared bucket (keyed
// "").
func (l *serverLimit) allow(log *slog.Logger, c *call) bool {
	key := ""
	if l.perCaller && c.mutual {
		key = c.id.String()
	}
	if l.buckets.Allow(key, l.limit) {
		return true
	}
	log.Debug("mesh: refused a call over the rate limit", "path", c.path, "caller", key, "peer", c.peerForLog())
	return false
}

// rateLimit returns p's rate limit; nil for a nil p.
func (p *serverPolicy) rateLimit() *serverLimit {
	if p == nil {
		return nil
	}
	return p.limit
}
