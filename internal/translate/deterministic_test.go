package translate

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/internal/registry"
)

// TestBuildIsDeterministic guards against the same configuration giving
// different bytes on each build (map entries marshalled in random order
// inside an Any): the control plane would push every server listener on
// every rebuild, and grpc-go's xDS server drains all its connections on
// each listener update; two endpoints at one address with the same
// policy would also be taken for a conflict and denied everything.
func TestBuildIsDeterministic(t *testing.T) {
	set := load(t, securityPolicies+`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: more}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{from: [{source: {namespaces: [a]}}]}, {from: [{source: {namespaces: [b]}}]}, {from: [{source: {namespaces: [c]}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews, reviews.example.com]
  resolution: STATIC
  ports: [{number: 9080, name: grpc}]
  endpoints: [{address: 10.0.0.2, labels: {app: reviews}}]
`)
	eps := []registry.Endpoint{reg("reviews", "", "10.0.0.1", 7001, 9080, map[string]string{"app": "reviews"})}
	first := Build(set, eps, Options{})
	if len(first.Warnings) > 0 {
		t.Errorf("Build(...).Warnings = %q, want none (the ServiceEntry's two hosts give one endpoint one policy)", first.Warnings)
	}
	for range 20 {
		again := Build(set, eps, Options{})
		for name, l := range first.ServerListeners {
			if !proto.Equal(l, again.ServerListeners[name]) {
				t.Fatalf("Build(...) twice: server listener %s differs", name)
			}
		}
	}
}
