package mesh

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/tls/certprovider"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshcert"
	"github.com/trellismesh/trellis/internal/replicas"
)

// Environment variables of the workload identity options.
const (
	// EnvJoinToken holds the join token (see WithJoinToken).
	EnvJoinToken = "TRELLIS_JOIN_TOKEN"
	// EnvTrustBundle names the PEM file of the mesh CA's root (see
	// WithTrustBundleFile).
	EnvTrustBundle = "TRELLIS_TRUST_BUNDLE"
	// EnvCAAddr holds the control plane's secure address (see WithCAAddr).
	EnvCAAddr = "TRELLIS_CA_ADDR"
)

// DefaultCAPort is the port of the control plane's secure address, where
// its CA serves, on the control plane's host (istiod's 15012).
const DefaultCAPort = "15012"

// identityWait bounds how long a handshake waits for a first certificate.
var identityWait = 10 * time.Second

// WithJoinToken gives the process a workload identity from the control
// plane's CA: the token (configured on the control plane, bound to one
// namespace and service account) gets a first certificate, renewed at half
// its life with the certificate itself. The CA is reached at WithCAAddr
// and verified with WithTrustBundleFile. If not given, the
// TRELLIS_JOIN_TOKEN environment variable is used. Without any identity
// option a process has no identity: it serves and calls only in plaintext,
// and a destination or a server policy that requires mTLS fails closed.
func WithJoinToken(token string) WorkloadOption {
	return workloadOption(func(o *options) { o.joinToken = token })
}

// WithTrustBundleFile names the PEM file of the mesh CA's root, with which
// a process verifies the control plane's CA before sending it its join
// token. If not given, TRELLIS_TRUST_BUNDLE, then root-cert.pem in the
// control plane's default data directory (for a control plane on the same
// machine).
func WithTrustBundleFile(path string) WorkloadOption {
	return workloadOption(func(o *options) { o.trustBundle = path })
}

// WithCAAddr sets the control plane's secure address ("host:port"), where
// its CA serves; with several replicas, a list of theirs
// ("a:15012,b:15012"), of which the process uses one and moves to another
// when it fails, as for WithControlPlane. If not given, TRELLIS_CA_ADDR,
// then port 15012 on each control-plane host.
func WithCAAddr(addr string) WorkloadOption {
	return workloadOption(func(o *options) { o.caAddr = addr })
}

// WithSPIFFEWorkloadAPI takes the workload identity from a SPIFFE Workload
// API (a SPIRE agent) at addr ("unix:///run/spire/agent.sock") instead of
// the control plane's CA.
func WithSPIFFEWorkloadAPI(addr string) WorkloadOption {
	return workloadOption(func(o *options) { o.workloadAPI = addr })
}

// WithIdentityFiles takes the workload identity from PEM files (an X.509
// SVID and its key, and the trust bundle), reloaded when they change.
func WithIdentityFiles(certFile, keyFile, bundleFile string) WorkloadOption {
	return workloadOption(func(o *options) { o.identityFiles = [3]string{certFile, keyFile, bundleFile} })
}

// WithX509Source takes the workload identity from go-spiffe sources, such
// as a workloadapi.X509Source the application already has.
func WithX509Source(svids x509svid.Source, bundles x509bundle.Source) WorkloadOption {
	return workloadOption(func(o *options) { o.svids, o.bundles = svids, bundles })
}

// WithCertificateTTL sets the lifetime the process asks the control
// plane's CA for its certificates (the CA caps it; by default 24 hours).
// Certificates are renewed at about half their life.
func WithCertificateTTL(d time.Duration) WorkloadOption {
	return workloadOption(func(o *options) { o.certTTL = d })
}

// identityKey says which identity the options ask for ("" for none); it
// keys the process's shared identities.
func (o *options) identityKey() string {
	switch {
	case o.svids != nil:
		return fmt.Sprintf("x509:%p:%p", o.svids, o.bundles)
	case o.workloadAPI != "":
		return "spiffe:" + o.workloadAPI
	case o.identityFiles[0] != "":
		return fmt.Sprintf("files:%q", o.identityFiles)
	case o.token() != "":
		return fmt.Sprintf("ca:%s:%s:%s:%v", o.caAddress(), o.bundleFile(), o.token(), o.certTTL)
	}
	return ""
}

func (o *options) token() string { return cmp.Or(o.joinToken, os.Getenv(EnvJoinToken)) }

func (o *options) bundleFile() string {
	if f := cmp.Or(o.trustBundle, os.Getenv(EnvTrustBundle)); f != "" {
		return f
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "trellis", "root-cert.pem")
	}
	return filepath.Join(".trellis", "root-cert.pem")
}

func (o *options) caAddress() string {
	if a := cmp.Or(o.caAddr, os.Getenv(EnvCAAddr)); a != "" {
		return a
	}
	cp, _, err := o.controlPlane()
	if err != nil {
		return ""
	}
	return replicas.WithPort(cp, DefaultCAPort) // every replica's secure port
}

// A workloadIdentity is one identity shared by every mesh connection and
// server of the process that asks for it. It starts in the background and
// is an identity.Source (and a meshcert.Source) whose methods wait, up to
// identityWait, for the first certificate.
type workloadIdentity struct {
	key    string
	refs   int
	ready  chan struct{}
	src    identity.Source
	err    error
	cancel context.CancelFunc
	done   chan struct{}
}

var (
	identitiesMu sync.Mutex
	identities   = map[string]*workloadIdentity{}
)

// acquireIdentity returns the process's identity for the options, starting
// it if needed, or nil if the options ask for none. Release it with
// releaseIdentity.
func (o *options) acquireIdentity() *workloadIdentity {
	key := o.identityKey()
	if key == "" {
		return nil
	}
	identitiesMu.Lock()
	defer identitiesMu.Unlock()
	if w := identities[key]; w != nil {
		w.refs++
		return w
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &workloadIdentity{key: key, refs: 1, ready: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	identities[key] = w
	meshcert.Register(key, w)
	go func() {
		defer close(w.done)
		w.src, w.err = o.startIdentity(ctx)
		if w.err != nil {
			o.logger.Error("mesh: no workload identity", "error", w.err)
		}
		close(w.ready)
	}()
	return w
}

func releaseIdentity(w *workloadIdentity) {
	if w == nil {
		return
	}
	identitiesMu.Lock()
	w.refs--
	last := w.refs == 0
	if last {
		delete(identities, w.key)
		meshcert.Unregister(w.key)
	}
	identitiesMu.Unlock()
	if last {
		w.cancel()
		<-w.done
		if w.src != nil {
			w.src.Close()
		}
	}
}

// startIdentity makes the identity source the options ask for; it blocks
// until the first certificate.
func (o *options) startIdentity(ctx context.Context) (identity.Source, error) {
	iopts := []identity.Option{identity.WithLogger(o.logger)}
	switch {
	case o.svids != nil:
		return x509Adapter{svids: o.svids, bundles: o.bundles}, nil
	case o.workloadAPI != "":
		return identity.NewWorkloadSource(ctx, o.workloadAPI, iopts...)
	case o.identityFiles[0] != "":
		f := o.identityFiles
		return identity.NewFileSource(f[0], f[1], f[2], iopts...)
	}
	bundlePath := o.bundleFile()
	rootPEM, err := os.ReadFile(bundlePath)
	if err != nil {
		return nil, fmt.Errorf("mesh: the mesh CA's root (WithTrustBundleFile or %s): %w", EnvTrustBundle, err)
	}
	td, err := trustDomainOf(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("mesh: %s: %w", bundlePath, err)
	}
	addr := o.caAddress()
	if addr == "" {
		return nil, fmt.Errorf("mesh: no address for the control plane's CA (WithCAAddr or %s)", EnvCAAddr)
	}
	dial := func(_ context.Context, cert *tls.Certificate) (*grpc.ClientConn, error) {
		cfg, err := controlPlaneTLS(bundlePath, td)
		if err != nil {
			return nil, err
		}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		target, err := replicas.Target(addr)
		if err != nil {
			return nil, fmt.Errorf("mesh: the control plane's CA: %w", err)
		}
		return grpc.NewClient(target, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	iopts = append(iopts, identity.WithJoinToken(o.token()))
	if o.certTTL > 0 {
		iopts = append(iopts, identity.WithTTL(o.certTTL))
	}
	return identity.NewCASource(ctx, dial, td, iopts...)
}

// controlPlaneTLS is the client TLS configuration for the control plane's
// secure port: its certificate must chain to the mesh CA's root (read from
// bundlePath at each connection, so a rotated root file takes effect) and
// carry the control plane's SPIFFE ID.
func controlPlaneTLS(bundlePath string, td spiffeid.TrustDomain) (*tls.Config, error) {
	rootPEM, err := os.ReadFile(bundlePath)
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		return nil, fmt.Errorf("mesh: %s holds no PEM certificate", bundlePath)
	}
	want, err := spiffeid.FromSegments(td, "ns", "trellis-system", "sa", "xdsserver")
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("mesh: the control plane presented no certificate")
			}
			if uris := cs.PeerCertificates[0].URIs; len(uris) != 1 || uris[0].String() != want.String() {
				return fmt.Errorf("mesh: the control plane's certificate is not for %s", want)
			}
			return nil
		},
	}, nil
}

// trustDomainOf reads the trust domain from the mesh CA's root, whose URI
// SAN is spiffe://<trust-domain>.
func trustDomainOf(rootPEM []byte) (spiffeid.TrustDomain, error) {
	block, _ := pem.Decode(rootPEM)
	if block == nil {
		return spiffeid.TrustDomain{}, errors.New("no PEM certificate")
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return spiffeid.TrustDomain{}, err
	}
	for _, u := range root.URIs {
		if u.Scheme == "spiffe" {
			return spiffeid.TrustDomainFromString(u.Host)
		}
	}
	return spiffeid.TrustDomainFromString("cluster.local")
}

// wait returns the source once it has started, or why it could not.
func (w *workloadIdentity) wait(ctx context.Context) (identity.Source, error) {
	select {
	case <-w.ready:
		return w.src, w.err
	default:
	}
	t := time.NewTimer(identityWait)
	defer t.Stop()
	select {
	case <-w.ready:
		return w.src, w.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, errors.New("mesh: no workload identity yet")
	}
}

func (w *workloadIdentity) source() (identity.Source, error) { return w.wait(context.Background()) }

// KeyMaterial implements meshcert.Source for grpc-go's xDS credentials.
func (w *workloadIdentity) KeyMaterial(ctx context.Context) (*certprovider.KeyMaterial, error) {
	src, err := w.wait(ctx)
	if err != nil {
		return nil, err
	}
	cert, err := src.Certificate()
	if err != nil {
		return nil, err
	}
	roots, err := src.Roots()
	if err != nil {
		return nil, err
	}
	return &certprovider.KeyMaterial{Certs: []tls.Certificate{*cert}, Roots: roots}, nil
}

func (w *workloadIdentity) GetX509SVID() (*x509svid.SVID, error) {
	src, err := w.source()
	if err != nil {
		return nil, err
	}
	return src.GetX509SVID()
}

func (w *workloadIdentity) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	src, err := w.source()
	if err != nil {
		return nil, err
	}
	return src.GetX509BundleForTrustDomain(td)
}

func (w *workloadIdentity) Certificate() (*tls.Certificate, error) {
	src, err := w.source()
	if err != nil {
		return nil, err
	}
	return src.Certificate()
}

func (w *workloadIdentity) Roots() (*x509.CertPool, error) {
	src, err := w.source()
	if err != nil {
		return nil, err
	}
	return src.Roots()
}

func (w *workloadIdentity) Changed() <-chan struct{} {
	select {
	case <-w.ready:
		if w.src != nil {
			return w.src.Changed()
		}
		return make(chan struct{}) // never changes
	default:
		return w.ready
	}
}

// Close does nothing: the identity is closed when its last user releases
// it.
func (w *workloadIdentity) Close() error { return nil }

var (
	_ identity.Source   = (*workloadIdentity)(nil)
	_ meshcert.Source   = (*workloadIdentity)(nil)
	_ identity.Source   = x509Adapter{}
	_ x509bundle.Source = x509Adapter{}
)

// x509Adapter makes go-spiffe sources an identity.Source.
type x509Adapter struct {
	svids   x509svid.Source
	bundles x509bundle.Source
}

func (a x509Adapter) GetX509SVID() (*x509svid.SVID, error) { return a.svids.GetX509SVID() }

func (a x509Adapter) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return a.bundles.GetX509BundleForTrustDomain(td)
}

func (a x509Adapter) Certificate() (*tls.Certificate, error) {
	svid, err := a.svids.GetX509SVID()
	if err != nil {
		return nil, err
	}
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

func (a x509Adapter) Roots() (*x509.CertPool, error) {
	svid, err := a.svids.GetX509SVID()
	if err != nil {
		return nil, err
	}
	b, err := a.bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range b.X509Authorities() {
		pool.AddCert(c)
	}
	return pool, nil
}

// Changed never fires: go-spiffe sources are read at every handshake.
func (a x509Adapter) Changed() <-chan struct{} { return nil }

func (a x509Adapter) Close() error { return nil }
