package etcdstore

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// Scheme is the URI scheme of an etcd store: "etcd://host:port[,host:port...][/prefix]".
const Scheme = "etcd"

// DefaultPrefix is the key prefix when the URI names none.
const DefaultPrefix = "/trellis"

// dialTimeout bounds the connection attempt to one etcd member.
const dialTimeout = 5 * time.Second

// requestTimeout bounds every single request, so that a request made while
// etcd is away fails and is retried rather than hanging.
var requestTimeout = 5 * time.Second

// ErrBadURI is wrapped by the errors of ParseURI.
var ErrBadURI = errors.New("not an etcd store URI")

// Location is where a mesh is kept in etcd: the members to ask and the key
// prefix under which everything is. The zero Location is not usable; get one
// from ParseURI.
type Location struct {
	// Endpoints are the members' client addresses, "host:port".
	Endpoints []string
	// Prefix starts every key ("/trellis"); it has no trailing slash.
	Prefix string
}

// String returns the Location as a URI.
func (l Location) String() string {
	return Scheme + "://" + strings.Join(l.Endpoints, ",") + l.Prefix
}

// ParseURI parses "etcd://host:port[,host:port...][/prefix]". Without a
// prefix, the prefix is DefaultPrefix.
func ParseURI(uri string) (Location, error) {
	bad := func(why string) (Location, error) {
		return Location{}, fmt.Errorf("etcdstore: %q: %w: %s", uri, ErrBadURI, why)
	}
	rest, ok := strings.CutPrefix(uri, Scheme+"://")
	if !ok {
		return bad("want etcd://host:port[,host:port...][/prefix]")
	}
	hosts, prefix, _ := strings.Cut(rest, "/")
	if hosts == "" {
		return bad("no etcd member address")
	}
	var loc Location
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			return bad(fmt.Sprintf("member %q: want host:port", h))
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || host == "" {
			return bad(fmt.Sprintf("member %q: want host:port", h))
		}
		loc.Endpoints = append(loc.Endpoints, h)
	}
	prefix = strings.TrimRight(prefix, "/")
	if strings.ContainsAny(prefix, "?#") || strings.Contains(prefix, "//") || strings.HasPrefix(prefix, "/") {
		return bad(fmt.Sprintf("prefix %q", "/"+prefix))
	}
	if prefix == "" {
		loc.Prefix = DefaultPrefix
	} else {
		loc.Prefix = "/" + prefix
	}
	return loc, nil
}

// Client is a connection to etcd under one key prefix: the Store, the
// ConfigSource and Apply all work through one. It is safe for concurrent
// use.
type Client struct {
	loc Location
	cli *clientv3.Client
	own bool
}

// Dial returns a Client of the etcd members loc names. It does not block:
// the connection is made in the background, and requests wait for it.
func Dial(loc Location) (*Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            loc.Endpoints,
		DialTimeout:          dialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
		// gRPC's default reconnect backoff grows to minutes; after an etcd
		// restart a replica has only its lease TTL plus an election
		// timeout to renew its lease before its registrations expire.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: dialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcdstore: %s: %w", loc, err)
	}
	return &Client{loc: loc, cli: cli, own: true}, nil
}

// NewClient returns a Client that works through cli under prefix (with no
// trailing slash, "" for none: "/trellis"). Close does not close cli.
func NewClient(cli *clientv3.Client, prefix string) *Client {
	prefix = strings.TrimRight(prefix, "/")
	return &Client{loc: Location{Endpoints: cli.Endpoints(), Prefix: prefix}, cli: cli}
}

// String returns the etcd URI of the Client, for logs.
func (c *Client) String() string { return c.loc.String() }

// Close closes the connection if Dial made it. Stores and sources of the
// Client must be stopped first.
func (c *Client) Close() error {
	if c.own {
		return c.cli.Close()
	}
	return nil
}

func (c *Client) registrationPrefix() string { return c.loc.Prefix + "/registrations/" }
func (c *Client) configPrefix() string       { return c.loc.Prefix + "/config/" }
