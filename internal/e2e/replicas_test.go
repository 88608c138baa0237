package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

// startReplicas starts n replicas of the control plane reading one config
// directory, and returns them with the control-plane address naming them
// all ("a:port,b:port").
func startReplicas(t *testing.T, dir string, n int) ([]*controlPlane, string) {
	t.Helper()
	var cps []*controlPlane
	var addrs []string
	for range n {
		cp := startControlPlane(t, dir)
		cps = append(cps, cp)
		addrs = append(addrs, cp.addr)
	}
	return cps, strings.Join(addrs, ",")
}

// startPlainBackend runs a server of protocol p, version v, outside the
// mesh (it does not register; a ServiceEntry names it), so that every
// replica serves its endpoint. It returns the port.
func startPlainBackend(t *testing.T, p protocol, v string) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if p.name == "grpc" {
		s := grpc.NewServer()
		greeterpb.RegisterGreeterServer(s, &greeter.Server{Version: v, Instance: addr})
		done := make(chan struct{})
		go func() { s.Serve(lis); close(done) }()
		t.Cleanup(func() { s.Stop(); <-done })
	} else {
		s := &http.Server{Handler: (&behaviour{}).handler(v, addr)}
		done := make(chan struct{})
		go func() { s.Serve(lis); close(done) }()
		t.Cleanup(func() { s.Close(); <-done })
	}
	return lis.Addr().(*net.TCPAddr).Port
}

// staticService defines host on port 9080 with the endpoints v1 and v2 at
// the given ports, the subsets v1 and v2, and a route to subset to.
func staticService(host string, v1, v2 int, to string) string {
	return fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %[1]s}
spec:
  hosts: [%[1]s]
  resolution: STATIC
  ports: [{number: 9080, name: http}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: %[2]d}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: %[3]d}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: %[1]s}
spec:
  host: %[1]s
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %[1]s}
spec:
  hosts: [%[1]s]
  http:
  - route: [{destination: {host: %[1]s, subset: %[4]s}}]
`, host, v1, v2, to)
}

// steadyLoad calls at a steady pace from its own goroutines and counts
// what it sees.
type steadyLoad struct {
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu      sync.Mutex
	calls   int
	failed  int
	last    result
	streak  map[string]int // consecutive successful replies of each version
	started map[string]time.Time
}

// startLoad runs workers goroutines, each calling once per interval, until
// stop.
func startLoad(ctx context.Context, call func(context.Context, ...string) result, workers int, interval time.Duration) *steadyLoad {
	l := &steadyLoad{stop: make(chan struct{}), streak: map[string]int{}, started: map[string]time.Time{}}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				r := call(cctx)
				cancel()
				l.record(r)
			}
		}()
	}
	return l
}

func (l *steadyLoad) record(r result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if r.outcome != ok {
		l.failed++
		l.last = r
		clear(l.streak)
		return
	}
	for v := range l.streak {
		if v != r.version {
			delete(l.streak, v)
		}
	}
	if l.streak[r.version] == 0 {
		l.started[r.version] = time.Now()
	}
	l.streak[r.version]++
}

// following reports whether the last n replies all came from version v,
// and since when.
func (l *steadyLoad) following(v string, n int) (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streak[v] < n {
		return time.Time{}, fmt.Errorf("%d calls (%d failed), streaks %v; want %d in a row from %s", l.calls, l.failed, l.streak, n, v)
	}
	return l.started[v], nil
}

// count returns the number of calls made so far.
func (l *steadyLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

// end stops the load and returns the calls made and failed, and the last
// failure.
func (l *steadyLoad) end() (calls, failed int, last result) {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls, l.failed, l.last
}

// ldsVersions returns the listener versions the control plane's clients
// have ACKed, one per stream that has.
func ldsVersions(cp *controlPlane) []string {
	var v []string
	for _, c := range cp.ConfigDump().Clients {
		if ts := c.Types["LDS"]; ts != nil && ts.Acks > 0 {
			v = append(v, ts.AckedVersion)
		}
	}
	return v
}

// TestControlPlaneReplicaFailover: gRPC and HTTP clients given two
// control-plane replicas ("a,b") follow one of them. Under steady load
// (about 200 calls a second) the replica they follow is killed: no call
// fails, the clients move to the survivor with their cached configuration,
// and a route change made after the kill — which only the survivor can
// serve — reaches them.
func TestControlPlaneReplicaFailover(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testContext(t)
			v1, v2 := startPlainBackend(t, p, "v1"), startPlainBackend(t, p, "v2")
			dir := t.TempDir()
			writeFile(t, dir, "mesh.yaml", staticService(p.host, v1, v2, "v1"))
			// The second replica starts after a change the first has
			// applied: same configuration, different version strings, as
			// replicas have.
			cps := []*controlPlane{startControlPlane(t, dir)}
			build := cps[0].ConfigDump().Config.Build
			writeFile(t, dir, "other.yaml", staticService("other", v1, v2, "v1"))
			waitFor(ctx, t, "the first replica to apply a change", func() error {
				if b := cps[0].ConfigDump().Config.Build; b == build {
					return fmt.Errorf("build %d", b)
				}
				return nil
			})
			cps = append(cps, startControlPlane(t, dir))
			list := cps[0].addr + "," + cps[1].addr
			call := p.client(t, &secureMesh{}, mesh.WithControlPlane(list))
			ready(ctx, t, call)
			// The xDS streams of the client: grpc-go's and Trellis's own
			// (route retry policies) for gRPC, Trellis's for HTTP.
			want := map[string]int{"grpc": 2, "http": 1}[p.name]
			victim := -1
			waitFor(ctx, t, "the client's streams on one replica", func() error {
				n := []int{len(ldsVersions(cps[0])), len(ldsVersions(cps[1]))}
				switch {
				case n[0] == want && n[1] == 0:
					victim = 0
				case n[0] == 0 && n[1] == want:
					victim = 1
				default:
					return fmt.Errorf("streams per replica %v, want %d on one, 0 on the other", n, want)
				}
				return nil
			})
			survivor := cps[1-victim]
			versionsBefore := ldsVersions(cps[victim])

			load := startLoad(ctx, call, 2, 10*time.Millisecond)
			defer load.end()
			waitFor(ctx, t, "steady load on v1", func() error {
				_, err := load.following("v1", 100)
				return err
			})
			killed := time.Now()
			cps[victim].Close()
			waitFor(ctx, t, "the client's streams on the survivor, listeners ACKed", func() error {
				if v := ldsVersions(survivor); len(v) != want {
					return fmt.Errorf("ACKed listener versions on the survivor %v, want %d streams", v, want)
				}
				return nil
			})
			moved := time.Since(killed)
			versionsAfter := ldsVersions(survivor)
			if versionsBefore[0] == versionsAfter[0] {
				t.Errorf("listener versions %v on the killed replica, %v on the survivor; want them to differ (the test's premise)", versionsBefore, versionsAfter)
			}
			for _, c := range survivor.ConfigDump().Clients {
				for typ, ts := range c.Types {
					if ts.Nacks > 0 {
						t.Errorf("the survivor saw %s NACKed: %s", typ, ts.LastNack)
					}
				}
			}

			changed := time.Now()
			writeFile(t, dir, "mesh.yaml", staticService(p.host, v1, v2, "v2"))
			var since time.Time
			waitFor(ctx, t, "the clients to follow the route change served by the survivor", func() error {
				var err error
				since, err = load.following("v2", 100)
				return err
			})
			// And keep serving on the survivor for a while.
			n := load.count() + 200
			waitFor(ctx, t, "200 more calls on the survivor", func() error {
				if c := load.count(); c < n {
					return fmt.Errorf("%d calls, want %d", c, n)
				}
				return nil
			})
			calls, failed, last := load.end()
			t.Logf("%s: %d calls, %d failed; streams on the survivor %v after the kill (listener versions %v there, %v before); the change made then followed after %v",
				p.name, calls, failed, moved.Round(time.Millisecond), versionsAfter, versionsBefore, since.Sub(changed).Round(time.Millisecond))
			if failed > 0 {
				t.Errorf("%d of %d calls failed across the failover (last: %s %v), want none", failed, calls, last.outcome, last.err)
			}
		})
	}
}

// startSecureReplicas is startReplicas for control planes with their CA
// (one root, from a shared data directory) and join tokens, as
// startSecureMesh. It returns them, the list of their xDS addresses and
// the list of their secure addresses.
func startSecureReplicas(t *testing.T, dir string, n int) (cps []*secureMesh, list, secureList string) {
	t.Helper()
	data := t.TempDir()
	var addrs, secure []string
	for range n {
		cp := startControlPlane(t, dir,
			xdsserver.WithDataDir(data), // the first generates the root, the others load it
			xdsserver.WithJoinTokens(map[string]xdsserver.WorkloadIdentity{
				"greeter-token": {Namespace: "default", ServiceAccount: "greeter"},
				"client-token":  {Namespace: "default", ServiceAccount: "client"},
			}))
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go cp.ServeSecure(lis) // stopped by the control plane's cleanup
		cps = append(cps, &secureMesh{controlPlane: cp, secureAddr: lis.Addr().String(), bundle: filepath.Join(data, "root-cert.pem")})
		addrs, secure = append(addrs, cp.addr), append(secure, lis.Addr().String())
	}
	return cps, strings.Join(addrs, ","), strings.Join(secure, ",")
}

// TestRegistrationMovesToSurvivingReplica: a mesh server registered with
// one of two control-plane replicas registers with the other when its
// replica dies, and is then reached through the survivor alone — in
// plaintext, and with identities from the replicas' CA, where the
// certificate and the registration go over TLS to each replica's secure
// port, verified by that replica's own name.
func TestRegistrationMovesToSurvivingReplica(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(map[bool]string{false: "plaintext", true: "mtls"}[secure], func(t *testing.T) {
			ctx := testContext(t)
			dir := t.TempDir()
			writeFile(t, dir, "se.yaml", `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter}
spec:
  hosts: [greeter]
  resolution: STATIC
  ports: [{number: 9080, name: grpc}]
`)
			// Options of the server, and of a client of replica i alone.
			var (
				cps          []*controlPlane
				list         string
				greeterOpts  []mesh.ServerOption
				clientOptsOf func(i int) []mesh.DialOption
			)
			if secure {
				sms, l, secureList := startSecureReplicas(t, dir, 2)
				list = l
				for _, m := range sms {
					cps = append(cps, m.controlPlane)
				}
				bundle := sms[0].bundle
				greeterOpts = []mesh.ServerOption{mesh.WithJoinToken("greeter-token"), mesh.WithTrustBundleFile(bundle), mesh.WithCAAddr(secureList)}
				clientOptsOf = func(i int) []mesh.DialOption {
					return []mesh.DialOption{mesh.WithControlPlane(sms[i].addr), mesh.WithJoinToken("client-token"), mesh.WithTrustBundleFile(bundle), mesh.WithCAAddr(sms[i].secureAddr)}
				}
			} else {
				cps, list = startReplicas(t, dir, 2)
				clientOptsOf = func(i int) []mesh.DialOption { return []mesh.DialOption{mesh.WithControlPlane(cps[i].addr)} }
			}
			g := startGreeter(t, list, "v1", greeterOpts...)
			const cluster = "outbound|9080||greeter.default.svc.cluster.local"
			registered := func(cp *controlPlane) bool {
				eps := cp.ConfigDump().Endpoints[cluster]
				return len(eps) == 1 && eps[0] == g.addr
			}
			victim := -1
			waitFor(ctx, t, "the server registered with one replica", func() error {
				switch a, b := registered(cps[0]), registered(cps[1]); {
				case a && !b:
					victim = 0
				case b && !a:
					victim = 1
				default:
					return fmt.Errorf("registered with replica 0: %v, 1: %v; want exactly one", a, b)
				}
				return nil
			})
			survivor := cps[1-victim]

			killed := time.Now()
			cps[victim].Close()
			waitFor(ctx, t, "the registration on the surviving replica", func() error {
				if !registered(survivor) {
					return fmt.Errorf("endpoints %v, want [%s]", survivor.ConfigDump().Endpoints[cluster], g.addr)
				}
				return nil
			})
			t.Logf("registered with the survivor %v after the kill", time.Since(killed).Round(time.Millisecond))
			if secure {
				regs := survivor.ConfigDump().Registrations
				if len(regs) != 1 || regs[0].Identity != "spiffe://cluster.local/ns/default/sa/greeter" {
					t.Errorf("registrations on the survivor %+v, want one by spiffe://cluster.local/ns/default/sa/greeter", regs)
				}
			}

			cc, err := mesh.Dial("greeter:9080", clientOptsOf(1-victim)...)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			waitFor(ctx, t, "the server answering through the survivor", func() error {
				if tl := send(ctx, cc, 1); tl.errors > 0 {
					return tl.lastErr
				}
				return nil
			})
			if tl := send(ctx, cc, 50); tl.errors > 0 || tl.instances[g.addr] != 50 {
				t.Errorf("through the survivor: instances %v, %d errors (%v); want 50 from %s", tl.instances, tl.errors, tl.lastErr, g.addr)
			}
		})
	}
}
