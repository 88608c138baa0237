package mesh

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/trellismesh/trellis/internal/xdsclient"
	"github.com/trellismesh/trellis/resolver/xdsroute"
	"github.com/trellismesh/trellis/retry"
	"github.com/trellismesh/trellis/telemetry"
)

// The process shares one xDS client (one ADS stream) per control plane and
// node among all its mesh connections, as grpc-go shares its own.
var (
	xdsClientsMu sync.Mutex
	xdsClients   = map[string]*sharedXDSClient{}
)

type sharedXDSClient struct {
	key    string
	client *xdsclient.Client
	refs   int
	// tel records the client's updates and rejections: the telemetry of
	// the first component using the client that has any, as grpc-go's
	// shared xDS client reports through the first channel's recorders.
	tel atomic.Pointer[telemetry.Telemetry]
}

// observe makes tel, if not nil, record the client's updates unless an
// earlier component's telemetry already does.
func (s *sharedXDSClient) observe(tel *telemetry.Telemetry) {
	if tel != nil {
		s.tel.CompareAndSwap(nil, tel)
	}
}

// acquireXDSClient returns the shared client for the link to the control
// plane and the options' node; release it with releaseXDSClient.
func (o *options) acquireXDSClient(link controlPlaneLink) (*sharedXDSClient, error) {
	node, err := o.node().Proto()
	if err != nil {
		return nil, err
	}
	nodeJSON, err := protojson.Marshal(node)
	if err != nil {
		return nil, err
	}
	key := link.addr + "\x00" + link.key + "\x00" + string(nodeJSON)
	xdsClientsMu.Lock()
	defer xdsClientsMu.Unlock()
	if s := xdsClients[key]; s != nil {
		s.refs++
		return s, nil
	}
	s := &sharedXDSClient{key: key, refs: 1}
	c, err := xdsclient.New(xdsclient.Config{Server: link.addr, Node: node, Logger: o.logger, DialOptions: link.dialOptions(),
		OnResponse: func(typ string, accepted, rejected int) {
			if tel := s.tel.Load(); tel != nil {
				tel.XDSUpdate(typ, true, accepted)
				tel.XDSUpdate(typ, false, rejected)
			}
		}})
	if err != nil {
		return nil, err
	}
	s.client = c
	xdsClients[key] = s
	return s, nil
}

func releaseXDSClient(s *sharedXDSClient) {
	xdsClientsMu.Lock()
	s.refs--
	last := s.refs == 0
	if last {
		delete(xdsClients, s.key)
	}
	xdsClientsMu.Unlock()
	if last {
		s.client.Close()
	}
}

// routeCall is what a gRPC call takes from its route: its retry policy
// and its client-side rate limit, converted once per route configuration.
type routeCall struct {
	retry retry.Policy
	limit *routeLimit // nil: none
}

func routeCallOf(vh *v3routepb.VirtualHost, r *v3routepb.Route) routeCall {
	return routeCall{retry: retryPolicy(r), limit: clientRouteLimit(vh, r)}
}

// retryPolicy reads a route's timeout and retry policy as grpc-go reads
// them (gRFC A44), plus the per-try timeout grpc-go leaves out.
func retryPolicy(r *v3routepb.Route) retry.Policy {
	action := r.GetRoute()
	p := retry.Policy{Timeout: action.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration()}
	rp := action.GetRetryPolicy()
	if rp == nil {
		return p
	}
	for _, s := range strings.Split(rp.GetRetryOn(), ",") {
		if c, ok := retryOnCodes[strings.TrimSpace(strings.ToLower(s))]; ok {
			p.Codes |= retry.CodesOf(c)
		}
	}
	p.PerTryTimeout = rp.GetPerTryTimeout().AsDuration()
	if p.Codes == 0 && p.PerTryTimeout == 0 {
		return p
	}
	p.Attempts = 2
	if n := rp.GetNumRetries(); n != nil {
		p.Attempts = int(n.GetValue()) + 1
	}
	p.BaseBackoff = rp.GetRetryBackOff().GetBaseInterval().AsDuration()
	p.MaxBackoff = rp.GetRetryBackOff().GetMaxInterval().AsDuration()
	return p
}

// retryOnCodes are the retry_on conditions that name gRPC status codes.
var retryOnCodes = map[string]codes.Code{
	"cancelled":          codes.Canceled,
	"deadline-exceeded":  codes.DeadlineExceeded,
	"internal":           codes.Internal,
	"resource-exhausted": codes.ResourceExhausted,
	"unavailable":        codes.Unavailable,
}

// routeInterceptors wires the client-side rate limits and the mesh's retry
// engine into a connection to target: each call's route, looked up once,
// gives its limit (enforced first: a limited call is never retried) and
// its retry policy. It returns the dial options and the function that
// releases the route watch.
func (o *options) routeInterceptors(link controlPlaneLink, target string, tel *telemetry.Telemetry) ([]grpc.DialOption, func(), error) {
	shared, err := o.acquireXDSClient(link)
	if err != nil {
		return nil, nil, err
	}
	shared.observe(tel)
	table := xdsroute.WatchVirtualHost(shared.client, target, routeCallOf)
	release := func() {
		table.Close()
		releaseXDSClient(shared)
	}
	budget := retry.NewBudgetTracker(o.retryBudget) // shared by all calls of the connection
	policy := func(ctx context.Context, method string) (retry.Policy, error) {
		_, rc, _ := table.LookupOutgoing(ctx, method)
		if !rc.limit.allow() {
			tel.Event(ctx, telemetry.EventRateLimited, target, "")
			return retry.Policy{}, errClientLimited
		}
		p := rc.retry
		if p.Attempts > 1 {
			p.Budget = budget
		}
		return p, nil
	}
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		p, err := policy(ctx, method)
		if err != nil {
			return err
		}
		return retry.Invoke(ctx, p, method, req, reply, cc, invoker, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		p, err := policy(ctx, method)
		if err != nil {
			return nil, err
		}
		return retry.NewStream(ctx, p, desc, cc, method, streamer, opts...)
	}
	dopts := []grpc.DialOption{
		grpc.WithDisableRetry(),
		grpc.WithChainUnaryInterceptor(unary),
		grpc.WithChainStreamInterceptor(stream),
	}
	return dopts, release, nil
}
