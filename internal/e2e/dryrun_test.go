package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/internal/register"
	"github.com/trellismesh/trellis/internal/registrationpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/telemetry"
)

// logRecords is a slog handler keeping every record's message and
// attributes.
type logRecords struct {
	mu      sync.Mutex
	records []map[string]string
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }

func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message, "level": r.Level.String()}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	l.records = append(l.records, m)
	l.mu.Unlock()
	return nil
}

// count returns how many records hold all of want.
func (l *logRecords) count(want map[string]string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, r := range l.records {
		for k, v := range want {
			if r[k] != v {
				continue next
			}
		}
		n++
	}
	return n
}

const dryRunMsg = "mesh: dry-run policy decision (not enforced)"

// TestDryRunPolicyReportsAndNeverDecides: AuthorizationPolicies annotated
// istio.io/dry-run: "true" are evaluated for every call and never
// enforced, as Istio's shadow rules: a dry-run DENY that matches the
// client is logged and counted as a would-be denial while the call is
// served; a dry-run ALLOW that admits nobody does not deny anyone; an
// enforced DENY beside them still denies. Over gRPC and HTTP, with the
// real control plane, Istio YAML and the OTel SDK's reader.
func TestDryRunPolicyReportsAndNeverDecides(t *testing.T) {
	const policies = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: would-deny-client
  namespace: default
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: would-allow-nobody
  namespace: default
  annotations: {istio.io/dry-run: "true"}
spec:
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/nobody]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-intruder
  namespace: default
  annotations: {istio.io/dry-run: "false"}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [other]}}]}]
`
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testContext(t)
			m := startSecureMesh(t, policies)
			metrics, logs := newSink(t), &logRecords{}
			seen := &tenantsSeen{}
			seen.serve(t, m, p, metrics.option(), mesh.WithLogger(slog.New(logs)))
			client := p.client(t, m, clientOpts(m.as("client-token"))...)
			intruder := p.client(t, m, clientOpts(m.as("intruder-token"))...)
			ready(ctx, t, client)
			base := seen.count()
			const n = 5
			for i := range n {
				if r := client(ctx); r.outcome != ok {
					t.Fatalf("client call %d: %s (%v), want ok: a dry-run policy was enforced", i, r.outcome, r.err)
				}
			}
			if got := seen.count() - base; got != n {
				t.Errorf("the handler ran %d times for %d client calls, want %d", got, n, n)
			}
			before := seen.count()
			if r := intruder(ctx); r.outcome != denied {
				t.Errorf("intruder call: %s (%v), want denied by the enforced deny-intruder", r.outcome, r.err)
			}
			if seen.count() != before {
				t.Errorf("the intruder's call reached the handler")
			}

			// Counted: ready's calls too, so at least n for the client.
			count := func(want map[string]string) int64 {
				want["protocol"] = p.name
				want["destination_app"] = p.host
				return metrics.sum(t, telemetry.MetricDryRun, want, "")[""]
			}
			for _, tc := range []struct {
				name string
				want map[string]string
				min  int64
			}{
				{"dry-run DENY would deny the client", map[string]string{"action": "DENY", "policy": "default/would-deny-client[0]", "decision": "deny"}, n},
				{"dry-run ALLOW would deny the client and the intruder", map[string]string{"action": "ALLOW", "policy": "", "decision": "deny"}, n + 1},
				{"dry-run DENY would allow the intruder", map[string]string{"action": "DENY", "policy": "", "decision": "allow"}, 1},
			} {
				if got := count(tc.want); got < tc.min {
					t.Errorf("%s: %s%v = %d, want ≥ %d", tc.name, telemetry.MetricDryRun, tc.want, got, tc.min)
				}
			}
			if got, want := count(map[string]string{"action": "DENY", "decision": "deny"}), count(map[string]string{"action": "DENY", "policy": "default/would-deny-client[0]", "decision": "deny"}); got != want {
				t.Errorf("would-be DENY denials = %d, want all %d by default/would-deny-client[0]", got, want)
			}
			if got := logs.count(map[string]string{"msg": dryRunMsg, "level": "INFO", "action": "DENY", "policy": "default/would-deny-client[0]", "decision": "deny", "principal": "spiffe://cluster.local/ns/default/sa/client"}); got < n {
				t.Errorf("%d INFO logs of the dry-run DENY denying the client, want ≥ %d", got, n)
			}
			if got := logs.count(map[string]string{"msg": dryRunMsg, "action": "ALLOW", "decision": "deny", "principal": "spiffe://cluster.local/ns/other/sa/intruder"}); got != 1 {
				t.Errorf("%d logs of the dry-run ALLOW denying the intruder, want 1", got)
			}
		})
	}
}

// TestInvalidDryRunAnnotationRejected: an istio.io/dry-run value other
// than "true" or "false" is an error naming the file, the resource and the
// annotation; the configuration in force (here: the policy as a dry run)
// stays, and calls keep being served.
func TestInvalidDryRunAnnotationRejected(t *testing.T) {
	ctx := testContext(t)
	policy := func(value string) string {
		return fmt.Sprintf(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: would-deny-client
  namespace: default
  annotations: {istio.io/dry-run: %q}
spec:
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]}]
`, value)
	}
	m := startSecureMesh(t, policy("true"))
	p := protocols[1]
	seen := &tenantsSeen{}
	seen.serve(t, m, p)
	client := p.client(t, m, clientOpts(m.as("client-token"))...)
	ready(ctx, t, client)
	build := m.ConfigDump().Config.Build
	for _, value := range []string{"yes", "TRUE", "1", ""} {
		writeFile(t, m.dir, "mesh.yaml", policy(value))
		want := filepath.Join(m.dir, "mesh.yaml") + `:2: AuthorizationPolicy default/would-deny-client: metadata.annotations["istio.io/dry-run"]: ` + fmt.Sprintf("%q", value) + ` is not a valid value (true or false)`
		waitFor(ctx, t, "the load error for "+value, func() error {
			if errs := m.ConfigDump().Config.LastErrors; !slices.Contains(errs, want) {
				return fmt.Errorf("errors %q, want %q", errs, want)
			}
			return nil
		})
		if after := m.ConfigDump().Config.Build; after != build {
			t.Errorf("dry-run %q: a rejected file triggered a rebuild (build %d → %d)", value, build, after)
		}
		if r := client(ctx); r.outcome != ok {
			t.Errorf("dry-run %q rejected: client call %s (%v), want ok under the last good configuration", value, r.outcome, r.err)
		}
	}
}

// TestStandardXDSServerIgnoresShadowRules: grpc-go's own xDS server
// (xds.NewGRPCServer), configured by the control plane from Istio YAML,
// accepts a server listener whose RBAC filter carries a dry-run policy in
// shadow_rules without NACKing it, and does not enforce it; the same policy
// without the dry run is enforced (so the filter is read), and switching
// back is accepted as an update.
func TestStandardXDSServerIgnoresShadowRules(t *testing.T) {
	ctx := testContext(t)
	config := func(dryRun string) string {
		return fmt.Sprintf(fmt.Sprintf(peerAuthn, "DISABLE")+`
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-hello
  namespace: default
  annotations: {istio.io/dry-run: %q}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [%s]}}]}]
`, dryRun, greeterpb.Greeter_SayHello_FullMethodName)
	}
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", config("true"))
	cp := startControlPlane(t, dir)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	// The endpoint is registered through the registration API, as a mesh
	// server would register it, so that the control plane makes its
	// server listener; grpc-go's server serves it.
	regConn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { regConn.Close() })
	reg := register.Start(regConn, &registrationpb.Endpoint{Service: "greeter", Address: "127.0.0.1", Port: uint32(port), ServicePort: 9080, Labels: map[string]string{"version": "v1"}}, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { reg.Stop(ctx) })

	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "grpc-go-xds-server"},
  "server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%%s"
}`, cp.addr)
	modes := make(chan connectivity.ServingMode, 16)
	srv, err := xds.NewGRPCServer(grpc.Creds(insecure.NewCredentials()), xds.BootstrapContentsForTesting([]byte(bootstrap)),
		xds.ServingModeCallback(func(_ net.Addr, args xds.ServingModeChangeArgs) {
			select {
			case modes <- args.Mode:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("xds.NewGRPCServer() = %v", err)
	}
	greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: "v1", Instance: lis.Addr().String()})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	select {
	case m := <-modes:
		if m != connectivity.ServingModeServing {
			t.Fatalf("grpc-go's xDS server went %v with a dry-run policy, want SERVING (the listener was refused)", m)
		}
	case <-ctx.Done():
		t.Fatal("grpc-go's xDS server never learnt its listener")
	}
	call := func() codes.Code {
		return status.Code(direct(ctx, lis.Addr().String(), insecure.NewCredentials()))
	}
	if c := call(); c != codes.OK {
		t.Fatalf("call under a dry-run DENY = %v, want OK (shadow rules are not enforced)", c)
	}
	writeFile(t, dir, "mesh.yaml", config("false"))
	waitFor(ctx, t, "the enforced DENY", func() error {
		if c := call(); c != codes.PermissionDenied {
			return fmt.Errorf("call = %v, want PermissionDenied", c)
		}
		return nil
	})
	writeFile(t, dir, "mesh.yaml", config("true"))
	waitFor(ctx, t, "the dry run again", func() error {
		if c := call(); c != codes.OK {
			return fmt.Errorf("call = %v, want OK", c)
		}
		return nil
	})
	select {
	case m := <-modes:
		t.Errorf("grpc-go's xDS server changed its serving mode to %v on an update", m)
	default:
	}
}
