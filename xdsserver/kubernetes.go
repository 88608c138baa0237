package xdsserver

import (
	"cmp"
	"errors"
	"time"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/kube"
	"github.com/trellismesh/trellis/internal/registry"
)

// WithKubernetes reads the mesh from the Kubernetes cluster of the
// kubeconfig file, or, if kubeconfig is empty, of the Pod the Server runs
// in. The Istio resources (networking.istio.io, security.istio.io and
// telemetry.istio.io custom resources) are the configuration, loaded with
// the same strictness as WithConfigDir's files: one invalid resource keeps
// the last good configuration in force and the error names it. Services and
// their EndpointSlices (ready endpoints only, with their Pods' labels and
// their Nodes' locality) are endpoints. Registrations become
// WorkloadEntries, as Istio's auto-registration makes them, so that every
// replica of the control plane serves them; with WithStore, registrations
// go to that store instead.
//
// client-go's own log (klog, process-wide) goes to the Server's logger. The
// Server is not ready (/readyz) until the custom resources have been
// read once. WithKubernetes and WithConfigDir are exclusive. The service
// account needs the permissions examples/kubernetes grants.
func WithKubernetes(kubeconfig string) Option {
	return optionFunc(func(o *options) { o.kubernetes = &kubeOptions{kubeconfig: kubeconfig} })
}

type kubeOptions struct {
	kubeconfig string
	// Set by tests.
	clients  *kube.Clients
	replica  string
	debounce time.Duration
}

// withKubeClients is WithKubernetes with the given clients (fakes, in
// tests), naming this replica in the WorkloadEntries it writes.
func withKubeClients(c *kube.Clients, replica string) Option {
	return optionFunc(func(o *options) {
		o.kubernetes = &kubeOptions{clients: c, replica: replica, debounce: 10 * time.Millisecond}
	})
}

// useKubernetes turns WithKubernetes into the Server's sources.
func (o *options) useKubernetes() error {
	k := o.kubernetes
	if k == nil {
		return nil
	}
	if o.configDir != "" {
		return errors.New("xdsserver: WithKubernetes and WithConfigDir are exclusive")
	}
	if o.configSource != nil {
		return errors.New("xdsserver: WithKubernetes and another configuration source are exclusive")
	}
	c := k.clients
	if c == nil {
		var err error
		if c, err = kube.NewClients(k.kubeconfig); err != nil {
			return err
		}
		kube.LogTo(o.logger.With("source", "client-go"))
	}
	kopts := kube.Options{
		Logger:      o.logger.With("source", "kubernetes"),
		Debounce:    k.debounce,
		TrustDomain: cmp.Or(o.trustDomain, DefaultTrustDomain),
		Replica:     k.replica,
	}
	o.configSource = kube.NewConfigSource(c, kopts)
	o.endpointSources = append(o.endpointSources, kube.NewEndpointSource(c, kopts))
	if o.openStore == nil {
		o.openStore = func(grace time.Duration, onChange func()) (registry.Store, error) {
			return kube.OpenStore(c, kopts, grace, onChange), nil
		}
	}
	return nil
}

var _ config.Source = (*kube.ConfigSource)(nil)
