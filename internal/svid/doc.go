// Package svid verifies the X.509-SVID a peer presents: go-spiffe's
// x509svid.Verify (one URI SAN holding a SPIFFE ID, a leaf that is not a
// CA, a chain to the bundle of the ID's trust domain at the given time),
// plus what the mesh requires beyond it: the ID names a workload, the
// leaf and its chain allow the extended key usage of the connection's
// side, and the caller's matcher accepts the ID. mTLS handshakes
// (internal/mtls), renewals at the CA (internal/ca), the control plane's
// registration and xDS clients (xdsserver) and workloads' connections to
// the control plane (internal/meshcert) all verify with it:
//
//	id, err := svid.Verify(state.PeerCertificates, bundles,
//		x509.ExtKeyUsageClientAuth, spiffeid.MatchMemberOf(td), time.Now())
package svid
