package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/etcdstore"
	"github.com/trellismesh/trellis/internal/registry"
)

// WithStore chooses where registrations are kept:
//
//   - "memory" (the default): in this Server only;
//   - "etcd://host:port[,host:port...][/prefix]": in etcd, under prefix
//     (default "/trellis"), so that every replica using the same etcd and
//     prefix serves the registrations made through any of them, and a
//     workload can move to any replica.
//
// With an etcd store and neither WithConfigDir nor WithKubernetes, the
// configuration comes from etcd too: the YAML documents under <prefix>/config/ (written with
// "trellisctl apply -store URI DIR"), and /readyz answers 503 until they
// have been read. With WithConfigDir (or WithKubernetes), the configuration
// comes from the directory (or Kubernetes) and only the registrations from
// etcd.
//
// New fails if it cannot grant the replica's etcd lease and read the
// registrations within 10 seconds, since it would have nothing to serve.
// Once running, a Server rides out etcd outages: it keeps serving what it
// read last, takes registrations and writes them when etcd is back. See
// docs/ARCHITECTURE.md, "Replicas and the etcd store".
func WithStore(uri string) Option {
	return optionFunc(func(o *options) { o.store = uri })
}

// storeOpenTimeout bounds New's first exchange with an etcd store.
var storeOpenTimeout = 10 * time.Second

// resolveStore sets the store (and the configuration source) WithStore
// asked for.
func (o *options) resolveStore() error {
	switch o.store {
	case "", "memory":
		return nil
	}
	loc, err := etcdstore.ParseURI(o.store)
	if err != nil {
		return fmt.Errorf("xdsserver: store: %w", err)
	}
	b := &etcdBackend{loc: loc, log: o.logger}
	o.openStore = b.open // over Kubernetes's WorkloadEntries too
	if o.configDir == "" && o.configSource == nil {
		o.configSource = b
	}
	return nil
}

// etcdBackend opens the etcd store, and is the configuration source reading
// through the same connection.
type etcdBackend struct {
	loc    etcdstore.Location
	log    *slog.Logger
	client *etcdstore.Client // set by open, before the source runs
}

func (b *etcdBackend) open(grace time.Duration, onChange func()) (registry.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeOpenTimeout)
	defer cancel()
	c, err := etcdstore.Dial(b.loc)
	if err != nil {
		return nil, fmt.Errorf("xdsserver: store: %w", err)
	}
	st, err := c.OpenStore(ctx, etcdstore.StoreOptions{Grace: grace, OnChange: onChange, Logger: b.log})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("xdsserver: store: %w", err)
	}
	b.client = c
	return etcdStore{st, c}, nil
}

func (b *etcdBackend) String() string { return b.loc.String() }

func (b *etcdBackend) Run(ctx context.Context, update func(*config.Set, error)) error {
	if b.client == nil {
		return errors.New("xdsserver: store: etcd is not open")
	}
	return b.client.ConfigSource(b.log).Run(ctx, update)
}

// etcdStore closes the connection with the store.
type etcdStore struct {
	*etcdstore.Store
	c *etcdstore.Client
}

func (s etcdStore) Close() {
	s.Store.Close()
	s.c.Close()
}
