// Package kube reads the mesh from a Kubernetes cluster: the Istio custom
// resources as configuration (ConfigSource), Services and EndpointSlices as
// endpoints (EndpointSource), and WorkloadEntries as the shared store of
// self-registered workloads (Store), the way Istio's WorkloadEntry
// auto-registration keeps them.
//
// Everything is read through client-go informers with resync off; each
// source waits for its caches to sync before it delivers anything, and
// coalesces bursts of events (Debounce) into one delivery.
//
// The Istio resources are fed to the same loader as YAML files: each custom
// resource is rendered back to a JSON document named
// "k8s:Kind/namespace/name" (apiVersion, kind, metadata, and the spec as
// protojson) and the whole set goes through config.Load, so the same fields
// are rejected with the same errors, naming the resource:
//
//	k8s:VirtualService/default/reviews:1: VirtualService default/reviews: spec.http[0].mirror: not supported
//
// and, as for a directory of files, one invalid resource keeps the whole
// new set out and the last good one in force.
//
// A Kubernetes Service port becomes endpoints with ServicePort set to the
// Service's port and Port to the endpoint's, for the ready endpoints of its
// EndpointSlices only; each endpoint carries its Pod's labels (so subsets
// select on "version") and the region and zone of its Node as locality.
//
//	clients, err := kube.NewClients("")  // in-cluster
//	src := kube.NewConfigSource(clients, kube.Options{})
//	err = src.Run(ctx, func(set *config.Set, err error) { ... })
package kube
