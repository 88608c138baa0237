package svid

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Conditions callers test with errors.Is: every error of Verify wraps
// exactly one of them.
var (
	// ErrNoCertificate reports a peer that presented no certificate.
	ErrNoCertificate = errors.New("svid: peer presented no certificate")
	// ErrInvalid reports a peer certificate that is not an X.509-SVID:
	// not exactly one URI SAN, a URI SAN that is not a workload SPIFFE
	// ID, or a leaf that is a CA or may sign certificates.
	ErrInvalid = errors.New("svid: peer certificate is not a valid X.509-SVID")
	// ErrUntrusted reports a peer certificate that does not verify: no
	// bundle for its trust domain, a chain that does not lead to one of
	// the bundle's authorities, expired or not yet valid, or without the
	// extended key usage asked for.
	ErrUntrusted = errors.New("svid: peer certificate not trusted")
	// ErrUnauthorized reports a verified peer whose SPIFFE ID the
	// caller's matcher refuses.
	ErrUnauthorized = errors.New("svid: peer not authorized")
)

// Verify checks that certs, a chain a peer presented (leaf first, then
// any intermediates; a trailing root is ignored), is an X.509-SVID that
// is valid at now for usage (x509.ExtKeyUsageClientAuth for a client's
// certificate, ExtKeyUsageServerAuth for a server's), and returns its
// SPIFFE ID, which match must accept. It checks, in this order:
//
//   - the leaf has exactly one URI SAN, a SPIFFE ID with a non-empty
//     path (a workload, not a bare trust domain) (else ErrInvalid);
//   - go-spiffe's x509svid.Verify: the leaf is not a CA and has neither
//     the certificate- nor the CRL-signing key usage (else ErrInvalid),
//     bundles has a bundle for the ID's trust domain, and the chain leads
//     to one of its authorities at now (else ErrUntrusted). A bundle with
//     several authorities, as during a root rotation, trusts each;
//   - the leaf names usage among its extended key usages, and every
//     certificate above it in a verified chain allows it (names it,
//     names any usage, or restricts none), as crypto/x509 reads RFC 5280
//     (else ErrUntrusted). go-spiffe's Verify checks no extended key usage;
//   - match accepts the ID (else ErrUnauthorized). A nil match accepts
//     nothing.
//
// A zero now means the current time.
func Verify(certs []*x509.Certificate, bundles x509bundle.Source, usage x509.ExtKeyUsage, match spiffeid.Matcher, now time.Time) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, ErrNoCertificate
	}
	leaf := certs[0]
	id, err := LeafID(leaf)
	if err != nil {
		return spiffeid.ID{}, err
	}
	_, chains, err := x509svid.Verify(certs, bundles, x509svid.WithTime(now))
	if err != nil {
		// Only the classification is ours: go-spiffe refused the leaf
		// as a CA, or the chain.
		if leaf.IsCA || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
			return spiffeid.ID{}, fmt.Errorf("%w: %q: %w", ErrInvalid, id, err)
		}
		return spiffeid.ID{}, fmt.Errorf("%w: %q: %w", ErrUntrusted, id, err)
	}
	if !slices.Contains(leaf.ExtKeyUsage, usage) {
		return spiffeid.ID{}, fmt.Errorf("%w: %q: the leaf is not for %s", ErrUntrusted, id, usageName(usage))
	}
	if !slices.ContainsFunc(chains, func(chain []*x509.Certificate) bool {
		return !slices.ContainsFunc(chain[1:], func(c *x509.Certificate) bool { return !allows(c, usage) })
	}) {
		return spiffeid.ID{}, fmt.Errorf("%w: %q: no chain to a trusted root allows %s", ErrUntrusted, id, usageName(usage))
	}
	if match == nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %q: no matcher", ErrUnauthorized, id)
	}
	if err := match(id); err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return id, nil
}

// LeafID returns the SPIFFE ID of an X.509-SVID leaf: its one URI SAN
// (go-spiffe's x509svid.IDFromCert), which must name a workload (a
// non-empty path), not a bare trust domain. It reads the certificate and
// verifies nothing; its errors wrap ErrInvalid.
func LeafID(leaf *x509.Certificate) (spiffeid.ID, error) {
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if id.Path() == "" {
		return spiffeid.ID{}, fmt.Errorf("%w: %q names no workload", ErrInvalid, id)
	}
	return id, nil
}

// allows reports whether a CA certificate of a chain lets the certificates
// it signs be used for usage: it restricts no extended key usage, or
// names usage or any usage.
func allows(c *x509.Certificate, usage x509.ExtKeyUsage) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	return slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) || slices.Contains(c.ExtKeyUsage, usage)
}

func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageClientAuth:
		return "client authentication"
	case x509.ExtKeyUsageServerAuth:
		return "server authentication"
	}
	return fmt.Sprintf("extended key usage %d", u)
}
