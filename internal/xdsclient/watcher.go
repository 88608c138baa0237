package xdsclient

import "google.golang.org/protobuf/proto"

// A Watcher receives the state of one xDS resource.
//
// A Client calls the methods of all its Watchers from a single goroutine, one
// call at a time, in the order the events happened, and never while holding
// a lock, so a Watcher may call Watch, a cancel function or Status from
// inside a method (but not Close). A Watcher that blocks delays every other
// Watcher of the same Client.
type Watcher interface {
	// Update delivers a new valid version of the resource: a
	// *v3listenerpb.Listener, *v3routepb.RouteConfiguration,
	// *v3clusterpb.Cluster or *v3endpointpb.ClusterLoadAssignment. The
	// message is shared by all Watchers of the resource and must not be
	// modified.
	Update(resource proto.Message)
	// NotFound reports that the resource does not exist: the control plane
	// removed it, or did not send it within Config.ResourceTimeout of
	// being asked on a connected stream.
	NotFound()
	// Error reports a version of the resource that was rejected (NACKed),
	// or trouble reaching the control plane. The last version delivered by
	// Update, if any, stays in force.
	Error(err error)
}

// WatcherFuncs is a Watcher made of functions; a nil function ignores its
// event.
type WatcherFuncs struct {
	UpdateFunc   func(resource proto.Message)
	NotFoundFunc func()
	ErrorFunc    func(err error)
}

var _ Watcher = WatcherFuncs{}

// Update calls f.UpdateFunc if it is not nil.
func (f WatcherFuncs) Update(resource proto.Message) {
	if f.UpdateFunc != nil {
		f.UpdateFunc(resource)
	}
}

// NotFound calls f.NotFoundFunc if it is not nil.
func (f WatcherFuncs) NotFound() {
	if f.NotFoundFunc != nil {
		f.NotFoundFunc()
	}
}

// Error calls f.ErrorFunc if it is not nil.
func (f WatcherFuncs) Error(err error) {
	if f.ErrorFunc != nil {
		f.ErrorFunc(err)
	}
}
