package mesh

import (
	"context"
	"strings"
	"sync"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/trellismesh/trellis/internal/xdsclient"
	"github.com/trellismesh/trellis/resolver/xdsroute"
	"github.com/trellismesh/trellis/retry"
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
}

// acquireXDSClient returns the shared client for the options' control plane
// and node; release it with releaseXDSClient.
func (o *options) acquireXDSClient(addr string) (*sharedXDSClient, error) {
	node, err := o.node().Proto()
	if err != nil {
		return nil, err
	}
	nodeJSON, err := protojson.Marshal(node)
	if err != nil {
		return nil, err
	}
	key := addr + "\x00" + string(nodeJSON)
	xdsClientsMu.Lock()
	defer xdsClientsMu.Unlock()
	if s := xdsClients[key]; s != nil {
		s.refs++
		return s, nil
	}
	c, err := xdsclient.New(xdsclient.Config{Server: addr, Node: node, Logger: o.logger})
	if err != nil {
		return nil, err
	}
	s := &sharedXDSClient{key: key, client: c, refs: 1}
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

// routePolicies gives each call of a connection the retry policy of the
// route it takes, from the control plane's routes for the target.
type routePolicies struct {
	table  *xdsroute.Table[retry.Policy]
	budget *retry.BudgetTracker // shared by all calls of the connection
}

var _ retry.Selector = (*routePolicies)(nil)

func (r *routePolicies) Policy(ctx context.Context, method string) retry.Policy {
	md, _ := metadata.FromOutgoingContext(ctx)
	_, p, _ := r.table.Lookup(ctx, method, md)
	if p.Attempts > 1 {
		p.Budget = r.budget
	}
	return p
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

// routeRetries wires the mesh's retry engine into a connection to target:
// it returns the dial options and the function that releases the route
// watch.
func (o *options) routeRetries(addr, target string) ([]grpc.DialOption, func(), error) {
	shared, err := o.acquireXDSClient(addr)
	if err != nil {
		return nil, nil, err
	}
	table := xdsroute.Watch(shared.client, target, retryPolicy)
	release := func() {
		table.Close()
		releaseXDSClient(shared)
	}
	sel := &routePolicies{table: table, budget: retry.NewBudgetTracker(o.retryBudget)}
	dopts := []grpc.DialOption{
		grpc.WithDisableRetry(),
		grpc.WithChainUnaryInterceptor(retry.UnaryClientInterceptor(sel)),
		grpc.WithChainStreamInterceptor(retry.StreamClientInterceptor(sel)),
	}
	return dopts, release, nil
}
