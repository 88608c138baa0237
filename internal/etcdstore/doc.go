// Package etcdstore keeps a mesh in etcd, so that several control-plane
// replicas serve the same mesh and a workload can move to any of them.
//
// Under a prefix (default "/trellis"):
//
//	<prefix>/registrations/<ns>/<service>/<addr>:<port>   an endpoint, as JSON
//	<prefix>/config/<file name>                          an Istio YAML file
//
// A Store (a registry.Store) writes the registrations made through its
// replica, each attached to the replica's etcd lease, whose TTL is the
// registration grace and which the replica keeps alive while it runs. It
// watches the whole registrations prefix into a local mirror, from which
// Endpoints answers, so it serves every replica's registrations:
//
//   - a clean deregistration deletes the key at once;
//   - a broken registration stream leaves the key in place for the grace
//     period, then deletes it, unless the workload registered again;
//   - a replica that dies stops renewing its lease, and etcd deletes its
//     keys when the lease expires, one TTL later;
//   - a workload that registered again through another replica has had
//     its key put again on that replica's lease, so the first replica's
//     lease expiring does not touch it, and the first replica's deletes
//     are transactions that delete the key only while it is still on the
//     lease that replica put it with.
//
// While etcd is away, Endpoints keeps returning what was read last (never
// an empty set because of an error); registrations made meanwhile are served
// by their replica at once and written when etcd is back. A lease not
// renewed for a TTL is renewed when etcd is back if etcd still has it (a
// restarted etcd extends every lease); if etcd let it expire, a new one is
// granted and every registration the replica still holds is written again
// under it.
//
// A ConfigSource (a config.Source) loads every key under <prefix>/config/
// as one configuration, naming each file by its key in errors, and reloads
// after every change (debounced); a change that does not load is reported
// and the last good configuration stays in force. Client.Apply (behind
// "trellisctl apply -store URI DIR") validates a set of files and writes it
// in one transaction, deleting the keys of files that are gone.
//
//	c, err := etcdstore.Dial(loc)            // loc from ParseURI("etcd://127.0.0.1:2379")
//	st, err := c.OpenStore(ctx, etcdstore.StoreOptions{Grace: 5 * time.Second, OnChange: rebuild})
//	defer c.Close()
//	defer st.Close()
//	go c.ConfigSource(logger).Run(ctx, apply)
//
// Package etcdtest runs a real etcd inside a test process.
package etcdstore
