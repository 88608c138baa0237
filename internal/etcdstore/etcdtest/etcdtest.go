// Package etcdtest runs a real, single-member etcd server inside a test
// process (go.etcd.io/etcd/server/v3/embed) on random loopback ports, and
// can stop and restart it on the same ports and data directory, so tests can
// take etcd away and bring it back.
//
//	srv := etcdtest.Start(t)
//	cli := srv.Client(t)             // a clientv3.Client closed at cleanup
//	store := "etcd://" + srv.Endpoint() + "/trellis"
//	srv.Stop(t)                      // etcd goes away (data kept)
//	srv.Restart(t)                   // and comes back on the same port
//
// The server is stopped at test cleanup. Goroutines it leaves behind once
// closed are listed in IgnoreLeaks for goleak.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

// startTimeout bounds how long a (re)start may take on a loaded machine.
const startTimeout = 60 * time.Second

// Server is an embedded etcd. Its methods are safe for concurrent use.
type Server struct {
	dir       string
	clientURL url.URL
	peerURL   url.URL
	mu        sync.Mutex
	etcd      *embed.Etcd // nil while stopped
}

// Start starts an etcd server with its data in a temporary directory and
// stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{}
	// The ports are free when chosen, but another process may take one
	// before etcd binds it: then choose again.
	var err error
	for range 5 {
		s.dir = t.TempDir()
		s.clientURL = url.URL{Scheme: "http", Host: freeAddr(t)}
		s.peerURL = url.URL{Scheme: "http", Host: freeAddr(t)}
		if err = s.start(time.Now().Add(startTimeout)); err == nil {
			t.Cleanup(func() { s.stop() })
			return s
		}
	}
	t.Fatalf("etcdtest: start etcd: %v", err)
	return nil
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// start starts etcd on s's ports and data directory, retrying until
// deadline.
func (s *Server) start(deadline time.Time) error {
	cfg := embed.NewConfig()
	cfg.Name = "trellis-test"
	cfg.Dir = s.dir
	cfg.ListenClientUrls = []url.URL{s.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{s.clientURL}
	cfg.ListenPeerUrls = []url.URL{s.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{s.peerURL}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", cfg.Name, s.peerURL.String())
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.EnableGRPCGateway = false
	for {
		e, err := embed.StartEtcd(cfg)
		if err == nil {
			select {
			case <-e.Server.ReadyNotify():
				s.mu.Lock()
				s.etcd = e
				s.mu.Unlock()
				return nil
			case err = <-e.Err():
				e.Close()
			case <-time.After(time.Until(deadline)):
				e.Close()
				return fmt.Errorf("etcd did not become ready within %v", startTimeout)
			}
		}
		if time.Now().After(deadline) {
			return err
		}
		// On a restart the OS may hold the port a moment longer: wait
		// for it (not synchronising anything).
		time.Sleep(100 * time.Millisecond)
	}
}

// Endpoint returns the client address, "127.0.0.1:PORT".
func (s *Server) Endpoint() string { return s.clientURL.Host }

// Dir returns the data directory.
func (s *Server) Dir() string { return s.dir }

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.Endpoint()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Stop stops the server, keeping its data. It is idempotent. Like etcd's
// own shutdown it is graceful: streams already open (watches, lease
// keepalives) are served for up to etcd's request timeout (7 s with the
// default election timeout) before they are cut.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stop()
}

func (s *Server) stop() {
	s.mu.Lock()
	e := s.etcd
	s.etcd = nil
	s.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts the stopped server again on the same ports and data.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	running := s.etcd != nil
	s.mu.Unlock()
	if running {
		t.Fatal("etcdtest: Restart of a running server")
	}
	if err := s.start(time.Now().Add(startTimeout)); err != nil {
		t.Fatalf("etcdtest: restart etcd: %v", err)
	}
}

// WaitHealthy waits, until ctx is done, for a read through cli to succeed.
func WaitHealthy(ctx context.Context, t testing.TB, cli *clientv3.Client) {
	t.Helper()
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Get(rctx, "health")
		cancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("etcdtest: etcd not healthy: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// IgnoreLeaks are the goleak options for goroutines an embedded etcd leaves
// running after Close, for a test's TestMain:
//
//	goleak.VerifyTestMain(m, etcdtest.IgnoreLeaks...)
//
// With etcd v3.6.16 it is empty: a closed server and closed clients leave
// nothing behind (the tests of internal/etcdstore, xdsserver and the
// commands check it). It stays so that a future etcd needing entries gets
// them in one place.
var IgnoreLeaks = []goleak.Option{}
