package retry

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// previousAttempts is the header gRPC's retry design (gRFC A6) sets on
// every attempt after the first, so that servers can tell retries.
const previousAttempts = "grpc-previous-rpc-attempts"

// maxReplayBytes bounds what a stream keeps of the messages it sent, to
// replay them on a retry; a stream that sent more is no longer retried
// (grpc-go's per-RPC retry buffer has the same size).
const maxReplayBytes = 256 << 10

// A Selector chooses the Policy of each call.
type Selector interface {
	// Policy returns the policy of a call to method ("/pkg.Service/Method");
	// ctx carries the call's outgoing metadata. It may wait, within ctx.
	Policy(ctx context.Context, method string) Policy
}

// SelectorFunc adapts a function to a Selector.
type SelectorFunc func(ctx context.Context, method string) Policy

// Policy calls f.
func (f SelectorFunc) Policy(ctx context.Context, method string) Policy { return f(ctx, method) }

// timeAfter is replaced in tests.
var newTimer = time.NewTimer

// sleep waits d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := newTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// retriable reports whether a failed attempt may be retried: its code is
// in the policy's set, or it ran out of its own per-try deadline (perTry:
// it had one, shorter than the call's).
func (p *Policy) retriable(err error, perTry bool) bool {
	code := status.Code(err)
	return p.Codes.Has(code) || (perTry && code == codes.DeadlineExceeded)
}

// budgetAllows reports whether the policy's budget, if any, allows a retry
// now, and counts it if so.
func (p *Policy) budgetAllows() bool {
	return p.Budget == nil || p.Budget.TryRetry()
}

// UnaryClientInterceptor returns an interceptor that makes each unary call
// by the Policy sel gives it: the whole call within Timeout, each attempt
// within PerTryTimeout, failed attempts with a retriable code retried after
// a jittered backoff while attempts and time remain. A channel using it
// should be dialled with grpc.WithDisableRetry, so that grpc-go's own
// retry does not multiply the attempts (its transparent retry of attempts
// that never reached a server stays on).
func UnaryClientInterceptor(sel Selector) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return Invoke(ctx, sel.Policy(ctx, method), method, req, reply, cc, invoker, opts...)
	}
}

// Invoke makes one unary call by policy p, as UnaryClientInterceptor does
// with the policy its Selector gives: for interceptors that choose the
// policy themselves (the mesh's, which reads a call's route once for its
// rate limit and its retries).
func Invoke(ctx context.Context, p Policy, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if !p.active() {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Timeout)
		defer cancel()
	}
	if p.Budget != nil {
		p.Budget.Call()
	}
	for attempt := 1; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(nil)
		// perTry: this attempt's deadline is its own, earlier than
		// the call's; a DEADLINE_EXCEEDED while the call has time left
		// then means the attempt ran out (the server, which knows only
		// the attempt's deadline, may say so before the client does).
		perTry := false
		if p.PerTryTimeout > 0 {
			d, ok := ctx.Deadline()
			perTry = !ok || time.Until(d) > p.PerTryTimeout
			actx, cancel = context.WithTimeout(ctx, p.PerTryTimeout)
		}
		if attempt > 1 {
			actx = metadata.AppendToOutgoingContext(actx, previousAttempts, strconv.Itoa(attempt-1))
		}
		err := invoker(actx, method, req, reply, cc, opts...)
		if cancel != nil {
			cancel()
		}
		if err == nil || attempt >= p.Attempts || ctx.Err() != nil || !p.retriable(err, perTry) || !p.budgetAllows() {
			return err
		}
		if !sleep(ctx, p.Backoff(attempt)) {
			return err
		}
	}
}

// StreamClientInterceptor returns an interceptor that retries streaming
// calls by the Policy sel gives them, as gRPC's retry design (gRFC A6)
// does: an attempt is retried only while nothing of its response has
// reached the application (no header, message or end of stream) and the
// messages sent so far fit in the replay buffer; the new attempt resends
// them. The whole call is bounded by Timeout; PerTryTimeout does not apply
// to streams. Dial with grpc.WithDisableRetry, as for the unary
// interceptor.
func StreamClientInterceptor(sel Selector) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return NewStream(ctx, sel.Policy(ctx, method), desc, cc, method, streamer, opts...)
	}
}

// NewStream starts one streaming call by policy p, as
// StreamClientInterceptor does with the policy its Selector gives (see
// Invoke).
func NewStream(ctx context.Context, p Policy, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if p.Attempts <= 1 && p.Timeout <= 0 {
		return streamer(ctx, desc, cc, method, opts...)
	}
	cancel := context.CancelFunc(func() {})
	if p.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, p.Timeout)
	}
	if p.Budget != nil {
		p.Budget.Call()
	}
	s := &stream{ctx: ctx, cancel: cancel, policy: p, desc: desc, cc: cc, method: method, streamer: streamer, opts: opts}
	for {
		cs, err := streamer(s.attemptContext(), desc, cc, method, opts...)
		if err == nil {
			s.cs = cs
			return s, nil
		}
		if !s.retryAfter(err) {
			cancel()
			return nil, err
		}
	}
}

// stream is a client stream whose attempts are retried until it commits.
type stream struct {
	ctx      context.Context
	cancel   context.CancelFunc
	policy   Policy
	desc     *grpc.StreamDesc
	cc       *grpc.ClientConn
	method   string
	streamer grpc.Streamer
	opts     []grpc.CallOption

	mu        sync.Mutex // guards the fields below and serialises attempt switches
	cs        grpc.ClientStream
	attempt   int // attempts started, minus one
	committed bool
	sent      []any
	sentBytes int
	closeSent bool
}

func (s *stream) attemptContext() context.Context {
	if s.attempt == 0 {
		return s.ctx
	}
	return metadata.AppendToOutgoingContext(s.ctx, previousAttempts, strconv.Itoa(s.attempt))
}

// retryAfter reports whether a failed attempt is to be retried, after
// waiting its backoff; the caller holds s.mu or owns s alone.
func (s *stream) retryAfter(err error) bool {
	s.attempt++
	if s.committed || s.attempt >= s.policy.Attempts || s.ctx.Err() != nil || !s.policy.retriable(err, false) || !s.policy.budgetAllows() {
		return false
	}
	return sleep(s.ctx, s.policy.Backoff(s.attempt))
}

// retry replaces the failed current attempt with a new one, resending what
// was sent. It reports whether it did; the caller holds s.mu.
func (s *stream) retry(failed grpc.ClientStream, err error) bool {
	if s.cs != failed {
		return true // another goroutine already replaced it
	}
	for s.retryAfter(err) {
		cs, nerr := s.streamer(s.attemptContext(), s.desc, s.cc, s.method, s.opts...)
		if nerr != nil {
			err = nerr
			continue
		}
		s.cs = cs
		for _, m := range s.sent {
			if cs.SendMsg(m) != nil {
				break // the attempt failed: RecvMsg tells how
			}
		}
		if s.closeSent {
			cs.CloseSend()
		}
		return true
	}
	return false
}

func (s *stream) current() grpc.ClientStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cs
}

func (s *stream) commit() {
	s.mu.Lock()
	s.committed, s.sent = true, nil
	s.mu.Unlock()
}

func (s *stream) Header() (metadata.MD, error) {
	for {
		cs := s.current()
		md, err := cs.Header()
		if err == nil {
			s.commit()
			return md, nil
		}
		if !s.recover(cs, err) {
			s.cancel()
			return md, err
		}
	}
}

// recover retries after attempt cs failed with err; it reports whether a
// new attempt is in place.
func (s *stream) recover(cs grpc.ClientStream, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.committed {
		return false
	}
	if s.retry(cs, err) {
		return true
	}
	s.committed = true
	return false
}

func (s *stream) Trailer() metadata.MD { return s.current().Trailer() }

func (s *stream) CloseSend() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeSent = true
	return s.cs.CloseSend()
}

func (s *stream) Context() context.Context { return s.current().Context() }

func (s *stream) SendMsg(m any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.committed {
		size := 0
		if pm, ok := m.(proto.Message); ok {
			size = proto.Size(pm)
		}
		if s.sentBytes+size > maxReplayBytes {
			s.committed, s.sent = true, nil
		} else {
			s.sent = append(s.sent, m)
			s.sentBytes += size
		}
	}
	err := s.cs.SendMsg(m)
	if errors.Is(err, io.EOF) && !s.committed {
		return nil // the attempt ended; RecvMsg retries it, and resends m
	}
	return err
}

func (s *stream) RecvMsg(m any) error {
	for {
		cs := s.current()
		err := cs.RecvMsg(m)
		if err == nil {
			s.commit()
			return nil
		}
		if errors.Is(err, io.EOF) || !s.recover(cs, err) {
			s.commit()
			s.cancel() // the call is over: release its timeout
			return err
		}
	}
}
