// Package retry is the mesh's retry engine for gRPC clients: each call is
// made by a Policy (attempts, retriable codes, per-try timeout, a timeout
// over all attempts, jittered exponential backoff), chosen per call by a
// Selector.
//
// grpc-go's own retry cannot bound each attempt, so mesh.Dial turns it off
// and installs these interceptors, with a Selector that reads each call's
// route retry policy from the control plane. They work with any
// grpc.ClientConn:
//
//	sel := retry.SelectorFunc(func(ctx context.Context, method string) retry.Policy {
//		return retry.Policy{
//			Attempts:      3,
//			Codes:         retry.CodesOf(codes.Unavailable),
//			PerTryTimeout: 200 * time.Millisecond,
//			Timeout:       time.Second,
//		}
//	})
//	conn, err := grpc.NewClient(target,
//		grpc.WithTransportCredentials(insecure.NewCredentials()),
//		grpc.WithDisableRetry(), // or grpc-go's retries multiply these
//		grpc.WithUnaryInterceptor(retry.UnaryClientInterceptor(sel)),
//		grpc.WithStreamInterceptor(retry.StreamClientInterceptor(sel)))
//
// An interceptor that chooses each call's policy itself (mesh.Dial's reads
// the call's route once, for its rate limit and its retry policy) calls
// Invoke or NewStream with it instead of going through a Selector.
//
// A unary attempt that fails with a code in Policy.Codes, or runs out of its
// per-try timeout while the call has time left, is retried after a random
// delay in [0, min(BaseBackoff·2^(n-1), MaxBackoff)), until Attempts are
// spent or the call's deadline passes. Attempts after the first carry the
// grpc-previous-rpc-attempts header of gRFC A6. A stream is retried only
// until it commits: until a header, a message or its end has reached the
// application and while what it sent fits in a 256 KiB replay buffer.
//
// A Budget caps retries as a share of calls, so that when a whole service
// fails its retries do not multiply the load: the calls whose Policy.Budget
// is one BudgetTracker may retry at most Ratio of their calls plus
// MinPerSecond a second (by default 20 % plus 10 a second, over 10
// seconds); a retry over the budget is not made and the call ends with its
// last error. mesh.Dial gives each connection a tracker and mesh.Transport
// one per transport, both set by mesh.WithRetryBudget; the HTTP transport
// also takes its backoff from Policy.Backoff.
package retry
