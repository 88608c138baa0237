// Command xdsserver runs the Trellis control plane.
//
// With no flags it serves xDS and the registration API on 127.0.0.1:15010,
// the same over TLS plus the mesh CA's certificate API on 127.0.0.1:15012,
// and the admin endpoints (/healthz, /readyz, /metrics, /debug/config_dump,
// /debug/ca) on 127.0.0.1:15014, with an in-memory registry, a CA root
// generated once and kept in -data-dir, and no configuration beyond what
// workloads register:
//
//	go run ./cmd/xdsserver
//	go run ./cmd/xdsserver -config ./mesh/
//
// The control plane believes only what it has authenticated: workloads
// register over the secure port, presenting an SVID of the mesh CA, and
// each only for the services its identity may serve (docs/SECURITY.md).
// -insecure-registration also accepts registrations without a certificate,
// on either port — an open mesh, for development and for meshes without
// identities such as the examples'. -xds-addr "" turns the plaintext port
// off, so that only identified workloads reach the control plane.
//
// -config names a directory of Istio YAML that is watched and hot-reloaded;
// a change that fails to load is logged and shown at /debug/config_dump, and
// the last good configuration stays in force. SIGHUP reloads it too.
//
// -store chooses where registrations are kept: "memory" (the default), or
// "etcd://host:port[,host:port...][/prefix]" so that several replicas share
// them (and a workload can move to any replica). With etcd and neither
// -config nor -kubernetes, the configuration is read from etcd too (written
// there with "trellisctl apply -store URI DIR"); otherwise only
// registrations are in etcd. The
// server exits if it cannot reach etcd at start; once running it rides out
// etcd outages (docs/ARCHITECTURE.md, "Replicas and the etcd store").
//
// -kubernetes reads the mesh from the cluster instead: the Istio custom
// resources (from Istio's base chart CRDs) as configuration, Services and
// EndpointSlices as endpoints, and registrations kept as WorkloadEntries so
// that every replica serves them (with -store etcd://..., registrations go
// to etcd instead). It uses the Pod's service account, or -kubeconfig.
// examples/kubernetes has the manifests.
//
// SIGINT or SIGTERM shut down cleanly.
//
// -join-tokens names a JSON file mapping each join token to the identity
// the CA issues for it, {"<token>": {"namespace": "default",
// "serviceAccount": "reviews"}}, optionally with "expires" (RFC 3339) and
// "singleUse": true (consumed by its first certificate; the record is kept
// in -data-dir, per replica; see xdsserver.WorkloadIdentity). Workloads
// renew with their certificate for at most -ca-max-renewal-chain (24h)
// after they last presented their token. -ca-cert and -ca-key use a given root
// instead of the generated one, and -ca-trust-anchors adds roots to the
// trust bundle for a root rotation (see xdsserver.WithCATrustAnchors).
//
// The admin endpoint's /debug/ paths and /dashboard require the
// -admin-token bearer token when one is set (and /metrics too with
// -metrics-behind-token); an -admin-addr that is not a loopback address
// needs one. Without a token, /debug/, /dashboard and /metrics answer only
// requests addressed to 127.0.0.1, [::1] or localhost, so that a web page
// cannot read them under its own name (DNS rebinding); /healthz and
// /readyz answer anyone (see xdsserver.Server.AdminHandler).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/trellismesh/trellis/xdsserver"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "xdsserver:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		configDir   = flag.String("config", "", "directory of Istio YAML to load and watch (optional)")
		kubernetes  = flag.Bool("kubernetes", false, "read Istio custom resources, Services and EndpointSlices from Kubernetes, and keep registrations as WorkloadEntries (exclusive with -config)")
		kubeconfig  = flag.String("kubeconfig", "", "kubeconfig file for -kubernetes (default: the in-cluster service account)")
		store       = flag.String("store", "memory", "where registrations (and, with neither -config nor -kubernetes, the configuration) are kept: memory, or etcd://host:port[,host:port...][/prefix]")
		xdsAddr     = flag.String("xds-addr", "127.0.0.1:15010", "plaintext address for xDS and the registration API (empty: off, so that only identified workloads on -secure-addr reach the control plane)")
		insecureReg = flag.Bool("insecure-registration", false, "accept registrations without a workload certificate (an open mesh: anyone who reaches the control plane can add endpoints to services no identity is bound to; for development and meshes without identities)")
		adminAddr   = flag.String("admin-addr", "127.0.0.1:15014", "address for /healthz, /readyz, /metrics, /debug/ and /dashboard")
		dataDir     = flag.String("data-dir", defaultDataDir(), "directory for state the control plane keeps across restarts")
		secureAddr  = flag.String("secure-addr", "127.0.0.1:15012", "address for xDS, registration and the CA API over TLS (empty: off)")
		caCert      = flag.String("ca-cert", "", "PEM file of the CA root certificate (default: generated in -data-dir)")
		caKey       = flag.String("ca-key", "", "PEM file of the CA root key, with -ca-cert")
		caAnchors   = flag.String("ca-trust-anchors", "", "PEM file of further roots to trust beside the CA's own, during a root rotation")
		trustDomain = flag.String("trust-domain", "cluster.local", "SPIFFE trust domain of the mesh")
		joinTokens  = flag.String("join-tokens", "", "JSON file mapping join tokens to the identity each grants, optionally with \"expires\" (RFC 3339) and \"singleUse\"")
		maxChain    = flag.Duration("ca-max-renewal-chain", xdsserver.DefaultMaxRenewalChain, "how long workloads may renew certificates without presenting their join token again")
		admission   = flag.Int("stream-admission", 500, "new xDS streams admitted per second (and at once); beyond it clients back off and retry; 0: no limit")
		adminToken  = flag.String("admin-token", os.Getenv("TRELLIS_ADMIN_TOKEN"), "bearer token the /debug/ admin endpoints and /dashboard require (env TRELLIS_ADMIN_TOKEN); required when -admin-addr is not a loopback address")
		metricsAuth = flag.Bool("metrics-behind-token", false, "require the -admin-token bearer token for /metrics too (default: /metrics is open to scrapers)")
		grace       = flag.Duration("registration-grace", 5*time.Second, "how long an endpoint whose registration stream broke stays in EDS")
		logFormat   = flag.String("log-format", "text", "log format: text or json")
		logLevel    = flag.String("log-level", "info", "log level: debug, info, warn or error")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var logger *slog.Logger
	switch *logFormat {
	case "text":
		logger = slog.New(slog.NewTextHandler(os.Stderr, hopts))
	case "json":
		logger = slog.New(slog.NewJSONHandler(os.Stderr, hopts))
	default:
		return fmt.Errorf("-log-format: %q is not text or json", *logFormat)
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("-data-dir: %w", err)
	}

	if *adminToken == "" && !loopback(*adminAddr) {
		return fmt.Errorf("-admin-addr %s is not a loopback address: set -admin-token (or TRELLIS_ADMIN_TOKEN) to protect /debug/", *adminAddr)
	}
	if *metricsAuth && *adminToken == "" {
		return errors.New("-metrics-behind-token needs -admin-token (or TRELLIS_ADMIN_TOKEN)")
	}
	if (*caCert == "") != (*caKey == "") {
		return fmt.Errorf("-ca-cert and -ca-key go together")
	}
	if *adminAddr == "" {
		return errors.New("-admin-addr is required")
	}
	if *xdsAddr == "" && *secureAddr == "" {
		return errors.New("-xds-addr and -secure-addr are both empty: nothing would be served")
	}
	if *maxChain <= 0 {
		return fmt.Errorf("-ca-max-renewal-chain %v: must be positive", *maxChain)
	}
	opts := []xdsserver.Option{
		xdsserver.WithLogger(logger),
		xdsserver.WithRegistrationGrace(*grace),
		xdsserver.WithStore(*store),
		xdsserver.WithDataDir(*dataDir),
		xdsserver.WithTrustDomain(*trustDomain),
		xdsserver.WithStreamAdmission(*admission, *admission),
		xdsserver.WithMaxRenewalChain(*maxChain),
	}
	if *adminToken != "" {
		opts = append(opts, xdsserver.WithAdminToken(*adminToken))
	}
	if *insecureReg {
		opts = append(opts, xdsserver.WithInsecureRegistration())
	}
	if *metricsAuth {
		opts = append(opts, xdsserver.WithMetricsBehindToken())
	}
	if *caCert != "" {
		opts = append(opts, xdsserver.WithCAFiles(*caCert, *caKey))
	}
	if *caAnchors != "" {
		opts = append(opts, xdsserver.WithCATrustAnchors(*caAnchors))
	}
	if *joinTokens != "" {
		tokens, err := readJoinTokens(*joinTokens)
		if err != nil {
			return err
		}
		opts = append(opts, xdsserver.WithJoinTokens(tokens))
	}
	if *configDir != "" {
		opts = append(opts, xdsserver.WithConfigDir(*configDir))
	}
	if *kubernetes {
		opts = append(opts, xdsserver.WithKubernetes(*kubeconfig))
	} else if *kubeconfig != "" {
		return errors.New("-kubeconfig needs -kubernetes")
	}
	srv, err := xdsserver.New(opts...)
	if err != nil {
		return err
	}
	var lis []net.Listener
	listen := func(addr string) (net.Listener, error) {
		if addr == "" {
			return nil, nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			srv.Close()
			for _, l := range lis {
				l.Close()
			}
			return nil, err
		}
		lis = append(lis, l)
		return l, nil
	}
	xdsLis, err := listen(*xdsAddr)
	if err != nil {
		return err
	}
	adminLis, err := listen(*adminAddr)
	if err != nil {
		return err
	}
	secureLis, err := listen(*secureAddr)
	if err != nil {
		return err
	}
	admin := &http.Server{Handler: srv.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 3)
	plaintext := "off"
	if xdsLis != nil {
		plaintext = xdsLis.Addr().String()
		go func() { errc <- srv.Serve(xdsLis) }()
	}
	if secureLis != nil {
		go func() { errc <- srv.ServeSecure(secureLis) }()
	}
	go func() { errc <- admin.Serve(adminLis) }()
	// Signals are caught before the control plane says it serves, so that
	// a supervisor's SIGTERM right after that line shuts it down cleanly.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	logger.Info("control plane serving", "xds", plaintext, "secure", *secureAddr, "admin", adminLis.Addr().String(), "config", *configDir, "store", *store, "dataDir", *dataDir, "insecureRegistration", *insecureReg)
	for {
		select {
		case err := <-errc:
			srv.Close()
			admin.Close()
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				srv.Reload()
				continue
			}
			logger.Info("shutting down", "signal", sig.String())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := errors.Join(srv.Shutdown(ctx), admin.Shutdown(ctx))
			return err
		}
	}
}

// loopback reports whether addr ("host:port") listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readJoinTokens reads the -join-tokens file.
func readJoinTokens(path string) (map[string]xdsserver.WorkloadIdentity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-join-tokens: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var tokens map[string]xdsserver.WorkloadIdentity
	if err := dec.Decode(&tokens); err != nil {
		return nil, fmt.Errorf("-join-tokens: %s: %w", path, err)
	}
	return tokens, nil
}

func defaultDataDir() string {
	if dir, err := os.UserCacheDir(); err == nil {
		return dir + "/trellis"
	}
	return ".trellis"
}
