// Package grpcstop stops gRPC servers within a deadline.
package grpcstop

import (
	"context"

	"google.golang.org/grpc"
)

// Graceful stops s gracefully: it stops accepting connections and waits
// for pending RPCs. If ctx ends first, the remaining RPCs are cancelled and
// ctx's error returned. It returns once s has stopped either way.
func Graceful(ctx context.Context, s *grpc.Server) error {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Stop()
		<-done
		return ctx.Err()
	}
}
