// Package register keeps a workload's endpoint registered with the Trellis
// control plane for as long as the workload serves.
//
// A Client holds one registration stream open, re-opening it with jittered
// exponential backoff whenever it breaks (the control plane restarted, the
// network blipped), and re-sending the endpoint each time. Stop half-closes
// the stream, which the control plane takes as a clean deregistration.
//
// The connection decides where a re-opened stream goes: one dialled to a
// list of control-plane replicas (package replicas) re-opens it on a live
// replica, so the registration moves to a survivor when its replica dies.
package register

import (
	"context"
	crand "crypto/rand"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/backoff"
	"github.com/trellismesh/trellis/internal/registrationpb"
)

// ownerSecret is drawn once per process and sent with every
// registration, so that the control plane lets this process, and only
// it, take back an endpoint it registered without an identity after a
// reconnect or at another replica.
var ownerSecret = func() []byte {
	b := make([]byte, 32)
	crand.Read(b)
	return b
}()

// retryBackoff spaces the re-openings of a broken registration stream:
// from 100 ms, doubling, at most 5 s, each delay between half and all of
// that.
var retryBackoff = backoff.Exponential{Config: grpcbackoff.Config{
	BaseDelay: 100 * time.Millisecond, Multiplier: 2, Jitter: 0.5, MaxDelay: 5 * time.Second,
}, Capped: true}

// Client registers one endpoint. It is safe for concurrent use.
type Client struct {
	conn     *grpc.ClientConn
	endpoint *registrationpb.Endpoint
	log      *slog.Logger

	stopping chan struct{} // closed by Stop: deregister
	hardStop chan struct{} // closed when Stop's ctx ends: give up waiting
	done     chan struct{} // closed when the loop has returned

	mu         sync.Mutex
	registered bool
	stopOnce   sync.Once
}

// Start begins registering ep with the control plane reachable through conn
// (dialled to one control plane, or to its replicas with a target of
// package replicas) and returns at once. The Client owns conn and closes it
// on Stop.
func Start(conn *grpc.ClientConn, ep *registrationpb.Endpoint, log *slog.Logger) *Client {
	c := &Client{
		conn:     conn,
		endpoint: ep,
		log:      log,
		stopping: make(chan struct{}),
		hardStop: make(chan struct{}),
		done:     make(chan struct{}),
	}
	go c.loop()
	return c
}

// Registered reports whether the control plane has accepted the endpoint on
// the current stream.
func (c *Client) Registered() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.registered
}

func (c *Client) setRegistered(v bool) {
	c.mu.Lock()
	c.registered = v
	c.mu.Unlock()
}

var errStopped = errors.New("register: stopped")

func (c *Client) loop() {
	defer close(c.done)
	failures := 0
	for {
		start := time.Now()
		err := c.session()
		c.setRegistered(false)
		if err == errStopped {
			return
		}
		if time.Since(start) > retryBackoff.Config.MaxDelay {
			failures = 0 // the stream was healthy for a while
		}
		d := retryBackoff.Backoff(failures)
		failures++
		switch status.Code(err) {
		case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
			// Retrying will not help until the configuration, the
			// identity or the endpoint changes: say so loudly.
			c.log.Error("the control plane refused the registration; retrying", "service", c.endpoint.GetService(), "error", err, "backoff", d)
		default:
			c.log.Warn("registration stream ended; retrying", "service", c.endpoint.GetService(), "error", err, "backoff", d)
		}
		select {
		case <-c.stopping:
			return
		case <-time.After(d):
		}
	}
}

// session runs one registration stream until it breaks or Stop is called.
func (c *Client) session() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sent atomic.Bool
	go func() {
		select {
		case <-c.stopping:
			if !sent.Load() {
				cancel() // nothing registered on this stream: just give up
				return
			}
			select {
			case <-c.hardStop:
				cancel()
			case <-ctx.Done():
			}
		case <-c.hardStop:
			cancel()
		case <-ctx.Done():
		}
	}()
	stopped := func(err error) error {
		select {
		case <-c.stopping:
			return errStopped
		default:
			return err
		}
	}
	stream, err := registrationpb.NewRegistrationClient(c.conn).Register(ctx, grpc.WaitForReady(true))
	if err != nil {
		return stopped(err)
	}
	if err := stream.Send(&registrationpb.RegisterRequest{Endpoint: c.endpoint, OwnerSecret: ownerSecret}); err != nil {
		return stopped(err)
	}
	sent.Store(true)
	recvErr := make(chan error, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if !c.Registered() {
				c.log.Info("registered with the control plane", "service", c.endpoint.GetService(), "id", resp.GetId())
			}
			c.setRegistered(true)
		}
	}()
	select {
	case err := <-recvErr:
		return stopped(err)
	case <-c.stopping:
		// Half-close: the control plane removes the endpoint at once and
		// ends the stream, unless the hard stop comes first.
		stream.CloseSend()
		select {
		case <-recvErr:
		case <-c.hardStop:
		}
		return errStopped
	}
}

// Stop deregisters the endpoint, waiting until the control plane confirms or
// ctx is done, then closes the connection. It is idempotent.
func (c *Client) Stop(ctx context.Context) {
	c.stopOnce.Do(func() {
		close(c.stopping)
		select {
		case <-c.done:
		case <-ctx.Done():
			close(c.hardStop)
			<-c.done
		}
		c.conn.Close()
	})
	<-c.done
}
