// Package options is built by TestMisplacedOptionsDoNotCompile: each
// constructor with every option it takes, which must compile, and with
// options it does not take, on lines marked with the method the compiler
// must name as missing, which must not.
package options

import (
	"log/slog"
	"net/http"

	"google.golang.org/grpc"

	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/retry"
	"github.com/trellismesh/trellis/telemetry"
)

var h http.Handler

// workload is every option that describes the workload.
var workload = []mesh.WorkloadOption{
	mesh.WithControlPlane("cp:15010"),
	mesh.WithNamespace("shop"),
	mesh.WithLabels(map[string]string{"tier": "gold"}),
	mesh.WithLocality("eu/a/1"),
	mesh.WithTelemetry(telemetry.Disabled()),
	mesh.WithJoinToken("token"),
	mesh.WithTrustBundleFile("root-cert.pem"),
	mesh.WithCAAddr("cp:15012"),
	mesh.WithSPIFFEWorkloadAPI("unix:///run/spire/agent.sock"),
	mesh.WithIdentityFiles("cert.pem", "key.pem", "bundle.pem"),
	mesh.WithX509Source(nil, nil),
	mesh.WithCertificateTTL(0),
}

// every is the options of every constructor.
var every = []mesh.Option{mesh.WithService("reviews", "v1"), mesh.WithLogger(slog.Default())}

func proper() {
	mesh.Dial("reviews:9080", mesh.WithControlPlane("cp:15010"), mesh.WithService("web", "v1"), mesh.WithLogger(nil),
		mesh.WithDialOptions(grpc.WithUserAgent("x")), mesh.WithRetryBudget(retry.Budget{}), workload[0], every[0])
	mesh.NewTransport(mesh.WithControlPlane("cp:15010"), mesh.WithMeshOnly(), mesh.WithRetryBudget(retry.Budget{}), workload[0], every[0])
	mesh.HTTPClient(mesh.WithMeshOnly(), mesh.WithRetryBudget(retry.Budget{}), workload[0], every[0])
	mesh.NewServer(mesh.WithService("reviews", "v1"), mesh.WithServicePort(9080), mesh.WithAdvertiseAddr("10.0.0.1"),
		mesh.WithServerOptions(grpc.MaxRecvMsgSize(1)), workload[0], every[0])
	mesh.NewHTTPServer(h, mesh.WithService("reviews", "v1"), mesh.WithServicePort(9080), mesh.WithAdvertiseAddr("10.0.0.1"), workload[0], every[0])
	mesh.ListenAndServe(":0", h, mesh.WithServicePort(9080), workload[0], every[0])
	mesh.Handler(h, mesh.WithService("reviews", "v1"), mesh.WithLogger(nil), every[0])

	var client mesh.ClientOption = mesh.WithRetryBudget(retry.Budget{})
	var endpoint mesh.EndpointOption = mesh.WithServicePort(9080)
	mesh.Dial("reviews:9080", client)
	mesh.NewTransport(client)
	mesh.NewServer(endpoint)
	mesh.NewHTTPServer(h, endpoint)
}

func misplaced() {
	mesh.Dial("reviews:9080", mesh.WithServerOptions())                // want: applyDial
	mesh.Dial("reviews:9080", mesh.WithServicePort(9080))              // want: applyDial
	mesh.Dial("reviews:9080", mesh.WithAdvertiseAddr("10.0.0.1"))      // want: applyDial
	mesh.Dial("reviews:9080", mesh.WithMeshOnly())                     // want: applyDial
	mesh.NewTransport(mesh.WithDialOptions())                          // want: applyTransport
	mesh.NewTransport(mesh.WithServerOptions())                        // want: applyTransport
	mesh.HTTPClient(mesh.WithServicePort(9080))                        // want: applyTransport
	mesh.NewServer(mesh.WithMeshOnly())                                // want: applyServer
	mesh.NewServer(mesh.WithDialOptions())                             // want: applyServer
	mesh.NewServer(mesh.WithRetryBudget(retry.Budget{}))               // want: applyServer
	mesh.NewHTTPServer(h, mesh.WithServerOptions())                    // want: applyHTTPServer
	mesh.NewHTTPServer(h, mesh.WithDialOptions())                      // want: applyHTTPServer
	mesh.ListenAndServe(":0", h, mesh.WithMeshOnly())                  // want: applyHTTPServer
	mesh.ListenAndServe(":0", h, mesh.WithRetryBudget(retry.Budget{})) // want: applyHTTPServer
	mesh.Handler(h, mesh.WithControlPlane("cp:15010"))                 // want: applyHandler
	mesh.Handler(h, mesh.WithJoinToken("token"))                       // want: applyHandler
	mesh.Handler(h, mesh.WithTelemetry())                              // want: applyHandler
	mesh.Handler(h, mesh.WithServicePort(9080))                        // want: applyHandler
	mesh.Handler(h, mesh.WithRetryBudget(retry.Budget{}))              // want: applyHandler

	mesh.Dial("reviews:9080", mesh.EndpointOption(nil)) // want: applyDial
	mesh.NewServer(mesh.ClientOption(nil))              // want: applyServer
	mesh.Handler(h, mesh.WorkloadOption(nil))           // want: applyHandler
}
