package replicas

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestTarget(t *testing.T) {
	for _, tc := range []struct {
		addr, want string
		wantErr    bool
	}{
		{addr: "127.0.0.1:15010", want: "127.0.0.1:15010"},
		{addr: " xds.example:15010 ", want: "xds.example:15010"},
		{addr: "a:15010,b:15010", want: "trellis-replicas:///a:15010,b:15010"},
		{addr: "a:15010, [::1]:15011", want: "trellis-replicas:///a:15010,[::1]:15011"},
		{addr: "dns:///xds.example:15010", want: "dns:///xds.example:15010"},
		{addr: "unix:/run/xds.sock", want: "unix:/run/xds.sock"},
		{addr: "", wantErr: true},
		{addr: "a:15010,", wantErr: true},
		{addr: "a,b:15010", wantErr: true},
		{addr: "a:15010,:15011", wantErr: true},
	} {
		got, err := Target(tc.addr)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("Target(%q) = %q, %v; want %q, error %v", tc.addr, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestWithPort(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1:15010", "127.0.0.1:15012"},
		{"a:15010,b:16010", "a:15012,b:15012"},
		{"[::1]:15010", "[::1]:15012"},
		{"dns:///xds.example:15010", "dns:///xds.example:15012"},
		{"dns://8.8.8.8/xds.example:15010", "dns://8.8.8.8/xds.example:15012"},
		{"trellis-replicas:///a:1,b:2", "trellis-replicas:///a:15012,b:15012"},
		{"unix:///tmp/sock", ""},
		{"nonsense", ""},
	} {
		if got := WithPort(tc.addr, "15012"); got != tc.want {
			t.Errorf("WithPort(%q, 15012) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// TestOrderIsPerProcess: every process takes the replicas in an order of
// its own, the same for every list of the same length.
func TestOrderIsPerProcess(t *testing.T) {
	defer func(s uint64) { processSeed = s }(processSeed)
	first := map[int]int{}
	for seed := range uint64(200) {
		processSeed = seed
		o := order(3)
		if !slices.Equal(o, order(3)) {
			t.Fatalf("seed %d: order(3) differs between calls", seed)
		}
		first[o[0]]++
	}
	for i := range 3 {
		if first[i] < 30 {
			t.Errorf("replica %d comes first in %d of 200 processes, want about a third; spread %v", i, first[i], first)
		}
	}
}

func startHealth(t *testing.T) (addr string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	done := make(chan struct{})
	go func() { s.Serve(lis); close(done) }()
	stop = func() { s.Stop(); <-done }
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// TestChannelMovesToLiveReplica: a channel to a list reaches a replica,
// and when that replica dies calls reach the other one.
func TestChannelMovesToLiveReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, stopA := startHealth(t)
	b, stopB := startHealth(t)
	target, err := Target(a + "," + b)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if got, want := cc.CanonicalTarget(), target; got != want {
		t.Errorf("CanonicalTarget() = %q, want %q", got, want)
	}
	client := healthpb.NewHealthClient(cc)
	check := func() (string, error) {
		var p peer.Peer
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true), grpc.Peer(&p))
		if err != nil {
			return "", err
		}
		return p.Addr.String(), nil
	}
	first, err := check()
	if err != nil {
		t.Fatalf("Check() = %v", err)
	}
	stop, other := stopA, b
	if first == b {
		stop, other = stopB, a
	} else if first != a {
		t.Fatalf("Check() reached %s, want %s or %s", first, a, b)
	}
	stop()
	// A call racing the death may fail on the dying connection; once the
	// channel has noticed, calls reach the other replica.
	for {
		got, err := check()
		if err == nil {
			if got != other {
				t.Errorf("after %s died, Check() reached %s, want %s", first, got, other)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("after %s died, Check() = %v; want it to reach %s", first, err, other)
		}
	}
}
