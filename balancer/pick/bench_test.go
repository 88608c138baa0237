package pick

import "testing"

// BenchmarkPick measures Pick and done with 10 endpoints, from parallel
// goroutines.
func BenchmarkPick(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
		eps  []Endpoint
	}{
		{"round_robin", Config{Policy: RoundRobin, MaxRequests: 1 << 30}, endpoints(10)},
		{"round_robin_weighted", Config{Policy: RoundRobin, MaxRequests: 1 << 30}, weightedEndpoints(10)},
		{"least_request", Config{Policy: LeastRequest, MaxRequests: 1 << 30}, endpoints(10)},
		{"random", Config{Policy: Random, MaxRequests: 1 << 30}, endpoints(10)},
		{"ring_hash", Config{Policy: RingHash, MaxRequests: 1 << 30}, endpoints(10)},
		{"ewma", Config{Policy: EWMA, MaxRequests: 1 << 30}, endpoints(10)},
		{"round_robin_outlier", Config{Policy: RoundRobin, MaxRequests: 1 << 30, Outlier: &Outlier{ConsecutiveErrors: 5, MaxEjectionPercent: 10}}, endpoints(10)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := New(bc.cfg, bc.eps)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				h := uint64(0)
				for pb.Next() {
					h += 0x9e3779b97f4a7c15
					_, done, err := p.Pick(h)
					if err != nil {
						b.Error(err)
						return
					}
					done(Success)
				}
			})
		})
	}
}

func weightedEndpoints(n int) []Endpoint {
	eps := endpoints(n)
	for i := range eps {
		eps[i].Weight = uint32(i + 1)
	}
	return eps
}
