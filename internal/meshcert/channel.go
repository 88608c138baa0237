package meshcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/xds/bootstrap"

	"github.com/trellismesh/trellis/internal/svid"
)

// ChannelCredsName is the channel credentials type, in a bootstrap's
// xds_servers[].channel_creds, with which grpc-go's xDS client reaches the
// control plane's secure port as the workload: it presents the SVID of the
// Source its config names and accepts only the control plane's identity
// (see ControlPlaneTLS).
//
//	"channel_creds": [{"type": "trellis-svid", "config": {"source": "reviews-identity"}}]
const ChannelCredsName = "trellis-svid"

// ControlPlanePath is the path of the control plane's SPIFFE ID, in the
// mesh's trust domain: spiffe://<trust-domain>/ns/trellis-system/sa/xdsserver.
const ControlPlanePath = "/ns/trellis-system/sa/xdsserver"

// An SVIDSource is a Source that also serves go-spiffe's SVID and bundle
// interfaces, as a control-plane connection needs.
type SVIDSource interface {
	Source
	x509svid.Source
	x509bundle.Source
}

// ControlPlaneTLS is the client TLS configuration of a workload on the
// control plane's secure port: TLS 1.3, the workload's current SVID from
// src, and a server that must prove the control plane's SPIFFE ID in the
// workload's own trust domain (ControlPlanePath) with an SVID for server
// authentication chaining to the workload's current trust bundle
// (svid.Verify), all read at every handshake, resumed ones included.
func ControlPlaneTLS(src SVIDSource) *tls.Config {
	match := func(id spiffeid.ID) error {
		own, err := src.GetX509SVID()
		if err != nil {
			return err
		}
		if id.Path() != ControlPlanePath || id.TrustDomain() != own.ID.TrustDomain() {
			return fmt.Errorf("meshcert: %s is not the control plane of trust domain %s", id, own.ID.TrustDomain())
		}
		return nil
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		InsecureSkipVerify:   true, // replaced by VerifyConnection: the SPIFFE ID replaces the host name
		GetClientCertificate: tlsconfig.GetClientCertificate(src),
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := svid.Verify(cs.PeerCertificates, src, x509.ExtKeyUsageServerAuth, match, time.Time{})
			return err
		},
	}
}

// ChannelConfig is the config of ChannelCredsName in a bootstrap.
type ChannelConfig struct {
	// Source is the key an SVIDSource is registered under.
	Source string `json:"source"`
}

func init() { bootstrap.RegisterChannelCredentials(channelCreds{}) }

type channelCreds struct{}

func (channelCreds) Name() string { return ChannelCredsName }

func (channelCreds) Build(raw json.RawMessage) (credentials.Bundle, func(), error) {
	var cfg ChannelConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return nil, nil, fmt.Errorf("meshcert: channel credentials config: %w", err)
	}
	if cfg.Source == "" {
		return nil, nil, ErrNoIdentity
	}
	return bundle{credentials.NewTLS(ControlPlaneTLS(keyed(cfg.Source)))}, func() {}, nil
}

// keyed is the SVIDSource registered under a key at the time of each call,
// so that a client outliving one registration uses the next.
type keyed string

func (k keyed) source() (SVIDSource, error) {
	if src, ok := lookup(string(k)).(SVIDSource); ok {
		return src, nil
	}
	return nil, ErrNoIdentity
}

func (k keyed) KeyMaterial(ctx context.Context) (*certprovider.KeyMaterial, error) {
	src, err := k.source()
	if err != nil {
		return nil, err
	}
	return src.KeyMaterial(ctx)
}

func (k keyed) GetX509SVID() (*x509svid.SVID, error) {
	src, err := k.source()
	if err != nil {
		return nil, err
	}
	return src.GetX509SVID()
}

func (k keyed) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	src, err := k.source()
	if err != nil {
		return nil, err
	}
	return src.GetX509BundleForTrustDomain(td)
}

// bundle is a credentials.Bundle of transport credentials only.
type bundle struct {
	creds credentials.TransportCredentials
}

func (b bundle) TransportCredentials() credentials.TransportCredentials { return b.creds }
func (bundle) PerRPCCredentials() credentials.PerRPCCredentials         { return nil }
func (bundle) NewWithMode(string) (credentials.Bundle, error) {
	return nil, errors.New("meshcert: channel credentials have no modes")
}
