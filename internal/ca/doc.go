// Package ca is the mesh's certificate authority, run by the control
// plane. It signs SPIFFE X.509 SVIDs (spiffe://<trust-domain>/ns/<ns>/sa/<sa>,
// ECDSA P-256, short-lived) and serves them over Istio's own certificate
// API, istio.v1.auth.IstioCertificateService, so standard clients can use
// it too.
//
// The root is generated once and kept in a data directory, or loaded from
// files:
//
//	authority, err := ca.LoadOrCreate("/var/lib/trellis", "example.org")
//	if err != nil {
//		return err
//	}
//	// The control plane's own serving certificate.
//	cpID := spiffeid.RequireFromPath(authority.TrustDomain(), "/ns/trellis/sa/xdsserver")
//	cert, err := authority.ServerCertificate(cpID, []string{"localhost"}, nil)
//	if err != nil {
//		return err
//	}
//	svc, err := ca.NewService(authority, ca.WithJoinTokens(map[string]ca.Identity{
//		os.Getenv("REVIEWS_TOKEN"): {Namespace: "default", ServiceAccount: "reviews",
//			Expires: time.Now().Add(7 * 24 * time.Hour)},
//		os.Getenv("BATCH_TOKEN"): {Namespace: "jobs", ServiceAccount: "batch", SingleUse: true},
//	}), ca.WithConsumedTokensFile("/var/lib/trellis/consumed-join-tokens"))
//	if err != nil {
//		return err
//	}
//	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
//		Certificates: []tls.Certificate{*cert},
//		ClientAuth:   tls.RequestClientCert, // renewals present their SVID
//	})))
//	svc.Register(srv)
//	return srv.Serve(lis)
//
// The identity of an issued certificate is always decided by the CA,
// never by the request: a join token maps to one identity, and a renewal
// keeps the identity of the SVID the caller authenticates with. A CSR
// that asks for anything (another SAN, CA:true, a key other than P-256)
// is refused; a requested lifetime beyond the maximum is capped.
//
// A join token may expire and may be single-use; either way the
// certificates it got keep renewing, but not forever: a renewal is no
// longer-lived than the certificate presented, and a chain of renewals
// ends WithMaxRenewalChain (a day by default) after the token was last
// presented, which each certificate records. The workload then presents
// its token again (identity.CASource does so by itself).
//
// Requests are authenticated before they are rate limited: per identity
// once authenticated, per peer address while not, so failed attempts
// never slow a workload sharing their address. Errors sent to callers are
// short gRPC statuses; the reasons go to the logger given with WithLogger.
package ca
