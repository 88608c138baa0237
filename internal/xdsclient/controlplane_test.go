package xdsclient

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/registrationpb"
	"github.com/trellismesh/trellis/xdsserver"
)

// greeterEntry defines greeter:9080 with one static endpoint.
const greeterEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter}
spec:
  hosts: [greeter]
  resolution: STATIC
  ports: [{number: 9080, name: grpc}]
`

// startControlPlane runs the Trellis control plane on addr ("" for any
// loopback port) with the config directory dir, and returns its address and
// a function that stops it (also run at cleanup).
func startControlPlane(t *testing.T, addr, dir string) (string, func()) {
	t.Helper()
	_, addr, stop := startServer(t, addr, dir)
	return addr, stop
}

// startServer is startControlPlane that also returns the server.
func startServer(t *testing.T, addr, dir string) (*xdsserver.Server, string, func()) {
	t.Helper()
	srv, err := xdsserver.New(xdsserver.WithConfigDir(dir), xdsserver.WithWarmup(-1), xdsserver.WithInsecureRegistration())
	if err != nil {
		t.Fatalf("xdsserver.New() = %v", err)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		srv.Close()
		if err := <-done; !errors.Is(err, xdsserver.ErrServerClosed) {
			t.Errorf("Serve() = %v, want ErrServerClosed", err)
		}
	}
	t.Cleanup(stop)
	return srv, lis.Addr().String(), stop
}

func configDir(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "se.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// register registers ep with the control plane at addr; closing the
// returned stream's send side deregisters it.
func register(ctx context.Context, t *testing.T, addr string, ep *registrationpb.Endpoint) registrationpb.Registration_RegisterClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	stream, err := registrationpb.NewRegistrationClient(cc).Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&registrationpb.RegisterRequest{Endpoint: ep}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Register(%v) = %v", ep, err)
	}
	return stream
}

// chain is the resources of one dial target, followed from its listener.
type chain struct {
	names     map[string]string // type URL → name
	recorders map[string]*recorder
}

// follow watches target's listener, then the route configuration it names,
// the cluster its first route sends to and that cluster's endpoints.
func follow(ctx context.Context, t *testing.T, c *Client, target string) *chain {
	t.Helper()
	ch := &chain{names: map[string]string{}, recorders: map[string]*recorder{}}
	watch := func(typeURL, name string) proto.Message {
		t.Helper()
		r := newRecorder()
		t.Cleanup(c.Watch(typeURL, name, r))
		ch.names[typeURL], ch.recorders[typeURL] = name, r
		return r.waitUpdate(ctx, t, typeURL+" "+name, nil)
	}
	l := watch(resource.ListenerType, target).(*v3listenerpb.Listener)
	hcm := new(v3hcmpb.HttpConnectionManager)
	if err := l.GetApiListener().GetApiListener().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	rc := watch(resource.RouteType, hcm.GetRds().GetRouteConfigName()).(*v3routepb.RouteConfiguration)
	cluster := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster()
	cl := watch(resource.ClusterType, cluster).(*v3clusterpb.Cluster)
	eds := cl.GetEdsClusterConfig().GetServiceName()
	if eds == "" {
		eds = cl.GetName()
	}
	watch(resource.EndpointType, eds)
	return ch
}

func (ch *chain) notFound() int {
	n := 0
	for _, r := range ch.recorders {
		n += r.count("notfound")
	}
	return n
}

// TestControlPlane follows greeter:9080 from listener to endpoints on the
// Trellis control plane, and sees endpoints register and leave.
func TestControlPlane(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testContext(t)
			addr, _ := startControlPlane(t, "", configDir(t, greeterEntry))
			c := newClient(t, Config{Server: addr, Delta: mode.delta})
			ch := follow(ctx, t, c, "greeter:9080")
			if want := "outbound|9080||greeter.default.svc.cluster.local"; ch.names[resource.ClusterType] != want {
				t.Errorf("cluster = %q, want %q", ch.names[resource.ClusterType], want)
			}
			eds := ch.recorders[resource.EndpointType]
			hasEndpoints := func(want ...string) func(proto.Message) bool {
				return func(m proto.Message) bool {
					return slices.Equal(addresses(m.(*v3endpointpb.ClusterLoadAssignment)), want)
				}
			}
			reg := register(ctx, t, addr, &registrationpb.Endpoint{Service: "greeter", Address: "127.0.0.1", Port: 9080})
			eds.waitUpdate(ctx, t, "the registered endpoint", hasEndpoints("127.0.0.1:9080"))
			register(ctx, t, addr, &registrationpb.Endpoint{Service: "greeter", Address: "127.0.0.2", Port: 9080})
			eds.waitUpdate(ctx, t, "both endpoints", hasEndpoints("127.0.0.1:9080", "127.0.0.2:9080"))
			reg.CloseSend() // clean deregistration
			eds.waitUpdate(ctx, t, "the endpoint left", hasEndpoints("127.0.0.2:9080"))
			flush(ctx, t, c)
			if n := ch.notFound(); n != 0 {
				t.Errorf("%d NotFound, want none", n)
			}
		})
	}
}

// TestControlPlaneRestart: the control plane stops and comes back on the
// same address; the client keeps its cache meanwhile, reconnects,
// resubscribes and follows changes again.
func TestControlPlaneRestart(t *testing.T) {
	entry := greeterEntry + "  endpoints: [{address: 10.0.0.1}]\n"
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testContext(t)
			dir := configDir(t, entry)
			addr, stop := startControlPlane(t, "", dir)
			c := newClient(t, Config{Server: addr, Delta: mode.delta})
			ch := follow(ctx, t, c, "greeter:9080")

			stop()
			waitFor(ctx, t, "the client to see the control plane gone", func() bool { return !c.Status().Connected })
			for _, r := range c.Status().Resources {
				if r.Resource == nil || r.NotFound {
					t.Errorf("while disconnected, Status(%s %s) = %+v, want the cached resource", r.TypeURL, r.Name, r)
				}
			}

			addr, _ = startControlPlane(t, addr, dir)
			waitFor(ctx, t, "the client to reconnect", func() bool { return c.Status().Connected })
			register(ctx, t, addr, &registrationpb.Endpoint{Service: "greeter", Address: "127.0.0.1", Port: 9080})
			ch.recorders[resource.EndpointType].waitUpdate(ctx, t, "the endpoint registered after the restart", func(m proto.Message) bool {
				return slices.Equal(addresses(m.(*v3endpointpb.ClusterLoadAssignment)), []string{"10.0.0.1:9080", "127.0.0.1:9080"})
			})
			flush(ctx, t, c)
			if n := ch.notFound(); n != 0 {
				t.Errorf("%d NotFound across the restart, want none", n)
			}
			for _, r := range c.Status().Resources {
				if r.Resource == nil || r.Err != nil {
					t.Errorf("after the restart, Status(%s %s) = %+v, want a resource and no error", r.TypeURL, r.Name, r)
				}
			}
		})
	}
}

// TestReplicaFailover: with two replicas of the control plane (one config
// directory) in Config.Server, the client follows one of them; when that
// one dies the client keeps its cache, moves to the other, subscribes
// again there — where every version string differs — and follows the
// changes the survivor serves.
func TestReplicaFailover(t *testing.T) {
	entry := func(ip string) string { return greeterEntry + "  endpoints: [{address: " + ip + "}]\n" }
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testContext(t)
			dir := configDir(t, entry("10.0.0.1"))
			a, addrA, stopA := startServer(t, "", dir)
			b, addrB, stopB := startServer(t, "", dir)
			c := newClient(t, Config{Server: addrA + "," + addrB, Delta: mode.delta})
			ch := follow(ctx, t, c, "greeter:9080")

			var survivor *xdsserver.Server
			var kill func()
			waitFor(ctx, t, "the client on one replica", func() bool {
				na, nb := len(a.ConfigDump().Clients), len(b.ConfigDump().Clients)
				switch {
				case na == 1 && nb == 0:
					survivor, kill = b, stopA
				case na == 0 && nb == 1:
					survivor, kill = a, stopB
				}
				return kill != nil
			})
			killed := time.Now()
			kill()
			waitFor(ctx, t, "the client on the surviving replica", func() bool {
				clients := survivor.ConfigDump().Clients
				// In delta the survivor sends nothing: the client's resource
				// versions (content hashes) are its own.
				return len(clients) == 1 && clients[0].Types["EDS"] != nil && len(clients[0].Types["EDS"].Subscribed) > 0
			})
			t.Logf("%s: on the surviving replica %v after the kill", mode.name, time.Since(killed))
			for _, r := range c.Status().Resources {
				if r.Resource == nil || r.NotFound {
					t.Errorf("after the move, Status(%s %s) = %+v, want the cached resource", r.TypeURL, r.Name, r)
				}
			}

			// A change now can only come from the survivor.
			tmp := dir + "/.se.yaml.tmp"
			if err := os.WriteFile(tmp, []byte(entry("10.0.0.2")), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, dir+"/se.yaml"); err != nil {
				t.Fatal(err)
			}
			ch.recorders[resource.EndpointType].waitUpdate(ctx, t, "the change served by the survivor", func(m proto.Message) bool {
				return slices.Equal(addresses(m.(*v3endpointpb.ClusterLoadAssignment)), []string{"10.0.0.2:9080"})
			})
			t.Logf("%s: change followed %v after the kill", mode.name, time.Since(killed))
			flush(ctx, t, c)
			if n := ch.notFound(); n != 0 {
				t.Errorf("%d NotFound across the failover, want none", n)
			}
			for _, r := range c.Status().Resources {
				if r.Resource == nil || r.Err != nil {
					t.Errorf("after the failover, Status(%s %s) = %+v, want a resource and no error", r.TypeURL, r.Name, r)
				}
			}
		})
	}
}
