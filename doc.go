// Package trellis is a service mesh that lives inside Go programs: service
// discovery, routing and traffic splitting for gRPC services, driven by the
// Istio resources you already write, served by a bundled xDS control plane.
// No sidecar, no agent, no Kubernetes required.
//
// Quick start. Run the control plane (embedded defaults: xDS on
// 127.0.0.1:15010, admin on 127.0.0.1:15014):
//
//	go run ./cmd/xdsserver -config ./mesh/
//
// Serve, registering with the control plane:
//
//	srv, err := mesh.NewServer(mesh.WithService("reviews", "v2"))
//	pb.RegisterReviewsServer(srv, impl)
//	err = srv.Serve(lis)
//
// Call it, with routes, splits and endpoints from the control plane:
//
//	conn, err := mesh.Dial("reviews:9080")
//	client := pb.NewReviewsClient(conn)
//
// Map of the module:
//
//	mesh/            entry points: Dial, NewServer, HTTPClient, NewHTTPServer, options
//	xdsserver/       the control plane (go-control-plane ADS, Istio config, registration,
//	                 CA, LRS, admin endpoints and dashboard)
//	cmd/xdsserver/   the control-plane command
//	cmd/trellisctl/  validate configuration; status, config-dump, describe a running mesh
//	examples/        quickstart, canary, secure, http, observability and the greeter they run
//	balancer/        LB policies grpc-go selects through xDS custom LB (random, outlier,
//	                 recycle, ewma); pick: the HTTP client's pickers
//	resolver/        xdsroute (a target's routes), xdscluster (a cluster's endpoints and policy)
//	retry/           the retry engine: attempts, per-try timeouts, backoff, budgets
//	authz/           authorization engine (Envoy RBAC with Istio's semantics); authz/jwt: JWT
//	telemetry/       OpenTelemetry metrics, traces and access logs for mesh calls
//	internal/        engines: config (Istio YAML), analyze (probable mistakes),
//	                 translate (to xDS), registry, ca and identity (SPIFFE
//	                 certificates), mtls (SPIFFE TLS, PERMISSIVE sniffing),
//	                 meshcert (grpc-go certificate provider), secpolicy
//	                 (Istio security policy to xDS), xdsclient (our ADS client),
//	                 ratelimit (token buckets), peakewma (latency estimates),
//	                 outlier (outlier ejection, both protocols),
//	                 lrs (load reports), register (client side of registration),
//	                 xdsbootstrap (grpc-go's bootstrap seam), e2e (end-to-end tests)
//
// docs/ARCHITECTURE.md explains how the pieces fit; docs/SUPPORT.md lists
// which Istio fields are supported and which are rejected.
package trellis
