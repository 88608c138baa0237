package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
)

// TestExpiredCertificatesFailClosed: when the CA is gone and the
// workloads' certificates expire, new connections to a STRICT server fail
// — the client never falls back to plaintext and the server never accepts
// it — while calls on connections made before the expiry may finish.
func TestExpiredCertificatesFailClosed(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "STRICT"))
	ttl := mesh.WithCertificateTTL(4 * time.Second)
	// Connections last a second, so that new handshakes keep happening.
	age := mesh.WithServerOptions(grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: time.Second, MaxConnectionAgeGrace: 100 * time.Millisecond}))
	seen := &peers{}
	startGreeter(t, m.addr, "v1", serverOpts(m.as("greeter-token"), ttl, age, mesh.WithServerOptions(grpc.ChainUnaryInterceptor(seen.intercept)))...)
	client := m.dial(t, dialOpts(m.as("client-token"), ttl)...)
	answering(ctx, t, client)

	// The CA goes away: no renewal is possible, and both certificates
	// expire within seconds.
	m.Close()
	waitFor(ctx, t, "calls to fail once the certificates have expired", func() error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if _, err := client.SayHello(cctx, &greeterpb.HelloRequest{}); err == nil {
			return fmt.Errorf("still answering")
		}
		return nil
	})
	// Every call the server saw came over mutual TLS.
	seen.mu.Lock()
	defer seen.mu.Unlock()
	for _, id := range seen.ids {
		if id == "plaintext" {
			t.Fatalf("the server served a plaintext call")
		}
	}
	t.Logf("%d calls served over mutual TLS before the certificates expired; none in plaintext", len(seen.ids))
}
