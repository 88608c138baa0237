// Package identity gives a workload its SPIFFE identity: an X.509 SVID and
// the trust bundle to verify peers with, kept current. Three sources share
// one interface, Source, which is go-spiffe's x509svid.Source and
// x509bundle.Source plus crypto/tls views and a change signal:
//
//   - CASource asks the mesh's built-in CA (Istio's certificate API) with a
//     join token, then renews with its own SVID at half life, with jitter.
//   - FileSource reads PEM files and reloads them when they change.
//   - WorkloadSource wraps go-spiffe's Workload API client, so a SPIRE agent
//     replaces the built-in CA.
//
// For instance, with the built-in CA:
//
//	dial := func(ctx context.Context, cert *tls.Certificate) (*grpc.ClientConn, error) {
//		cfg := &tls.Config{RootCAs: caRoots, ServerName: "trellis-ca"}
//		if cert != nil {
//			cfg.Certificates = []tls.Certificate{*cert} // renewal
//		}
//		return grpc.NewClient("127.0.0.1:15012", grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
//	}
//	src, err := identity.NewCASource(ctx, dial, spiffeid.RequireTrustDomainFromString("example.org"),
//		identity.WithJoinToken(os.Getenv("TRELLIS_JOIN_TOKEN")))
//	if err != nil {
//		return err
//	}
//	defer src.Close()
//	// Any go-spiffe helper takes the source as it is:
//	tlsCfg := tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeMemberOf(td))
//
// and to follow rotations:
//
//	for {
//		changed := src.Changed()
//		cert, _ := src.Certificate()
//		use(cert)
//		<-changed
//	}
//
// Everything a CA returns is validated before use: the leaf must carry one
// SPIFFE URI SAN in the expected trust domain, not be a CA, be for the key
// the source generated, and verify against the returned root.
package identity
