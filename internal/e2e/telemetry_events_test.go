package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/telemetry"
)

const ejectingRule = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: %[1]s}
spec:
  host: %[1]s
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 100ms
      baseEjectionTime: 30s
      maxEjectionPercent: 50
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %[1]s}
spec:
  hosts: [%[1]s]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: %[1]s}}]
`

// TestTelemetryGRPCComponentEvents: what grpc-go's own components measure
// reaches the mesh client's MeterProvider — the xDS resources its xDS
// client accepted (grpc.xds_client.resource_updates_valid), and the
// ejection by Trellis's outlier policy of a backend failing every call
// (trellis.lb.outlier.ejections).
func TestTelemetryGRPCComponentEvents(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", fmt.Sprintf(ejectingRule, "greeter"))
	cp := startControlPlane(t, dir)
	var bs []*behaviour
	for range 2 {
		_, b := startControlled(t, cp.addr, "v1")
		bs = append(bs, b)
	}
	sink := newSink(t)
	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp.addr), sink.option())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	waitFor(ctx, t, "both greeters answering", func() error {
		if tl := send(ctx, cc, 20); len(tl.instances) != 2 {
			return fmt.Errorf("instances %v", tl.instances)
		}
		return nil
	})
	if got := sink.sum(t, "grpc.xds_client.resource_updates_valid", nil, "grpc.xds.resource_type"); len(got) == 0 {
		t.Errorf("grpc.xds_client.resource_updates_valid has no points: grpc-go's xDS client metrics are not recorded")
	} else {
		t.Logf("resources accepted by grpc-go's xDS client, by type: %v", got)
	}
	bs[0].failCode.Store(uint32(codes.Unavailable))
	send(ctx, cc, 100)
	got := sink.sum(t, "trellis.lb.outlier.ejections", nil, "grpc.target")
	if got["xds:///greeter:9080"] != 1 {
		t.Errorf("trellis.lb.outlier.ejections by grpc.target = %v, want one ejection of the failing backend on xds:///greeter:9080", got)
	}
}

// TestTelemetryHandshakeFailures: a STRICT server counts the connections
// it refuses at the handshake, by reason.
func TestTelemetryHandshakeFailures(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "STRICT"))
	sink := newSink(t)
	g := startGreeter(t, m.addr, "v1", serverOpts(m.as("greeter-token"), sink.option())...)
	answering(ctx, t, m.dial(t, dialOpts(m.as("client-token"))...))

	if err := direct(ctx, g.addr, insecure.NewCredentials()); err == nil {
		t.Fatal("a plaintext call into STRICT succeeded")
	}
	foreign := newRoot(t).certFor(t, clientID)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{foreign}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err := direct(ctx, g.addr, creds); err == nil {
		t.Fatal("a call with a certificate of an untrusted root succeeded")
	}
	got := sink.sum(t, telemetry.MetricHandshakeFailures, map[string]string{"destination_app": "greeter"}, "reason")
	if got["not_tls"] < 1 || got["peer_rejected"] < 1 || got["handshake_error"] != 0 {
		t.Errorf("%s by reason = %v, want not_tls and peer_rejected", telemetry.MetricHandshakeFailures, got)
	}
}

// TestTelemetryHTTPEjectionAndXDS: the HTTP client counts the ejection of
// a backend failing every request (trellis.client.events, event
// outlier_ejection) and the xDS resources its own xDS client accepted.
func TestTelemetryHTTPEjectionAndXDS(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", fmt.Sprintf(ejectingRule, "web"))
	cp := startControlPlane(t, dir)
	serve := func(code int) {
		srv, err := mesh.NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(code)
		}), mesh.WithControlPlane(cp.addr), mesh.WithService("web", "v1"), mesh.WithServicePort(8080))
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(lis) }()
		t.Cleanup(func() { srv.Close(); <-done })
	}
	serve(http.StatusOK)
	serve(http.StatusServiceUnavailable)
	sink := newSink(t)
	tr := mesh.NewTransport(mesh.WithControlPlane(cp.addr), mesh.WithMeshOnly(), sink.option())
	defer tr.Close()
	client := &http.Client{Transport: tr}
	codesSeen := map[int]int{}
	get := func() {
		resp, err := client.Get("http://web:8080/")
		if err != nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codesSeen[resp.StatusCode]++
	}
	waitFor(ctx, t, "both backends answering", func() error {
		get()
		if codesSeen[200] == 0 || codesSeen[503] == 0 {
			return fmt.Errorf("answers %v", codesSeen)
		}
		return nil
	})
	for range 50 {
		get()
	}
	events := sink.sum(t, telemetry.MetricEvents, map[string]string{"event": telemetry.EventEjection}, "destination_cluster")
	if events["outbound|8080||web.default.svc.cluster.local"] != 1 {
		t.Errorf("%s{event=%s} by cluster = %v, want one ejection in outbound|8080||web.default.svc.cluster.local", telemetry.MetricEvents, telemetry.EventEjection, events)
	}
	updates := sink.sum(t, telemetry.MetricXDSUpdates, map[string]string{"result": "accepted"}, "type")
	if updates["CDS"] == 0 || updates["EDS"] == 0 || updates["RDS"] == 0 {
		t.Errorf("%s{result=accepted} by type = %v, want CDS, EDS and RDS", telemetry.MetricXDSUpdates, updates)
	}
	if rejected := sink.sum(t, telemetry.MetricXDSUpdates, map[string]string{"result": "rejected"}, ""); rejected[""] != 0 {
		t.Errorf("%s{result=rejected} = %d, want none from a valid configuration", telemetry.MetricXDSUpdates, rejected[""])
	}
}
