package e2e

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/retry"
)

// TestRetryBudgetOnBothProtocols: with every backend failing under load,
// the retry budget (on by default) keeps upstream attempts within 1.25 ×
// the calls made, for gRPC and HTTP alike; once the backends recover and
// the budget refills, a call that fails once is retried and succeeds.
func TestRetryBudgetOnBothProtocols(t *testing.T) {
	const yaml = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: {{host}}}
spec:
  hosts: [{{host}}]
  http:
  - retries: {attempts: 4, retryOn: "unavailable,5xx", backoff: 1ms}
    route: [{destination: {host: {{host}}}}]
`
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testContext(t)
			m := startSecureMesh(t, scenario{yaml: yaml}.config(p.host))
			bs := []*behaviour{{}, {}}
			for _, b := range bs {
				p.serve(t, m, "v1", b)
			}
			call := p.client(t, m, clientOpts(m.as("client-token"), mesh.WithRetryBudget(retry.Budget{Window: 2 * time.Second}))...)
			ready(ctx, t, call)
			attempts := func() int64 { return bs[0].calls.Load() + bs[1].calls.Load() }
			for _, b := range bs {
				b.failCode.Store(uint32(codes.Unavailable))
			}
			const calls = 2000
			before := attempts()
			var failed atomic.Int64
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range calls / 8 {
						if r := call(ctx); r.outcome != ok {
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			made := attempts() - before
			if failed.Load() != calls {
				t.Errorf("%d of %d calls failed with every backend failing, want all", failed.Load(), calls)
			}
			if ratio := float64(made) / calls; ratio > 1.25 {
				t.Errorf("upstream attempts = %d for %d calls (%.2f×), want ≤ 1.25× (without a budget: 5×)", made, calls, ratio)
			}
			t.Logf("%s: every backend failing: %d calls made %d upstream attempts (%.3f×)", p.name, calls, made, float64(made)/calls)

			// Recovery: each backend fails every other call; one retry
			// absorbs it once the budget has refilled.
			for _, b := range bs {
				b.failEvery.Store(2)
				b.failCode.Store(0)
			}
			waitFor(ctx, t, "retries working again", func() error {
				for range 20 {
					if r := call(ctx); r.outcome != ok {
						return fmt.Errorf("%s: %v", r.outcome, r.err)
					}
				}
				return nil
			})
		})
	}
}
