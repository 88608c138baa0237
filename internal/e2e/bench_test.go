package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
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

// secureTLS trusts the mesh CA's root, to reach the control plane's
// secure port.
func secureTLS(bundle string) (*tls.Config, error) {
	pemBytes, err := os.ReadFile(bundle)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, nil
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs b.N unary calls, one in flight, and reports CPU per call
// next to ns/op (the latency of a call).
func measure(b *testing.B, c greeterpb.GreeterClient) {
	b.Helper()
	ctx := context.Background()
	req := &greeterpb.HelloRequest{Name: string(make([]byte, 1024))} // 1 KB
	if _, err := c.SayHello(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for b.Loop() {
		if _, err := c.SayHello(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// BenchmarkMTLS compares a greeter call over the mesh (mesh.Dial to a
// mesh.Server under STRICT mutual TLS, policy checks included) with the
// same call over plain grpc-go using the same certificates and TLS 1.3
// configuration. Compare ns/op (latency) and cpu-ns/op (CPU per call,
// client and server together) between the two sub-benchmarks:
//
//	go test -run XXX -bench MTLS -benchtime 5000x ./internal/e2e/
func BenchmarkMTLS(b *testing.B) {
	m := startSecureMesh(b, fmt.Sprintf(peerAuthn, "STRICT"))
	td := spiffeid.RequireTrustDomainFromString("cluster.local")

	b.Run("grpc-go", func(b *testing.B) {
		ctx := context.Background()
		dialCA := func(token string) identity.Source {
			src, err := identity.NewCASource(ctx, func(ctx context.Context, cert *tls.Certificate) (*grpc.ClientConn, error) {
				cfg, err := secureTLS(m.bundle)
				if err != nil {
					return nil, err
				}
				if cert != nil {
					cfg.Certificates = []tls.Certificate{*cert}
				}
				return grpc.NewClient(m.secureAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			}, td, identity.WithJoinToken(token))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { src.Close() })
			return src
		}
		serverID, clientID := dialCA("greeter-token"), dialCA("client-token")
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(mtls.ServerConfig(serverID, nil))))
		greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: "v1", Instance: lis.Addr().String()})
		go srv.Serve(lis)
		b.Cleanup(srv.Stop)
		cfg, err := mtls.ClientConfig(clientID, spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/greeter"))
		if err != nil {
			b.Fatal(err)
		}
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		measure(b, greeterpb.NewGreeterClient(cc))
	})

	b.Run("mesh", func(b *testing.B) {
		startGreeter(b, m.addr, "v1", serverOpts(m.as("greeter-token"))...)
		cc, err := mesh.Dial("greeter:9080", dialOpts(m.as("client-token"))...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		c := greeterpb.NewGreeterClient(cc)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for {
			if _, err := c.SayHello(ctx, &greeterpb.HelloRequest{}); err == nil {
				break
			} else if ctx.Err() != nil {
				b.Fatal(err)
			}
		}
		measure(b, c)
	})
}

// measureHTTP runs b.N GETs with a 1 KB response, one in flight, and
// reports CPU per request.
func measureHTTP(b *testing.B, c *http.Client, url string) {
	b.Helper()
	get := func() {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("GET %s: %s", url, resp.Status)
		}
	}
	get()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for b.Loop() {
		get()
	}
	b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// BenchmarkHTTPMTLS compares a GET over the mesh (mesh.HTTPClient to a
// mesh.HTTPServer under STRICT mutual TLS, HTTP/2) with plain net/http
// using the same certificates and TLS 1.3 configuration:
//
//	go test -run XXX -bench HTTPMTLS -benchtime 3000x ./internal/e2e/
func BenchmarkHTTPMTLS(b *testing.B) {
	m := startSecureMesh(b, fmt.Sprintf(peerAuthn, "STRICT"))
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	kb := strings.Repeat("x", 1024)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, kb) })

	b.Run("net/http", func(b *testing.B) {
		ctx := context.Background()
		source := func(token string) identity.Source {
			src, err := identity.NewCASource(ctx, func(ctx context.Context, cert *tls.Certificate) (*grpc.ClientConn, error) {
				cfg, err := secureTLS(m.bundle)
				if err != nil {
					return nil, err
				}
				if cert != nil {
					cfg.Certificates = []tls.Certificate{*cert}
				}
				return grpc.NewClient(m.secureAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			}, td, identity.WithJoinToken(token))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { src.Close() })
			return src
		}
		serverCfg := mtls.ServerConfig(source("greeter-token"), nil)
		serverCfg.NextProtos = []string{"h2", "http/1.1"}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: handler}
		go srv.Serve(tls.NewListener(lis, serverCfg))
		b.Cleanup(func() { srv.Close() })
		clientCfg, err := mtls.ClientConfig(source("client-token"), spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/greeter"))
		if err != nil {
			b.Fatal(err)
		}
		clientCfg.NextProtos = []string{"h2", "http/1.1"}
		tr := &http.Transport{TLSClientConfig: clientCfg, ForceAttemptHTTP2: true}
		b.Cleanup(tr.CloseIdleConnections)
		measureHTTP(b, &http.Client{Transport: tr}, "https://"+lis.Addr().String()+"/kb")
	})

	b.Run("mesh", func(b *testing.B) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv, err := mesh.NewHTTPServer(handler, httpServerOpts(m.as("kb-token"), mesh.WithService("kb", "v1"), mesh.WithServicePort(8080))...)
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(lis)
		b.Cleanup(func() { srv.Close() })
		tr := mesh.NewTransport(transportOpts(m.as("client-token"), mesh.WithMeshOnly())...)
		b.Cleanup(func() { tr.Close() })
		c := &http.Client{Transport: tr}
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := c.Get("http://kb:8080/kb")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("the mesh service never answered: %v", err)
			}
		}
		measureHTTP(b, c, "http://kb:8080/kb")
	})
}
