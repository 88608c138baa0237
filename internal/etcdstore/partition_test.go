package etcdstore

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/etcdstore/etcdtest"
)

// proxy forwards TCP connections to target until it is cut: then it
// drops every connection and refuses new ones, as a network partition
// between one replica and etcd would.
type proxy struct {
	lis    net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		lis.Close()
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.lis.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// setCut cuts (dropping every open connection) or heals the link.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// TestPartitionedReplicaRegrantsAndRewrites: a replica cut off from etcd
// (etcd itself running) past its lease TTL loses its registrations in etcd
// — the other replica drops them, as it would a dead replica's — but keeps
// serving them itself and takes new ones; when the link is back, its old
// lease is gone, so it grants a new one and writes everything again.
func TestPartitionedReplicaRegrantsAndRewrites(t *testing.T) {
	ctx := testContext(t)
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	p := startProxy(t, srv.Endpoint())
	const grace = 2 * time.Second
	a := openReplica(ctx, t, p.addr(), grace)
	b := openReplica(ctx, t, srv.Endpoint(), grace)
	before, during := endpoint("10.0.0.1"), endpoint("10.0.0.2")
	defer a.Add(before).Release(true)
	waitFor(ctx, t, "B sees A's registration", func() bool { return b.has(before.Key()) })
	oldLease := a.leaseID()

	cut := time.Now()
	p.setCut(true)
	waitFor(ctx, t, "A's lease expires in etcd", func() bool { return leaseExpired(ctx, t, cli, oldLease) })
	waitFor(ctx, t, "B drops the cut-off replica's registration", func() bool { return !b.has(before.Key()) })
	t.Logf("B dropped the partitioned replica's endpoint %v after the cut (TTL %v)", time.Since(cut).Round(time.Millisecond), grace)
	defer a.Add(during).Release(true)
	if !a.has(before.Key()) || !a.has(during.Key()) {
		t.Error("the partitioned replica stopped serving its own registrations")
	}

	healed := time.Now()
	p.setCut(false)
	waitFor(ctx, t, "B serves both registrations again", func() bool { return b.has(before.Key()) && b.has(during.Key()) })
	t.Logf("B served the partitioned replica's registrations again %v after the link was back", time.Since(healed).Round(time.Millisecond))
	newLease := a.leaseID()
	if newLease == 0 || newLease == oldLease {
		t.Fatalf("A's lease after the partition = %x, want a new one (old %x)", newLease, oldLease)
	}
	for _, ep := range []string{before.Address, during.Address} {
		key := "/trellis/registrations/default/reviews/" + ep + ":9080"
		if id, ok := keyLease(ctx, t, cli, key); !ok || id != newLease {
			t.Errorf("%s on lease %x (exists %v), want A's new lease %x", key, id, ok, newLease)
		}
	}
}
