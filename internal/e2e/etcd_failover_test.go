package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/internal/etcdstore/etcdtest"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

// TestReplicaFailoverWithSharedStore: two control-plane replicas share
// their registrations through a real etcd; servers and a client are given
// both. The replica the client follows is killed under steady load: no
// call fails, the survivor already knows every server (including those
// that registered with the dead replica), and a server that registers
// after the kill reaches the client through the survivor.
func TestReplicaFailoverWithSharedStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	etcd := etcdtest.Start(t)
	dir := t.TempDir()
	store := xdsserver.WithStore("etcd://" + etcd.Endpoint() + "/failover")
	grace := xdsserver.WithRegistrationGrace(3 * time.Second)
	cps := []*controlPlane{startControlPlane(t, dir, store, grace), startControlPlane(t, dir, store, grace)}
	list := cps[0].addr + "," + cps[1].addr
	for range 2 {
		startGreeter(t, list, "v1")
	}
	cc, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(list))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	waitFor(ctx, t, "both greeters answering", func() error {
		if tl := send(ctx, cc, 20); len(tl.instances) != 2 {
			return fmt.Errorf("instances %v (errors %d, %v)", tl.instances, tl.errors, tl.lastErr)
		}
		return nil
	})
	victim := -1
	waitFor(ctx, t, "the client's two xDS streams on one replica", func() error {
		n := []int{len(ldsVersions(cps[0])), len(ldsVersions(cps[1]))}
		switch {
		case n[0] >= 2 && n[1] == 0:
			victim = 0
		case n[1] >= 2 && n[0] == 0:
			victim = 1
		default:
			return fmt.Errorf("streams per replica %v", n)
		}
		return nil
	})
	survivor := cps[1-victim]
	if got := len(survivor.ConfigDump().Registrations); got != 2 {
		t.Fatalf("the survivor knows %d registrations before the kill, want both greeters (shared through etcd)", got)
	}

	client := greeterpb.NewGreeterClient(cc)
	var calls, failed atomic.Int64
	var mu sync.Mutex
	versions := map[string]int{}
	var firstErr error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				r, err := client.SayHello(cctx, &greeterpb.HelloRequest{Name: "failover"})
				cancel()
				calls.Add(1)
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if firstErr == nil {
						firstErr = err
					}
				} else {
					versions[r.GetVersion()]++
				}
				mu.Unlock()
			}
		})
	}
	waitFor(ctx, t, "steady load", func() error {
		if n := calls.Load(); n < 100 {
			return fmt.Errorf("%d calls", n)
		}
		return nil
	})
	cps[victim].Close()
	killed := time.Now()
	startGreeter(t, list, "v2")
	waitFor(ctx, t, "the server registered after the kill answering through the survivor", func() error {
		mu.Lock()
		defer mu.Unlock()
		if versions["v2"] < 50 {
			return fmt.Errorf("replies by version %v", versions)
		}
		return nil
	})
	converged := time.Since(killed)
	// Past the dead replica's lease: its registrations expire in etcd, and
	// the servers that had registered through it must be registered again
	// through the survivor, not gone.
	time.Sleep(4 * time.Second)
	n := calls.Load() + 100
	waitFor(ctx, t, "100 more calls", func() error {
		if calls.Load() < n {
			return fmt.Errorf("%d calls", calls.Load())
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if got := len(survivor.ConfigDump().Registrations); got != 3 {
		t.Errorf("the survivor knows %d registrations after the dead replica's lease, want all 3 greeters", got)
	}
	t.Logf("%d calls, %d failed; replies by version %v; the server registered after the kill had answered 50 calls %v after the kill", calls.Load(), failed.Load(), versions, converged.Round(time.Millisecond))
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d calls failed across the failover; first: %v", f, calls.Load(), firstErr)
	}
}
