package identity

import (
	"encoding/pem"
	"net"
	"path/filepath"
	"testing"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"

	"github.com/trellismesh/trellis/internal/ca"
)

// workloadAPI is a real gRPC server speaking the SPIFFE Workload API: each
// FetchX509SVID stream gets every response sent on updates.
type workloadAPI struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	updates chan *workloadpb.X509SVIDResponse
}

func (w *workloadAPI) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream grpc.ServerStreamingServer[workloadpb.X509SVIDResponse]) error {
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case resp := <-w.updates:
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

func startWorkloadAPI(t *testing.T) (*workloadAPI, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	api := &workloadAPI{updates: make(chan *workloadpb.X509SVIDResponse, 4)}
	srv := grpc.NewServer()
	workloadpb.RegisterSpiffeWorkloadAPIServer(srv, api)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return api, "unix://" + sock
}

func svidResponse(t *testing.T, c *ca.CA) (*workloadpb.X509SVIDResponse, string) {
	t.Helper()
	certPEM, keyPEM, serial := issue(t, c)
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	return &workloadpb.X509SVIDResponse{Svids: []*workloadpb.X509SVID{{
		SpiffeId:    testID.String(),
		X509Svid:    cb.Bytes,
		X509SvidKey: kb.Bytes,
		Bundle:      c.Root().Raw,
	}}}, serial
}

func TestWorkloadSourceFollowsUpdates(t *testing.T) {
	ctx := testContext(t)
	authority := newCA(t, "example.org")
	api, addr := startWorkloadAPI(t)
	resp, first := svidResponse(t, authority)
	api.updates <- resp

	src, err := NewWorkloadSource(ctx, addr)
	if err != nil {
		t.Fatalf("NewWorkloadSource(%s) = %v", addr, err)
	}
	t.Cleanup(func() { src.Close() })
	if got := serialOf(t, src); got != first {
		t.Errorf("GetX509SVID() serial = %s, want %s", got, first)
	}
	b, err := src.GetX509BundleForTrustDomain(testTD)
	if err != nil || !b.HasX509Authority(authority.Root()) {
		t.Errorf("GetX509BundleForTrustDomain(%v) = %v, %v, want the agent's root", testTD, b, err)
	}

	changed := src.Changed()
	resp, second := svidResponse(t, authority)
	api.updates <- resp
	waitClosed(ctx, t, changed, "workload API update")
	if got := serialOf(t, src); got != second {
		t.Errorf("after update: serial = %s, want %s", got, second)
	}
	cert, err := src.Certificate()
	if err != nil || cert.Leaf.SerialNumber.Text(16) != second {
		t.Errorf("Certificate() = %v, %v, want serial %s", cert, err, second)
	}

	if err := src.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}
