// Package telemetry gives mesh clients and servers OpenTelemetry metrics,
// traces and access logs, for gRPC and HTTP. Package mesh installs it on
// everything it builds, by default on the global providers and idle until
// the application installs an SDK (see Telemetry.Active; mesh.WithTelemetry
// passes providers or turns it off; gRPC connections and servers made
// before the SDK is installed get no telemetry interceptors);
// it works as well on a
// plain grpc.ClientConn, grpc.Server, http.Handler or http.RoundTripper:
//
//	tel, err := telemetry.New(
//		telemetry.WithMeterProvider(mp),    // default: otel.GetMeterProvider()
//		telemetry.WithTracerProvider(tp),   // default: otel.GetTracerProvider()
//		telemetry.WithWorkload(telemetry.Workload{Service: "reviews", Version: "v2", Namespace: "default"}),
//		telemetry.WithAccessLog(telemetry.AccessLog{Mode: telemetry.AccessLogErrors}),
//	)
//	cc, err := grpc.NewClient(target, append(tel.DialOptions(), creds)...)
//	srv := grpc.NewServer(tel.ServerOptions()...)
//	http.ListenAndServe(addr, tel.Handler(mux))
//	client := &http.Client{Transport: tel.Transport(http.DefaultTransport)}
//
// # Metrics
//
// OpenTelemetry's semantic conventions: rpc.client.duration and
// rpc.server.duration (ms; rpc.system=grpc, rpc.service, rpc.method,
// rpc.grpc.status_code, server.address), http.client.request.duration and
// http.server.request.duration (s; http.request.method,
// http.response.status_code, server.address), http.client.active_requests,
// http.server.active_requests, http.server.request.body.size and
// http.server.response.body.size; and Trellis's own:
// trellis.rpc.client.active_requests, trellis.rpc.server.active_requests,
// trellis.client.attempts (each attempt), trellis.client.retries,
// trellis.client.events (event = circuit_breaker_open, fault_abort,
// local_rate_limited, no_healthy_upstream, outlier_ejection),
// trellis.server.policy.denials
// (reason = denied, unauthenticated, not_serving, invalid_request; counted
// when the Admitted interceptors mark what passed the policy),
// trellis.server.policy.dry_run (what dry-run authorization policies would
// have decided, never enforced: policy, action, decision = allow, deny,
// audit; see DryRunDecision),
// trellis.server.tls.handshake_failures (reason = peer_rejected, not_tls,
// handshake_error; see HandshakeFailed) and
// trellis.xds_client.resource_updates (type = LDS, RDS, CDS, EDS; result =
// accepted, rejected: what the mesh's own xDS client accepted and NACKed).
//
// What grpc-go's components measure beyond single calls is not measured
// again: ComponentMetrics gives a channel a recorder (gRFC A79) through
// which grpc-go's xDS client reports grpc.xds_client.resource_updates_valid,
// _invalid (NACKed resources) and server_failure, its balancers their
// metrics, and Trellis's outlier policy trellis.lb.outlier.ejections
// (label grpc.target) — the gRPC client's share of the mesh events above.
// Its asynchronous gauges (grpc.xds_client.connected, .resources) are not
// exported.
//
// Calls carry Istio's mesh dimensions as attributes where known:
// source_app, source_version, source_workload_namespace,
// destination_app, destination_version, destination_workload_namespace,
// destination_service (the host called), destination_cluster (HTTP:
// the xDS cluster, "outbound|9080|v2|reviews...") and, on servers,
// source_principal (the caller's SPIFFE ID from mutual TLS). Clients and
// servers learn each other's workload as Istio's metadata exchange does,
// from the PeerHeader each sends: destination_version is the version the
// serving workload declared (mesh.WithService), not the subset routed to.
// Attribute sets are built once per method, status and peer and cached.
//
// # Traces
//
// A client span per call, a server span per call whose parent is the
// client's (W3C trace context by default, see WithPropagator), and for the
// mesh's HTTP transport a span per attempt under the call's, so retries
// show. The mesh's gRPC retries are counted (trellis.attempts on the
// call's span, trellis.client.attempts) but get no spans of their own.
//
// # Access logs
//
// Off by default; AccessLog turns on one slog record per call (JSON lines
// on standard output unless a Logger is given), for all calls or errors
// only, sampled.
//
// A nil *Telemetry (from Disabled) is valid: its interceptors and
// wrappers pass calls through unchanged.
package telemetry
