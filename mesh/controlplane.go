package mesh

import (
	"cmp"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trellismesh/trellis/internal/meshcert"
	"github.com/trellismesh/trellis/internal/xdsbootstrap"
)

// A controlPlaneLink is how the process reaches its control plane for
// xDS, registration and load reports: the plaintext port, or, for a
// workload with an identity, the secure port with its SVID.
type controlPlaneLink struct {
	addr  string // "host:port", a list of replicas or a gRPC target
	key   string // the identity's key; "" on the plaintext port
	creds credentials.TransportCredentials
}

// link returns how the process reaches the control plane as identity id
// (nil for none). A workload with an identity from the control plane's CA
// (a join token), or with any identity and the secure address given
// (WithCAAddr or TRELLIS_CA_ADDR), uses the secure port, presents its SVID
// and accepts only the control plane's own SPIFFE ID: the control plane
// then knows who registers and who reads, and its plaintext port can be
// off. Other processes use the plaintext port.
func (o *options) link(id *workloadIdentity) (controlPlaneLink, error) {
	addr, _, err := o.controlPlane()
	if err != nil {
		return controlPlaneLink{}, err
	}
	if id == nil || (o.token() == "" && cmp.Or(o.caAddr, os.Getenv(EnvCAAddr)) == "") {
		return controlPlaneLink{addr: addr, creds: insecure.NewCredentials()}, nil
	}
	return controlPlaneLink{addr: o.caAddress(), key: id.key, creds: credentials.NewTLS(meshcert.ControlPlaneTLS(id))}, nil
}

// dialOptions are the options of a connection over the link.
func (l controlPlaneLink) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(l.creds)}
}

// bootstrapCreds are the link's credentials as grpc-go's xDS client takes
// them from a bootstrap.
func (l controlPlaneLink) bootstrapCreds() xdsbootstrap.ChannelCreds {
	if l.key == "" {
		return xdsbootstrap.ChannelCreds{}
	}
	return xdsbootstrap.ChannelCreds{Type: meshcert.ChannelCredsName, Config: meshcert.ChannelConfig{Source: l.key}}
}
