package grpcstop

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve starts a server whose every call blocks until the call ends, and
// returns a client connection to it.
func serve(t *testing.T, started chan<- struct{}) (*grpc.Server, *grpc.ClientConn) {
	t.Helper()
	s := grpc.NewServer()
	greeterpb.RegisterGreeterServer(s, stuck{started: started})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); s.Stop() })
	return s, cc
}

// stuck answers no call until the call ends.
type stuck struct {
	greeterpb.UnimplementedGreeterServer
	started chan<- struct{}
}

func (s stuck) SayHello(ctx context.Context, _ *greeterpb.HelloRequest) (*greeterpb.HelloReply, error) {
	s.started <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestGracefulWithoutPendingCalls(t *testing.T) {
	s, _ := serve(t, make(chan struct{}, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Graceful(ctx, s); err != nil {
		t.Errorf("Graceful() = %v, want nil", err)
	}
}

func TestGracefulCancelsCallsAtDeadline(t *testing.T) {
	started := make(chan struct{}, 1)
	s, cc := serve(t, started)
	callDone := make(chan error, 1)
	go func() {
		_, err := greeterpb.NewGreeterClient(cc).SayHello(context.Background(), &greeterpb.HelloRequest{})
		callDone <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := Graceful(ctx, s); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Graceful() with a stuck call = %v, want DeadlineExceeded", err)
	}
	select {
	case err := <-callDone:
		if err == nil {
			t.Error("the stuck call succeeded, want it cancelled")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stuck call was not cancelled")
	}
}
