package mesh

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	v3rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/authz"
)

// denyAll returns a policy whose authorization denies every call.
func denyAll(t *testing.T) *serverPolicy {
	t.Helper()
	e, err := authz.New([]*v3rbacpb.RBAC{{
		Action: v3rbacpb.RBAC_DENY,
		Policies: map[string]*v3rbacpb.Policy{"deny-all": {
			Permissions: []*v3rbacpb.Permission{{Rule: &v3rbacpb.Permission_Any{Any: true}}},
			Principals:  []*v3rbacpb.Principal{{Identifier: &v3rbacpb.Principal_Any{Any: true}}},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &serverPolicy{mode: modePermissive, authz: e}
}

func readyWatch(p *serverPolicy) *policyWatch {
	w := &policyWatch{ready: make(chan struct{})}
	w.set(p)
	return w
}

// TestAdmitEnforcesPolicyArrivingAfterFastPath checks that a call admitted
// on the fast path (no authorization: headers not read) does not make the
// next call skip a policy that has arrived since.
func TestAdmitEnforcesPolicyArrivingAfterFastPath(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &Server{opts: newOptions(nil, ServerOption.applyServer)}
	w := readyWatch(&serverPolicy{mode: modePermissive})
	s.policies.add("127.0.0.1:9000", w)
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9000}
	ctx = peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 5555}, LocalAddr: local})
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(":authority", "greeter:9080"))

	if _, err := s.admit(ctx, "/greeter.Greeter/SayHello"); err != nil {
		t.Fatalf("admit() with no authorization policy = %v, want nil", err)
	}
	w.set(denyAll(t))
	if _, err := s.admit(ctx, "/greeter.Greeter/SayHello"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("admit() after a deny-all policy arrived = %v, want PermissionDenied", err)
	}
	w.set(&serverPolicy{mode: modePermissive})
	if _, err := s.admit(ctx, "greeter.Greeter/SayHello"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("admit() of a path without '/' on the fast path = %v, want PermissionDenied", err)
	}
	w.set(&serverPolicy{mode: modeStrict})
	if _, err := s.admit(ctx, "/greeter.Greeter/SayHello"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("admit() of a plaintext call under STRICT = %v, want Unauthenticated", err)
	}
}

// TestGuardEnforcesPolicyArrivingAfterFastPath is the HTTP counterpart, and
// checks that the handler never sees X-Forwarded-Client-Cert whether or not
// the headers are copied.
func TestGuardEnforcesPolicyArrivingAfterFastPath(t *testing.T) {
	w := readyWatch(&serverPolicy{mode: modePermissive})
	var sawXFCC []string
	g := &guard{opts: newOptions(nil, HTTPServerOption.applyHTTPServer), h: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		sawXFCC = append(sawXFCC, r.Header.Get("X-Forwarded-Client-Cert"))
		if _, ok := PeerID(r.Context()); ok {
			t.Errorf("PeerID() of a plaintext request = ok")
		}
	})}
	ml := &meshListener{watch: w}
	serve := func(xfcc string) int {
		r := httptest.NewRequest("GET", "http://kb:8080/kb?x=1", nil)
		r = r.WithContext(context.WithValue(r.Context(), httpListenerKey{}, ml))
		if xfcc != "" {
			r.Header.Set("X-Forwarded-Client-Cert", xfcc)
		}
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, r)
		if xfcc != "" && r.Header.Get("X-Forwarded-Client-Cert") != xfcc {
			t.Errorf("the caller's request lost its X-Forwarded-Client-Cert header")
		}
		return rec.Code
	}
	if code := serve(""); code != http.StatusOK {
		t.Fatalf("GET with no authorization policy = %d, want 200", code)
	}
	if code := serve("By=spiffe://evil"); code != http.StatusOK {
		t.Fatalf("GET with X-Forwarded-Client-Cert = %d, want 200", code)
	}
	w.set(denyAll(t))
	if code := serve(""); code != http.StatusForbidden {
		t.Errorf("GET after a deny-all policy arrived = %d, want 403", code)
	}
	if len(sawXFCC) != 2 || sawXFCC[0] != "" || sawXFCC[1] != "" {
		t.Errorf("the handler saw X-Forwarded-Client-Cert %q, want none", sawXFCC)
	}
}

// TestPeerIDCache checks that the cached SPIFFE ID of a certificate is the
// one mtls.PeerID reads, for valid and invalid certificates alike.
func TestPeerIDCache(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := func(uris ...string) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		for _, u := range uris {
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, pu)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var c peerIDCache
	want := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/greeter")
	good := cert(want.String())
	for range 2 { // the second time from the cache
		if id, ok := c.of(good); !ok || id != want {
			t.Errorf("of(greeter's certificate) = %v, %v, want %v, true", id, ok, want)
		}
	}
	for _, bad := range []*x509.Certificate{cert(), cert("spiffe://cluster.local"), cert("https://example.com/x")} {
		if id, ok := c.of(bad); ok {
			t.Errorf("of(certificate with URIs %v) = %v, true, want not ok", bad.URIs, id)
		}
	}
	if n := c.size(); n != 4 {
		t.Errorf("size() = %d, want 4", n)
	}
	if id, ok := peerIDOf(credentials.TLSInfo{}); ok {
		t.Errorf("peerIDOf(TLS without a certificate) = %v, true, want not ok", id)
	}
}
