package matcher

//lint:file-ignore SA1019 Envoy's deprecated matcher fields are still what control planes (Istio's among them) send; they must be understood.

import (
	"testing"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// benchMatchers are one header matcher of each kind, as the benchmarks and
// the allocation test run them.
var benchMatchers = []struct {
	name string
	m    *v3routepb.HeaderMatcher
}{
	{"exact", hm(exact("bob"))},
	{"exact-fold", hm(fold(exact("BOB")))},
	{"prefix-fold", hm(fold(prefix("BO")))},
	{"suffix", hm(suffix("ob"))},
	{"contains-fold", hm(fold(contains("O")))},
	{"regex", hm(regex("[a-z]+"))},
	{"range", hm(rng(0, 100))},
	{"present", hm(v3routepb.HeaderMatcher_PresentMatch{PresentMatch: true})},
	{"missing-empty-inverted", hm(exact("x"), "missing-empty", "invert")},
}

var benchValues = []struct {
	name   string
	values []string
}{
	{"single", []string{"Bob"}},
	{"repeated", []string{"ann", "Bob"}},
	{"missing", nil},
}

func TestMatchDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops buffers at random under the race detector")
	}
	for _, bm := range benchMatchers {
		m, err := CompileHeader(bm.m)
		if err != nil {
			t.Fatalf("CompileHeader(%v) = %v", bm.m, err)
		}
		for _, bv := range benchValues {
			if n := testing.AllocsPerRun(100, func() { m.Match(bv.values) }); n != 0 {
				t.Errorf("%s.Match(%q) allocates %v times, want 0", bm.name, bv.values, n)
			}
		}
	}
}

func BenchmarkHeader(b *testing.B) {
	for _, bm := range benchMatchers {
		m, err := CompileHeader(bm.m)
		if err != nil {
			b.Fatalf("CompileHeader(%v) = %v", bm.m, err)
		}
		for _, bv := range benchValues {
			b.Run(bm.name+"/"+bv.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					m.Match(bv.values)
				}
			})
		}
	}
}
