package xdsserver

//lint:file-ignore SA1019 the shapes under test use the deprecated fields grpc-go reads.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3tlspb "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/ca"
	"github.com/trellismesh/trellis/internal/registrationpb"
)

// workloadCert issues a client certificate for spiffe://cluster.local<path>
// from authority.
func workloadCert(t *testing.T, authority *ca.CA, path string) *tls.Certificate {
	t.Helper()
	cert, err := authority.ServerCertificate(spiffeid.RequireFromPath(authority.TrustDomain(), path), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestRegistrationIdentityFromClientCertificate guards against identity
// spoofing at registration: over the real secure port, a certificate from
// the control plane's own CA gives the endpoint its SPIFFE ID (shown in the
// config dump, and turning on auto mTLS for its cluster); a certificate
// from another root is refused as Unauthenticated, one for another
// namespace or another service account as PermissionDenied; without a
// certificate, over TLS or on the plaintext port, registration is refused
// as Unauthenticated (the mesh is not opened with WithInsecureRegistration).
func TestRegistrationIdentityFromClientCertificate(t *testing.T) {
	ctx := testContext(t)
	s, plain := startClosed(t, WithDataDir(t.TempDir()))
	addr := serveSecure(t, s)
	root := s.CARootPEM()
	foreign, err := ca.LoadOrCreate(t.TempDir(), "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	secure := func(cert *tls.Certificate) *grpc.ClientConn {
		cc, err := dialer(addr, root)(ctx, cert)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	tests := []struct {
		name         string
		cc           *grpc.ClientConn
		namespace    string
		port         uint32
		wantCode     codes.Code
		wantIdentity string
	}{
		{"own CA, same namespace", secure(workloadCert(t, s.ca, "/ns/default/sa/reviews")), "default", 9001, codes.OK, "spiffe://cluster.local/ns/default/sa/reviews"},
		{"own CA, another namespace", secure(workloadCert(t, s.ca, "/ns/shop/sa/reviews")), "default", 9002, codes.PermissionDenied, ""},
		{"own CA, not a workload identity", secure(workloadCert(t, s.ca, "/trellis/other")), "default", 9003, codes.PermissionDenied, ""},
		{"own CA, another service account", secure(workloadCert(t, s.ca, "/ns/default/sa/batch")), "default", 9007, codes.PermissionDenied, ""},
		{"another root", secure(workloadCert(t, foreign, "/ns/default/sa/reviews")), "default", 9004, codes.Unauthenticated, ""},
		{"TLS without a certificate", secure(nil), "default", 9005, codes.Unauthenticated, ""},
		{"plaintext port", plain, "default", 9006, codes.Unauthenticated, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ep := &registrationpb.Endpoint{Service: "reviews", Namespace: tc.namespace, Address: "127.0.0.1", Port: tc.port}
			_, err := register(ctx, t, tc.cc, ep)
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("Register(%v) = %v, want code %v", ep, err, tc.wantCode)
			}
			if tc.wantCode != codes.OK {
				for _, r := range s.ConfigDump().Registrations {
					if r.Port == tc.port {
						t.Errorf("ConfigDump().Registrations has refused endpoint %+v", r)
					}
				}
				return
			}
			found := false
			for _, r := range s.ConfigDump().Registrations {
				if r.Port == tc.port {
					found = true
					if r.Identity != tc.wantIdentity {
						t.Errorf("ConfigDump() registration on port %d has Identity %q, want %q", tc.port, r.Identity, tc.wantIdentity)
					}
				}
			}
			if !found {
				t.Errorf("ConfigDump() has no registration on port %d", tc.port)
			}
		})
	}
}

// TestOpenMeshRegistersAnonymously: with WithInsecureRegistration, a
// workload without a certificate registers, over TLS or the plaintext
// port, and its endpoint has no identity; a certificate that does not
// verify is still refused, never taken as none.
func TestOpenMeshRegistersAnonymously(t *testing.T) {
	ctx := testContext(t)
	s, plain := start(t, WithDataDir(t.TempDir()))
	addr := serveSecure(t, s)
	foreign, err := ca.LoadOrCreate(t.TempDir(), "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	tlsNoCert, err := dialer(addr, s.CARootPEM())(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tlsNoCert.Close()
	badCert, err := dialer(addr, s.CARootPEM())(ctx, workloadCert(t, foreign, "/ns/default/sa/ratings"))
	if err != nil {
		t.Fatal(err)
	}
	defer badCert.Close()
	for _, tc := range []struct {
		name     string
		cc       *grpc.ClientConn
		port     uint32
		wantCode codes.Code
	}{
		{"TLS without a certificate", tlsNoCert, 9101, codes.OK},
		{"plaintext port", plain, 9102, codes.OK},
		{"another root", badCert, 9103, codes.Unauthenticated},
	} {
		ep := &registrationpb.Endpoint{Service: "ratings", Address: "127.0.0.1", Port: tc.port}
		if _, err := register(ctx, t, tc.cc, ep); status.Code(err) != tc.wantCode {
			t.Errorf("%s: Register(%v) = %v, want code %v", tc.name, ep, err, tc.wantCode)
		}
	}
	got := map[uint32]string{}
	for _, r := range s.ConfigDump().Registrations {
		got[r.Port] = r.Identity
	}
	if diff := cmp.Diff(got, map[uint32]string{9101: "", 9102: ""}); diff != "" {
		t.Errorf("registrations by port, with identities (-got +want):\n%s", diff)
	}
}

// TestAutoMTLSFollowsRegisteredIdentity: a service whose only endpoint
// registered with a certificate gets a cluster with mTLS to exactly that
// identity, from the real control plane's CDS cache.
func TestAutoMTLSFollowsRegisteredIdentity(t *testing.T) {
	ctx := testContext(t)
	s, _ := start(t, WithDataDir(t.TempDir()))
	addr := serveSecure(t, s)
	cc, err := dialer(addr, s.CARootPEM())(ctx, workloadCert(t, s.ca, "/ns/default/sa/ratings"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := register(ctx, t, cc, &registrationpb.Endpoint{Service: "ratings", Address: "127.0.0.1", Port: 9080}); err != nil {
		t.Fatal(err)
	}
	name := "outbound|9080||ratings.default.svc.cluster.local"
	waitFor(ctx, t, func() bool {
		r, ok := s.caches[resource.ClusterType].GetResources()[name]
		c, _ := r.(*v3clusterpb.Cluster)
		return ok && c.GetTransportSocket() != nil
	})
	if diff := cmp.Diff(clusterSANs(t, s, name), []string{"spiffe://cluster.local/ns/default/sa/ratings"}); diff != "" {
		t.Errorf("cluster %s SANs (-got +want):\n%s", name, diff)
	}
	listener := "grpc/server?xds.resource.listening_address=127.0.0.1:9080"
	if _, ok := s.caches[resource.ListenerType].GetResources()[listener]; !ok {
		t.Errorf("LDS has no server listener %q", listener)
	}
}

// clusterSANs returns the exact SANs the cluster name's TLS context
// accepts, or nil if the cluster has no TLS.
func clusterSANs(t *testing.T, s *Server, name string) []string {
	t.Helper()
	c, _ := s.caches[resource.ClusterType].GetResources()[name].(*v3clusterpb.Cluster)
	if c.GetTransportSocket() == nil {
		return nil
	}
	utc := &v3tlspb.UpstreamTlsContext{}
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(utc); err != nil {
		t.Fatal(err)
	}
	var sans []string
	for _, m := range utc.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchSubjectAltNames() {
		sans = append(sans, m.GetExact())
	}
	return sans
}

// testCA is a root made in the test, to sign the certificates a CA of ours
// never would.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert, key}
}

func (c *testCA) issue(t *testing.T, mutate func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		NotBefore:    time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/default/sa/reviews"}},
	}
	mutate(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// TestVerifyWorkloadCertRejectsBadCertificates guards the registration's
// certificate check against the certificates a trusted CA could be made to
// sign, or that are stale: two URI SANs, a foreign trust domain, CA:true,
// no client-auth usage, expiry, and a root that is not the mesh's.
func TestVerifyWorkloadCertRejectsBadCertificates(t *testing.T) {
	root := newTestCA(t)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	now := time.Now()
	tests := []struct {
		name    string
		cert    *x509.Certificate
		now     time.Time
		wantErr bool
	}{
		{"valid", root.issue(t, func(*x509.Certificate) {}), now, false},
		{"two URI SANs", root.issue(t, func(c *x509.Certificate) {
			c.URIs = append(c.URIs, &url.URL{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/admin/sa/root"})
		}), now, true},
		{"no URI SAN", root.issue(t, func(c *x509.Certificate) { c.URIs = nil; c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)} }), now, true},
		{"foreign trust domain", root.issue(t, func(c *x509.Certificate) { c.URIs[0].Host = "evil.example" }), now, true},
		{"not a SPIFFE ID", root.issue(t, func(c *x509.Certificate) { c.URIs[0].Scheme = "https" }), now, true},
		{"CA:true leaf", root.issue(t, func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign }), now, true},
		{"server auth only", root.issue(t, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }), now, true},
		{"expired", root.issue(t, func(*x509.Certificate) {}), now.Add(2 * time.Hour), true},
		{"another root", newTestCA(t).issue(t, func(*x509.Certificate) {}), now, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := verifyWorkloadCert([]*x509.Certificate{tc.cert}, []*x509.Certificate{root.cert}, td, tc.now)
			if (err != nil) != tc.wantErr {
				t.Fatalf("verifyWorkloadCert(%s) = %v, %v, want error %v", tc.name, id, err, tc.wantErr)
			}
			if err == nil && id.String() != "spiffe://cluster.local/ns/default/sa/reviews" {
				t.Errorf("verifyWorkloadCert(%s) = %v, want spiffe://cluster.local/ns/default/sa/reviews", tc.name, id)
			}
		})
	}
}

func TestIdentityNamespace(t *testing.T) {
	tests := []struct{ path, want string }{
		{"/ns/default/sa/reviews", "default"},
		{"/ns/shop/sa/x", "shop"},
		{"/ns/default", ""},
		{"/ns/default/sa/reviews/extra", ""},
		{"/namespace/default/sa/reviews", ""},
		{"/ns//sa/reviews", ""},
	}
	for _, tc := range tests {
		id, err := spiffeid.FromPath(spiffeid.RequireTrustDomainFromString("cluster.local"), tc.path)
		if err != nil {
			if tc.want != "" {
				t.Fatal(err)
			}
			continue
		}
		if got := identityNamespace(id); got != tc.want {
			t.Errorf("identityNamespace(%s) = %q, want %q", id, got, tc.want)
		}
	}
}
