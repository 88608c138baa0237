package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/trellismesh/trellis/internal/config"
)

// ConfigSource reads the Istio custom resources Trellis implements
// (networking.istio.io ServiceEntry, WorkloadEntry, VirtualService,
// DestinationRule; security.istio.io PeerAuthentication,
// AuthorizationPolicy, RequestAuthentication; telemetry.istio.io Telemetry)
// from every namespace. WorkloadEntries the Store wrote for registrations are
// not configuration and are left out. It is a config.Source; it is safe for
// concurrent use, and Run may be called once at a time.
type ConfigSource struct {
	clients *Clients
	opts    Options
}

var _ config.Source = (*ConfigSource)(nil)

// NewConfigSource returns a ConfigSource reading with c.
func NewConfigSource(c *Clients, opts Options) *ConfigSource {
	return &ConfigSource{clients: c, opts: opts}
}

// String implements config.Source.
func (s *ConfigSource) String() string { return "kubernetes" }

// lister lists the resources of one kind as documents.
type lister func() ([]document, error)

// document is one custom resource rendered for config.Load.
type document struct {
	kind, apiVersion string
	meta             metav1.ObjectMeta
	spec             proto.Message
}

// Run implements config.Source: it watches the custom resources and calls
// update with the whole set loaded by config.Load, once the caches have
// synced and then after every (debounced) change, until ctx is done.
func (s *ConfigSource) Run(ctx context.Context, update func(*config.Set, error)) error {
	f := istioinformers.NewSharedInformerFactory(s.clients.Istio, 0)
	defer f.Shutdown()
	sig := newSignal()
	var (
		synced  []cache.InformerSynced
		listers []lister
	)
	watch := func(inf cache.SharedIndexInformer, l lister) error {
		if _, err := inf.AddEventHandler(sig.handler()); err != nil {
			return err
		}
		synced = append(synced, inf.HasSynced)
		listers = append(listers, l)
		return nil
	}
	nw, sec, tel := f.Networking().V1(), f.Security().V1(), f.Telemetry().V1()
	all := labels.Everything()
	const (
		networking = "networking.istio.io/v1"
		security   = "security.istio.io/v1"
		telemetry  = "telemetry.istio.io/v1"
	)
	errs := []error{
		watch(nw.ServiceEntries().Informer(), func() ([]document, error) {
			l, err := nw.ServiceEntries().Lister().List(all)
			return docs(l, err, func(i int) document {
				return document{config.KindServiceEntry, networking, l[i].ObjectMeta, &l[i].Spec}
			})
		}),
		watch(nw.WorkloadEntries().Informer(), func() ([]document, error) {
			l, err := nw.WorkloadEntries().Lister().List(all)
			l = slices.DeleteFunc(l, func(we *networkingWorkloadEntry) bool { return autoRegistered(we.Labels) })
			return docs(l, err, func(i int) document {
				return document{config.KindWorkloadEntry, networking, l[i].ObjectMeta, &l[i].Spec}
			})
		}),
		watch(nw.VirtualServices().Informer(), func() ([]document, error) {
			l, err := nw.VirtualServices().Lister().List(all)
			return docs(l, err, func(i int) document {
				return document{config.KindVirtualService, networking, l[i].ObjectMeta, &l[i].Spec}
			})
		}),
		watch(nw.DestinationRules().Informer(), func() ([]document, error) {
			l, err := nw.DestinationRules().Lister().List(all)
			return docs(l, err, func(i int) document {
				return document{config.KindDestinationRule, networking, l[i].ObjectMeta, &l[i].Spec}
			})
		}),
		watch(sec.PeerAuthentications().Informer(), func() ([]document, error) {
			l, err := sec.PeerAuthentications().Lister().List(all)
			return docs(l, err, func(i int) document {
				return document{config.KindPeerAuthentication, security, l[i].ObjectMeta, &l[i].Spec}
			})
		}),
		watch(sec.AuthorizationPolicies().Informer(), func() ([]document, error) {
			l, err := sec.AuthorizationPolicies().Lister().List(all)
			return docs(l, err, func(i int) document {
				return document{config.KindAuthorizationPolicy, security, l[i].ObjectMeta, &l[i].Spec}
			})
		}),
		watch(sec.RequestAuthentications().Informer(), func() ([]document, error) {
			l, err := sec.RequestAuthentications().Lister().List(all)
			return docs(l, err, func(i int) document {
				return document{config.KindRequestAuthentication, security, l[i].ObjectMeta, &l[i].Spec}
			})
		}),
		watch(tel.Telemetries().Informer(), func() ([]document, error) {
			l, err := tel.Telemetries().Lister().List(all)
			return docs(l, err, func(i int) document {
				return document{config.KindTelemetry, telemetry, l[i].ObjectMeta, &l[i].Spec}
			})
		}),
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("kube: %w", err)
		}
	}
	if !startAndSync(ctx, f, synced...) {
		return nil
	}
	log := s.opts.logger()
	sig.loop(ctx, s.opts.debounce(), func() {
		files := map[string][]byte{}
		for _, l := range listers {
			ds, err := l()
			if err != nil {
				update(nil, fmt.Errorf("kube: %w", err))
				return
			}
			for _, d := range ds {
				name, data, err := d.render()
				if err != nil {
					update(nil, err)
					return
				}
				files[name] = data
			}
		}
		set, err := config.Load(files)
		if err != nil {
			log.Debug("custom resources failed to load", "error", err)
		}
		update(set, err)
	})
	return nil
}

// docs renders the n items of a lister's result.
func docs[T any](l []T, err error, doc func(i int) document) ([]document, error) {
	if err != nil {
		return nil, err
	}
	out := make([]document, len(l))
	for i := range l {
		out[i] = doc(i)
	}
	return out, nil
}

// DocumentName is the name config errors give the custom resource of kind
// in namespace ns: "k8s:VirtualService/default/reviews".
func DocumentName(kind, ns, name string) string {
	return "k8s:" + kind + "/" + ns + "/" + name
}

// render returns the document config.Load reads for d, and its name.
func (d document) render() (string, []byte, error) {
	name := DocumentName(d.kind, d.meta.Namespace, d.meta.Name)
	spec, err := protojson.Marshal(d.spec)
	if err != nil {
		return "", nil, fmt.Errorf("kube: %s: spec: %w", name, err)
	}
	meta := map[string]any{"name": d.meta.Name, "namespace": d.meta.Namespace}
	if len(d.meta.Labels) > 0 {
		meta["labels"] = d.meta.Labels
	}
	if a := configAnnotations(d.meta.Annotations); len(a) > 0 {
		meta["annotations"] = a
	}
	head, err := jsonMarshal(map[string]any{"apiVersion": d.apiVersion, "kind": d.kind, "metadata": meta})
	if err != nil {
		return "", nil, fmt.Errorf("kube: %s: %w", name, err)
	}
	// Splice the spec in as protojson wrote it.
	out := append(head[:len(head)-1:len(head)-1], `,"spec":`...)
	out = append(out, spec...)
	out = append(out, '}')
	return name, out, nil
}

// configAnnotations drops the annotations Kubernetes tools write that carry
// no configuration (kubectl's last-applied copy of the whole resource).
func configAnnotations(a map[string]string) map[string]string {
	out := make(map[string]string, len(a))
	for k, v := range a {
		if k == "kubectl.kubernetes.io/last-applied-configuration" || strings.HasPrefix(k, "meta.helm.sh/") {
			continue
		}
		out[k] = v
	}
	return out
}
