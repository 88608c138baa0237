package xdsserver

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	v3discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/trellismesh/trellis/internal/ca"
	"github.com/trellismesh/trellis/internal/registrationpb"
)

// DefaultTrustDomain is the trust domain of a generated CA when
// WithTrustDomain is not given: Istio's default.
const DefaultTrustDomain = "cluster.local"

// ControlPlaneServiceAccount and ControlPlaneNamespace make the control
// plane's own SPIFFE ID on its secure port:
// spiffe://<trust-domain>/ns/trellis-system/sa/xdsserver.
const (
	ControlPlaneNamespace      = "trellis-system"
	ControlPlaneServiceAccount = "xdsserver"
)

// WorkloadIdentity is the identity a join token grants: the CA issues the
// holder spiffe://<trust-domain>/ns/<Namespace>/sa/<ServiceAccount>.
// Namespace and ServiceAccount are required; Expires and SingleUse limit
// the token, not the certificates it got, which keep renewing (within
// WithMaxRenewalChain). In JSON (cmd/xdsserver's -join-tokens file):
//
//	{"<token>": {"namespace": "default", "serviceAccount": "reviews",
//	  "expires": "2026-07-01T00:00:00Z", "singleUse": true}}
type WorkloadIdentity struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	// Expires, if not zero, is when the CA stops accepting the token
	// (RFC 3339 in JSON).
	Expires time.Time `json:"expires,omitzero"`
	// SingleUse makes the token good for one certificate: the first
	// request it authenticates that is signed consumes it. With
	// WithDataDir the record of consumed tokens is kept there
	// (ConsumedTokensFile) and survives restarts; it is not shared between
	// replicas, each of which may issue once for the same token.
	SingleUse bool `json:"singleUse,omitempty"`
}

// ConsumedTokensFile is the file of the data directory (WithDataDir) that
// records the single-use join tokens consumed, by their SHA-256 hashes.
const ConsumedTokensFile = "consumed-join-tokens"

// DefaultMaxRenewalChain is how long workloads may renew their
// certificates without presenting their join token again, unless
// WithMaxRenewalChain says otherwise: 24 hours, the longest lifetime of a
// certificate, so that a stolen certificate and key serve no longer by
// being renewed than the longest certificate the token itself could get.
const DefaultMaxRenewalChain = ca.DefaultMaxRenewalChain

// WithDataDir keeps the control plane's state in dir: the CA root
// (root-cert.pem, root-key.pem), generated on first start and reused after,
// so a restart keeps the same trust. With it (or WithCAFiles) the Server
// runs the mesh CA.
func WithDataDir(dir string) Option {
	return optionFunc(func(o *options) { o.dataDir = dir })
}

// WithCAFiles runs the mesh CA with the root certificate and key in the
// given PEM files instead of a generated root.
func WithCAFiles(certFile, keyFile string) Option {
	return optionFunc(func(o *options) { o.caCert, o.caKey = certFile, keyFile })
}

// WithCATrustAnchors adds the roots in the PEM file bundleFile to the mesh's
// trust bundle, beside the CA's own root, for a root rotation (Istio's
// root-cert.pem holding several roots): workloads are given every root,
// trust peers whose certificates chain to any of them, and may renew with
// such a certificate. To move from root A to root B, each step lasting at
// least the longest certificate lifetime: sign with A trusting B, then sign
// with B trusting A, then sign with B alone.
func WithCATrustAnchors(bundleFile string) Option {
	return optionFunc(func(o *options) { o.caAnchors = bundleFile })
}

// WithTrustDomain sets the trust domain of a generated CA root. If not
// given, DefaultTrustDomain. A root loaded from files or the data
// directory must agree with it.
func WithTrustDomain(td string) Option {
	return optionFunc(func(o *options) { o.trustDomain = td })
}

// WithJoinTokens sets the tokens workloads present (as "authorization:
// Bearer <token>") to get their first certificate, each bound to the one
// identity the CA issues for it, until it expires or, if single-use, is
// consumed. Renewals authenticate with the current certificate instead,
// for at most WithMaxRenewalChain since the token was last presented.
func WithJoinTokens(tokens map[string]WorkloadIdentity) Option {
	return optionFunc(func(o *options) { o.joinTokens = tokens })
}

// WithMaxRenewalChain bounds how long a workload renews its certificate
// with the certificate alone: the CA records in each certificate when the
// workload last presented its join token, issues none that expires later
// than that plus d, and refuses (Unauthenticated) a renewal that could not
// reach past the certificate presented, so the workload presents its token
// again (Trellis's workloads do so by themselves) while its certificate is
// still valid. A certificate recording no such time, as one of another
// root, counts from its NotBefore. A renewal is also never longer-lived
// than the certificate presented. If zero or less, DefaultMaxRenewalChain.
func WithMaxRenewalChain(d time.Duration) Option {
	return optionFunc(func(o *options) { o.maxChain = d })
}

// WithServingNames adds DNS names and IP addresses to the certificate the
// control plane presents on its secure port, beyond "localhost" and
// 127.0.0.1, so that clients can verify it by the name they dial.
func WithServingNames(names ...string) Option {
	return optionFunc(func(o *options) { o.servingNames = append(o.servingNames, names...) })
}

// newCA starts the mesh CA if the options ask for one.
func (s *Server) newCA() error {
	o := s.opts
	if o.dataDir == "" && o.caCert == "" {
		return nil
	}
	td := o.trustDomain
	if td == "" {
		td = DefaultTrustDomain
	}
	tdID, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return fmt.Errorf("xdsserver: trust domain %q: %w", td, err)
	}
	caOpts := []ca.Option{ca.WithLogger(s.log.With("component", "ca")), ca.WithTrustDomain(tdID)}
	if o.caAnchors != "" {
		roots, err := readRoots(o.caAnchors)
		if err != nil {
			return fmt.Errorf("xdsserver: trust anchors: %w", err)
		}
		caOpts = append(caOpts, ca.WithTrustAnchors(roots...))
	}
	if o.dataDir != "" {
		if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
			return fmt.Errorf("xdsserver: data directory: %w", err)
		}
	}
	var authority *ca.CA
	if o.caCert != "" {
		authority, err = ca.LoadFiles(o.caCert, o.caKey, caOpts...)
	} else {
		authority, err = ca.LoadOrCreate(o.dataDir, td, caOpts...)
	}
	if err != nil {
		return fmt.Errorf("xdsserver: %w", err)
	}
	tokens := map[string]ca.Identity{}
	for tok, id := range o.joinTokens {
		tokens[tok] = ca.Identity{Namespace: id.Namespace, ServiceAccount: id.ServiceAccount, Expires: id.Expires, SingleUse: id.SingleUse}
	}
	svcOpts := append(caOpts, ca.WithJoinTokens(tokens), ca.WithMaxRenewalChain(o.maxChain))
	if o.dataDir != "" {
		svcOpts = append(svcOpts, ca.WithConsumedTokensFile(filepath.Join(o.dataDir, ConsumedTokensFile)))
	}
	svc, err := ca.NewService(authority, svcOpts...)
	if err != nil {
		return fmt.Errorf("xdsserver: %w", err)
	}
	s.ca, s.caService = authority, svc
	s.servingID, err = spiffeid.FromSegments(tdID, "ns", ControlPlaneNamespace, "sa", ControlPlaneServiceAccount)
	if err != nil {
		return fmt.Errorf("xdsserver: %w", err)
	}
	return nil
}

// trustDomain is the mesh's trust domain: the CA's, or DefaultTrustDomain
// when the Server runs no CA.
func (s *Server) trustDomain() string {
	if s.ca == nil {
		return DefaultTrustDomain
	}
	return s.ca.TrustDomain().String()
}

// readRoots reads every certificate of a PEM file.
func readRoots(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		roots = append(roots, c)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return roots, nil
}

// CARootPEM returns the mesh's trust bundle — the CA's root, then the other
// trust anchors (WithCATrustAnchors) — which workloads need to reach the
// secure port, or nil if the Server runs no CA.
func (s *Server) CARootPEM() []byte {
	if s.ca == nil {
		return nil
	}
	return s.ca.RootPEM()
}

// ServeSecure serves, on lis and over TLS, everything Serve does plus the
// mesh CA's certificate API (Istio's IstioCertificateService), as istiod's
// port 15012 does. The control plane presents a certificate from its own
// CA for spiffe://<trust-domain>/ns/trellis-system/sa/xdsserver (and
// "localhost", 127.0.0.1 and WithServingNames), renewed at half life. A
// client certificate is requested but not required by the TLS handshake,
// since a workload's first certificate request carries a join token
// instead; xDS and load reports on this port need one (an SVID of the mesh
// CA: UNAUTHENTICATED otherwise), and so do registrations unless
// WithInsecureRegistration. It returns ErrServerClosed after Shutdown or
// Close, and an error at once if the Server runs no CA.
func (s *Server) ServeSecure(lis net.Listener) error {
	if s.ca == nil {
		lis.Close()
		return fmt.Errorf("xdsserver: ServeSecure needs the CA (WithDataDir or WithCAFiles)")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		lis.Close()
		return ErrServerClosed
	}
	if s.secure == nil {
		cc := &servingCert{s: s}
		s.secure = grpc.NewServer(append([]grpc.ServerOption{
			grpc.Creds(credentials.NewTLS(&tls.Config{
				MinVersion:     tls.VersionTLS13,
				GetCertificate: cc.get,
				ClientAuth:     tls.RequestClientCert, // the CA verifies renewals itself
			})),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
			grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
			grpc.MaxConcurrentStreams(1 << 16),
			grpc.ChainUnaryInterceptor(s.metrics.caInterceptor),
			grpc.ChainStreamInterceptor(s.requireIdentity),
		}, s.admissionOptions()...)...)
		v3discoverygrpc.RegisterAggregatedDiscoveryServiceServer(s.secure, s.xds)
		registrationpb.RegisterRegistrationServer(s.secure, &registrationService{s: s})
		registerLRS(s.secure, s)
		s.caService.Register(s.secure)
	}
	srv := s.secure
	s.mu.Unlock()
	err := srv.Serve(lis)
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed || err == nil {
		return ErrServerClosed
	}
	return err
}

// servingCert is the control plane's certificate on its secure port,
// issued by its own CA and renewed once half its life has passed.
type servingCert struct {
	s       *Server
	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
}

func (c *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil && time.Now().Before(c.renewAt) {
		return c.cert, nil
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	dns := []string{"localhost"}
	for _, n := range c.s.opts.servingNames {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	cert, err := c.s.ca.ServerCertificate(c.s.servingID, dns, ips)
	if err != nil {
		if c.cert != nil {
			return c.cert, nil // keep serving the old one until it is renewed
		}
		return nil, err
	}
	c.cert = cert
	c.renewAt = cert.Leaf.NotBefore.Add(cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore) / 2)
	return cert, nil
}

// caIssued is one entry of /debug/ca.
type caIssued struct {
	Serial   string    `json:"serial"`
	ID       string    `json:"spiffeId"`
	IssuedAt time.Time `json:"issuedAt"`
	NotAfter time.Time `json:"notAfter"`
}

// serveCA is /debug/ca: the CA's trust domain, root, and the certificates
// it issued that have not expired, soonest to expire first.
func (s *Server) serveCA(w http.ResponseWriter, _ *http.Request) {
	if s.ca == nil {
		http.Error(w, "this control plane runs no CA", http.StatusNotFound)
		return
	}
	out := struct {
		TrustDomain string     `json:"trustDomain"`
		Root        string     `json:"rootPEM"`
		RootExpires time.Time  `json:"rootNotAfter"`
		Issued      []caIssued `json:"issued"`
	}{TrustDomain: s.ca.TrustDomain().String(), Root: string(s.ca.RootPEM()), RootExpires: s.ca.Root().NotAfter, Issued: []caIssued{}}
	for _, ic := range s.ca.Issued() {
		out.Issued = append(out.Issued, caIssued{Serial: ic.Serial, ID: ic.ID.String(), IssuedAt: ic.IssuedAt, NotAfter: ic.NotAfter})
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}
