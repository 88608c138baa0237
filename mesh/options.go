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

// A DialOption configures Dial.
type DialOption interface{ applyDial(*options) }

// A TransportOption configures NewTransport and HTTPClient.
type TransportOption interface{ applyTransport(*options) }

// A ServerOption configures NewServer.
type ServerOption interface{ applyServer(*options) }

// An HTTPServerOption configures NewHTTPServer and ListenAndServe.
type HTTPServerOption interface{ applyHTTPServer(*options) }

// A HandlerOption configures Handler.
type HandlerOption interface{ applyHandler(*options) }

// A ClientOption configures both mesh clients, Dial and NewTransport.
type ClientOption interface {
	DialOption
	TransportOption
}

// An EndpointOption configures the endpoint both mesh servers, NewServer
// and NewHTTPServer, register.
type EndpointOption interface {
	ServerOption
	HTTPServerOption
}

// A WorkloadOption describes the workload to every constructor that joins
// the mesh (Dial, NewTransport, NewServer, NewHTTPServer): its control
// plane, identity, namespace, labels, locality and telemetry.
type WorkloadOption interface {
	ClientOption
	EndpointOption
}

// An Option configures every constructor, Handler included.
type Option interface {
	WorkloadOption
	HandlerOption
}

// The implementations, one per set of constructors an option applies to.
type (
	dialOption      func(*options)
	transportOption func(*options)
	serverOption    func(*options)
	clientOption    func(*options)
	endpointOption  func(*options)
	workloadOption  func(*options)
	option          func(*options)
)

func (f dialOption) applyDial(o *options)           { f(o) }
func (f transportOption) applyTransport(o *options) { f(o) }
func (f serverOption) applyServer(o *options)       { f(o) }

func (f clientOption) applyDial(o *options)      { f(o) }
func (f clientOption) applyTransport(o *options) { f(o) }

func (f endpointOption) applyServer(o *options)     { f(o) }
func (f endpointOption) applyHTTPServer(o *options) { f(o) }

func (f workloadOption) applyDial(o *options)       { f(o) }
func (f workloadOption) applyTransport(o *options)  { f(o) }
func (f workloadOption) applyServer(o *options)     { f(o) }
func (f workloadOption) applyHTTPServer(o *options) { f(o) }

func (f option) applyDial(o *options)       { f(o) }
func (f option) applyTransport(o *options)  { f(o) }
func (f option) applyServer(o *options)     { f(o) }
func (f option) applyHTTPServer(o *options) { f(o) }
func (f option) applyHandler(o *options)    { f(o) }

var (
	_ DialOption      = dialOption(nil)
	_ TransportOption = transportOption(nil)
	_ ServerOption    = serverOption(nil)
	_ ClientOption    = clientOption(nil)
	_ EndpointOption  = endpointOption(nil)
	_ WorkloadOption  = workloadOption(nil)
	_ Option          = option(nil)
)

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

// newOptions applies a constructor's options, as apply (its option type's
// method: DialOption.applyDial, ...) does, then the defaults.
func newOptions[O any](opts []O, apply func(O, *options)) *options {
	o := &options{}
	for _, opt := range opts {
		apply(opt, o)
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
// DefaultControlPlane.
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
func WithControlPlane(addr string) WorkloadOption {
	return workloadOption(func(o *options) { o.cpAddr = addr })
}

// WithService names the service this process serves and its version. A
// Server or HTTPServer registers its endpoint under this name with the
// label version=<version> (omitted if version is empty); DestinationRule
// subsets select endpoints by such labels. A client (Dial, NewTransport)
// declares the labels app=<name> and version=<version> to the control
// plane for VirtualService sourceLabels. Telemetry labels the process's
// calls with the name and version. Handler refuses every request when
// given it (see Handler).
func WithService(name, version string) Option {
	return option(func(o *options) { o.service, o.version = name, version })
}

// WithNamespace sets the namespace of the service. If not given, the
// TRELLIS_NAMESPACE environment variable is used, then "default".
func WithNamespace(ns string) WorkloadOption {
	return workloadOption(func(o *options) { o.namespace = ns })
}

// WithLabels adds labels to the registered endpoint, and to the labels a
// client declares to the control plane (which VirtualService sourceLabels
// match).
func WithLabels(labels map[string]string) WorkloadOption {
	return workloadOption(func(o *options) {
		if o.labels == nil {
			o.labels = map[string]string{}
		}
		maps.Copy(o.labels, labels)
	})
}

// WithServicePort sets the service port that clients dial
// ("reviews:9080") when it differs from the port the server listens on. If
// not given, the listening port is the service port, except that an endpoint
// joining a ServiceEntry with a single port joins that port.
func WithServicePort(port uint16) EndpointOption {
	return endpointOption(func(o *options) { o.servicePort = uint32(port) })
}

// WithAdvertiseAddr sets the IP address registered for the server. If not
// given, the listener's address is used; if that is unspecified (":8080"),
// the first non-loopback address of the host, else 127.0.0.1.
func WithAdvertiseAddr(ip string) EndpointOption {
	return endpointOption(func(o *options) { o.advertiseAddr = ip })
}

// WithLocality sets the locality ("region/zone/subzone") registered for the
// server and sent to the control plane by clients.
func WithLocality(locality string) WorkloadOption {
	return workloadOption(func(o *options) { o.locality = locality })
}

// WithLogger sets the logger for mesh events (registration, control-plane
// connection, refused requests). If not given, nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return option(func(o *options) { o.logger = l })
}

// WithDialOptions adds grpc.DialOptions, applied after the mesh's own.
func WithDialOptions(opts ...grpc.DialOption) DialOption {
	return dialOption(func(o *options) { o.dialOptions = append(o.dialOptions, opts...) })
}

// WithServerOptions adds grpc.ServerOptions, applied after the mesh's own.
// Interceptors added with grpc.ChainUnaryInterceptor and
// grpc.ChainStreamInterceptor run after the mesh's policy checks, so they
// see only admitted calls; one set with grpc.UnaryInterceptor or
// grpc.StreamInterceptor runs before them. grpc.Creds replaces the mesh's
// mutual TLS and should not be given.
func WithServerOptions(opts ...grpc.ServerOption) ServerOption {
	return serverOption(func(o *options) { o.serverOptions = append(o.serverOptions, opts...) })
}

// WithRetryBudget sets the retry budget of each connection Dial makes and
// of each Transport: the retries of all its calls may add at most b.Ratio
// of its calls, plus b.MinPerSecond retries a second, over b.Window.
// Budgets are on by default with retry.Budget's defaults (20 %, 10 a
// second, 10 seconds), so that a failing service is not hit with a retry
// storm.
func WithRetryBudget(b retry.Budget) ClientOption {
	return clientOption(func(o *options) { o.retryBudget = b })
}
