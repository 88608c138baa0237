package mtls

import (
	"crypto/tls"
	"errors"
	"maps"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// grpcCase is one client of a gRPC server and what it must get.
type grpcCase struct {
	name     string
	creds    credentials.TransportCredentials
	wantCode codes.Code
	wantUser string // the SPIFFE ID the handler saw
	wantAuth string // the AuthType the handler saw
}

func runGRPCCases(t *testing.T, addr string, tests []grpcCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			resp, _, err := call(ctx, t, addr, tt.creds)
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("UnaryCall() = %v, want code %v", err, tt.wantCode)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff([]string{resp.GetUsername(), resp.GetHostname()}, []string{tt.wantUser, tt.wantAuth}); diff != "" {
				t.Errorf("handler saw (peer ID, auth type) (-got +want):\n%s", diff)
			}
		})
	}
}

func certlessTLS() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})
}

func TestStrictRejectsPlaintextAndCertlessClients(t *testing.T) {
	p := newPKI(t)
	addr := startGRPC(t, StrictCredentials(ServerConfig(p.server, nil)))
	runGRPCCases(t, addr, []grpcCase{
		{name: "plaintext client", creds: insecure.NewCredentials(), wantCode: codes.Unavailable},
		{name: "TLS client without certificate", creds: certlessTLS(), wantCode: codes.Unavailable},
		{name: "valid SVID", creds: credentials.NewTLS(mustClientConfig(t, p.client, serverID)), wantCode: codes.OK, wantUser: clientID, wantAuth: "tls"},
	})
}

func TestPermissiveServesPlaintextAndMTLSOnOnePort(t *testing.T) {
	p := newPKI(t)
	other := newTestCA(t, "example.org")
	addr := startGRPC(t, PermissiveCredentials(ServerConfig(p.server, nil)))
	runGRPCCases(t, addr, []grpcCase{
		{name: "plaintext client", creds: insecure.NewCredentials(), wantCode: codes.OK, wantUser: "", wantAuth: "plaintext"},
		{name: "mTLS client", creds: credentials.NewTLS(mustClientConfig(t, p.client, serverID)), wantCode: codes.OK, wantUser: clientID, wantAuth: "tls"},
		// TLS is never downgraded: a TLS client is verified as in STRICT.
		{name: "TLS client without certificate", creds: certlessTLS(), wantCode: codes.Unavailable},
		{name: "TLS client of an untrusted CA", creds: credentials.NewTLS(mustClientConfig(t, newTestSource(other.svid(t, clientID), p.ca), serverID)), wantCode: codes.Unavailable},
	})
}

func TestGRPCClientRejectsWrongServerID(t *testing.T) {
	p := newPKI(t)
	addr := startGRPC(t, StrictCredentials(ServerConfig(p.server, nil)))
	runGRPCCases(t, addr, []grpcCase{
		{name: "expected ID", creds: credentials.NewTLS(mustClientConfig(t, p.client, serverID)), wantCode: codes.OK, wantUser: clientID, wantAuth: "tls"},
		{name: "other ID of the trust domain", creds: credentials.NewTLS(mustClientConfig(t, p.client, "spiffe://example.org/ns/default/sa/ratings")), wantCode: codes.Unavailable},
	})
}

func TestGRPCRotationWithoutRestart(t *testing.T) {
	p := newPKI(t)
	addr := startGRPC(t, StrictCredentials(ServerConfig(p.server, nil)))
	creds := credentials.NewTLS(mustClientConfig(t, p.client, serverID))
	serial := func() string {
		t.Helper()
		_, pr, err := call(testContext(t), t, addr, creds)
		if err != nil {
			t.Fatalf("UnaryCall() = %v, want success", err)
		}
		info, ok := pr.AuthInfo.(credentials.TLSInfo)
		if !ok {
			t.Fatalf("peer AuthInfo = %T, want credentials.TLSInfo", pr.AuthInfo)
		}
		return info.State.PeerCertificates[0].SerialNumber.String()
	}
	first := serial()
	initial, err := p.server.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if want := initial.Leaf.SerialNumber.String(); first != want {
		t.Fatalf("server serial = %s, want %s", first, want)
	}
	rotated := p.ca.svid(t, serverID)
	p.server.setCertificate(rotated)
	if got, want := serial(), rotated.Leaf.SerialNumber.String(); got != want {
		t.Errorf("server serial after rotation = %s, want %s (was %s)", got, want, first)
	}
}

func TestPermissiveCredentialsDropSilentClient(t *testing.T) {
	ctx := testContext(t)
	p := newPKI(t)
	creds := PermissiveCredentials(ServerConfig(p.server, nil), WithHandshakeTimeout(50*time.Millisecond))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var d net.Dialer
	client, err := d.DialContext(ctx, "tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	raw, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_, _, err = creds.ServerHandshake(raw)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("ServerHandshake(silent conn) = %v, want %v", err, os.ErrDeadlineExceeded)
	}
}

func TestCredentialsAreServerOnly(t *testing.T) {
	p := newPKI(t)
	for _, c := range []*Credentials{StrictCredentials(ServerConfig(p.server, nil)), PermissiveCredentials(ServerConfig(p.server, nil))} {
		clone := c.Clone()
		if _, _, err := clone.ClientHandshake(testContext(t), "x", nil); !errors.Is(err, ErrServerOnly) {
			t.Errorf("Clone().ClientHandshake() = %v, want %v", err, ErrServerOnly)
		}
		if got := clone.(*Credentials).permissive; got != c.permissive {
			t.Errorf("Clone().permissive = %v, want %v", got, c.permissive)
		}
	}
}

// failures counts the reasons WithHandshakeFailures reports.
type failures struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *failures) add(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n[reason]++
}

func (f *failures) get() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.n)
}

// TestHandshakeFailuresAreReported: every refused connection is reported
// once, with why; a good one is not reported.
func TestHandshakeFailuresAreReported(t *testing.T) {
	p := newPKI(t)
	other := newTestCA(t, "example.org")
	f := &failures{n: map[string]int{}}
	report := WithHandshakeFailures(f.add)
	addr := startGRPC(t, StrictCredentials(ServerConfig(p.server, nil, report), report))
	runGRPCCases(t, addr, []grpcCase{
		{name: "plaintext client", creds: insecure.NewCredentials(), wantCode: codes.Unavailable},
		{name: "TLS client of an untrusted CA", creds: credentials.NewTLS(mustClientConfig(t, newTestSource(other.svid(t, clientID), p.ca), serverID)), wantCode: codes.Unavailable},
		{name: "valid SVID", creds: credentials.NewTLS(mustClientConfig(t, p.client, serverID)), wantCode: codes.OK, wantUser: clientID, wantAuth: "tls"},
	})
	got := f.get()
	// grpc-go may try a refused connection more than once within a call.
	if got[FailureNotTLS] == 0 || got[FailurePeerRejected] == 0 || got[FailureHandshake] != 0 || len(got) != 2 {
		t.Errorf("reported failures = %v, want not_tls and peer_rejected only", got)
	}
}
