package retry

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// server answers each attempt by the script: attempt i (from 0) gets
// script[i], the last entry repeating. An entry is a code to fail with,
// codes.OK to answer, or block to wait for the attempt's context.
type server struct {
	testgrpc.UnimplementedTestServiceServer
	script []codes.Code
	// sendFirst makes a streaming attempt send one message before it fails.
	sendFirst bool

	mu       sync.Mutex
	attempts int
	previous []string // grpc-previous-rpc-attempts of each attempt
	requests []int32  // the streaming request's response size, per attempt
}

const block = codes.Code(100)

func (s *server) next(ctx context.Context) codes.Code {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.script[min(s.attempts, len(s.script)-1)]
	s.attempts++
	s.previous = append(s.previous, md.Get(previousAttempts)...)
	return c
}

func (s *server) act(ctx context.Context, c codes.Code) error {
	switch c {
	case codes.OK:
		return nil
	case block:
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	default:
		return status.Error(c, "scripted failure")
	}
}

func (s *server) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if err := s.act(ctx, s.next(ctx)); err != nil {
		return nil, err
	}
	return &testgrpc.SimpleResponse{}, nil
}

func (s *server) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	c := s.next(stream.Context())
	s.mu.Lock()
	for _, p := range req.GetResponseParameters() {
		s.requests = append(s.requests, p.GetSize())
	}
	s.mu.Unlock()
	if s.sendFirst || c == codes.OK {
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
			return err
		}
	}
	if err := s.act(stream.Context(), c); err != nil {
		return err
	}
	return stream.Send(&testgrpc.StreamingOutputCallResponse{})
}

func (s *server) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// start serves s on loopback and returns a client whose calls follow p,
// dialled as the mesh dials: grpc-go's own retry off.
func start(t *testing.T, s *server, p Policy) testgrpc.TestServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, s)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	sel := SelectorFunc(func(context.Context, string) Policy { return p })
	cc, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDisableRetry(),
		grpc.WithUnaryInterceptor(UnaryClientInterceptor(sel)),
		grpc.WithStreamInterceptor(StreamClientInterceptor(sel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	// Connect first, so that no attempt's deadline is spent connecting.
	ctx := testContext(t)
	cc.Connect()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			t.Fatalf("connection to the test server: %v", s)
		}
	}
	return testgrpc.NewTestServiceClient(cc)
}

var fast = Policy{BaseBackoff: time.Millisecond}

func policy(attempts int, cs ...codes.Code) Policy {
	p := fast
	p.Attempts, p.Codes = attempts, CodesOf(cs...)
	return p
}

func TestUnaryRetries(t *testing.T) {
	perTry := policy(3, codes.Unavailable)
	perTry.PerTryTimeout = 100 * time.Millisecond
	tests := []struct {
		name         string
		policy       Policy
		script       []codes.Code
		wantCode     codes.Code
		wantAttempts int
	}{
		{"retriable code retried until success", policy(3, codes.Unavailable), []codes.Code{codes.Unavailable, codes.Unavailable, codes.OK}, codes.OK, 3},
		{"other code not retried", policy(3, codes.Unavailable), []codes.Code{codes.InvalidArgument, codes.OK}, codes.InvalidArgument, 1},
		{"attempts bound the retries", policy(3, codes.Unavailable), []codes.Code{codes.Unavailable}, codes.Unavailable, 3},
		{"no policy: one attempt", Policy{}, []codes.Code{codes.Unavailable, codes.OK}, codes.Unavailable, 1},
		{"per-try timeout retries a stuck attempt", perTry, []codes.Code{block, codes.OK}, codes.OK, 2},
		{"per-try timeout on every attempt", perTry, []codes.Code{block}, codes.DeadlineExceeded, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			s := &server{script: tc.script}
			client := start(t, s, tc.policy)
			_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			if got := status.Code(err); got != tc.wantCode {
				t.Errorf("UnaryCall() = %v, want code %v", err, tc.wantCode)
			}
			if got := s.count(); got != tc.wantAttempts {
				t.Errorf("attempts = %d, want %d", got, tc.wantAttempts)
			}
		})
	}
}

// TestRetriesAreMarked: every attempt after the first carries gRPC's
// grpc-previous-rpc-attempts header, so a server can tell retries.
func TestRetriesAreMarked(t *testing.T) {
	ctx := testContext(t)
	s := &server{script: []codes.Code{codes.Unavailable, codes.Unavailable, codes.OK}}
	if _, err := start(t, s, policy(3, codes.Unavailable)).UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall() = %v", err)
	}
	if diff := cmp.Diff(s.previous, []string{"1", "2"}); diff != "" {
		t.Errorf("grpc-previous-rpc-attempts per attempt (-got +want):\n%s", diff)
	}
}

// TestTimeoutBoundsAllAttempts: the call's timeout ends it, however many
// attempts remain.
func TestTimeoutBoundsAllAttempts(t *testing.T) {
	ctx := testContext(t)
	p := policy(1000, codes.Unavailable)
	p.PerTryTimeout, p.Timeout = 50*time.Millisecond, 300*time.Millisecond
	s := &server{script: []codes.Code{block}}
	_, err := start(t, s, p).UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("UnaryCall() = %v, want DEADLINE_EXCEEDED", err)
	}
	if n := s.count(); n < 2 || n > 8 {
		t.Errorf("attempts = %d, want between 2 and 8 (300ms of 50ms attempts)", n)
	}
}

// TestCallerDeadlineIsNotRetried: when the caller's own deadline ends an
// attempt, the call is over; a per-try timeout longer than what the caller
// has left does not make it retriable.
func TestCallerDeadlineIsNotRetried(t *testing.T) {
	ctx := testContext(t)
	p := policy(5, codes.Unavailable)
	p.PerTryTimeout = time.Minute
	s := &server{script: []codes.Code{block}}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err := start(t, s, p).UnaryCall(cctx, &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("UnaryCall() = %v, want DEADLINE_EXCEEDED", err)
	}
	if n := s.count(); n != 1 {
		t.Errorf("attempts = %d, want 1", n)
	}
}

func recvAll(stream grpc.ServerStreamingClient[testgrpc.StreamingOutputCallResponse]) (int, error) {
	n := 0
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// TestStreamRetriedBeforeCommit: a stream whose attempt fails before any
// response is retried, and the new attempt gets the request again.
func TestStreamRetriedBeforeCommit(t *testing.T) {
	ctx := testContext(t)
	s := &server{script: []codes.Code{codes.Unavailable, codes.OK}}
	stream, err := start(t, s, policy(3, codes.Unavailable)).StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: 7}},
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := recvAll(stream)
	if err != nil || n != 2 {
		t.Fatalf("received %d messages, err %v; want 2, nil", n, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if diff := cmp.Diff(s.requests, []int32{7, 7}); diff != "" {
		t.Errorf("requests seen per attempt (-got +want):\n%s", diff)
	}
}

// TestStreamNotRetriedAfterCommit: once a response message reached the
// application, a failure ends the stream: replaying would duplicate it.
func TestStreamNotRetriedAfterCommit(t *testing.T) {
	ctx := testContext(t)
	s := &server{script: []codes.Code{codes.Unavailable, codes.OK}, sendFirst: true}
	stream, err := start(t, s, policy(3, codes.Unavailable)).StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := recvAll(stream)
	if status.Code(err) != codes.Unavailable || n != 1 {
		t.Errorf("received %d messages, err %v; want 1, UNAVAILABLE", n, err)
	}
	if got := s.count(); got != 1 {
		t.Errorf("attempts = %d, want 1", got)
	}
}

func TestBackoff(t *testing.T) {
	p := Policy{BaseBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	for n, ceiling := range map[int]time.Duration{1: 10 * time.Millisecond, 2: 20 * time.Millisecond, 3: 40 * time.Millisecond, 4: 50 * time.Millisecond, 30: 50 * time.Millisecond} {
		for range 200 {
			if d := p.Backoff(n); d < 0 || d >= ceiling {
				t.Fatalf("Backoff(%d) = %v, want in [0, %v)", n, d, ceiling)
			}
		}
	}
	var zero Policy
	for range 200 {
		if d := zero.Backoff(1); d < 0 || d >= DefaultBaseBackoff {
			t.Fatalf("zero Policy: Backoff(1) = %v, want in [0, %v)", d, DefaultBaseBackoff)
		}
	}
}
