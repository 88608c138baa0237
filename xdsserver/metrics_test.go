package xdsserver

import (
	"bufio"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/registrationpb"
)

// scrape returns the samples of /metrics, by series ("name{labels}").
func scrape(t *testing.T, s *Server) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics = %d", rec.Code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(rec.Body.String()))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestControlPlaneMetrics: connected clients, registrations, pushes with
// their latency, ACKs and classed NACKs show on /metrics.
func TestControlPlaneMetrics(t *testing.T) {
	ctx := testContext(t)
	s, cc := start(t)
	if _, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "reviews", Address: "127.0.0.1", Port: 9080}); err != nil {
		t.Fatal(err)
	}
	if _, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "", Address: "127.0.0.1", Port: 9080}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Register(no service) = %v, want InvalidArgument", err)
	}
	stream, err := v3discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := &ads{t: t, stream: stream}
	waitFor(ctx, t, func() bool {
		return s.caches[resource.ClusterType].GetResources() != nil && len(s.caches[resource.ClusterType].GetResources()) > 0
	})
	// A wildcard CDS subscription, answered and acknowledged: not a push.
	a.send(&v3discoverypb.DiscoveryRequest{TypeUrl: resource.ClusterType})
	resp := a.recv()
	a.send(&v3discoverypb.DiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce(), VersionInfo: resp.GetVersionInfo()})
	waitFor(ctx, t, func() bool { return scrape(t, s)[`trellis_xds_acks_total{type="CDS"}`] == 1 })
	if got := scrape(t, s)[`trellis_xds_push_latency_seconds_count{type="CDS"}`]; got != 0 {
		t.Errorf("push latency count after the first answer = %v, want 0 (an answer, not a push)", got)
	}

	// A new service changes the clusters: pushed, its latency observed.
	if _, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "ratings", Address: "127.0.0.1", Port: 9081}); err != nil {
		t.Fatal(err)
	}
	resp = a.recv()
	a.send(&v3discoverypb.DiscoveryRequest{
		TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: nackDetail("cluster outbound|9081||ratings.default.svc.cluster.local: validation failed: bad lb policy"),
	})
	waitFor(ctx, t, func() bool { return scrape(t, s)[`trellis_xds_nacks_total{reason="validation",type="CDS"}`] == 1 })

	got := scrape(t, s)
	for series, want := range map[string]float64{
		`trellis_xds_clients`:                                     1,
		`trellis_xds_streams`:                                     1,
		`trellis_registrations_total{result="accepted"}`:          2,
		`trellis_registrations_total{result="rejected"}`:          1,
		`trellis_xds_push_latency_seconds_count{type="CDS"}`:      1,
		`trellis_xds_nacks_total{reason="validation",type="CDS"}`: 1,
		`trellis_config_errors`:                                   0,
	} {
		if got[series] != want {
			t.Errorf("/metrics %s = %v, want %v", series, got[series], want)
		}
	}
	if got[`trellis_xds_pushes_total{type="CDS"}`] < 2 {
		t.Errorf("/metrics trellis_xds_pushes_total{type=\"CDS\"} = %v, want at least 2", got[`trellis_xds_pushes_total{type="CDS"}`])
	}
}

// TestCAMetrics: certificates issued and refused requests show on /metrics.
func TestCAMetrics(t *testing.T) {
	ctx := testContext(t)
	s, err := New(WithDataDir(t.TempDir()), WithJoinTokens(map[string]WorkloadIdentity{"s3cret": {Namespace: "default", ServiceAccount: "reviews"}}))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveSecure(t, s)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	src, err := identity.NewCASource(ctx, dialer(addr, s.CARootPEM()), td, identity.WithJoinToken("s3cret"))
	if err != nil {
		t.Fatalf("NewCASource() = %v", err)
	}
	src.Close()
	if _, err := identity.NewCASource(ctx, dialer(addr, s.CARootPEM()), td, identity.WithJoinToken("guess")); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("NewCASource(unknown token) = %v, want Unauthenticated", err)
	}
	got := scrape(t, s)
	if got[`trellis_ca_certificates_issued_total`] != 1 {
		t.Errorf("trellis_ca_certificates_issued_total = %v, want 1", got[`trellis_ca_certificates_issued_total`])
	}
	if n := got[`trellis_ca_errors_total{reason="unauthenticated"}`]; n < 1 {
		t.Errorf(`trellis_ca_errors_total{reason="unauthenticated"} = %v, want at least 1`, n)
	}
}

func TestNACKReason(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{"listener x: unsupported filter", "unsupported"},
		{"failed to unmarshal resource", "unmarshal"},
		{"route y: validation failed", "validation"},
		{"something else", "other"},
		{"", "other"},
	} {
		if got := nackReason(tc.msg); got != tc.want {
			t.Errorf("nackReason(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}

func nackDetail(msg string) *rpcstatus.Status {
	return &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: msg}
}
