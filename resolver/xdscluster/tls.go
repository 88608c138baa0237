package xdscluster

//lint:file-ignore SA1019 match_subject_alt_names is what the Trellis control plane and grpc-go use.

import (
	"errors"
	"fmt"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3tlspb "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

const upstreamTLSContextType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

// parseTLS reads a cluster's transport socket. It fails closed: a transport
// socket it cannot honour in full is an error, never plaintext.
func parseTLS(ts *v3corepb.TransportSocket) (*TLSConfig, error) {
	if ts == nil {
		return nil, nil
	}
	a := ts.GetTypedConfig()
	if a.GetTypeUrl() != upstreamTLSContextType {
		return nil, fmt.Errorf("transport_socket %q: config type %q is not supported", ts.GetName(), a.GetTypeUrl())
	}
	u := &v3tlspb.UpstreamTlsContext{}
	if err := a.UnmarshalTo(u); err != nil {
		return nil, fmt.Errorf("transport_socket %q: %w", ts.GetName(), err)
	}
	var vc *v3tlspb.CertificateValidationContext
	switch v := u.GetCommonTlsContext().GetValidationContextType().(type) {
	case *v3tlspb.CommonTlsContext_ValidationContext:
		vc = v.ValidationContext
	case *v3tlspb.CommonTlsContext_CombinedValidationContext:
		vc = v.CombinedValidationContext.GetDefaultValidationContext()
	}
	if vc == nil {
		return nil, errors.New("transport_socket: no validation context: the server could not be verified")
	}
	if len(vc.GetMatchTypedSubjectAltNames()) > 0 {
		return nil, errors.New("transport_socket: match_typed_subject_alt_names is not supported")
	}
	tls := &TLSConfig{}
	for i, m := range vc.GetMatchSubjectAltNames() {
		exact := m.GetExact()
		if exact == "" || m.GetIgnoreCase() {
			return nil, fmt.Errorf("transport_socket: match_subject_alt_names[%d]: only case-sensitive exact matchers are supported", i)
		}
		tls.SANs = append(tls.SANs, exact)
	}
	return tls, nil
}
