package kube

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/trellismesh/trellis/internal/registry"
)

// Labels Istio and Kubernetes give meaning to.
const (
	// labelTLSMode on a Pod says that its workload serves mesh mTLS, as
	// Istio's sidecar injection marks Pods ("istio").
	labelTLSMode = "security.istio.io/tlsMode"
	labelRegion  = "topology.kubernetes.io/region"
	labelZone    = "topology.kubernetes.io/zone"
)

// EndpointSource reads Services, their EndpointSlices, and the Pods and Nodes
// behind them, as endpoints: one per ready endpoint address and Service
// port, with ServicePort the Service's port and Port the endpoint's (target)
// port, the Pod's labels, and the Node's region and zone as locality. It is a
// registry.Source; it is safe for concurrent use, and Run may be called once
// at a time.
//
// An endpoint carries an identity (spiffe://<trust-domain>/ns/<ns>/sa/<sa>
// of its Pod's service account) only if its Pod is labelled
// security.istio.io/tlsMode=istio, as Istio decides auto-mTLS: a cluster
// whose endpoints all have identities is dialled with mTLS, which a plain
// workload would refuse. Workloads that register with the control plane
// themselves carry the identity they proved, and their registration wins
// over the EndpointSlice's endpoint with the same address and port.
type EndpointSource struct {
	clients *Clients
	opts    Options
}

var _ registry.Source = (*EndpointSource)(nil)

// NewEndpointSource returns an EndpointSource reading with c.
func NewEndpointSource(c *Clients, opts Options) *EndpointSource {
	return &EndpointSource{clients: c, opts: opts}
}

// Run implements registry.Source: it watches the cluster and calls update
// with every endpoint, once the caches have synced and then after every
// (debounced) change, until ctx is done.
func (s *EndpointSource) Run(ctx context.Context, update func([]registry.Endpoint)) error {
	f := informers.NewSharedInformerFactory(s.clients.Kube, 0)
	defer f.Shutdown()
	sig := newSignal()
	svcs := f.Core().V1().Services()
	slicesInf := f.Discovery().V1().EndpointSlices()
	pods := f.Core().V1().Pods()
	nodes := f.Core().V1().Nodes()
	var synced []cache.InformerSynced
	for _, inf := range []cache.SharedIndexInformer{svcs.Informer(), slicesInf.Informer(), pods.Informer(), nodes.Informer()} {
		if _, err := inf.AddEventHandler(sig.handler()); err != nil {
			return fmt.Errorf("kube: %w", err)
		}
		synced = append(synced, inf.HasSynced)
	}
	if !startAndSync(ctx, f, synced...) {
		return nil
	}
	log := s.opts.logger()
	sig.loop(ctx, s.opts.debounce(), func() {
		all, err := slicesInf.Lister().List(labels.Everything())
		if err != nil {
			log.Error("listing EndpointSlices", "error", err)
			return
		}
		b := endpointBuilder{
			trustDomain: s.opts.trustDomain(),
			service: func(ns, name string) *corev1.Service {
				svc, _ := svcs.Lister().Services(ns).Get(name)
				return svc
			},
			pod: func(ns, name string) *corev1.Pod {
				p, _ := pods.Lister().Pods(ns).Get(name)
				return p
			},
			node: func(name string) *corev1.Node {
				n, _ := nodes.Lister().Get(name)
				return n
			},
		}
		update(b.build(all))
	})
	return nil
}

// endpointBuilder turns EndpointSlices into endpoints, looking up what they
// refer to.
type endpointBuilder struct {
	trustDomain string
	service     func(ns, name string) *corev1.Service
	pod         func(ns, name string) *corev1.Pod
	node        func(name string) *corev1.Node
}

func (b endpointBuilder) build(all []*discoveryv1.EndpointSlice) []registry.Endpoint {
	seen := map[string]bool{}
	var out []registry.Endpoint
	for _, es := range all {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices name no workload address
		}
		name := es.Labels[discoveryv1.LabelServiceName]
		svc := b.service(es.Namespace, name)
		if name == "" || svc == nil {
			continue
		}
		for _, p := range es.Ports {
			if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
				continue
			}
			sp, ok := servicePort(svc, p)
			if !ok {
				continue
			}
			for _, e := range es.Endpoints {
				if !ready(e.Conditions) {
					continue
				}
				ep := registry.Endpoint{
					Service:     svc.Name,
					Namespace:   svc.Namespace,
					Port:        uint32(*p.Port),
					ServicePort: uint32(sp),
				}
				if e.Zone != nil {
					ep.Locality = "/" + *e.Zone
				}
				if e.NodeName != nil {
					if n := b.node(*e.NodeName); n != nil && (n.Labels[labelRegion] != "" || n.Labels[labelZone] != "") {
						ep.Locality = n.Labels[labelRegion] + "/" + n.Labels[labelZone]
					}
				}
				ep.Locality = strings.TrimRight(ep.Locality, "/")
				if ref := e.TargetRef; ref != nil && ref.Kind == "Pod" {
					if pod := b.pod(cmp.Or(ref.Namespace, es.Namespace), ref.Name); pod != nil {
						ep.Labels = pod.Labels
						if pod.Labels[labelTLSMode] == "istio" {
							ep.Identity = fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", b.trustDomain, pod.Namespace, cmp.Or(pod.Spec.ServiceAccountName, "default"))
						}
					}
				}
				for _, a := range e.Addresses {
					addr, err := netip.ParseAddr(a)
					if err != nil {
						continue
					}
					ep.Address = addr.String()
					if !seen[ep.Key()+"|"+fmt.Sprint(sp)] {
						seen[ep.Key()+"|"+fmt.Sprint(sp)] = true
						out = append(out, ep)
					}
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b registry.Endpoint) int {
		return cmp.Compare(a.Key()+fmt.Sprint(a.ServicePort), b.Key()+fmt.Sprint(b.ServicePort))
	})
	return out
}

// servicePort finds the Service port an EndpointSlice port serves: the one
// with the same name (a slice port carries its Service port's name).
func servicePort(svc *corev1.Service, p discoveryv1.EndpointPort) (int32, bool) {
	name := ""
	if p.Name != nil {
		name = *p.Name
	}
	for _, sp := range svc.Spec.Ports {
		if sp.Name == name && (sp.Protocol == "" || sp.Protocol == corev1.ProtocolTCP) {
			return sp.Port, true
		}
	}
	return 0, false
}

// ready reports whether an endpoint takes new traffic: Ready, which
// Kubernetes sets false for terminating endpoints, and which an unset
// condition means (the API's "unknown" is to be read as ready).
func ready(c discoveryv1.EndpointConditions) bool {
	return c.Ready == nil || *c.Ready
}
