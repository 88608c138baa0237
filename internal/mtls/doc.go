// Package mtls is the TLS side of the mesh's mutual TLS: SPIFFE X.509
// SVIDs presented and verified on every handshake, for gRPC and net/http
// servers and clients, in STRICT mode (TLS only) or PERMISSIVE mode (TLS
// and plaintext on one port).
//
// Identity comes from an identity.Source, read at each handshake, so a
// rotated SVID or trust bundle takes effect on the next connection with
// no restart. A peer is accepted only if its leaf carries exactly one URI
// SAN naming a workload SPIFFE ID, is not a CA, names the extended key
// usage of its side, and chains, at the current time, to the source's
// current bundle for that ID's trust domain (internal/svid's Verify,
// over go-spiffe's). Then a server's Authorizer (by
// default: any ID of its own trust domain) or a client's list of expected
// server IDs decides. The checks run on resumed TLS sessions too, so a
// session ticket does not outlive a change of trust. Only TLS 1.3 is
// spoken.
//
// A gRPC server, STRICT:
//
//	srv := grpc.NewServer(grpc.Creds(mtls.StrictCredentials(
//		mtls.ServerConfig(src, mtls.AuthorizeOneOf(frontendID)))))
//
// and in a handler:
//
//	id, ok := mtls.PeerIDFromContext(ctx) // false for plaintext
//
// PERMISSIVE, where plaintext clients get a PlaintextInfo and no ID:
//
//	srv := grpc.NewServer(grpc.Creds(mtls.PermissiveCredentials(mtls.ServerConfig(src, nil))))
//
// A gRPC client that will talk only to the reviews service:
//
//	cfg, err := mtls.ClientConfig(src, spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/reviews"))
//	if err != nil {
//		return err
//	}
//	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
//
// net/http, STRICT and PERMISSIVE, with r.TLS nil for plaintext and
// mtls.PeerID(*r.TLS) giving the client's ID otherwise:
//
//	strict := tls.NewListener(lis, mtls.ServerConfig(src, nil))
//	permissive := mtls.NewPermissiveListener(lis, mtls.ServerConfig(src, nil))
//	defer permissive.Close()
//	err := http.Serve(permissive, handler)
//
// and its client:
//
//	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
//
// PERMISSIVE mode tells TLS from plaintext by the first bytes: a TLS
// handshake record (0x16, version 3.x) is TLS, anything else (an HTTP/2
// preface, an HTTP/1 method) plaintext. It reads them on a goroutine per
// connection within a deadline (WithHandshakeTimeout), so a client that
// sends nothing never holds up others and is closed when the deadline
// passes. A TLS client in PERMISSIVE mode is verified exactly as in
// STRICT mode: a bad certificate is refused, never downgraded.
//
// Rejections are logged through WithLogger (silent by default); the peer
// learns only that its certificate was refused. On the refusing side the
// handshake error wraps ErrNoCertificate, ErrInvalidSVID, ErrUntrusted
// or ErrUnauthorized.
package mtls
