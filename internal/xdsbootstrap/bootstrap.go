// Package xdsbootstrap builds grpc-go xDS bootstrap configurations in code and
// is the only place in Trellis that touches grpc-go's bootstrap seam.
//
// grpc-go reads its xDS bootstrap from the GRPC_XDS_BOOTSTRAP or
// GRPC_XDS_BOOTSTRAP_CONFIG environment variables, once per process. Trellis
// instead builds the bootstrap from options and hands it to a resolver
// builder of its own (xds.NewXDSResolverWithConfigForTesting, the one public
// constructor that takes a bootstrap), one per distinct bootstrap, shared by
// every connection of the process that uses it. When the caller sets no
// control plane and the standard variables are set, the standard "xds"
// resolver and its process-wide bootstrap are used unchanged.
//
// # Several control-plane replicas
//
// A control-plane address may list replicas ("a:15010,b:15010"). The
// bootstrap then has one xds_servers entry whose server_uri is a target of
// package replicas' resolver listing them all, in an order drawn per
// process. grpc-go gives that server one channel; its pick_first policy
// connects to a live replica and, when the connection breaks, the ADS
// stream restarts on another replica with every cached resource kept and
// re-subscribed (grpc-go sends its last ACKed version; go-control-plane's
// LinearCache, on a new stream, sends every subscribed resource whatever
// the version, so the replicas' differing version strings do no harm).
//
// The replicas are deliberately not listed as several xds_servers (gRFC
// A71 fallback). grpc-go falls back to a lower-priority server only when
// the current one is unreachable and some watched resource is not cached,
// it stays on a primary that dies after the resources are cached (so a
// client would keep its stale configuration until the primary returns),
// and it reverts to the primary as soon as that answers again. Failover
// between identical replicas wants the opposite: move on any broken
// stream, keep the cache, and stay where it works. A list of servers would
// add nothing that the single multi-address server does not already do.
package xdsbootstrap

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellismesh/trellis/internal/replicas"
)

// Environment variables grpc-go reads its bootstrap from.
const (
	EnvBootstrapFile   = "GRPC_XDS_BOOTSTRAP"
	EnvBootstrapConfig = "GRPC_XDS_BOOTSTRAP_CONFIG"
)

// ServerListenerTemplate is gRPC's name template for server listeners.
const ServerListenerTemplate = "grpc/server?xds.resource.listening_address=%s"

// Node describes this process to the control plane.
type Node struct {
	// ID identifies the process. If empty, NodeID() is used.
	ID string
	// Cluster is the service name, if the process serves one.
	Cluster string
	// Metadata is sent as the node's metadata; values must marshal to JSON.
	Metadata map[string]any
	// Locality is "region/zone/subzone".
	Locality string
}

var (
	nodeIDOnce sync.Once
	nodeID     string
)

// NodeID returns an identifier unique to this process, the same on every
// call: "trellis~<hostname>~<pid>~<random>".
func NodeID() string {
	nodeIDOnce.Do(func() {
		host, _ := os.Hostname()
		var b [4]byte
		rand.Read(b[:])
		nodeID = fmt.Sprintf("trellis~%s~%d~%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	})
	return nodeID
}

type serverConfig struct {
	ServerURI      string           `json:"server_uri"`
	ChannelCreds   []map[string]any `json:"channel_creds"`
	ServerFeatures []string         `json:"server_features,omitempty"`
}

type locality struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	SubZone string `json:"sub_zone,omitempty"`
}

type nodeConfig struct {
	ID       string         `json:"id"`
	Cluster  string         `json:"cluster,omitempty"`
	Metadata map[string]any `json:"metadata,omitempty"`
	Locality *locality      `json:"locality,omitempty"`
}

type certProvider struct {
	PluginName string         `json:"plugin_name"`
	Config     map[string]any `json:"config"`
}

type bootstrap struct {
	XDSServers                 []serverConfig          `json:"xds_servers"`
	Node                       nodeConfig              `json:"node"`
	ServerListenerNameTemplate string                  `json:"server_listener_resource_name_template"`
	CertificateProviders       map[string]certProvider `json:"certificate_providers,omitempty"`
}

// CertPlugin names the certificate provider plugin that backs
// CertProviderInstance in a bootstrap, and its configuration.
type CertPlugin struct {
	Name   string
	Config map[string]any
}

// ChannelCreds are the credentials grpc-go's xDS client reaches the
// control plane with: one channel_creds entry of a bootstrap. The zero
// value is plaintext ("insecure").
type ChannelCreds struct {
	Type   string
	Config any
}

// Contents returns the bootstrap JSON for a control plane at addr:
// "host:port", several replicas "a:15010,b:15010", or any gRPC target (see
// package replicas). A list becomes one xds_servers entry whose server_uri
// is a replicas target, not one entry per replica; the package doc says
// why. If certs is not nil, the bootstrap defines the CertProviderInstance
// with it, so that clusters whose TLS contexts name that instance get the
// workload's identity.
func Contents(addr string, creds ChannelCreds, node Node, certs *CertPlugin) ([]byte, error) {
	if addr == "" {
		return nil, fmt.Errorf("xdsbootstrap: no control-plane address")
	}
	uri, err := replicas.Target(addr)
	if err != nil {
		return nil, fmt.Errorf("xdsbootstrap: %w", err)
	}
	if node.ID == "" {
		node.ID = NodeID()
	}
	cc := map[string]any{"type": "insecure"}
	if creds.Type != "" {
		cc = map[string]any{"type": creds.Type}
		if creds.Config != nil {
			cc["config"] = creds.Config
		}
	}
	b := bootstrap{
		XDSServers: []serverConfig{{
			ServerURI:      uri,
			ChannelCreds:   []map[string]any{cc},
			ServerFeatures: []string{"xds_v3"},
		}},
		Node:                       nodeConfig{ID: node.ID, Cluster: node.Cluster, Metadata: node.Metadata},
		ServerListenerNameTemplate: ServerListenerTemplate,
	}
	if certs != nil {
		b.CertificateProviders = map[string]certProvider{CertProviderInstance: {PluginName: certs.Name, Config: certs.Config}}
	}
	if node.Locality != "" {
		var l locality
		parts := append(splitN(node.Locality), "", "", "")
		l.Region, l.Zone, l.SubZone = parts[0], parts[1], parts[2]
		b.Node.Locality = &l
	}
	return json.Marshal(b)
}

func splitN(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

var (
	buildersMu sync.Mutex
	builders   = map[string]resolver.Builder{}
)

// Resolver returns the xDS resolver builder for the given bootstrap
// contents. Builders are cached by contents, so all connections with the same
// bootstrap share one xDS client (and one ADS stream).
func Resolver(contents []byte) (resolver.Builder, error) {
	buildersMu.Lock()
	defer buildersMu.Unlock()
	if b, ok := builders[string(contents)]; ok {
		return b, nil
	}
	b, err := xds.NewXDSResolverWithConfigForTesting(contents)
	if err != nil {
		return nil, fmt.Errorf("xdsbootstrap: %w", err)
	}
	builders[string(contents)] = b
	return b, nil
}

// FromEnv reports whether the standard bootstrap variables are set and, if
// so, the address of the first xDS server they name.
func FromEnv() (addr string, ok bool, err error) {
	var data []byte
	switch {
	case os.Getenv(EnvBootstrapFile) != "":
		data, err = os.ReadFile(os.Getenv(EnvBootstrapFile))
		if err != nil {
			return "", true, fmt.Errorf("xdsbootstrap: %s: %w", EnvBootstrapFile, err)
		}
	case os.Getenv(EnvBootstrapConfig) != "":
		data = []byte(os.Getenv(EnvBootstrapConfig))
	default:
		return "", false, nil
	}
	var b bootstrap
	if err := json.Unmarshal(data, &b); err != nil {
		return "", true, fmt.Errorf("xdsbootstrap: parse bootstrap: %w", err)
	}
	if len(b.XDSServers) == 0 || b.XDSServers[0].ServerURI == "" {
		return "", true, fmt.Errorf("xdsbootstrap: bootstrap names no xds_servers")
	}
	return b.XDSServers[0].ServerURI, true, nil
}

// Proto returns the node as sent on an xDS stream, identical to what
// grpc-go's client sends for a bootstrap made by Contents, so that a second
// xDS client of the process (Trellis's own) gets the same per-client view
// from the control plane.
func (n Node) Proto() (*v3corepb.Node, error) {
	if n.ID == "" {
		n.ID = NodeID()
	}
	node := &v3corepb.Node{Id: n.ID, Cluster: n.Cluster}
	if len(n.Metadata) > 0 {
		raw, err := json.Marshal(n.Metadata)
		if err != nil {
			return nil, fmt.Errorf("xdsbootstrap: node metadata: %w", err)
		}
		node.Metadata = &structpb.Struct{}
		if err := protojson.Unmarshal(raw, node.Metadata); err != nil {
			return nil, fmt.Errorf("xdsbootstrap: node metadata: %w", err)
		}
	}
	if n.Locality != "" {
		parts := append(splitN(n.Locality), "", "", "")
		node.Locality = &v3corepb.Locality{Region: parts[0], Zone: parts[1], SubZone: parts[2]}
	}
	return node, nil
}

// The certificate provider instance through which the control plane's TLS
// contexts (server listeners' DownstreamTlsContext, clusters'
// UpstreamTlsContext) refer to a mesh workload's identity, and the
// certificate names used with it, as Istio names its SDS secrets. A mesh
// process's bootstrap defines the instance, backed by its identity source.
const (
	CertProviderInstance = "trellis"
	IdentityCertName     = "default"
	RootCertName         = "ROOTCA"
)
