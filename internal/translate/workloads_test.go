package translate

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

const boundServices = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews, reviews.example.com]
  ports: [{number: 9080, name: http, protocol: HTTP, targetPort: 8080}]
  resolution: STATIC
  subjectAltNames: ["spiffe://example.org/ns/default/sa/bookinfo-reviews"]
  endpoints: [{address: 10.0.0.1, serviceAccount: ignored-for-the-sans}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  ports: [{number: 9090, name: grpc, protocol: GRPC}, {number: 9091, name: admin, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: shop}
spec: {address: 10.0.0.2, labels: {app: ratings}, serviceAccount: ratings-vm, ports: {admin: 7000}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: elsewhere, namespace: default}
spec: {address: 10.0.0.3, labels: {app: ratings}, serviceAccount: not-selected}
`

// TestServiceIdentities: the identities a configuration binds to each
// service are the ServiceEntry's subjectAltNames when it has any (they
// replace its workloads'), else its selected workloads' service accounts,
// in the ServiceEntry's namespace and the mesh's trust domain.
func TestServiceIdentities(t *testing.T) {
	got := ServiceIdentities(load(t, boundServices), "example.org")
	want := map[string][]string{
		"reviews.default.svc.cluster.local": {"spiffe://example.org/ns/default/sa/bookinfo-reviews"},
		"reviews.example.com":               {"spiffe://example.org/ns/default/sa/bookinfo-reviews"},
		"ratings.shop.svc.cluster.local":    {"spiffe://example.org/ns/shop/sa/ratings-vm"},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("ServiceIdentities() (-got +want):\n%s", diff)
	}
}

// TestConfigWorkloads: the endpoints a configuration defines, with their
// workload ports (the WorkloadEntry's port by name, else targetPort, else
// the service port) and identities.
func TestConfigWorkloads(t *testing.T) {
	got := ConfigWorkloads(load(t, boundServices), "example.org")
	want := []ConfigWorkload{
		{Host: "reviews.default.svc.cluster.local", Namespace: "default", Address: "10.0.0.1", Ports: []uint32{8080}, Identity: "spiffe://example.org/ns/default/sa/ignored-for-the-sans"},
		{Host: "reviews.example.com", Namespace: "default", Address: "10.0.0.1", Ports: []uint32{8080}, Identity: "spiffe://example.org/ns/default/sa/ignored-for-the-sans"},
		{Host: "ratings.shop.svc.cluster.local", Namespace: "shop", Address: "10.0.0.2", Ports: []uint32{7000, 9090}, Identity: "spiffe://example.org/ns/shop/sa/ratings-vm"},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("ConfigWorkloads() (-got +want):\n%s", diff)
	}
}
