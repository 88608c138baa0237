package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/internal/ca"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

// rootFiles is a CA root generated for a test, as PEM files.
type rootFiles struct {
	cert, key string
	ca        *ca.CA
}

func newRoot(t *testing.T) rootFiles {
	t.Helper()
	dir := t.TempDir()
	c, err := ca.LoadOrCreate(dir, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	return rootFiles{cert: filepath.Join(dir, ca.RootCertFile), key: filepath.Join(dir, ca.RootKeyFile), ca: c}
}

// certFor issues a client certificate for id from the root, bypassing the
// control plane.
func (r rootFiles) certFor(t *testing.T, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := r.ca.Sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), spiffeid.RequireFromString(id), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{chain[0].Raw}, PrivateKey: key, Leaf: chain[0]}
}

// TestRootRotationUnderTraffic moves a serving mesh from one CA root to
// another in the three steps of WithCATrustAnchors — sign with the old root
// trusting the new, sign with the new trusting the old, sign with the new
// alone — restarting the control plane at each step, with 6-second
// certificates and connections recycled every second so that handshakes
// keep happening across the change. No call fails, and at the end the old
// root is no longer trusted while the new one is.
func TestRootRotationUnderTraffic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	oldRoot, newRoot := newRoot(t), newRoot(t)
	dir, files := t.TempDir(), t.TempDir()
	writeFile(t, dir, "mesh.yaml", fmt.Sprintf(peerAuthn, "STRICT"))
	bundle := filepath.Join(files, "root-cert.pem")
	writeBundle := func(roots ...rootFiles) {
		var data []byte
		for _, r := range roots {
			b, err := os.ReadFile(r.cert)
			if err != nil {
				t.Fatal(err)
			}
			data = append(data, b...)
		}
		writeFile(t, files, "root-cert.pem", string(data))
	}
	anchors := filepath.Join(files, "anchors.pem")

	addrs := make([]string, 2) // xDS, secure
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = l.Addr().String()
		l.Close()
	}
	// start runs the control plane signing with root, trusting others too.
	start := func(root rootFiles, others ...rootFiles) (*xdsserver.Server, func()) {
		t.Helper()
		opts := []xdsserver.Option{
			xdsserver.WithConfigDir(dir), xdsserver.WithRegistrationGrace(testTimeout),
			xdsserver.WithCAFiles(root.cert, root.key),
			xdsserver.WithJoinTokens(map[string]xdsserver.WorkloadIdentity{
				"greeter-token": {Namespace: "default", ServiceAccount: "greeter"},
				"client-token":  {Namespace: "default", ServiceAccount: "client"},
			}),
		}
		if len(others) > 0 {
			var data []byte
			for _, r := range others {
				b, err := os.ReadFile(r.cert)
				if err != nil {
					t.Fatal(err)
				}
				data = append(data, b...)
			}
			if err := os.WriteFile(anchors, data, 0o644); err != nil {
				t.Fatal(err)
			}
			opts = append(opts, xdsserver.WithCATrustAnchors(anchors))
		}
		srv, err := xdsserver.New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		var lis [2]net.Listener
		for i, a := range addrs {
			// The port was just released by the previous control plane.
			for try := 0; ; try++ {
				lis[i], err = net.Listen("tcp", a)
				if err == nil || try == 50 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		done := make(chan error, 2)
		go func() { done <- srv.Serve(lis[0]) }()
		go func() { done <- srv.ServeSecure(lis[1]) }()
		var once sync.Once
		stop := func() {
			once.Do(func() {
				srv.Close()
				for range 2 {
					if err := <-done; !errors.Is(err, xdsserver.ErrServerClosed) {
						t.Errorf("Serve() = %v, want ErrServerClosed", err)
					}
				}
			})
		}
		t.Cleanup(stop)
		return srv, stop
	}
	// renewed waits until srv has issued a certificate to each workload:
	// both then hold srv's trust bundle, and a certificate from its root.
	renewed := func(srv *xdsserver.Server, step string) {
		t.Helper()
		waitFor(ctx, t, step+": both workloads renewed", func() error {
			rec := httptest.NewRecorder()
			srv.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/debug/ca", nil))
			var dump struct {
				Issued []struct {
					ID string `json:"spiffeId"`
				} `json:"issued"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &dump); err != nil {
				return fmt.Errorf("/debug/ca: %v: %s", err, rec.Body)
			}
			got := map[string]bool{}
			for _, c := range dump.Issued {
				got[c.ID] = true
			}
			for _, id := range []string{"spiffe://cluster.local/ns/default/sa/greeter", "spiffe://cluster.local/ns/default/sa/client"} {
				if !got[id] {
					return fmt.Errorf("no certificate issued to %s yet", id)
				}
			}
			return nil
		})
	}

	writeBundle(oldRoot)
	_, stop := start(oldRoot)
	as := func(token string) []mesh.WorkloadOption {
		return []mesh.WorkloadOption{mesh.WithControlPlane(addrs[0]), mesh.WithJoinToken(token), mesh.WithTrustBundleFile(bundle),
			mesh.WithCAAddr(addrs[1]), mesh.WithCertificateTTL(6 * time.Second)}
	}
	age := mesh.WithServerOptions(grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: time.Second, MaxConnectionAgeGrace: 200 * time.Millisecond}))
	g := startGreeter(t, addrs[0], "v1", serverOpts(as("greeter-token"), age)...)
	client := greeterpb.NewGreeterClient(func() *grpc.ClientConn {
		cc, err := mesh.Dial("greeter:9080", dialOpts(as("client-token"))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}())
	answering(ctx, t, client)

	var calls, failed atomic.Int64
	var firstErr atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for loadCtx.Err() == nil {
			cctx, cancel := context.WithTimeout(loadCtx, 5*time.Second)
			_, err := client.SayHello(cctx, &greeterpb.HelloRequest{Name: "rotation"})
			cancel()
			if loadCtx.Err() != nil {
				return
			}
			calls.Add(1)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	// Step 1: distribute the new root; the old one still signs.
	writeBundle(oldRoot, newRoot)
	stop()
	srv, stop := start(oldRoot, newRoot)
	renewed(srv, "old root signing, new root trusted")
	// Step 2: the new root signs; the old one is still trusted.
	stop()
	srv, stop = start(newRoot, oldRoot)
	renewed(srv, "new root signing, old root trusted")
	// Step 3: the new root alone.
	writeBundle(newRoot)
	stop()
	srv, _ = start(newRoot)
	renewed(srv, "new root alone")
	n := calls.Load()
	waitFor(ctx, t, "calls after the rotation", func() error {
		if calls.Load() < n+50 {
			return fmt.Errorf("%d calls since", calls.Load()-n)
		}
		return nil
	})
	stopLoad()
	<-loadDone
	t.Logf("%d calls across the root rotation, %d failed", calls.Load(), failed.Load())
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d calls failed; first: %v", f, calls.Load(), firstErr.Load())
	}

	// The greeter now trusts the new root alone: a client certificate of
	// the old root is refused, one of the new root accepted.
	direct := func(r rootFiles) error {
		cert := r.certFor(t, "spiffe://cluster.local/ns/default/sa/client")
		creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		return direct(ctx, g.addr, creds)
	}
	if err := direct(oldRoot); err == nil {
		t.Errorf("a client certificate of the old root was accepted after the rotation")
	}
	if err := direct(newRoot); err != nil {
		t.Errorf("a client certificate of the new root was refused after the rotation: %v", err)
	}
}
