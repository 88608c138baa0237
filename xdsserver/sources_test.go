package xdsserver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/registry"
)

// chanConfigSource delivers what the test sends it.
type chanConfigSource struct{ ch chan map[string][]byte }

func (c chanConfigSource) String() string { return "test source" }

func (c chanConfigSource) Run(ctx context.Context, update func(*config.Set, error)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case files := <-c.ch:
			update(config.Load(files))
		}
	}
}

// chanEndpointSource delivers the endpoint lists the test sends it.
type chanEndpointSource struct{ ch chan []registry.Endpoint }

func (c chanEndpointSource) Run(ctx context.Context, update func([]registry.Endpoint)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case eps := <-c.ch:
			update(eps)
		}
	}
}

func withSources(cfg config.Source, eps ...registry.Source) Option {
	return optionFunc(func(o *options) {
		o.configSource = cfg
		o.endpointSources = eps
	})
}

const sourceService = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
`

// TestConfigAndEndpointSources checks the seam etcd and Kubernetes plug
// into: the Server is not ready before its configuration source delivered,
// a bad delivery keeps the last good configuration, and a source's
// endpoints are served next to registrations.
func TestConfigAndEndpointSources(t *testing.T) {
	ctx := testContext(t)
	cfg := chanConfigSource{ch: make(chan map[string][]byte)}
	eps := chanEndpointSource{ch: make(chan []registry.Endpoint)}
	s, _ := start(t, withSources(cfg, eps), WithWarmup(-1))
	admin := httptest.NewServer(s.AdminHandler())
	defer admin.Close()
	ready := func() int {
		resp, err := http.Get(admin.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := ready(); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before the source delivered = %d, want 503", got)
	}
	cfg.ch <- map[string][]byte{"a.yaml": []byte(sourceService)}
	waitFor(ctx, t, func() bool { return ready() == http.StatusOK })

	eps.ch <- []registry.Endpoint{{Service: "ratings", Namespace: "default", Address: "10.0.0.7", Port: 9080, ServicePort: 9080, Labels: map[string]string{"app": "ratings"}}}
	eds := func() []string {
		var out []string
		for name, r := range s.caches[resource.EndpointType].GetResources() {
			for _, l := range r.(*v3endpointpb.ClusterLoadAssignment).GetEndpoints() {
				for _, e := range l.GetLbEndpoints() {
					out = append(out, name+" "+e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
				}
			}
		}
		return out
	}
	waitFor(ctx, t, func() bool {
		got := eds()
		return len(got) == 1 && strings.HasSuffix(got[0], "ratings.default.svc.cluster.local 10.0.0.7")
	})

	cfg.ch <- map[string][]byte{"a.yaml": []byte(sourceService + "  bogus: 1\n")}
	waitFor(ctx, t, func() bool {
		d := s.ConfigDump()
		return !d.Config.Valid && len(d.Config.LastErrors) > 0
	})
	d := s.ConfigDump()
	if d.Config.Source != "test source" || d.Config.Resources != 1 {
		t.Errorf("config dump: source %q, %d resources in force; want the test source's last good 1", d.Config.Source, d.Config.Resources)
	}
	if !strings.Contains(d.Config.LastErrors[0], "bogus") {
		t.Errorf("load error %q does not name the bad field", d.Config.LastErrors[0])
	}
	if got := eds(); len(got) != 1 {
		t.Errorf("endpoints after a bad configuration = %v, want the one endpoint kept", got)
	}
	eps.ch <- nil
	waitFor(ctx, t, func() bool { return len(eds()) == 0 })
}
