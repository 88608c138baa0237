// Package mesh puts a Go program's gRPC clients and servers in the Trellis
// mesh.
//
// A client dials a service by name; routes, weighted splits and endpoints
// come from the control plane through grpc-go's own xDS client:
//
//	conn, err := mesh.Dial("reviews:9080") // never blocks
//	client := pb.NewReviewsClient(conn)
//
// A server registers itself with the control plane while it serves, under a
// service name and a version label that DestinationRule subsets select:
//
//	srv, err := mesh.NewServer(mesh.WithService("reviews", "v2"))
//	pb.RegisterReviewsServer(srv, impl)
//	err = srv.Serve(lis)     // registers, then serves
//	err = srv.Shutdown(ctx)  // deregisters, then drains
//
// The control plane is found at the address given by WithControlPlane, else
// the TRELLIS_CONTROL_PLANE environment variable, else a standard
// GRPC_XDS_BOOTSTRAP / GRPC_XDS_BOOTSTRAP_CONFIG, else 127.0.0.1:15010 (what
// `go run ./cmd/xdsserver` listens on). The address may list several
// replicas of the control plane, "cp-a:15010,cp-b:15010": a process uses
// one and moves to another when it fails, keeping its cached configuration
// meanwhile.
//
// Each constructor takes options of its own type: DialOption,
// TransportOption (NewTransport, HTTPClient), ServerOption,
// HTTPServerOption (NewHTTPServer, ListenAndServe) and HandlerOption. An
// option for several constructors returns a type that is each of theirs:
// ClientOption (Dial and NewTransport), EndpointOption (NewServer and
// NewHTTPServer), WorkloadOption (those four) or Option (all five). So an
// option given where it does not apply does not compile. A list shared by
// a client and a server is a []WorkloadOption, appended element by element
// to each constructor's list.
//
// Everything here composes standard pieces: a Dial connection is a
// *grpc.ClientConn and a Server wraps a *grpc.Server, so interceptors, stats
// handlers and other grpc options pass through WithDialOptions and
// WithServerOptions.
//
// A process gets a SPIFFE identity (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)
// from the control plane's CA with a join token, or from SPIRE, files or any
// go-spiffe source:
//
//	identity := []mesh.WorkloadOption{
//		mesh.WithJoinToken(os.Getenv("TRELLIS_JOIN_TOKEN")),
//		mesh.WithTrustBundleFile("/etc/trellis/root-cert.pem"),
//	}
//
// With it, clients use mutual TLS toward the SPIFFE IDs the control plane
// names for each destination, and servers follow PeerAuthentication
// (STRICT, PERMISSIVE on one port, DISABLE), RequestAuthentication (JWT)
// and AuthorizationPolicy as the control plane translates them onto their
// port; a handler reads its caller's identity with PeerID. A process
// without an identity speaks plaintext, and fails (never downgrades) where
// mTLS is required.
//
// Calls are retried by the mesh's retry engine (package retry): the route's
// attempts, codes and per-try timeout, within a retry budget.
//
// Plain net/http gets the same mesh: an *http.Client whose requests to mesh
// hosts follow the same routes and policies, and a server for any
// http.Handler that registers and enforces the same security policy:
//
//	client := mesh.HTTPClient()
//	resp, err := client.Get("http://ratings:8080/ratings/7")
//
//	err = mesh.ListenAndServe(":8080", mux, mesh.WithService("ratings", "v1"))
//
// Telemetry (OpenTelemetry metrics and traces with Istio's mesh dimensions,
// and access logs) is on by default on the global OpenTelemetry providers,
// doing nothing until the application installs an SDK; WithTelemetry passes
// providers or turns it off. See package telemetry.
package mesh
