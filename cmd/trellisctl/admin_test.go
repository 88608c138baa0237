package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

// TestAdminCommands runs status, config-dump and describe against a real
// control plane with a registered server, a mesh client, and a client that
// rejects what it is sent.
func TestAdminCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	write(t, dir, "mesh.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - match: [{headers: {x-canary: {exact: "true"}}}]
    route: [{destination: {host: greeter, subset: v2}}]
  - route: [{destination: {host: greeter, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`)
	cp, err := xdsserver.New(xdsserver.WithConfigDir(dir), xdsserver.WithInsecureRegistration())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go cp.Serve(lis)
	defer cp.Close()
	adminLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := &http.Server{Handler: cp.AdminHandler()}
	go admin.Serve(adminLis)
	defer admin.Close()
	addr := lis.Addr().String()

	srvLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := mesh.NewServer(mesh.WithControlPlane(addr), mesh.WithService("greeter", "v1"), mesh.WithServicePort(9080))
	if err != nil {
		t.Fatal(err)
	}
	greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: "v1"})
	go srv.Serve(srvLis)
	defer srv.Close()
	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for {
		if _, err := greeterpb.NewGreeterClient(cc).SayHello(ctx, &greeterpb.HelloRequest{}); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatal(err)
		}
	}

	// A client that rejects the listener it is sent.
	raw, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	stream, err := v3discoverypb.NewAggregatedDiscoveryServiceClient(raw).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &v3corepb.Node{Id: "nacking-client"}
	if err := stream.Send(&v3discoverypb.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType, ResourceNames: []string{"greeter:9080"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&v3discoverypb.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType, ResourceNames: []string{"greeter:9080"},
		ResponseNonce: resp.GetNonce(), ErrorDetail: &rpcstatus.Status{Code: 3, Message: "listener greeter:9080: not what I expected"}}); err != nil {
		t.Fatal(err)
	}

	run1 := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(append(args[:1:1], append([]string{"-admin", adminLis.Addr().String()}, args[1:]...)...), &out, &errb)
		return code, out.String(), errb.String()
	}
	// status: the NACK shows, with its reason, once the server has seen it.
	var out string
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var code int
		code, out, _ = run1("status")
		if code == 0 && strings.Contains(out, "not what I expected") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("status never showed the NACK:\n%s", out)
		case <-tick.C:
		}
	}
	for _, want := range []string{"configuration: valid", "nacking-client", "NACKED", "last LDS NACK: listener greeter:9080: not what I expected", "SYNCED"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	code, jsonOut, stderr := run1("status", "-o", "json")
	var st struct {
		Clients []struct {
			Node  string `json:"node"`
			State string `json:"state"`
		} `json:"clients"`
	}
	if code != 0 || json.Unmarshal([]byte(jsonOut), &st) != nil {
		t.Fatalf("status -o json = %d, %q, %s", code, jsonOut, stderr)
	}
	states := map[string]string{}
	for _, c := range st.Clients {
		states[c.Node] = c.State
	}
	if states["nacking-client"] != "NACKED" {
		t.Errorf("status -o json: states %v, want nacking-client NACKED", states)
	}

	code, out, stderr = run1("describe", "greeter")
	if code != 0 {
		t.Fatalf("describe greeter = %d: %s", code, stderr)
	}
	for _, want := range []string{"service greeter (greeter.default.svc.cluster.local)", "greeter:9080", "outbound|9080|v1|greeter.default.svc.cluster.local", "x-canary", srvLis.Addr().String(), "mtls=PERMISSIVE"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe output lacks %q:\n%s", want, out)
		}
	}
	if code, _, stderr := run1("describe", "nosuch"); code != 1 || !strings.Contains(stderr, "knows no service nosuch") {
		t.Errorf("describe nosuch = %d, %q; want 1 and an error", code, stderr)
	}

	code, out, _ = run1("config-dump", "-client", "nacking-client")
	if code != 0 || !strings.Contains(out, `"lastNack": "listener greeter:9080: not what I expected"`) {
		t.Errorf("config-dump -client = %d:\n%s", code, out)
	}
	if code, _, stderr := run1("config-dump", "-client", "nobody"); code != 1 || !strings.Contains(stderr, "404") {
		t.Errorf("config-dump -client nobody = %d, %q", code, stderr)
	}
	if code := run([]string{"status", "-admin", "127.0.0.1:1"}, new(bytes.Buffer), new(bytes.Buffer)); code != 1 {
		t.Errorf("status against nothing = %d, want 1", code)
	}
}

// TestAdminCommandExplainsLoopbackRefusal: a control plane without an
// admin token refuses a request that did not come over loopback, and
// trellisctl says why and what to do instead of a bare 403.
func TestAdminCommandExplainsLoopbackRefusal(t *testing.T) {
	var ip net.IP
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
			ip = n.IP
			break
		}
	}
	if ip == nil {
		t.Skip("this host has no non-loopback IPv4 address")
	}
	cp, err := xdsserver.New()
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	lis, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := &http.Server{Handler: cp.AdminHandler()}
	go admin.Serve(lis)
	defer admin.Close()
	_, port, _ := net.SplitHostPort(lis.Addr().String())

	var out, stderr bytes.Buffer
	code := run([]string{"status", "-admin", net.JoinHostPort(ip.String(), port)}, &out, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "403 Forbidden: without an admin token the control plane answers only on loopback") {
		t.Errorf("status -admin %s:%s = %d, %q; want 1 and the loopback explanation", ip, port, code, stderr.String())
	}
	out.Reset()
	stderr.Reset()
	if code := run([]string{"status", "-admin", "localhost:" + port}, &out, &stderr); code != 0 {
		t.Errorf("status -admin localhost:%s = %d, %q; want 0", port, code, stderr.String())
	}
}
