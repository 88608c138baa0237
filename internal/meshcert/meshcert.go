// Package meshcert is the grpc-go certificate provider plugin through which
// grpc-go's xDS credentials get a mesh workload's identity: the control
// plane's TLS contexts name the provider instance
// xdsbootstrap.CertProviderInstance, a mesh process's bootstrap defines that
// instance with this plugin, and the plugin serves the key material of the
// identity Source registered under the key its config names.
//
//	meshcert.Register("reviews-identity", src)
//	defer meshcert.Unregister("reviews-identity")
//	// bootstrap: "certificate_providers": {"trellis": {"plugin_name":
//	//   "trellis-identity", "config": {"source": "reviews-identity"}}}
//
// Key material is read from the Source at every handshake, so rotated
// certificates and trust bundles take effect on the next connection. With
// no Source registered under its key, a provider fails every handshake
// (never plaintext, never an unverified peer).
package meshcert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/credentials/tls/certprovider"
)

// PluginName is the plugin's name in grpc's certificate provider registry
// and in bootstrap files.
const PluginName = "trellis-identity"

// ErrNoIdentity is returned by providers whose key has no Source: the
// process has no workload identity, yet the control plane asks for mTLS.
var ErrNoIdentity = errors.New("meshcert: this process has no workload identity (see mesh.WithJoinToken)")

// A Source supplies a workload's key material. KeyMaterial may wait,
// within ctx, for a first certificate.
type Source interface {
	KeyMaterial(ctx context.Context) (*certprovider.KeyMaterial, error)
}

var (
	mu      sync.RWMutex
	sources = map[string]Source{}
)

// Register makes src the Source of providers configured with key,
// replacing any earlier one.
func Register(key string, src Source) {
	mu.Lock()
	defer mu.Unlock()
	sources[key] = src
}

// Unregister removes the Source of key.
func Unregister(key string) {
	mu.Lock()
	defer mu.Unlock()
	delete(sources, key)
}

func lookup(key string) Source {
	mu.RLock()
	defer mu.RUnlock()
	return sources[key]
}

// Config is the plugin's configuration in a bootstrap.
type Config struct {
	// Source is the key a Source is registered under. Empty means the
	// process has no identity.
	Source string `json:"source"`
}

func init() { certprovider.Register(builder{}) }

type builder struct{}

func (builder) Name() string { return PluginName }

func (builder) ParseConfig(c any) (*certprovider.BuildableConfig, error) {
	raw, ok := c.(json.RawMessage)
	if !ok {
		return nil, fmt.Errorf("meshcert: config of type %T, want JSON", c)
	}
	var cfg Config
	if len(raw) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return nil, fmt.Errorf("meshcert: config: %w", err)
		}
	}
	return certprovider.NewBuildableConfig(PluginName, raw, func(certprovider.BuildOptions) certprovider.Provider {
		return provider{key: cfg.Source}
	}), nil
}

type provider struct{ key string }

func (p provider) KeyMaterial(ctx context.Context) (*certprovider.KeyMaterial, error) {
	src := lookup(p.key)
	if p.key == "" || src == nil {
		return nil, ErrNoIdentity
	}
	return src.KeyMaterial(ctx)
}

func (provider) Close() {}
