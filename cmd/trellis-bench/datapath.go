package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/mtls"
	"github.com/trellismesh/trellis/mesh"
)

const strictYAML = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
`

// countingListener counts accepted connections: with TLS on every
// connection, each is one full handshake.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func listen() (*countingListener, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &countingListener{Listener: lis}, nil
}

// target is one variant of one protocol under test.
type target struct {
	proto string // "gRPC" or "HTTP"
	mesh  bool
	call  caller
	lis   *countingListener
}

// cleanups runs functions in reverse order.
type cleanups []func()

func (c *cleanups) add(f func()) { *c = append(*c, f) }
func (c cleanups) run() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// dataPath measures M1–M3, allocations per RPC (M4), handshakes (M5) and
// the first routed RPC (M8).
func dataPath(ctx context.Context, cfg config) ([]row, error) {
	var done cleanups
	defer func() { done.run() }()
	tmp, err := os.MkdirTemp("", "trellis-bench-")
	if err != nil {
		return nil, err
	}
	done.add(func() { os.RemoveAll(tmp) })
	confDir, dataDir := filepath.Join(tmp, "config"), filepath.Join(tmp, "data")
	if err := os.Mkdir(confDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(confDir, "mesh.yaml"), []byte(strictYAML), 0o644); err != nil {
		return nil, err
	}
	cp, err := startControlPlane(ctx, childArgs{Addr: "127.0.0.1:0", SecureAddr: "127.0.0.1:0", ConfigDir: confDir, DataDir: dataDir, Tokens: true})
	if err != nil {
		return nil, err
	}
	done.add(cp.stop)
	bundle := filepath.Join(dataDir, "root-cert.pem")
	// as gives a workload the identity of token; a WorkloadOption is an
	// option of each constructor, appended to its list one by one.
	as := func(token string) []mesh.WorkloadOption {
		return []mesh.WorkloadOption{mesh.WithControlPlane(cp.addr), mesh.WithJoinToken(token), mesh.WithTrustBundleFile(bundle), mesh.WithCAAddr(cp.tls)}
	}
	serverID, err := caSource(ctx, cp.tls, bundle, "greeter-token")
	if err != nil {
		return nil, err
	}
	done.add(func() { serverID.Close() })
	clientID, err := caSource(ctx, cp.tls, bundle, "client-token")
	if err != nil {
		return nil, err
	}
	done.add(func() { clientID.Close() })
	clientTLS, err := mtls.ClientConfig(clientID, spiffeid.RequireFromString(greeterID))
	if err != nil {
		return nil, err
	}

	var targets []*target
	want := func(m bool) bool { return cfg.variant == "both" || (cfg.variant == "mesh") == m }
	req := &greeterpb.HelloRequest{Name: strings.Repeat("x", 1024)}
	grpcCall := func(cc *grpc.ClientConn) caller {
		c := greeterpb.NewGreeterClient(cc)
		return func(ctx context.Context) error {
			_, err := c.SayHello(ctx, req)
			return err
		}
	}
	kb := strings.Repeat("x", 1024)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, kb) })
	httpCall := func(c *http.Client, url string) caller {
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || n != 1024 {
				return fmt.Errorf("GET %s: %s, %d bytes", url, resp.Status, n)
			}
			return nil
		}
	}

	// Plain grpc-go with the same certificates and TLS configuration.
	plainLis, err := listen()
	if err != nil {
		return nil, err
	}
	plainSrv := grpc.NewServer(grpc.Creds(credentials.NewTLS(mtls.ServerConfig(serverID, nil))))
	greeterpb.RegisterGreeterServer(plainSrv, &greeter.Server{Version: "v1", Instance: plainLis.Addr().String()})
	go plainSrv.Serve(plainLis)
	done.add(plainSrv.Stop)
	if want(false) {
		cc, err := grpc.NewClient(plainLis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
		if err != nil {
			return nil, err
		}
		done.add(func() { cc.Close() })
		targets = append(targets, &target{proto: "gRPC", call: grpcCall(cc), lis: plainLis})
	}

	// The mesh: mesh.Dial to a mesh.Server under STRICT.
	var meshLis *countingListener
	if want(true) {
		meshLis, err = listen()
		if err != nil {
			return nil, err
		}
		srvOpts := []mesh.ServerOption{mesh.WithService("greeter", "v1"), mesh.WithServicePort(9080)}
		for _, o := range as("greeter-token") {
			srvOpts = append(srvOpts, o)
		}
		srv, err := mesh.NewServer(srvOpts...)
		if err != nil {
			return nil, err
		}
		greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: "v1", Instance: meshLis.Addr().String()})
		go srv.Serve(meshLis)
		done.add(func() { srv.Close() })
		var dialOpts []mesh.DialOption
		for _, o := range as("client-token") {
			dialOpts = append(dialOpts, o)
		}
		cc, err := mesh.Dial("greeter:9080", dialOpts...)
		if err != nil {
			return nil, err
		}
		done.add(func() { cc.Close() })
		targets = append(targets, &target{proto: "gRPC", mesh: true, call: grpcCall(cc), lis: meshLis})
	}

	// Plain net/http with the same TLS.
	if want(false) {
		lis, err := listen()
		if err != nil {
			return nil, err
		}
		serverCfg := mtls.ServerConfig(serverID, nil)
		serverCfg.NextProtos = []string{"h2", "http/1.1"}
		srv := &http.Server{Handler: handler}
		go srv.Serve(tls.NewListener(lis, serverCfg))
		done.add(func() { srv.Close() })
		ccfg := clientTLS.Clone()
		ccfg.NextProtos = []string{"h2", "http/1.1"}
		tr := &http.Transport{TLSClientConfig: ccfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}
		done.add(tr.CloseIdleConnections)
		targets = append(targets, &target{proto: "HTTP", call: httpCall(&http.Client{Transport: tr}, "https://"+lis.Addr().String()+"/kb"), lis: lis})
	}

	// The mesh: mesh.Transport to a mesh.HTTPServer under STRICT.
	if want(true) {
		lis, err := listen()
		if err != nil {
			return nil, err
		}
		srvOpts := []mesh.HTTPServerOption{mesh.WithService("kb", "v1"), mesh.WithServicePort(8080)}
		for _, o := range as("kb-token") {
			srvOpts = append(srvOpts, o)
		}
		srv, err := mesh.NewHTTPServer(handler, srvOpts...)
		if err != nil {
			return nil, err
		}
		go srv.Serve(lis)
		done.add(func() { srv.Close() })
		trOpts := []mesh.TransportOption{mesh.WithMeshOnly()}
		for _, o := range as("client-token") {
			trOpts = append(trOpts, o)
		}
		tr := mesh.NewTransport(trOpts...)
		done.add(func() { tr.Close() })
		targets = append(targets, &target{proto: "HTTP", mesh: true, call: httpCall(&http.Client{Transport: tr}, "http://kb:8080/kb"), lis: lis})
	}

	// Wait until every variant answers (the mesh ones need the control
	// plane's configuration first).
	for _, t := range targets {
		if err := ready(ctx, t.call); err != nil {
			return nil, fmt.Errorf("%s (mesh %t) never answered: %w", t.proto, t.mesh, err)
		}
	}

	// Warm every variant up once (connections, flow-control windows,
	// pools) before anything is measured.
	for _, t := range targets {
		if _, err := closedLoop(ctx, t.call, 64, cfg.duration/2); err != nil {
			return nil, fmt.Errorf("%s (mesh %t) warm-up: %w", t.proto, t.mesh, err)
		}
	}
	cfg.logf("M1–M5: warm")

	type key struct {
		proto, metric string
	}
	s := map[key]*samples{}
	add := func(t *target, metric string, v float64) {
		k := key{t.proto, metric}
		if s[k] == nil {
			s[k] = &samples{}
		}
		s[k].add(t.mesh, v)
	}
	for range cfg.reps {
		for _, t := range targets {
			conns := t.lis.n.Load()
			c1, err := closedLoop(ctx, t.call, 1, cfg.duration)
			if err != nil {
				return nil, fmt.Errorf("%s closed loop: %w", t.proto, err)
			}
			add(t, "c50", micros(percentile(c1.lat, 50)))
			add(t, "c90", micros(percentile(c1.lat, 90)))
			add(t, "c99", micros(percentile(c1.lat, 99)))
			add(t, "allocs", float64(c1.mallocs)/float64(c1.ops))
			open, err := openLoop(ctx, t.call, cfg.rate, cfg.duration)
			if err != nil {
				return nil, fmt.Errorf("%s open loop: %w", t.proto, err)
			}
			add(t, "o50", micros(percentile(open.lat, 50)))
			add(t, "o90", micros(percentile(open.lat, 90)))
			add(t, "o99", micros(percentile(open.lat, 99)))
			c8, err := closedLoop(ctx, t.call, 8, cfg.duration)
			if err != nil {
				return nil, fmt.Errorf("%s 8 in flight: %w", t.proto, err)
			}
			add(t, "cpu", micros(time.Duration(c8.perOp(c8.cpu))))
			c64, err := closedLoop(ctx, t.call, 64, cfg.duration)
			if err != nil {
				return nil, fmt.Errorf("%s 64 in flight: %w", t.proto, err)
			}
			add(t, "qps", float64(c64.ops)/c64.elapsed.Seconds())
			cfg.logf("%s mesh=%t: closed-1 %s (max %s), open %s (max %s), 8 in flight %s (max %s), 64 in flight %s (max %s)", t.proto, t.mesh, c1.elapsed, c1.lat[len(c1.lat)-1], open.elapsed, open.lat[len(open.lat)-1], c8.elapsed, c8.lat[len(c8.lat)-1], c64.elapsed, c64.lat[len(c64.lat)-1])
			rpcs := c1.ops + open.ops + c8.ops + c64.ops
			add(t, "hs", float64(t.lis.n.Load()-conns)*10000/float64(rpcs))
		}
	}

	var rows []row
	for _, proto := range []string{"gRPC", "HTTP"} {
		get := func(metric string) (float64, float64) {
			v := s[key{proto, metric}]
			if v == nil {
				return math.NaN(), math.NaN()
			}
			return median(v.plain), median(v.mesh)
		}
		r := func(name, metric string, kind int, limit float64, atLeast bool, tgt string) row {
			p, m := get(metric)
			return row{name: fmt.Sprintf(name, proto), plain: p, mesh: m, kind: kind, limit: limit, atLeast: atLeast, target: tgt}
		}
		rows = append(rows,
			r("M1 %s closed 1 in flight p50 µs", "c50", ratio, 1.05, false, "≤ 1.05x"),
			r("M1 %s closed 1 in flight p90 µs", "c90", ratio, 0, false, ""),
			r("M1 %s closed 1 in flight p99 µs", "c99", delta, 50, false, "≤ +50 µs"),
			r("M1 %s open loop p50 µs", "o50", ratio, 1.05, false, "≤ 1.05x"),
			r("M1 %s open loop p90 µs", "o90", ratio, 0, false, ""),
			r("M1 %s open loop p99 µs", "o99", delta, 50, false, "≤ +50 µs"),
			r("M2 %s CPU µs/RPC at 8 (cli+srv)", "cpu", ratio, 1.10, false, "≤ 1.10x"),
			r("M3 %s RPC/s at 64 in flight", "qps", ratio, 0.95, true, "≥ 0.95x"),
			r("M4 %s allocs/RPC (cli+srv)", "allocs", delta, 10, false, "≤ +10"),
			r("M5 %s handshakes per 10k RPCs", "hs", value, 1, false, "≤ 1"),
		)
	}

	cfg.logf("M1–M5: measured")
	// M8: a fresh process dials and makes its first call.
	svid, err := clientID.GetX509SVID()
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return nil, err
	}
	certFile, keyFile := filepath.Join(tmp, "client.pem"), filepath.Join(tmp, "client-key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	var first samples
	for range cfg.reps {
		for _, m := range []bool{false, true} {
			if !want(m) {
				continue
			}
			a := childArgs{Variant: "plain", Target: plainLis.Addr().String(), Bundle: bundle, CertFile: certFile, KeyFile: keyFile, ServerID: greeterID}
			if m {
				a = childArgs{Variant: "mesh", Target: "greeter:9080", ControlPlane: cp.addr, CAAddr: cp.tls, Bundle: bundle}
			}
			d, err := runFirstRPC(ctx, a)
			if err != nil {
				return nil, fmt.Errorf("M8 (mesh %t): %w", m, err)
			}
			first.add(m, millis(d))
		}
	}
	rows = append(rows, row{name: "M8 first routed RPC, fresh process ms", plain: median(first.plain), mesh: median(first.mesh), kind: delta, limit: 50, target: "≤ +50 ms"})
	return rows, nil
}

// ready calls until a call succeeds or ctx ends (at most 30 seconds).
func ready(ctx context.Context, call caller) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		err := call(cctx)
		ccancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// caSource gets an identity from the control plane's CA with a join token.
func caSource(ctx context.Context, caAddr, bundle, token string) (*identity.CASource, error) {
	pemBytes, err := os.ReadFile(bundle)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	dial := func(ctx context.Context, cert *tls.Certificate) (*grpc.ClientConn, error) {
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return grpc.NewClient(caAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return identity.NewCASource(ctx, dial, spiffeid.RequireTrustDomainFromString("cluster.local"), identity.WithJoinToken(token))
}
