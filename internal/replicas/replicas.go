// Package replicas lets one control-plane address name several replicas of
// the Trellis control plane, and gives every gRPC channel to the control
// plane — grpc-go's xDS client, Trellis's own xDS client, registration and
// the CA — a way to reach whichever replica is alive.
//
// An address is "host:port", a list of them ("a:15010,b:15010"), or any
// gRPC target ("dns:///xds.example:15010"). Target turns a list into a
// target of the resolver registered here under Scheme; other addresses are
// used as they are:
//
//	target, err := replicas.Target("a:15010,b:15010")
//	// target == "trellis-replicas:///a:15010,b:15010"
//	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
//
// The resolver gives the channel every replica, each its own endpoint, in
// an order drawn once per process (so a fleet of processes spreads over the
// replicas while each process keeps its streams — xDS, registration, CA —
// on one replica), and lets the channel's default pick_first policy choose:
// it connects to the first replica that answers, and when that connection
// breaks the next stream reconnects through the list to a live replica
// (Happy Eyeballs starts the next address after 250 ms, so a replica that
// hangs does not hold the channel up). The streams above the channel keep
// their cached state across the move and subscribe again on the new
// replica.
//
// Each address carries its "host:port" as the server name, so TLS to a
// replica checks that replica's name, not the list's.
package replicas

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strings"

	"google.golang.org/grpc/resolver"
)

// Scheme is the gRPC target scheme of replica lists.
const Scheme = "trellis-replicas"

func init() {
	resolver.Register(builder{})
}

// processSeed draws the process's order of replicas; a test may set it.
var processSeed = rand.Uint64()

// Target returns the gRPC target for the control-plane address addr: for a
// list of several "host:port" the target of this package's resolver; for a
// single address or a target with a scheme, addr itself (left to gRPC to
// parse, as before lists existed).
func Target(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return "", fmt.Errorf("replicas: empty control-plane address")
	}
	if strings.Contains(addr, "://") || !strings.Contains(addr, ",") {
		return addr, nil
	}
	list, err := Split(addr)
	if err != nil {
		return "", err
	}
	if len(list) == 1 {
		return list[0], nil
	}
	return Scheme + ":///" + strings.Join(list, ","), nil
}

// Split returns the replicas of a list "host:port,host:port", each checked
// to be a host and a port.
func Split(addr string) ([]string, error) {
	if strings.TrimSpace(addr) == "" {
		return nil, fmt.Errorf("replicas: empty control-plane address")
	}
	var out []string
	for i, a := range strings.Split(addr, ",") {
		a = strings.TrimSpace(a)
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("replicas: control-plane address %q: replica %d (%q): want host:port", addr, i+1, a)
		}
		out = append(out, a)
	}
	return out, nil
}

// WithPort returns addr with every replica's port replaced by port: for a
// list each "host:port", for a target with a scheme its endpoint's port
// ("dns:///xds.example:15010" becomes "dns:///xds.example:15012"). It
// returns "" if addr names no host and port.
func WithPort(addr, port string) string {
	addr = strings.TrimSpace(addr)
	prefix := ""
	if i := strings.Index(addr, "://"); i >= 0 {
		// scheme://authority/endpoint: the endpoint follows the path's
		// first slash.
		rest := addr[i+len("://"):]
		j := strings.Index(rest, "/")
		if j < 0 {
			return ""
		}
		prefix, addr = addr[:i+len("://")+j+1], rest[j+1:]
	}
	list, err := Split(addr)
	if err != nil {
		return ""
	}
	for i, a := range list {
		host, _, _ := net.SplitHostPort(a)
		list[i] = net.JoinHostPort(host, port)
	}
	return prefix + strings.Join(list, ",")
}

// order returns the process's permutation of n replicas: drawn at random
// once per process and list length, so that lists of the same replicas on
// other ports (xDS and CA) are taken in the same order.
func order(n int) []int {
	return rand.New(rand.NewPCG(processSeed, uint64(n))).Perm(n)
}

type builder struct{}

func (builder) Scheme() string { return Scheme }

func (builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	list, err := Split(target.Endpoint())
	if err != nil {
		return nil, err
	}
	eps := make([]resolver.Endpoint, len(list))
	for i, j := range order(len(list)) {
		eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: list[j], ServerName: list[j]}}}
	}
	// The list is static: an error here is the balancer's to handle.
	cc.UpdateState(resolver.State{Endpoints: eps})
	return nopResolver{}, nil
}

// OverrideAuthority makes the channel's default authority the first
// replica's "host:port" rather than the whole list (each address overrides
// it with its own name anyway).
func (builder) OverrideAuthority(target resolver.Target) string {
	first, _, _ := strings.Cut(target.Endpoint(), ",")
	return strings.TrimSpace(first)
}

// nopResolver: the list is static, so there is nothing to resolve again.
type nopResolver struct{}

func (nopResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (nopResolver) Close()                                {}

var _ resolver.AuthorityOverrider = builder{}
