package kube

import (
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	"k8s.io/apimachinery/pkg/watch"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestMain(m *testing.M) {
	// The fake clientsets cannot stream a list over a watch (WatchList),
	// and the Istio informers do not say so; informers list, then watch.
	os.Setenv("KUBE_FEATURE_WatchListClient", "false")
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not before the deadline", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// fakes are the fake clientsets, counting the watches informers opened: the
// fake API server does not replay what changed between an informer's list
// and its watch, so tests change objects only once every watch is open.
type fakes struct {
	kube    *k8sfake.Clientset
	istio   *istiofake.Clientset
	watches atomic.Int32
	clients *Clients
}

func newFakes() *fakes {
	f := &fakes{kube: k8sfake.NewClientset(), istio: istiofake.NewSimpleClientset()}
	counted := func(tracker k8stesting.ObjectTracker) k8stesting.WatchReactionFunc {
		return func(a k8stesting.Action) (bool, watch.Interface, error) {
			w, err := tracker.Watch(a.GetResource(), a.GetNamespace())
			if err != nil {
				return false, nil, err
			}
			f.watches.Add(1)
			return true, w, nil
		}
	}
	f.kube.PrependWatchReactor("*", counted(f.kube.Tracker()))
	f.istio.PrependWatchReactor("*", counted(f.istio.Tracker()))
	f.clients = &Clients{Kube: f.kube, Istio: f.istio}
	return f
}

// waitWatches waits until n watches are open.
func (f *fakes) waitWatches(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	waitFor(ctx, t, "informers watching", func() bool { return int(f.watches.Load()) >= n })
}
