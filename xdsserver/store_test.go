package xdsserver

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/trellismesh/trellis/internal/etcdstore"
	"github.com/trellismesh/trellis/internal/etcdstore/etcdtest"
	"github.com/trellismesh/trellis/internal/registrationpb"
)

// These tests run control-plane replicas against a real etcd
// (etcdtest), with real registration streams.

const greeterCluster = "outbound|9080||greeter.default.svc.cluster.local"

// etcdContext bounds a test that waits for lease expiries and etcd
// restarts on a loaded machine.
func etcdContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// startEtcd starts etcd holding files as the mesh configuration.
func startEtcd(ctx context.Context, t *testing.T, files map[string]string) (*etcdtest.Server, *etcdstore.Client) {
	t.Helper()
	srv := etcdtest.Start(t)
	c := etcdstore.NewClient(srv.Client(t), etcdstore.DefaultPrefix)
	apply(ctx, t, c, files)
	return srv, c
}

func apply(ctx context.Context, t *testing.T, c *etcdstore.Client, files map[string]string) {
	t.Helper()
	b := map[string][]byte{}
	for k, v := range files {
		b[k] = []byte(v)
	}
	if _, err := c.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
}

// startReplica starts a Server on srv's etcd; it waits for its first
// configuration.
func startReplica(ctx context.Context, t *testing.T, srv *etcdtest.Server, opts ...Option) (*Server, *grpc.ClientConn) {
	t.Helper()
	s, cc := start(t, append([]Option{WithStore("etcd://" + srv.Endpoint()), WithWarmup(-1)}, opts...)...)
	waitFor(ctx, t, func() bool { return !s.ConfigDump().Config.LoadedAt.IsZero() })
	return s, cc
}

// served returns the addresses s serves in the EDS resource of cluster.
func served(s *Server, cluster string) []string {
	return s.ConfigDump().Endpoints[cluster]
}

func servesGreeter(s *Server, addr string) bool {
	return slices.Contains(served(s, greeterCluster), addr)
}

func greeterEndpoint(port uint32) *registrationpb.Endpoint {
	return &registrationpb.Endpoint{Service: "greeter", Address: "127.0.0.1", Port: port, ServicePort: 9080, Labels: map[string]string{"version": "v1"}}
}

// TestReplicasShareRegistrationsThroughEtcd: a workload registered with
// replica A is in replica B's EDS, and a clean deregistration on A leaves
// B (the grace is ten minutes, so leaving is the deregistration).
func TestReplicasShareRegistrationsThroughEtcd(t *testing.T) {
	ctx := etcdContext(t)
	srv, _ := startEtcd(ctx, t, map[string]string{"greeter.yaml": greeterEntry})
	a, ccA := startReplica(ctx, t, srv, WithRegistrationGrace(10*time.Minute))
	b, _ := startReplica(ctx, t, srv, WithRegistrationGrace(10*time.Minute))
	if src := b.ConfigDump().Config.Source; src != "etcd://"+srv.Endpoint()+"/trellis" {
		t.Errorf("B's configuration source = %q, want the etcd store", src)
	}
	stream, err := register(ctx, t, ccA, greeterEndpoint(9080))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool { return servesGreeter(b, "127.0.0.1:9080") })
	regs := b.ConfigDump().Registrations
	if len(regs) != 1 || regs[0].Labels["version"] != "v1" {
		t.Errorf("B's registrations = %+v, want A's with its labels", regs)
	}
	waitFor(ctx, t, func() bool { return servesGreeter(a, "127.0.0.1:9080") })
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("Recv() after CloseSend = %v, want EOF", err)
	}
	waitFor(ctx, t, func() bool { return len(served(b, greeterCluster)) == 0 })
	if n := len(a.ConfigDump().Registrations); n != 0 {
		t.Errorf("A's registrations after a clean deregistration = %d, want 0", n)
	}
}

// TestDeadReplicaEndpointsLeaveAfterLeaseTTL: when replica A dies, its
// registrations stay in B's EDS until A's lease expires (one TTL, the
// registration grace), then leave; a workload that registered again
// through B keeps its endpoint.
func TestDeadReplicaEndpointsLeaveAfterLeaseTTL(t *testing.T) {
	ctx := etcdContext(t)
	const grace = 3 * time.Second
	srv, _ := startEtcd(ctx, t, map[string]string{"greeter.yaml": greeterEntry})
	a, ccA := startReplica(ctx, t, srv, WithRegistrationGrace(grace))
	b, ccB := startReplica(ctx, t, srv, WithRegistrationGrace(grace))
	if _, err := register(ctx, t, ccA, greeterEndpoint(9080)); err != nil {
		t.Fatal(err)
	}
	if _, err := register(ctx, t, ccA, greeterEndpoint(9081)); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool { return len(served(b, greeterCluster)) == 2 })

	died := time.Now()
	a.Close()
	// The workload on 9081 notices and registers through B.
	if _, err := register(ctx, t, ccB, greeterEndpoint(9081)); err != nil {
		t.Fatal(err)
	}
	if !servesGreeter(b, "127.0.0.1:9080") {
		t.Error("the dead replica's endpoint left B at once; want it kept until A's lease expires")
	}
	waitFor(ctx, t, func() bool { return !servesGreeter(b, "127.0.0.1:9080") })
	took := time.Since(died)
	t.Logf("the dead replica's endpoint left B's EDS %v after the replica died (lease TTL %v)", took.Round(time.Millisecond), grace)
	if took < grace/2 {
		t.Errorf("the dead replica's endpoint left after %v, well before the lease TTL %v", took, grace)
	}
	if got := served(b, greeterCluster); !slices.Equal(got, []string{"127.0.0.1:9081"}) {
		t.Errorf("B serves %v after A's lease expired, want the re-registered 127.0.0.1:9081", got)
	}
}

// TestEtcdRestartLosesNothing: etcd stops for longer than the lease TTL and
// starts again (same data, same port). Both replicas serve their endpoints
// throughout; a workload
// that registers with A during the outage is served by A at once and by B
// once etcd is back; configuration changes flow again.
func TestEtcdRestartLosesNothing(t *testing.T) {
	ctx := etcdContext(t)
	const grace = 2 * time.Second
	srv, c := startEtcd(ctx, t, map[string]string{"greeter.yaml": greeterEntry})
	a, ccA := startReplica(ctx, t, srv, WithRegistrationGrace(grace))
	b, _ := startReplica(ctx, t, srv, WithRegistrationGrace(grace))
	if _, err := register(ctx, t, ccA, greeterEndpoint(9080)); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool { return servesGreeter(b, "127.0.0.1:9080") })

	// Watch B's EDS through the outage.
	var (
		mu      sync.Mutex
		minSeen = 1 << 30
		samples int
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			n := len(served(b, greeterCluster))
			mu.Lock()
			minSeen, samples = min(minSeen, n), samples+1
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	// etcd's Stop is graceful: open streams are served up to 7 s more.
	// The outage counts from its end.
	stopping := time.Now()
	srv.Stop(t)
	down := time.Now()
	stopped := down.Sub(stopping)
	if _, err := register(ctx, t, ccA, greeterEndpoint(9081)); err != nil {
		t.Fatalf("registering while etcd is away: %v", err)
	}
	waitFor(ctx, t, func() bool { return servesGreeter(a, "127.0.0.1:9081") }) // served by A at once
	// Keep etcd away past the lease TTL: A gives its lease up, and must
	// take a new one and write everything again when etcd is back.
	waitFor(ctx, t, func() bool { return time.Since(down) > 2*grace })
	if !servesGreeter(a, "127.0.0.1:9080") || !servesGreeter(b, "127.0.0.1:9080") {
		t.Error("an endpoint left while etcd was away")
	}
	srv.Restart(t)
	back := time.Now()
	waitFor(ctx, t, func() bool { return servesGreeter(b, "127.0.0.1:9081") })
	t.Logf("etcd stopped in %v and was away %v; B served the outage's registration %v after etcd was back", stopped.Round(time.Millisecond), back.Sub(down).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))

	apply(ctx, t, c, map[string]string{"greeter.yaml": greeterEntry, "ratings.yaml": sourceService})
	for _, s := range []*Server{a, b} {
		waitFor(ctx, t, func() bool { return s.ConfigDump().Config.Resources == 2 })
	}
	// Past the old lease's TTL (etcd extended it when it restarted):
	// nothing leaves.
	if _, err := register(ctx, t, ccA, greeterEndpoint(9082)); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool { return servesGreeter(b, "127.0.0.1:9082") && time.Since(back) > 3*grace })
	if got := served(b, greeterCluster); len(got) != 3 {
		t.Errorf("B serves %v after the restart, want the three endpoints", got)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("B's EDS sampled %d times through the outage; fewest endpoints seen: %d", samples, minSeen)
	if minSeen < 1 {
		t.Errorf("B's EDS went down to %d endpoints during the outage; want the registered one kept", minSeen)
	}
}

// TestConfigurationInEtcd: the configuration in etcd is served, a bad
// document keeps the last good one and the error names its key and field;
// /readyz waits for the first read. With WithConfigDir the configuration
// comes from the directory and only registrations from etcd.
func TestConfigurationInEtcd(t *testing.T) {
	ctx := etcdContext(t)
	srv, c := startEtcd(ctx, t, map[string]string{"greeter.yaml": greeterEntry})
	a, _ := startReplica(ctx, t, srv)
	admin := httptest.NewServer(a.AdminHandler())
	defer admin.Close()
	resp, err := http.Get(admin.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz after the configuration was read = %d, want 200", resp.StatusCode)
	}
	if d := a.ConfigDump(); d.Config.Resources != 1 || !slices.Equal(d.Config.Files, []string{"/trellis/config/greeter.yaml"}) {
		t.Errorf("config in force: %d resources from %v; want greeter from its key", d.Config.Resources, d.Config.Files)
	}
	// A bad file written around trellisctl's validation.
	if _, err := srv.Client(t).Put(ctx, "/trellis/config/bad.yaml", sourceService+"  bogus: 1\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool { return !a.ConfigDump().Config.Valid })
	d := a.ConfigDump()
	if d.Config.Resources != 1 {
		t.Errorf("after a bad file, %d resources in force; want the last good 1", d.Config.Resources)
	}
	const want = "/trellis/config/bad.yaml:1: ServiceEntry default/ratings: spec.bogus: "
	if len(d.Config.LastErrors) != 1 || !strings.HasPrefix(d.Config.LastErrors[0], want) {
		t.Errorf("load errors = %q, want one starting %q", d.Config.LastErrors, want)
	}
	apply(ctx, t, c, map[string]string{"greeter.yaml": greeterEntry, "ratings.yaml": sourceService})
	waitFor(ctx, t, func() bool { d := a.ConfigDump(); return d.Config.Valid && d.Config.Resources == 2 })

	dir := t.TempDir()
	if err := writeTestFile(dir, "se.yaml", greeterEntry); err != nil {
		t.Fatal(err)
	}
	fromDir, _ := start(t, WithStore("etcd://"+srv.Endpoint()), WithConfigDir(dir))
	if d := fromDir.ConfigDump(); d.Config.Source != "" || d.Config.Dir != dir || d.Config.Resources != 1 {
		t.Errorf("with a directory and an etcd store: source %q, dir %q, %d resources; want the directory's 1", d.Config.Source, d.Config.Dir, d.Config.Resources)
	}
}

// TestNewWithBadStore: a bad store URI is an error naming it; an etcd
// that cannot be reached fails New (there is nothing to serve yet).
func TestNewWithBadStore(t *testing.T) {
	if _, err := New(WithStore("etcd://nowhere")); err == nil || !strings.Contains(err.Error(), `"etcd://nowhere"`) {
		t.Errorf(`New(WithStore("etcd://nowhere")) = %v, want an error naming the URI`, err)
	}
	if _, err := New(WithStore("redis://x:1")); err == nil || !strings.Contains(err.Error(), "redis://x:1") {
		t.Errorf(`New(WithStore("redis://x:1")) = %v, want an error naming the URI`, err)
	}
	if s, err := New(WithStore("memory")); err != nil {
		t.Errorf(`New(WithStore("memory")) = %v`, err)
	} else {
		s.Close()
	}
	srv := etcdtest.Start(t)
	srv.Stop(t)
	defer func(d time.Duration) { storeOpenTimeout = d }(storeOpenTimeout)
	storeOpenTimeout = time.Second
	if s, err := New(WithStore("etcd://" + srv.Endpoint())); err == nil {
		s.Close()
		t.Error("New with etcd down succeeded")
	} else if !strings.Contains(err.Error(), srv.Endpoint()) {
		t.Errorf("New with etcd down = %v, want the error to name the store", err)
	}
}

// TestOwnershipHoldsAcrossReplicas guards against taking an endpoint
// through another replica: a registration made through replica A belongs
// to its workload at replica B too, which refuses it to anyone else and
// lets the owner move to it.
func TestOwnershipHoldsAcrossReplicas(t *testing.T) {
	ctx := etcdContext(t)
	srv, _ := startEtcd(ctx, t, map[string]string{"greeter.yaml": greeterEntry})
	_, ccA := startReplica(ctx, t, srv, WithRegistrationGrace(time.Minute))
	b, ccB := startReplica(ctx, t, srv, WithRegistrationGrace(time.Minute))
	if _, err := registerAs(ctx, t, ccA, victimOwner, greeterEndpoint(9080)); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool { return servesGreeter(b, "127.0.0.1:9080") })
	stolen := greeterEndpoint(9080)
	stolen.Labels = map[string]string{"version": "evil"}
	_, err := registerAs(ctx, t, ccB, attackerOwner, stolen)
	wantCode(t, "Register(A's endpoint) through B as another workload", err, codes.PermissionDenied)
	if _, err := registerAs(ctx, t, ccB, victimOwner, greeterEndpoint(9080)); err != nil {
		t.Errorf("Register(A's endpoint) through B as its owner = %v, want success", err)
	}
	if got := registrationsByKey(b)["default/greeter/127.0.0.1:9080"]; got["version"] != "v1" {
		t.Errorf("B's registration labels = %v, want version v1", got)
	}
}
