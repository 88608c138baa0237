package etcdstore

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/etcdstore/etcdtest"
)

const ratingsEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  resolution: STATIC
`

const reviewsEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  resolution: STATIC
`

// delivery is one call of a ConfigSource's update.
type delivery struct {
	set *config.Set
	err error
}

// runSource runs src until the test ends and returns its deliveries.
func runSource(t *testing.T, src config.Source) <-chan delivery {
	ch := make(chan delivery, 16)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := src.Run(ctx, func(set *config.Set, err error) { ch <- delivery{set, err} }); err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return ch
}

func next(ctx context.Context, t *testing.T, ch <-chan delivery) delivery {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-ctx.Done():
		t.Fatal("no configuration delivered before the deadline")
		return delivery{}
	}
}

// TestConfigSourceFollowsEtcd: the configuration source delivers what is
// under <prefix>/config/ at start and after every change; a bad document
// is an error naming its key, line, resource and field.
func TestConfigSourceFollowsEtcd(t *testing.T) {
	ctx := testContext(t)
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	c := NewClient(cli, "/mesh")
	if got, want := c.ConfigSource(nil).String(), "etcd://"+srv.Endpoint()+"/mesh"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	ch := runSource(t, c.ConfigSource(nil))
	if d := next(ctx, t, ch); d.err != nil || d.set.Len() != 0 {
		t.Fatalf("first delivery of an empty prefix = %v resources, %v; want an empty set", d.set.Len(), d.err)
	}
	if _, err := cli.Put(ctx, "/mesh/config/ratings.yaml", ratingsEntry); err != nil {
		t.Fatal(err)
	}
	d := next(ctx, t, ch)
	if d.err != nil || d.set.Len() != 1 || !slices.Equal(d.set.Files, []string{"/mesh/config/ratings.yaml"}) {
		t.Fatalf("after a put: %v resources from %v, %v; want ratings from its key", d.set.Len(), d.set.Files, d.err)
	}
	if _, err := cli.Put(ctx, "/mesh/config/bad.yaml", strings.Replace(reviewsEntry, "resolution: STATIC", "resolution: STATIC\n  bogus: 1", 1)); err != nil {
		t.Fatal(err)
	}
	d = next(ctx, t, ch)
	if d.err == nil {
		t.Fatal("a bad document loaded")
	}
	const want = "/mesh/config/bad.yaml:1: ServiceEntry default/reviews: spec.bogus: "
	if errs := config.Errors(d.err); len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), want) {
		t.Errorf("error = %v; want one starting %q", d.err, want)
	}
	if _, err := cli.Delete(ctx, "/mesh/config/bad.yaml"); err != nil {
		t.Fatal(err)
	}
	if d := next(ctx, t, ch); d.err != nil || d.set.Len() != 1 {
		t.Errorf("after deleting the bad document: %v resources, %v; want ratings again", d.set.Len(), d.err)
	}
}

// TestApplyWritesAndRemovesFiles: Apply writes what changed and deletes
// what is gone, in one transaction (the source sees one change), and
// refuses an invalid set without writing anything.
func TestApplyWritesAndRemovesFiles(t *testing.T) {
	ctx := testContext(t)
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	c := NewClient(cli, "/trellis")
	keys := func() []string {
		resp, err := cli.Get(ctx, "/trellis/config/", withPrefix()...)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, kv := range resp.Kvs {
			out = append(out, string(kv.Key))
		}
		return out
	}
	res, err := c.Apply(ctx, map[string][]byte{"ratings.yaml": []byte(ratingsEntry), "reviews.yaml": []byte(reviewsEntry)})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(res, ApplyResult{Put: []string{"ratings.yaml", "reviews.yaml"}}); diff != "" {
		t.Errorf("first Apply (-got +want):\n%s", diff)
	}
	ch := runSource(t, c.ConfigSource(nil))
	if d := next(ctx, t, ch); d.err != nil || d.set.Len() != 2 {
		t.Fatalf("delivery = %v resources, %v; want 2", d.set.Len(), d.err)
	}

	res, err = c.Apply(ctx, map[string][]byte{"ratings.yaml": []byte(ratingsEntry)})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(res, ApplyResult{Deleted: []string{"reviews.yaml"}, Unchanged: []string{"ratings.yaml"}}); diff != "" {
		t.Errorf("second Apply (-got +want):\n%s", diff)
	}
	if d := next(ctx, t, ch); d.err != nil || d.set.Len() != 1 {
		t.Fatalf("delivery = %v resources, %v; want 1", d.set.Len(), d.err)
	}
	if got, want := keys(), []string{"/trellis/config/ratings.yaml"}; !slices.Equal(got, want) {
		t.Errorf("keys = %v, want %v", got, want)
	}

	_, err = c.Apply(ctx, map[string][]byte{"ratings.yaml": []byte(ratingsEntry + "  bogus: 1\n")})
	if err == nil || !strings.Contains(err.Error(), "/trellis/config/ratings.yaml") || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("Apply(invalid) = %v; want an error naming the file and field", err)
	}
	if _, err := c.Apply(ctx, map[string][]byte{"../x.yaml": []byte(ratingsEntry)}); err == nil {
		t.Error("Apply with a path for a name succeeded")
	}
	resp, err := cli.Get(ctx, "/trellis/config/ratings.yaml")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != ratingsEntry {
		t.Errorf("after refused Applies, ratings.yaml = %v, %v; want it unchanged", resp, err)
	}
	select {
	case d := <-ch:
		t.Errorf("a refused Apply was delivered: %v resources, %v", d.set.Len(), d.err)
	default:
	}
}

func withPrefix() []clientv3.OpOption { return []clientv3.OpOption{clientv3.WithPrefix()} }
