package authz

import "testing"

// BenchmarkAuthorizeHeader measures a header rule on a single value and on
// a repeated header (whose values are joined before matching).
func BenchmarkAuthorizeHeader(b *testing.B) {
	e := engineFor(b, `
metadata: {name: public, namespace: ns}
spec: {action: ALLOW, rules: [{when: [{key: "request.headers[x-tenant]", values: [public]}]}]}`)
	for _, bc := range []struct {
		name string
		vals []string
	}{
		{"single", []string{"public"}},
		{"repeated", []string{"secret", "public"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := &Request{Method: "GET", Path: "/x", Headers: map[string][]string{"x-tenant": bc.vals}}
			b.ReportAllocs()
			for b.Loop() {
				e.Authorize(r)
			}
		})
	}
}

// BenchmarkShadowEvaluate measures the per-request cost of two dry-run
// policies (a DENY and an ALLOW) on a server.
func BenchmarkShadowEvaluate(b *testing.B) {
	_, s := filtersFor(b, []bool{true, true}, `
metadata: {name: deny-admin, namespace: ns}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin*"]}}]}]}`, `
metadata: {name: allow-reviews, namespace: ns}
spec: {action: ALLOW, rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/reviews]}}]}]}`)
	r := &Request{Method: "GET", Path: "/api/items", Principal: "spiffe://cluster.local/ns/default/sa/reviews"}
	b.ReportAllocs()
	for b.Loop() {
		s.Evaluate(r)
	}
}
