package xdsserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellismesh/trellis/internal/registrationpb"
)

// TestDebugEndpointsNeedTheToken: with WithAdminToken, /debug/ endpoints
// refuse callers without the bearer token and serve those with it; health
// and metrics stay open.
func TestDebugEndpointsNeedTheToken(t *testing.T) {
	s, err := New(WithAdminToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := s.AdminHandler()
	get := func(path, auth string) int {
		req := httptest.NewRequest("GET", path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, path := range []string{"/debug/config_dump", "/debug/clients", "/debug/registry"} {
		if code := get(path, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token = %d, want 401", path, code)
		}
		if code := get(path, "Bearer wrong"); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token = %d, want 401", path, code)
		}
		if code := get(path, "Bearer s3cret"); code != http.StatusOK {
			t.Errorf("GET %s with the token = %d, want 200", path, code)
		}
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		if code := get(path, ""); code != http.StatusOK {
			t.Errorf("GET %s = %d, want 200 without a token", path, code)
		}
	}
}

// TestDebugClientsAndRegistry: /debug/clients lists a connected xDS client
// and its NACK; /debug/registry lists a registered endpoint.
func TestDebugClientsAndRegistry(t *testing.T) {
	ctx := testContext(t)
	s, cc := start(t)
	if _, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "reviews", Namespace: "default", Address: "10.0.0.7", Port: 9080, Labels: map[string]string{"version": "v2"}}); err != nil {
		t.Fatal(err)
	}
	h := s.AdminHandler()
	get := func(path string, v any) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost"+path, nil))
		if rec.Code == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
				t.Fatalf("GET %s: %v: %s", path, err, rec.Body)
			}
		}
		return rec.Code
	}
	waitFor(ctx, t, func() bool {
		var regs []Registration
		return get("/debug/registry?service=reviews", &regs) == 200 && len(regs) == 1 && regs[0].Address == "10.0.0.7" && regs[0].Labels["version"] == "v2"
	})
	stream, err := v3discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := &ads{t: t, stream: stream}
	waitFor(ctx, t, func() bool { return s.caches[resource.ListenerType].GetResources()["reviews:9080"] != nil })
	a.send(&v3discoverypb.DiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNames: []string{"reviews:9080"}})
	resp := a.recv()
	a.send(&v3discoverypb.DiscoveryRequest{
		TypeUrl: resource.ListenerType, ResourceNames: []string{"reviews:9080"}, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: "bad listener"},
	})
	waitFor(ctx, t, func() bool {
		var clients []ClientStatus
		if get("/debug/clients?node=raw-client", &clients) != 200 || len(clients) != 1 {
			return false
		}
		lds := clients[0].Types["LDS"]
		return lds != nil && lds.Nacks == 1 && lds.LastNack == "bad listener"
	})
	var none []ClientStatus
	if code := get("/debug/clients?node=nobody", &none); code != http.StatusNotFound {
		t.Errorf("GET /debug/clients?node=nobody = %d, want 404", code)
	}

	// One client's view of the configuration.
	var dump ConfigDump
	if code := get("/debug/config_dump?client=raw-client", &dump); code != http.StatusOK {
		t.Fatalf("GET /debug/config_dump?client=raw-client = %d", code)
	}
	if len(dump.Clients) != 1 || dump.Clients[0].Node != "raw-client" || dump.Resources["LDS"] == nil {
		t.Errorf("per-client dump: clients %+v, resource types %d; want raw-client only, with resources", dump.Clients, len(dump.Resources))
	}
	if code := get("/debug/config_dump?client=nobody", &dump); code != http.StatusNotFound {
		t.Errorf("GET /debug/config_dump?client=nobody = %d, want 404", code)
	}

	// A mesh client's node metadata shows in its status.
	meta, _ := structpb.NewStruct(map[string]any{"SERVICE": "ratings", "NAMESPACE": "shop", "VERSION": "v3"})
	s2, err := v3discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Send(&v3discoverypb.DiscoveryRequest{Node: &v3corepb.Node{Id: "meta-client", Metadata: meta, Locality: &v3corepb.Locality{Region: "eu", Zone: "a"}},
		TypeUrl: resource.ListenerType, ResourceNames: []string{"reviews:9080"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool {
		var clients []ClientStatus
		if get("/debug/clients?node=meta-client", &clients) != 200 || len(clients) != 1 {
			return false
		}
		c := clients[0]
		return c.Service == "ratings" && c.Namespace == "shop" && c.Version == "v3" && c.Locality == "eu/a"
	})
}
