package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// errAny stands for "some error" in tables where the refusal comes from
// crypto/tls itself rather than from this package.
var errAny = errors.New("any error")

func checkErr(t *testing.T, what string, got, want error) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Errorf("%s = %v, want success", what, got)
	case want == errAny && got == nil:
		t.Errorf("%s = nil, want an error", what)
	case want != nil && want != errAny && !errors.Is(got, want):
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// leafEdits are the ways a leaf certificate goes wrong.
var (
	asCA = func(c *x509.Certificate) {
		c.IsCA = true
		c.KeyUsage |= x509.KeyUsageCertSign
	}
	expired = func(c *x509.Certificate) {
		c.NotBefore = time.Now().Add(-2 * time.Hour)
		c.NotAfter = time.Now().Add(-time.Minute)
	}
	notYetValid = func(c *x509.Certificate) {
		c.NotBefore = time.Now().Add(time.Hour)
		c.NotAfter = time.Now().Add(2 * time.Hour)
	}
	serverAuthOnly = func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }
	clientAuthOnly = func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }
	dnsOnly        = func(c *x509.Certificate) { c.DNSNames = []string{"frontend.example.org"} }
)

func TestServerRejectsInvalidClientSVIDs(t *testing.T) {
	p := newPKI(t)
	other := newTestCA(t, "other.org")
	tests := []struct {
		name    string
		cert    *tls.Certificate // nil: no client certificate
		wantErr error
	}{
		{name: "valid SVID", cert: p.ca.svid(t, clientID)},
		{name: "no certificate", cert: nil, wantErr: errAny},
		{name: "foreign trust domain", cert: other.svid(t, foreignID), wantErr: ErrUntrusted},
		{name: "our trust domain signed by a foreign CA", cert: other.svid(t, clientID), wantErr: ErrUntrusted},
		{name: "CA:true leaf", cert: p.ca.issue(t, []string{clientID}, asCA), wantErr: ErrInvalidSVID},
		{name: "expired", cert: p.ca.issue(t, []string{clientID}, expired), wantErr: ErrUntrusted},
		{name: "not yet valid", cert: p.ca.issue(t, []string{clientID}, notYetValid), wantErr: ErrUntrusted},
		{name: "two URI SANs", cert: p.ca.issue(t, []string{clientID, serverID}), wantErr: ErrInvalidSVID},
		{name: "no URI SAN", cert: p.ca.issue(t, nil, dnsOnly), wantErr: ErrInvalidSVID},
		{name: "non-SPIFFE URI SAN", cert: p.ca.issue(t, []string{"https://example.org/frontend"}), wantErr: ErrInvalidSVID},
		{name: "trust domain ID as leaf", cert: p.ca.issue(t, []string{"spiffe://example.org"}), wantErr: ErrInvalidSVID},
		{name: "server-auth-only key usage", cert: p.ca.issue(t, []string{clientID}, serverAuthOnly), wantErr: ErrUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clientCfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
			if tt.cert != nil {
				clientCfg.Certificates = []tls.Certificate{*tt.cert}
			}
			res := handshake(t, ServerConfig(p.server, nil), clientCfg)
			checkErr(t, "server Handshake()", res.serverErr, tt.wantErr)
			if tt.wantErr != nil && res.clientErr == nil {
				t.Errorf("client Read() = nil, want the server's refusal")
			}
		})
	}
}

func TestClientRejectsInvalidServerSVIDs(t *testing.T) {
	p := newPKI(t)
	other := newTestCA(t, "other.org")
	foreignServer := "spiffe://other.org/ns/default/sa/reviews"
	tests := []struct {
		name     string
		cert     *tls.Certificate
		expected []string
		wantErr  error
	}{
		{name: "valid SVID", cert: p.ca.svid(t, serverID), expected: []string{serverID}},
		{name: "one of several expected", cert: p.ca.svid(t, serverID), expected: []string{clientID, serverID}},
		{name: "wrong SPIFFE ID from the trusted CA", cert: p.ca.svid(t, "spiffe://example.org/ns/default/sa/ratings"), expected: []string{serverID}, wantErr: ErrUnauthorized},
		{name: "expected ID in a foreign trust domain", cert: other.svid(t, foreignServer), expected: []string{foreignServer}, wantErr: ErrUntrusted},
		{name: "expected ID signed by a foreign CA", cert: other.svid(t, serverID), expected: []string{serverID}, wantErr: ErrUntrusted},
		{name: "CA:true leaf", cert: p.ca.issue(t, []string{serverID}, asCA), expected: []string{serverID}, wantErr: ErrInvalidSVID},
		{name: "expired", cert: p.ca.issue(t, []string{serverID}, expired), expected: []string{serverID}, wantErr: ErrUntrusted},
		{name: "two URI SANs", cert: p.ca.issue(t, []string{serverID, clientID}), expected: []string{serverID}, wantErr: ErrInvalidSVID},
		{name: "no URI SAN", cert: p.ca.issue(t, nil, dnsOnly), expected: []string{serverID}, wantErr: ErrInvalidSVID},
		{name: "client-auth-only key usage", cert: p.ca.issue(t, []string{serverID}, clientAuthOnly), expected: []string{serverID}, wantErr: ErrUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serverCfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*tt.cert}}
			res := handshake(t, serverCfg, mustClientConfig(t, p.client, tt.expected...))
			checkErr(t, "client handshake", res.clientErr, tt.wantErr)
		})
	}
}

func TestServerAuthorizerRejectsWrongSPIFFEIDFromTrustedCA(t *testing.T) {
	p := newPKI(t)
	other := newTestCA(t, "other.org")
	frontend := spiffeid.RequireFromString(clientID)
	tests := []struct {
		name      string
		authorize Authorizer
		trusted   []*testCA
		client    *tls.Certificate
		wantErr   error
	}{
		{name: "allowed ID", authorize: AuthorizeOneOf(frontend), client: p.ca.svid(t, clientID)},
		{name: "other ID of the trust domain", authorize: AuthorizeOneOf(frontend), client: p.ca.svid(t, "spiffe://example.org/ns/default/sa/ratings"), wantErr: ErrUnauthorized},
		{name: "nil accepts own trust domain", client: p.ca.svid(t, "spiffe://example.org/ns/default/sa/ratings")},
		{name: "nil refuses a federated trust domain", trusted: []*testCA{p.ca, other}, client: other.svid(t, foreignID), wantErr: ErrUnauthorized},
		{name: "federated trust domain allowed explicitly", authorize: AuthorizeMemberOf(other.td), trusted: []*testCA{p.ca, other}, client: other.svid(t, foreignID)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.trusted != nil {
				p.server.setTrusted(tt.trusted...)
				t.Cleanup(func() { p.server.setTrusted(p.ca) })
			}
			clientCfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{*tt.client}}
			res := handshake(t, ServerConfig(p.server, tt.authorize), clientCfg)
			checkErr(t, "server Handshake()", res.serverErr, tt.wantErr)
		})
	}
}

func TestResumptionAfterTrustChangeRejected(t *testing.T) {
	tests := []struct {
		name string
		// distrust changes the trust of one side so that it no longer
		// trusts the other's CA.
		distrust          func(p pki, newCA *testCA)
		wantServerErr     error
		wantClientErr     error
		wantResumedReject bool // the server logs its refusal of a resumed session
	}{
		{
			name:              "server stops trusting the client's CA",
			distrust:          func(p pki, newCA *testCA) { p.server.setTrusted(newCA) },
			wantServerErr:     ErrUntrusted,
			wantClientErr:     errAny,
			wantResumedReject: true,
		},
		{
			name:          "client stops trusting the server's CA",
			distrust:      func(p pki, newCA *testCA) { p.client.setTrusted(newCA) },
			wantServerErr: errAny,
			wantClientErr: ErrUntrusted,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPKI(t)
			var logs syncBuffer
			serverCfg := ServerConfig(p.server, nil, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			clientCfg := mustClientConfig(t, p.client, serverID)
			clientCfg.ServerName = "reviews.test" // the session cache key
			clientCfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)

			first := handshake(t, serverCfg, clientCfg)
			if first.serverErr != nil || first.clientErr != nil {
				t.Fatalf("first handshake: server %v, client %v, want success", first.serverErr, first.clientErr)
			}
			// Without a trust change the session resumes: the refusal
			// below is of a resumption, not of a full handshake.
			second := handshake(t, serverCfg, clientCfg)
			if second.serverErr != nil || second.clientErr != nil {
				t.Fatalf("second handshake: server %v, client %v, want success", second.serverErr, second.clientErr)
			}
			if diff := cmp.Diff([]bool{second.serverState.DidResume, second.clientState.DidResume}, []bool{true, true}); diff != "" {
				t.Fatalf("second handshake DidResume (server, client) (-got +want):\n%s", diff)
			}

			tt.distrust(p, newTestCA(t, "example.org"))
			third := handshake(t, serverCfg, clientCfg)
			checkErr(t, "server Handshake() after the trust change", third.serverErr, tt.wantServerErr)
			checkErr(t, "client handshake after the trust change", third.clientErr, tt.wantClientErr)
			if got := strings.Contains(logs.String(), "resumed=true"); got != tt.wantResumedReject {
				t.Errorf("server logged a refused resumption = %v, want %v; logs:\n%s", got, tt.wantResumedReject, logs.String())
			}
		})
	}
}

func TestRotationAppliesToNextHandshake(t *testing.T) {
	p := newPKI(t)
	newCA := newTestCA(t, "example.org")
	serverCfg := ServerConfig(p.server, nil)
	clientCfg := mustClientConfig(t, p.client, serverID)

	serials := func(res handshakeResult) []string {
		t.Helper()
		if res.serverErr != nil || res.clientErr != nil {
			t.Fatalf("handshake: server %v, client %v, want success", res.serverErr, res.clientErr)
		}
		return []string{
			res.clientState.PeerCertificates[0].SerialNumber.String(),
			res.serverState.PeerCertificates[0].SerialNumber.String(),
		}
	}
	before := serials(handshake(t, serverCfg, clientCfg))

	// Root rotation: both sides trust old and new roots, then move to
	// SVIDs from the new root, with the same configurations.
	p.server.setTrusted(p.ca, newCA)
	p.client.setTrusted(p.ca, newCA)
	newServer, newClient := newCA.svid(t, serverID), newCA.svid(t, clientID)
	p.server.setCertificate(newServer)
	p.client.setCertificate(newClient)
	got := serials(handshake(t, serverCfg, clientCfg))
	want := []string{newServer.Leaf.SerialNumber.String(), newClient.Leaf.SerialNumber.String()}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("serials (server's, client's) after rotation (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(got, before); diff == "" {
		t.Errorf("serials after rotation = %v, the same as before", got)
	}

	// Dropping the old root takes effect at once too.
	p.server.setTrusted(newCA)
	p.client.setCertificate(p.ca.svid(t, clientID))
	res := handshake(t, serverCfg, clientCfg)
	checkErr(t, "server Handshake() with a client of the dropped root", res.serverErr, ErrUntrusted)
}

func TestClientConfigNeverAcceptsAnyServer(t *testing.T) {
	p := newPKI(t)
	tests := []struct {
		name     string
		expected []spiffeid.ID
		wantErr  error
	}{
		{name: "none", expected: nil, wantErr: ErrNoExpectedIDs},
		{name: "zero ID", expected: []spiffeid.ID{{}}, wantErr: ErrNoExpectedIDs},
		{name: "zero among valid", expected: []spiffeid.ID{spiffeid.RequireFromString(serverID), {}}, wantErr: ErrNoExpectedIDs},
		{name: "one", expected: []spiffeid.ID{spiffeid.RequireFromString(serverID)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ClientConfig(p.client, tt.expected...)
			checkErr(t, "ClientConfig()", err, tt.wantErr)
			if (cfg == nil) != (tt.wantErr != nil) {
				t.Errorf("ClientConfig(%v) = %v, want a config only on success", tt.expected, cfg)
			}
		})
	}
}

func TestPeerID(t *testing.T) {
	ca := newTestCA(t, "example.org")
	two := ca.issue(t, []string{clientID, serverID})
	one := ca.svid(t, clientID)
	tests := []struct {
		name    string
		certs   []*x509.Certificate
		want    string
		wantErr error
	}{
		{name: "no certificate", wantErr: ErrNoCertificate},
		{name: "two URI SANs", certs: []*x509.Certificate{two.Leaf}, wantErr: ErrInvalidSVID},
		{name: "SVID", certs: []*x509.Certificate{one.Leaf}, want: clientID},
		{name: "bad URI", certs: []*x509.Certificate{{URIs: []*url.URL{{Scheme: "spiffe", Host: "EXAMPLE.org", Path: "/x"}}}}, wantErr: ErrInvalidSVID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := PeerID(tls.ConnectionState{PeerCertificates: tt.certs})
			checkErr(t, "PeerID()", err, tt.wantErr)
			got := ""
			if !id.IsZero() {
				got = id.String()
			}
			if got != tt.want {
				t.Errorf("PeerID() = %q, want %q", got, tt.want)
			}
		})
	}
}
