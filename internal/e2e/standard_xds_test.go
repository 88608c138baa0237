package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// buildStandard builds a program of testdata that must link grpc-go's xDS
// and no Trellis code, and returns the binary's path.
func buildStandard(ctx context.Context, t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	deps, err := exec.CommandContext(ctx, "go", "list", "-deps", pkg).CombinedOutput()
	if err != nil || !strings.Contains(string(deps), "google.golang.org/grpc/xds\n") {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, deps)
	}
	for _, dep := range strings.Fields(string(deps)) {
		if strings.HasPrefix(dep, "github.com/trellismesh/") && !strings.Contains(dep, "/internal/e2e/testdata/") {
			t.Fatalf("%s links Trellis code:\n%s", pkg, grep(string(deps), "trellis"))
		}
	}
	return bin
}

// standardBootstrap writes the bootstrap a standard grpc-go process of
// the mesh needs, by hand: the control plane, a node id, gRPC's server
// listener template, and the certificate provider instance "trellis" (the
// name the control plane's TLS contexts use) as grpc-go's file_watcher
// plugin over certificate files the mesh CA issued to token's identity.
func (m *secureMesh) standardBootstrap(t *testing.T, node, token string) string {
	t.Helper()
	dir := t.TempDir()
	src := m.caIdentity(t, token)
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := bundle.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"cert.pem": certPEM, "key.pem": keyPEM, "root.pem": rootPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(map[string]any{
		"xds_servers":                            []any{map[string]any{"server_uri": m.addr, "channel_creds": []any{map[string]any{"type": "insecure"}}, "server_features": []string{"xds_v3"}}},
		"node":                                   map[string]any{"id": node},
		"server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%s",
		"certificate_providers": map[string]any{"trellis": map[string]any{
			"plugin_name": "file_watcher",
			"config": map[string]any{
				"certificate_file":    filepath.Join(dir, "cert.pem"),
				"private_key_file":    filepath.Join(dir, "key.pem"),
				"ca_certificate_file": filepath.Join(dir, "root.pem"),
				"refresh_interval":    "600s",
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bootstrap.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// lockedBuffer is a bytes.Buffer safe for a process's output goroutine and
// the test to share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startStandardServer runs the standard grpc-go xDS server listening on
// listen and returns the port it got and its stderr.
func startStandardServer(ctx context.Context, t *testing.T, bin, bootstrap, listen string) (string, *lockedBuffer) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, "-addr", listen)
	cmd.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+bootstrap)
	stdout, stderr := &lockedBuffer{}, &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	re := regexp.MustCompile(`listening on (\S+)`)
	var port string
	waitFor(ctx, t, "the standard server listening", func() error {
		m := re.FindStringSubmatch(stdout.String())
		if m == nil {
			return fmt.Errorf("no address yet; stderr:\n%s", stderr.String())
		}
		_, port, _ = net.SplitHostPort(m[1])
		return nil
	})
	return port, stderr
}

// standardMesh is the Istio configuration of the interop test: the
// standard server is the WorkloadEntry of service echo, with the greeter
// service account; mode is its PeerAuthentication; the AuthorizationPolicy
// allows UnaryCall only (from the client identity unless mode is DISABLE,
// where there is no peer identity to check) and so denies EmptyCall.
func standardMesh(port, mode string) string {
	from := "\n  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]\n    to:"
	if mode == "DISABLE" {
		from = "\n  - to:"
	}
	return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  resolution: STATIC
  ports: [{number: 50051, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-vm, namespace: default}
spec:
  address: 127.0.0.1
  ports: {grpc: ` + port + `}
  labels: {app: echo}
  serviceAccount: greeter
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: echo, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  mtls: {mode: ` + mode + `}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:` + from + ` [{operation: {paths: [/grpc.testing.TestService/UnaryCall]}}]
`
}

// TestStandardXDSServerAndClient: grpc-go's own xDS server and client, as
// separate programs with no Trellis code (testdata/standardserver,
// standardclient), bootstrapped by hand with certificates the mesh CA
// issued (file_watcher plugin as the certificate provider instance
// "trellis"), and configured only by Istio YAML: a ServiceEntry and a
// WorkloadEntry with a serviceAccount, a PeerAuthentication and an
// AuthorizationPolicy. Under STRICT they talk mutual TLS (the server sees
// the client's SPIFFE ID, a plaintext client is refused), and under
// PERMISSIVE too (grpc-go's server cannot sniff TLS: the control plane
// serves an endpoint with an identity mTLS only); under DISABLE,
// plaintext; in all, grpc-go's RBAC filter enforces the policy: the
// allowed method succeeds, the other gets PERMISSION_DENIED. The server
// listens on the wildcard address, as grpc-go's interop server does, so
// the listener it asks for is 0.0.0.0:PORT (or [::]:PORT), matched to the
// WorkloadEntry by destination IP.
func TestStandardXDSServerAndClient(t *testing.T) {
	ctx := testContext(t)
	serverBin := buildStandard(ctx, t, "./testdata/standardserver")
	clientBin := buildStandard(ctx, t, "./testdata/standardclient")
	for _, listen := range []string{"0.0.0.0:0", ":0"} {
		t.Run(listen, func(t *testing.T) {
			ctx := testContext(t)
			m := startSecureMesh(t, "")
			port, serverLog := startStandardServer(ctx, t, serverBin, m.standardBootstrap(t, "standard-server", "greeter-token"), listen)
			writeFile(t, m.dir, "mesh.yaml", standardMesh(port, "STRICT"))
			clientBootstrap := m.standardBootstrap(t, "standard-client", "client-token")
			run := func(args ...string) string {
				cmd := exec.CommandContext(ctx, clientBin, append([]string{"-target", "echo:50051"}, args...)...)
				cmd.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+clientBootstrap)
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Run(); err != nil {
					t.Fatalf("standard client: %v\n%s%s", err, stdout.String(), stderr.String())
				}
				return stdout.String()
			}
			expect := func(what string, want []string, args ...string) {
				t.Helper()
				var out string
				waitFor(ctx, t, what, func() error {
					out = run(args...)
					for _, w := range want {
						if !strings.Contains(out, w) {
							return fmt.Errorf("standard client output:\n%swant %q; server log:\n%s", out, w, serverLog.String())
						}
					}
					return nil
				})
				t.Logf("%s:\n%s", what, out)
			}
			expect("mTLS under STRICT, RBAC enforced", []string{
				"UnaryCall: OK peer=spiffe://cluster.local/ns/default/sa/client",
				"EmptyCall: PermissionDenied",
			}, "-timeout", "2s")
			if out := run("-creds", "insecure", "-wait=false", "-timeout", "2s"); !strings.Contains(out, "UnaryCall: Unavailable") {
				t.Errorf("a plaintext client under STRICT:\n%swant UnaryCall: Unavailable", out)
			}
			writeFile(t, m.dir, "mesh.yaml", standardMesh(port, "DISABLE"))
			expect("plaintext under DISABLE, RBAC enforced", []string{
				"UnaryCall: OK peer=plaintext",
				"EmptyCall: PermissionDenied",
			}, "-timeout", "2s")
			// grpc-go cannot serve PERMISSIVE (TLS and plaintext on one
			// port); the control plane serves an endpoint with an identity
			// what the mesh's clients send it, mTLS.
			writeFile(t, m.dir, "mesh.yaml", standardMesh(port, "PERMISSIVE"))
			expect("mTLS under PERMISSIVE, RBAC enforced", []string{
				"UnaryCall: OK peer=spiffe://cluster.local/ns/default/sa/client",
				"EmptyCall: PermissionDenied",
			}, "-timeout", "2s")
			rec := httptest.NewRecorder()
			m.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if metrics := rec.Body.String(); strings.Contains(metrics, "trellis_xds_nacks_total{") {
				t.Errorf("a standard server or client NACKed a resource:\n%s", grep(metrics, "trellis_xds_nacks"))
			}
		})
	}
}
