package translate

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/registry"
)

// FuzzBuild: any configuration the loader accepts translates without
// panicking, with registered endpoints, into resources that marshal, and
// the same way twice.
//
//	go test -run XXX -fuzz FuzzBuild -fuzztime 10m ./internal/translate/
func FuzzBuild(f *testing.F) {
	for _, seed := range []string{
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{headers: {x: {exact: y}}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 80}\n    - {destination: {host: reviews, subset: v2}, weight: 20}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n",
		"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer: {consistentHash: {httpHeaderName: x-user}}\n    connectionPool: {http: {http2MaxRequests: 10}}\n",
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: default}\nspec:\n  selector: {matchLabels: {version: v1}}\n  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/a]}}]}]\n",
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - fault: {abort: {httpStatus: 503, percentage: {value: 50}}}\n    timeout: 1s\n    retries: {attempts: 2, retryOn: '5xx,503', perTryTimeout: 100ms}\n    route: [{destination: {host: reviews}}]\n",
	} {
		f.Add([]byte(seed))
	}
	registered := []registry.Endpoint{
		{Service: "reviews", Namespace: "default", Address: "127.0.0.1", Port: 8080, ServicePort: 9080, Labels: map[string]string{"version": "v1"}},
		{Service: "reviews", Namespace: "default", Address: "127.0.0.2", Port: 8080, ServicePort: 9080, Labels: map[string]string{"version": "v2"}, Identity: "spiffe://cluster.local/ns/default/sa/reviews"},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := config.Load(map[string][]byte{"mesh.yaml": data})
		if err != nil {
			return
		}
		a := Build(set, registered, Options{})
		b := Build(set, registered, Options{})
		for name, l := range a.Listeners {
			if _, err := proto.Marshal(l); err != nil {
				t.Fatalf("listener %s does not marshal: %v", name, err)
			}
			if !proto.Equal(l, b.Listeners[name]) {
				t.Fatalf("listener %s differs between two builds", name)
			}
		}
		for name, c := range a.Clusters {
			if !proto.Equal(c, b.Clusters[name]) {
				t.Fatalf("cluster %s differs between two builds", name)
			}
		}
		for name, r := range a.Routes {
			if !proto.Equal(r, b.Routes[name]) {
				t.Fatalf("route %s differs between two builds", name)
			}
		}
	})
}
