package kube

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// Clients are the API clients the sources read with. Tests pass the fake
// clientsets of client-go and istio client-go.
type Clients struct {
	Kube  kubernetes.Interface
	Istio istioclient.Interface
}

// NewClients connects to the cluster of the kubeconfig file, or, if
// kubeconfig is empty, to the cluster the process runs in (its service
// account). It does not contact the API server.
func NewClients(kubeconfig string) (*Clients, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	cfg.UserAgent = "trellis-xdsserver"
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	i, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	return &Clients{Kube: k, Istio: i}, nil
}

// LogTo sends what client-go logs (through klog, to standard error by
// default) to l instead. klog is global: this affects the whole process.
func LogTo(l *slog.Logger) { klog.SetSlogLogger(l) }

// Options tune the sources. The zero value is valid.
type Options struct {
	// Logger receives what the sources report. If nil, nothing is logged.
	Logger *slog.Logger
	// Debounce is how long a source waits after an event for more before
	// it delivers. If zero, DefaultDebounce.
	Debounce time.Duration
	// TrustDomain is the SPIFFE trust domain of endpoint identities. If
	// empty, "cluster.local".
	TrustDomain string
	// Replica names this control-plane replica in the WorkloadEntries it
	// writes. If empty, the POD_NAME environment variable, else the host
	// name (a Pod's host name is its name).
	Replica string
	// ReplicaNamespace is the namespace of the control plane's Pods. The
	// Store checks there that the replicas holding registrations still
	// exist. If empty, the POD_NAMESPACE environment variable; if that is
	// empty too, the check is off.
	ReplicaNamespace string
}

func (o Options) replicaNamespace() string {
	return cmp.Or(o.ReplicaNamespace, os.Getenv("POD_NAMESPACE"))
}

// DefaultDebounce is the debounce of Options with none.
const DefaultDebounce = 50 * time.Millisecond

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o Options) debounce() time.Duration { return cmp.Or(o.Debounce, DefaultDebounce) }

func (o Options) trustDomain() string { return cmp.Or(o.TrustDomain, "cluster.local") }

func (o Options) replica() string {
	if o.Replica != "" {
		return o.Replica
	}
	if p := os.Getenv("POD_NAME"); p != "" {
		return p
	}
	h, _ := os.Hostname()
	return cmp.Or(h, "xdsserver")
}

// signal is a coalescing wake-up: any number of pokes before the waiter
// looks count as one.
type signal chan struct{}

func newSignal() signal { return make(signal, 1) }

func (s signal) poke() {
	select {
	case s <- struct{}{}:
	default:
	}
}

// handler pokes s on every add, update and delete.
func (s signal) handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.poke() },
		UpdateFunc: func(_, _ any) { s.poke() },
		DeleteFunc: func(any) { s.poke() },
	}
}

// loop calls deliver once, then again after every burst of pokes has been
// quiet for d (or has lasted 10 d), until ctx is done.
func (s signal) loop(ctx context.Context, d time.Duration, deliver func()) {
	deliver()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s:
		}
		deadline := time.Now().Add(10 * d)
		t := time.NewTimer(d)
	quiet:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-s:
				t.Reset(min(d, time.Until(deadline)))
			case <-t.C:
				break quiet
			}
		}
		deliver()
	}
}

// informerFactory is what the two generated factory types share.
type informerFactory interface {
	Start(stopCh <-chan struct{})
	Shutdown()
}

// startAndSync starts f and waits for the caches of synced; it returns
// false if ctx ended first. The caller must call f.Shutdown.
func startAndSync(ctx context.Context, f informerFactory, synced ...cache.InformerSynced) bool {
	f.Start(ctx.Done())
	return cache.WaitForCacheSync(ctx.Done(), synced...)
}
