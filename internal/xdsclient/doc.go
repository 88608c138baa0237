// Package xdsclient is Trellis's own xDS client: one ADS stream to the
// control plane, shared by any number of watches on listeners, route
// configurations, clusters and endpoints. The HTTP client path uses it to
// follow the same standard resources grpc-go's xDS stack consumes.
//
// A watch names a resource by type URL and name; its Watcher receives the
// decoded, validated resource, and every later version of it:
//
//	c, err := xdsclient.New(xdsclient.Config{Server: "127.0.0.1:15010"})
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//	cancel := c.Watch(resource.ListenerType, "reviews:9080", xdsclient.WatcherFuncs{
//		UpdateFunc: func(m proto.Message) {
//			l := m.(*v3listenerpb.Listener)
//			log.Printf("listener %s", l.GetName())
//		},
//		NotFoundFunc: func() { log.Print("reviews:9080 does not exist") },
//		ErrorFunc:    func(err error) { log.Print(err) }, // last good version stays
//	})
//	defer cancel()
//
// (resource is go-control-plane's pkg/resource/v3.)
//
// Behaviour follows grpc-go's xDS client and gRFCs A27, A46, A57 and A88:
//
//   - The stream is opened on the first watch and reopened with jittered
//     exponential backoff when it breaks; state of the world or, with
//     Config.Delta, incremental xDS.
//   - Each resource of a response is validated on its own. Valid ones take
//     effect; invalid ones are NACKed (the request's error_detail names each
//     one and why), their watchers get Error, and their last good version
//     stays in force.
//   - In state of the world, a listener or cluster missing from a response
//     was deleted (NotFound); for routes and endpoints absence means
//     nothing. In delta, removed_resources are deleted.
//   - Config.Server may list several replicas of the control plane
//     ("a:15010,b:15010"); a broken stream reopens on a live replica, with
//     the cache kept and every subscription sent again. Replicas version
//     their resources differently, which does no harm: a new stream's
//     first response holds every subscribed resource, and only resources
//     whose content differs reach the watchers.
//   - A resource never received is declared not found after
//     Config.ResourceTimeout, counted only while the stream is connected.
//     A broken stream never drops cached resources: they are requested
//     again (with their versions, in delta) on the next stream.
//
// Watcher methods are called from one goroutine per Client, one at a time
// and without locks held; see Watcher.
package xdsclient
