package mtls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
)

// ErrServerOnly is returned by Credentials.ClientHandshake: clients use
// credentials.NewTLS(ClientConfig(...)).
var ErrServerOnly = errors.New("mtls: server-only credentials used by a client")

// PlaintextInfo is the credentials.AuthInfo of a plaintext connection
// that PermissiveCredentials let through. A handler tells it apart from
// TLS so:
//
//	p, _ := peer.FromContext(ctx)
//	if _, plain := p.AuthInfo.(mtls.PlaintextInfo); plain {
//		// no peer identity
//	}
type PlaintextInfo struct {
	credentials.CommonAuthInfo
}

// AuthType returns "plaintext".
func (PlaintextInfo) AuthType() string { return "plaintext" }

// Credentials are gRPC server transport credentials for the mesh's
// mutual TLS, in STRICT or PERMISSIVE mode. TLS connections yield a
// credentials.TLSInfo (PeerIDFromContext reads it); plaintext ones, in
// PERMISSIVE mode only, a PlaintextInfo. They are safe for concurrent use.
type Credentials struct {
	tls        credentials.TransportCredentials
	cfg        config
	permissive bool
}

var _ credentials.TransportCredentials = (*Credentials)(nil)

// StrictCredentials returns credentials that accept only TLS connections
// configured by serverConfig, normally ServerConfig's: a plaintext client
// fails the handshake and is disconnected. Options: WithHandshakeTimeout,
// WithLogger.
func StrictCredentials(serverConfig *tls.Config, opts ...Option) *Credentials {
	return &Credentials{tls: credentials.NewTLS(serverConfig), cfg: newConfig(opts)}
}

// PermissiveCredentials returns credentials that serve TLS (with
// serverConfig, normally ServerConfig's) and plaintext on one port: the
// first bytes of each connection decide, within the handshake timeout.
// Options: WithHandshakeTimeout, WithLogger.
func PermissiveCredentials(serverConfig *tls.Config, opts ...Option) *Credentials {
	c := StrictCredentials(serverConfig, opts...)
	c.permissive = true
	return c
}

// ServerHandshake implements credentials.TransportCredentials. It leaves
// a read deadline on rawConn, the handshake timeout from its start, which
// grpc.Server clears once the HTTP/2 transport is up; other callers must
// clear it themselves.
func (c *Credentials) ServerHandshake(rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if err := rawConn.SetReadDeadline(timeNow().Add(c.cfg.handshakeTimeout)); err != nil {
		rawConn.Close()
		return nil, nil, fmt.Errorf("mtls: %w", err)
	}
	if !c.permissive {
		return c.handshakeTLS(rawConn)
	}
	isTLS, conn, err := sniff(rawConn)
	if err != nil {
		rawConn.Close()
		c.cfg.log.Debug("mtls: dropped connection", "remote", rawConn.RemoteAddr().String(), "err", err)
		return nil, nil, fmt.Errorf("mtls: sniff: %w", err)
	}
	if isTLS {
		return c.handshakeTLS(conn)
	}
	return conn, PlaintextInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (c *Credentials) handshakeTLS(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.tls.ServerHandshake(conn)
	if err != nil {
		c.cfg.log.Debug("mtls: handshake failed", "remote", conn.RemoteAddr().String(), "err", err)
		var rejected rejectedError
		var notTLS tls.RecordHeaderError
		switch {
		case errors.As(err, &rejected): // reported by ServerConfig
		case errors.As(err, &notTLS):
			c.cfg.failed(FailureNotTLS)
		default:
			c.cfg.failed(FailureHandshake)
		}
		return nil, nil, fmt.Errorf("mtls: handshake: %w", err)
	}
	return out, info, nil
}

// ClientHandshake implements credentials.TransportCredentials; it fails
// with ErrServerOnly.
func (c *Credentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, ErrServerOnly
}

// Info implements credentials.TransportCredentials.
func (c *Credentials) Info() credentials.ProtocolInfo { return c.tls.Info() }

// Clone implements credentials.TransportCredentials.
func (c *Credentials) Clone() credentials.TransportCredentials {
	return &Credentials{tls: c.tls.Clone(), cfg: c.cfg, permissive: c.permissive}
}

// OverrideServerName implements credentials.TransportCredentials; it
// has no use on a server.
//
// Deprecated: as in credentials.TransportCredentials.
func (c *Credentials) OverrideServerName(string) error { return nil }
