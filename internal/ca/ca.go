package ca

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// DefaultTTL is the lifetime of a certificate whose requested TTL is zero.
	DefaultTTL = 24 * time.Hour
	// DefaultMaxTTL is the longest lifetime the CA issues unless WithMaxTTL
	// says otherwise.
	DefaultMaxTTL = 24 * time.Hour
	// MaxCSRSize is the largest PEM-encoded CSR Sign accepts, in bytes.
	MaxCSRSize = 16 << 10

	// RootCertFile and RootKeyFile are the names LoadOrCreate uses inside
	// its data directory.
	RootCertFile = "root-cert.pem"
	RootKeyFile  = "root-key.pem"

	rootValidity = 10 * 365 * 24 * time.Hour
	clockSkew    = time.Minute
	// defaultMaxIssued bounds the in-memory record of issued certificates.
	defaultMaxIssued = 10000
)

var (
	// ErrInvalidCSR reports a certificate signing request the CA refuses:
	// malformed, oversized, badly signed, not ECDSA P-256, asking to be a
	// CA, or naming any subject alternative name other than the identity
	// being issued.
	ErrInvalidCSR = errors.New("ca: invalid certificate signing request")
	// ErrForeignIdentity reports an identity outside the CA's trust domain.
	ErrForeignIdentity = errors.New("ca: identity outside the trust domain")
)

// Test knobs.
var (
	timeNow              = time.Now
	randReader io.Reader = rand.Reader
)

var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// oidAuthTime is the non-critical extension in which the CA records when
// the holder of a certificate last proved a primary credential (a join
// token), as a DER GeneralizedTime; renewals carry it over. Trellis has no
// registered Private Enterprise Number: the OID sits under a number far
// beyond those IANA has assigned, and is only ever read from certificates
// that chain to the mesh's own trust anchors. Other verifiers ignore it.
var oidAuthTime = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 2147480001, 1, 1}

// IssuedCert records one certificate the CA issued.
type IssuedCert struct {
	// Serial is the certificate's serial number in lowercase hexadecimal.
	Serial string
	// ID is the SPIFFE ID the certificate carries.
	ID spiffeid.ID
	// IssuedAt is when the CA signed it.
	IssuedAt time.Time
	// NotAfter is when it expires.
	NotAfter time.Time
}

// CA is a certificate authority for one SPIFFE trust domain. It is safe for
// concurrent use.
type CA struct {
	td      spiffeid.TrustDomain
	root    *x509.Certificate
	rootPEM []byte              // the trust bundle: root, then the other anchors
	anchors []*x509.Certificate // root first, then WithTrustAnchors'
	key     crypto.Signer
	cfg     config

	mu     sync.Mutex
	issued map[string]IssuedCert // by serial
}

// LoadFiles returns a CA whose root certificate and private key are read
// from the PEM files certFile and keyFile (PKCS#8, SEC 1 or PKCS#1). The
// trust domain is that of the root's SPIFFE URI SAN, or WithTrustDomain's
// when the root has none; if both are present they must agree.
func LoadFiles(certFile, keyFile string, opts ...Option) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	c, err := parse(certPEM, keyPEM, newConfig(opts))
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", certFile, err)
	}
	return c, nil
}

// LoadOrCreate returns the CA kept in dir (files RootCertFile and
// RootKeyFile), generating and persisting a new root for trustDomain the
// first time: ECDSA P-256, self-signed, valid ten years. The key file is
// written with mode 0600 and both files atomically, so a restart with the
// same directory keeps the same trust. An existing root must belong to
// trustDomain.
func LoadOrCreate(dir, trustDomain string, opts ...Option) (*CA, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("ca: trust domain %q: %w", trustDomain, err)
	}
	cfg := newConfig(opts)
	if !cfg.td.IsZero() && cfg.td != td {
		return nil, fmt.Errorf("ca: trust domain %q conflicts with option %q", td, cfg.td)
	}
	cfg.td = td
	certPath, keyPath := filepath.Join(dir, RootCertFile), filepath.Join(dir, RootKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	if certErr == nil {
		keyPEM, err := os.ReadFile(keyPath)
		if err != nil {
			// The root is known to peers; never replace it silently.
			return nil, fmt.Errorf("ca: root certificate without key: %w", err)
		}
		c, err := parse(certPEM, keyPEM, cfg)
		if err != nil {
			return nil, fmt.Errorf("ca: %s: %w", certPath, err)
		}
		return c, nil
	}
	if !errors.Is(certErr, os.ErrNotExist) {
		return nil, fmt.Errorf("ca: %w", certErr)
	}
	// No certificate: nothing was ever issued from this directory (a key
	// alone is the remnant of an interrupted first start), so create.
	certPEM, keyPEM, err := generateRoot(td)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	// Key first: a certificate on disk always has its key.
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	cfg.log.Info("ca: created root", "dir", dir, "trust_domain", td.String())
	return parse(certPEM, keyPEM, cfg)
}

func generateRoot(td spiffeid.TrustDomain) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), randReader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := timeNow()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"trellis"}, CommonName: "trellis root CA " + td.Name()},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(rootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(randReader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: create root: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: marshal root key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("ca: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("ca: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("ca: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

func parse(certPEM, keyPEM []byte, cfg config) (*CA, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	if !root.BasicConstraintsValid || !root.IsCA {
		return nil, errors.New("root certificate is not a CA")
	}
	kblock, _ := pem.Decode(keyPEM)
	if kblock == nil {
		return nil, errors.New("no PEM private key block")
	}
	key, err := parseKey(kblock.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(root.PublicKey) {
		return nil, errors.New("private key does not match root certificate")
	}
	td := cfg.td
	for _, u := range root.URIs {
		if rootTD, err := spiffeid.TrustDomainFromURI(u); err == nil {
			if !td.IsZero() && td != rootTD {
				return nil, fmt.Errorf("root is for trust domain %q, want %q", rootTD, td)
			}
			td = rootTD
		}
	}
	if td.IsZero() {
		return nil, errors.New("root has no SPIFFE URI SAN and no trust domain was given")
	}
	if !timeNow().Before(root.NotAfter) {
		return nil, fmt.Errorf("root expired at %s", root.NotAfter.UTC().Format(time.RFC3339))
	}
	c := &CA{
		td:      td,
		root:    root,
		rootPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}),
		anchors: []*x509.Certificate{root},
		key:     key,
		cfg:     cfg,
		issued:  map[string]IssuedCert{},
	}
	for i, a := range cfg.anchors {
		if err := checkAnchor(a, td); err != nil {
			return nil, fmt.Errorf("trust anchor %d (%s): %w", i+1, a.Subject, err)
		}
		if a.Equal(root) || slices.ContainsFunc(c.anchors, a.Equal) {
			continue
		}
		c.anchors = append(c.anchors, a)
		c.rootPEM = append(c.rootPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Raw})...)
	}
	return c, nil
}

// checkAnchor checks a root trusted beside the CA's own: a self-signed,
// unexpired CA certificate of trust domain td if it names one.
func checkAnchor(a *x509.Certificate, td spiffeid.TrustDomain) error {
	if !a.BasicConstraintsValid || !a.IsCA {
		return errors.New("not a CA certificate")
	}
	if err := a.CheckSignatureFrom(a); err != nil {
		return fmt.Errorf("not self-signed: %w", err)
	}
	if !timeNow().Before(a.NotAfter) {
		return fmt.Errorf("expired at %s", a.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, u := range a.URIs {
		if atd, err := spiffeid.TrustDomainFromURI(u); err == nil && atd != td {
			return fmt.Errorf("for trust domain %q, not %q", atd, td)
		}
	}
	return nil
}

func parseKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("private key cannot sign")
		}
		return s, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("unsupported private key encoding")
}

// TrustDomain returns the trust domain the CA issues identities in.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// Root returns the root certificate the CA signs with. The caller must not
// modify it.
func (c *CA) Root() *x509.Certificate { return c.root }

// Anchors returns the roots of the trust bundle: the CA's own first, then
// those of WithTrustAnchors. The caller must not modify them.
func (c *CA) Anchors() []*x509.Certificate { return slices.Clone(c.anchors) }

// RootPEM returns the trust bundle, PEM-encoded: the CA's root, then the
// other trust anchors.
func (c *CA) RootPEM() []byte { return slices.Clone(c.rootPEM) }

// Bundle returns the CA's trust bundle for its trust domain: its root and
// the other trust anchors.
func (c *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.td, c.anchors)
}

// Sign issues an X.509 SVID for id to the public key of csrPEM, a
// PEM-encoded PKCS#10 request, and returns the chain leaf first, root
// last. The identity is the caller's decision: the CSR's subject is
// ignored, and a CSR naming any subject alternative name other than id is
// refused (ErrInvalidCSR), as is one that is not ECDSA P-256, is badly
// signed, larger than MaxCSRSize, or asks for CA:true. An id outside the
// trust domain yields ErrForeignIdentity. A ttl of zero or less means
// DefaultTTL; it is capped at the CA's maximum and at the root's expiry.
//
// The certificate records the time of the call as the one its holder
// proved its identity (see WithMaxRenewalChain).
func (c *CA) Sign(csrPEM []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	return c.sign(csrPEM, issueParams{id: id, ttl: ttl})
}

// sign is Sign with the limits of a renewal.
func (c *CA) sign(csrPEM []byte, p issueParams) ([]*x509.Certificate, error) {
	if p.id.IsZero() || !p.id.MemberOf(c.td) {
		return nil, fmt.Errorf("%w: %q", ErrForeignIdentity, p.id)
	}
	pub, err := checkCSR(csrPEM, p.id)
	if err != nil {
		return nil, err
	}
	p.pub = pub
	return c.issue(p)
}

// ServerCertificate issues the control plane's own serving certificate,
// with a fresh P-256 key: the SPIFFE URI id plus the given DNS and IP
// SANs, valid for the CA's maximum TTL. Callers renew it before
// Leaf.NotAfter.
func (c *CA) ServerCertificate(id spiffeid.ID, dnsNames []string, ips []net.IP) (*tls.Certificate, error) {
	if id.IsZero() || !id.MemberOf(c.td) {
		return nil, fmt.Errorf("%w: %q", ErrForeignIdentity, id)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), randReader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate key: %w", err)
	}
	chain, err := c.issue(issueParams{pub: &key.PublicKey, id: id, dnsNames: dnsNames, ips: ips, ttl: c.cfg.maxTTL})
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{
		Certificate: [][]byte{chain[0].Raw, chain[1].Raw},
		PrivateKey:  key,
		Leaf:        chain[0],
	}, nil
}

// issueParams is what one certificate is issued for.
type issueParams struct {
	pub      crypto.PublicKey
	id       spiffeid.ID
	dnsNames []string
	ips      []net.IP
	ttl      time.Duration // zero or less: DefaultTTL
	// authTime is when the holder last proved a primary credential,
	// recorded in the certificate; zero means now.
	authTime time.Time
	// notAfter, if not zero, is the latest expiry allowed.
	notAfter time.Time
}

func (c *CA) issue(p issueParams) ([]*x509.Certificate, error) {
	id, ttl := p.id, p.ttl
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	ttl = min(ttl, c.cfg.maxTTL)
	now := timeNow()
	notAfter := now.Add(ttl)
	if notAfter.After(c.root.NotAfter) {
		notAfter = c.root.NotAfter
	}
	if !p.notAfter.IsZero() && notAfter.After(p.notAfter) {
		notAfter = p.notAfter
	}
	if !notAfter.After(now) {
		if !p.notAfter.IsZero() && !p.notAfter.After(now) {
			return nil, errors.New("ca: latest expiry allowed has passed")
		}
		return nil, errors.New("ca: root certificate has expired")
	}
	authTime := p.authTime
	if authTime.IsZero() {
		authTime = now
	}
	authExt, err := marshalAuthTime(authTime)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              p.dnsNames,
		IPAddresses:           p.ips,
		AuthorityKeyId:        c.root.SubjectKeyId,
		ExtraExtensions:       []pkix.Extension{authExt},
	}
	der, err := x509.CreateCertificate(randReader, tmpl, c.root, p.pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	c.record(IssuedCert{Serial: serial.Text(16), ID: id, IssuedAt: now, NotAfter: notAfter}, now)
	c.cfg.log.Debug("ca: issued", "id", id.String(), "serial", serial.Text(16), "not_after", notAfter)
	return []*x509.Certificate{leaf, c.root}, nil
}

func (c *CA) record(ic IssuedCert, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.issued[ic.Serial] = ic
	if len(c.issued) <= c.cfg.maxIssued {
		return
	}
	for s, e := range c.issued {
		if !e.NotAfter.After(now) {
			delete(c.issued, s)
		}
	}
	for len(c.issued) > c.cfg.maxIssued { // all live: drop the soonest to expire
		first := ""
		for s, e := range c.issued {
			if first == "" || e.NotAfter.Before(c.issued[first].NotAfter) {
				first = s
			}
		}
		delete(c.issued, first)
	}
}

// Issued returns the unexpired certificates the CA issued since it
// started, soonest to expire first. The record is bounded: past its limit
// (WithIssuedLimit) the entries closest to expiry are forgotten.
func (c *CA) Issued() []IssuedCert {
	now := timeNow()
	c.mu.Lock()
	out := make([]IssuedCert, 0, len(c.issued))
	for s, e := range c.issued {
		if e.NotAfter.After(now) {
			out = append(out, e)
		} else {
			delete(c.issued, s)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b IssuedCert) int {
		return cmp.Or(a.NotAfter.Compare(b.NotAfter), cmp.Compare(a.Serial, b.Serial))
	})
	return out
}

func marshalAuthTime(t time.Time) (pkix.Extension, error) {
	v, err := asn1.MarshalWithParams(t.UTC().Truncate(time.Second), "generalized")
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("ca: authentication time: %w", err)
	}
	return pkix.Extension{Id: oidAuthTime, Value: v}, nil
}

// authTimeOf returns when the holder of cert last proved a primary
// credential: the time the CA recorded, or cert's NotBefore if it recorded
// none. It fails if the record is malformed.
func authTimeOf(cert *x509.Certificate) (time.Time, error) {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidAuthTime) {
			continue
		}
		var t time.Time
		rest, err := asn1.UnmarshalWithParams(ext.Value, &t, "generalized")
		if err != nil || len(rest) != 0 {
			return time.Time{}, errors.New("malformed authentication time extension")
		}
		return t, nil
	}
	return cert.NotBefore, nil
}

func newSerial() (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := io.ReadFull(randReader, b); err != nil {
			return nil, fmt.Errorf("ca: serial: %w", err)
		}
		if s := new(big.Int).SetBytes(b); s.Sign() > 0 {
			return s, nil
		}
	}
}

// checkCSR validates csrPEM for id and returns its public key.
func checkCSR(csrPEM []byte, id spiffeid.ID) (crypto.PublicKey, error) {
	if len(csrPEM) > MaxCSRSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidCSR, MaxCSRSize)
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST block", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: key is not ECDSA P-256", ErrInvalidCSR)
	}
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			rest, err := asn1.Unmarshal(ext.Value, &bc)
			if err != nil || len(rest) != 0 || bc.IsCA {
				return nil, fmt.Errorf("%w: requests a CA certificate", ErrInvalidCSR)
			}
		case ext.Id.Equal(oidSubjectAltName):
			if err := checkSANs(ext.Value); err != nil {
				return nil, err
			}
		}
	}
	if len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses) > 0 {
		return nil, fmt.Errorf("%w: requests DNS, email or IP SANs", ErrInvalidCSR)
	}
	switch {
	case len(csr.URIs) == 0:
	case len(csr.URIs) == 1 && csr.URIs[0].String() == id.String():
	default:
		return nil, fmt.Errorf("%w: requests URI SANs other than %q", ErrInvalidCSR, id)
	}
	return pub, nil
}

// checkSANs refuses any general name but a URI, including the kinds
// crypto/x509 does not parse (otherName, directoryName, ...).
func checkSANs(value []byte) error {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(value, &seq)
	if err != nil || len(rest) != 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence {
		return fmt.Errorf("%w: malformed subject alternative names", ErrInvalidCSR)
	}
	names := seq.Bytes
	for len(names) > 0 {
		var n asn1.RawValue
		names, err = asn1.Unmarshal(names, &n)
		if err != nil {
			return fmt.Errorf("%w: malformed subject alternative names", ErrInvalidCSR)
		}
		if n.Class != asn1.ClassContextSpecific || n.Tag != 6 {
			return fmt.Errorf("%w: requests a SAN that is not a URI", ErrInvalidCSR)
		}
	}
	return nil
}
