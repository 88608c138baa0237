package mesh

import (
	"cmp"
	"log/slog"
	"maps"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"

	"github.com/trellismesh/trellis/retry"
	"github.com/trellismesh/trellis/telemetry"
)

// DefaultControlPlane is the control-plane address used when neither
// WithControlPlane nor the TRELLIS_CONTROL_PLANE environment variable names
// one (and no standard GRPC_XDS_BOOTSTRAP is set).
const DefaultControlPlane = "127.0.0.1:15010"

// EnvControlPlane names the environment variable holding the control-plane
// address, in any form WithControlPlane takes.
const EnvControlPlane = "TRELLIS_CONTROL_PLANE"

// An Option configures Dial, NewServer or both; each option says which.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	cpAddr        string
	service       string
	version       string
	namespace     string
	labels        map[string]string
	servicePort   uint32
	advertiseAddr string
	locality      string
	logger        *slog.Logger
	dialOptions   []grpc.DialOption
	serverOptions []grpc.ServerOption
	retryBudget   retry.Budget
	telemetry     []telemetry.Option

	joinToken     string
	trustBundle   string
	caAddr        string
	workloadAPI   string
	identityFiles [3]string
	certTTL       time.Duration
	meshOnly      bool
	svids         x509svid.Source
	bundles       x509bundle.Source
}

func newOptions(opts []Option) *options {
	o := &options{}
	for _, opt := range opts {
		opt.apply(o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	o.namespace = cmp.Or(o.namespace, os.Getenv("TRELLIS_NAMESPACE"), "default")
	return o
}

// explicitControlPlane returns the address named by option or environment,
// or "" if neither names one.
func (o *options) explicitControlPlane() string {
	return cmp.Or(o.cpAddr, os.Getenv(EnvControlPlane))
}

// WithControlPlane sets the control-plane address: "host:port", several
// replicas of the control plane ("a:15010,b:15010"), or any gRPC target
// ("dns:///xds.example:15010"). If not given, the TRELLIS_CONTROL_PLANE
// environment variable is used (same forms), then a standard
// GRPC_XDS_BOOTSTRAP or GRPC_XDS_BOOTSTRAP_CONFIG, then
// DefaultControlPlane. For Dial and NewServer.
//
// With several replicas each process takes them in an order of its own,
// so a fleet spreads over them, and keeps all its streams — xDS for gRPC
// and HTTP clients, registration, certificates (see WithCAAddr) — on the
// first that answers. When that replica fails, every stream moves to a
// live one; clients keep serving from their cached configuration while
// they move and then follow the new replica's, and a server's registration
// moves with it. Replicas should serve the same configuration (the same
// files, or one store of registrations).
//
//	mesh.Dial("reviews:9080", mesh.WithControlPlane("cp-a:15010,cp-b:15010"))
func WithControlPlane(addr string) Option {
	return optionFunc(func(o *options) { o.cpAddr = addr })
}

// WithService names the service this process serves and its version. A
// Server registers its endpoint under this name with the label
// version=<version> (omitted if version is empty); DestinationRule subsets
// select endpoints by such labels. For NewServer, and for Dial, where the
// client declares the labels app=<name> and version=<version> to the
// control plane for VirtualService sourceLabels.
func WithService(name, version string) Option {
	return optionFunc(func(o *options) { o.service, o.version = name, version })
}

// WithNamespace sets the namespace of the service. If not given, the
// TRELLIS_NAMESPACE environment variable is used, then "default". For
// NewServer and Dial.
func WithNamespace(ns string) Option {
	return optionFunc(func(o *options) { o.namespace = ns })
}

// WithLabels adds labels to the registered endpoint, and to the labels a
// client declares to the control plane (which VirtualService sourceLabels
// match). For NewServer and Dial.
func WithLabels(labels map[string]string) Option {
	return optionFunc(func(o *options) {
		if o.labels == nil {
			o.labels = map[string]string{}
		}
		maps.Copy(o.labels, labels)
	})
}

// WithServicePort sets the service port that clients dial
// ("reviews:9080") when it differs from the port the server listens on. If
// not given, the listening port is the service port, except that an endpoint
// joining a ServiceEntry with a single port joins that port. For NewServer.
func WithServicePort(port uint16) Option {
	return optionFunc(func(o *options) { o.servicePort = uint32(port) })
}

// WithAdvertiseAddr sets the IP address registered for the server. If not
// given, the listener's address is used; if that is unspecified (":8080"),
// the first non-loopback address of the host, else 127.0.0.1. For NewServer.
func WithAdvertiseAddr(ip string) Option {
	return optionFunc(func(o *options) { o.advertiseAddr = ip })
}

// WithLocality sets the locality ("region/zone/subzone") registered for the
// server and sent to the control plane by clients. For NewServer and Dial.
func WithLocality(locality string) Option {
	return optionFunc(func(o *options) { o.locality = locality })
}

// WithLogger sets the logger for mesh events (registration, control-plane
// connection). If not given, nothing is logged. For NewServer and Dial.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.logger = l })
}

// WithDialOptions adds grpc.DialOptions, applied after the mesh's own. For
// Dial.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return optionFunc(func(o *options) { o.dialOptions = append(o.dialOptions, opts...) })
}

// WithServerOptions adds grpc.ServerOptions, applied after the mesh's own.
// Interceptors added with grpc.ChainUnaryInterceptor and
// grpc.ChainStreamInterceptor run after the mesh's policy checks, so they
// see only admitted calls; one set with grpc.UnaryInterceptor or
// grpc.StreamInterceptor runs before them. grpc.Creds replaces the mesh's
// mutual TLS and should not be given. For NewServer.
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return optionFunc(func(o *options) { o.serverOptions = append(o.serverOptions, opts...) })
}

// WithRetryBudget sets the retry budget of each connection Dial makes: the
// retries of all its calls may add at most b.Ratio of its calls, plus
// b.MinPerSecond retries a second, over b.Window. Budgets are on by default
// with retry.Budget's defaults (20 %, 10 a second, 10 seconds), so that a
// failing service is not hit with a retry storm. For Dial.
func WithRetryBudget(b retry.Budget) Option {
	return optionFunc(func(o *options) { o.retryBudget = b })
}
