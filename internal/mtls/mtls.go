package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/svid"
)

// Conditions callers test with errors.Is. A handshake refused by a
// configuration of this package fails, on the refusing side, with an
// error wrapping one of them. The first four are package svid's, whose
// Verify makes the checks.
var (
	// ErrNoCertificate reports a peer that presented no certificate.
	ErrNoCertificate = svid.ErrNoCertificate
	// ErrInvalidSVID reports a peer certificate that is not an X.509 SVID:
	// not exactly one URI SAN, a URI SAN that is not a workload SPIFFE ID,
	// or a leaf that is a CA or may sign certificates.
	ErrInvalidSVID = svid.ErrInvalid
	// ErrUntrusted reports a peer certificate that does not verify: no
	// bundle for its trust domain, a chain that does not lead to one of
	// the bundle's authorities, expired or not yet valid, or the wrong
	// extended key usage.
	ErrUntrusted = svid.ErrUntrusted
	// ErrUnauthorized reports a verified peer whose SPIFFE ID is refused:
	// by the Authorizer of ServerConfig, or not one of ClientConfig's
	// expected IDs.
	ErrUnauthorized = svid.ErrUnauthorized
	// ErrNoExpectedIDs is returned by ClientConfig when given no server ID
	// to expect (or a zero one): "any server of the trust domain" is never
	// implied.
	ErrNoExpectedIDs = errors.New("mtls: no expected server SPIFFE ID")
)

// Test knob.
var timeNow = time.Now

// An Authorizer decides whether a verified peer may connect. It returns
// nil to accept id; its error fails the handshake and is wrapped in
// ErrUnauthorized. It must be safe for concurrent use: it runs in every
// handshake.
type Authorizer func(id spiffeid.ID) error

// AuthorizeOneOf accepts exactly the given IDs.
func AuthorizeOneOf(ids ...spiffeid.ID) Authorizer {
	ids = slices.Clone(ids)
	return func(id spiffeid.ID) error {
		if slices.Contains(ids, id) {
			return nil
		}
		return fmt.Errorf("%q is not an allowed ID", id)
	}
}

// AuthorizeMemberOf accepts any ID in the trust domain td.
func AuthorizeMemberOf(td spiffeid.TrustDomain) Authorizer {
	return func(id spiffeid.ID) error {
		if id.MemberOf(td) {
			return nil
		}
		return fmt.Errorf("%q is not a member of %q", id, td)
	}
}

// ServerConfig returns a TLS server configuration for mutual TLS with
// SPIFFE identities, for credentials.NewTLS (or StrictCredentials,
// PermissiveCredentials) and for net/http (tls.NewListener or
// PermissiveListener). It asks src at every handshake, so a rotated SVID
// or trust bundle applies to the next connection without a restart:
//
//   - it presents src's current certificate;
//   - it requires a client certificate and verifies it with svid.Verify
//     against src's current bundle for the certificate's trust domain (a
//     trust domain src has no bundle for is refused), at the current
//     time, for client authentication (the leaf must name it). The leaf
//     must carry exactly one URI SAN, a workload SPIFFE ID, and must not
//     be a CA;
//   - authorize, if not nil, must accept the peer's ID. A nil authorize
//     accepts any ID in the trust domain of src's own SVID.
//
// The check runs in tls.Config.VerifyConnection, which crypto/tls calls on
// resumed sessions too: a session ticket issued before a trust change
// does not outlive it. Only TLS 1.3 is spoken: mesh peers are all this
// library, and 1.3 has no weak suites to configure and no renegotiation.
// NextProtos is left empty (credentials.NewTLS adds "h2"; set it for
// HTTP/2 over net/http). Rejections are logged (WithLogger); the peer
// sees only a bad-certificate alert.
//
// src must not be nil. The returned configuration may be modified before
// first use, like any tls.Config.
func ServerConfig(src identity.Source, authorize Authorizer, opts ...Option) *tls.Config {
	cfg := newConfig(opts)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert, // verified in VerifyConnection
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, err := src.Certificate()
			if err != nil {
				return nil, fmt.Errorf("mtls: own certificate: %w", err)
			}
			return cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := svid.Verify(cs.PeerCertificates, src, x509.ExtKeyUsageClientAuth, clientMatcher(src, authorize), timeNow())
			if err != nil {
				cfg.log.Info("mtls: rejected client", "err", err, "resumed", cs.DidResume)
				cfg.failed(FailurePeerRejected)
				return rejectedError{err}
			}
			return nil
		},
	}
}

// clientMatcher is the matcher of ServerConfig's clients: authorize, or
// if nil, membership of src's own trust domain at the time of the call.
func clientMatcher(src identity.Source, authorize Authorizer) spiffeid.Matcher {
	if authorize != nil {
		return spiffeid.Matcher(authorize)
	}
	return func(id spiffeid.ID) error {
		own, err := src.GetX509SVID()
		if err != nil {
			return fmt.Errorf("own SVID: %w", err)
		}
		return AuthorizeMemberOf(own.ID.TrustDomain())(id)
	}
}

// ClientConfig returns a TLS client configuration for mutual TLS with
// SPIFFE identities, for credentials.NewTLS or an http.Transport. It
// presents src's current certificate and accepts a server only if its
// certificate verifies against src's current bundle for its trust domain
// (same rules as ServerConfig, for server authentication) and its SPIFFE
// ID equals one of expected. Host names are not checked: the SPIFFE ID
// replaces them, which is why the result sets InsecureSkipVerify and does
// all verification in VerifyConnection (run on resumed sessions too).
//
// With no expected ID, or a zero one, ClientConfig fails with
// ErrNoExpectedIDs. src must not be nil.
func ClientConfig(src identity.Source, expected ...spiffeid.ID) (*tls.Config, error) {
	if len(expected) == 0 || slices.ContainsFunc(expected, spiffeid.ID.IsZero) {
		return nil, ErrNoExpectedIDs
	}
	expected = slices.Clone(expected)
	match := func(id spiffeid.ID) error {
		if !slices.Contains(expected, id) {
			return fmt.Errorf("server is %q, want one of %q", id, expected)
		}
		return nil
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyConnection
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := src.Certificate()
			if err != nil {
				return nil, fmt.Errorf("mtls: own certificate: %w", err)
			}
			return cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := svid.Verify(cs.PeerCertificates, src, x509.ExtKeyUsageServerAuth, match, timeNow())
			return err
		},
	}, nil
}

// PeerID returns the SPIFFE ID of the peer of a connection: the URI SAN
// of its leaf certificate. It reads the certificate and does not verify
// it: call it on connections configured by ServerConfig or ClientConfig,
// whose handshake did. It fails with ErrNoCertificate or ErrInvalidSVID.
func PeerID(state tls.ConnectionState) (spiffeid.ID, error) {
	if len(state.PeerCertificates) == 0 {
		return spiffeid.ID{}, ErrNoCertificate
	}
	return svid.LeafID(state.PeerCertificates[0])
}

// PeerIDFromContext returns the SPIFFE ID of the peer of a gRPC call, from
// the context a server handler (or a client, after the call, through
// grpc.Peer) holds. It reports false if the connection was not TLS (a
// plaintext connection of PERMISSIVE mode, see PlaintextInfo) or the peer
// has no SPIFFE ID.
func PeerIDFromContext(ctx context.Context) (spiffeid.ID, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return spiffeid.ID{}, false
	}
	id, err := PeerID(info.State)
	return id, err == nil
}

// rejectedError is a peer rejection of ServerConfig's, already reported to
// WithHandshakeFailures' function.
type rejectedError struct{ error }

func (e rejectedError) Unwrap() error { return e.error }
