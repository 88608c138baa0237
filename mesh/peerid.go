package mesh

import (
	"crypto/tls"
	"crypto/x509"
	"runtime"
	"sync"
	"weak"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/mtls"
)

// peerIDs remembers the SPIFFE ID of each peer certificate the servers of
// the process are using, so that a connection's calls do not parse it
// again each (a certificate lives as long as its connection's TLS state).
var peerIDs peerIDCache

// peerIDCache maps a peer's leaf certificate to its SPIFFE ID. Entries go
// when their certificate is garbage collected. It is safe for concurrent
// use.
type peerIDCache struct {
	mu sync.RWMutex
	m  map[weak.Pointer[x509.Certificate]]*peerCert
}

// peerCert is what the mesh knows of a peer certificate. A pointer to
// it is what an admitted HTTP request's context carries (httpAdmittedKey).
type peerCert struct {
	id spiffeid.ID
	ok bool // the certificate has a valid SPIFFE ID
}

// noPeer is the identity of an admitted request whose peer the server did
// not authenticate.
var noPeer = &peerCert{}

// of returns the SPIFFE ID of leaf, as mtls.PeerID reads it.
func (c *peerIDCache) of(leaf *x509.Certificate) (spiffeid.ID, bool) {
	p := c.lookup(leaf)
	return p.id, p.ok
}

func (c *peerIDCache) lookup(leaf *x509.Certificate) *peerCert {
	key := weak.Make(leaf)
	c.mu.RLock()
	p := c.m[key]
	c.mu.RUnlock()
	if p != nil {
		return p
	}
	id, err := mtls.PeerID(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}})
	p = &peerCert{id: id, ok: err == nil}
	c.mu.Lock()
	defer c.mu.Unlock()
	if q := c.m[key]; q != nil {
		return q
	}
	if c.m == nil {
		c.m = map[weak.Pointer[x509.Certificate]]*peerCert{}
	}
	c.m[key] = p
	runtime.AddCleanup(leaf, c.forget, key)
	return p
}

func (c *peerIDCache) forget(key weak.Pointer[x509.Certificate]) {
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}

// size returns the number of certificates remembered (for tests).
func (c *peerIDCache) size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
