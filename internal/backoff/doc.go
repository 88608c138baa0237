// Package backoff is the module's one jittered exponential backoff, over
// grpc-go's backoff.Config as grpc-go's own internal/backoff is. Every
// retry loop of the module (streams to the control plane, certificate
// renewal, etcd, replacement connections, unreachable endpoints, NACKed
// responses, request retries) takes its delays from Exponential:
//
//	b := backoff.Exponential{Config: grpcbackoff.Config{
//		BaseDelay: 100 * time.Millisecond, Multiplier: 2, Jitter: 0.5, MaxDelay: 5 * time.Second,
//	}, Capped: true}
//	for retries := 0; ; retries++ {
//		if err := try(); err == nil {
//			return
//		}
//		time.Sleep(b.Backoff(retries)) // or a timer and ctx.Done()
//	}
package backoff
