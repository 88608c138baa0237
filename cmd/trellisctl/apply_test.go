package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellismesh/trellis/internal/etcdstore/etcdtest"
)

const ratings = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings]
  ports: [{number: 9080, name: grpc}]
  resolution: STATIC
`

// TestApplyToEtcd: apply writes a directory to etcd, removes the keys of
// files deleted from it, and refuses an invalid directory, writing nothing.
func TestApplyToEtcd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	store := "etcd://" + srv.Endpoint() + "/mesh"
	dir := t.TempDir()
	write(t, dir, "ratings.yaml", ratings)
	write(t, dir, "reviews.yaml", strings.ReplaceAll(ratings, "ratings", "reviews"))
	write(t, dir, "README.md", "not configuration")
	keys := func() map[string]string {
		resp, err := cli.Get(ctx, "/mesh/config/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, kv := range resp.Kvs {
			out[string(kv.Key)] = string(kv.Value)
		}
		return out
	}
	runOK := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 0 {
			t.Fatalf("run(%q) = %d\nstdout:\n%s\nstderr:\n%s", args, code, &stdout, &stderr)
		}
		return stdout.String()
	}

	out := runOK("apply", "-store", store, dir)
	if !strings.Contains(out, "2 written, 0 deleted") {
		t.Errorf("first apply printed:\n%s", out)
	}
	got := keys()
	if names := slices.Sorted(func(yield func(string) bool) {
		for k := range got {
			if !yield(k) {
				return
			}
		}
	}); !slices.Equal(names, []string{"/mesh/config/ratings.yaml", "/mesh/config/reviews.yaml"}) {
		t.Fatalf("keys after apply = %v", names)
	}
	if got["/mesh/config/ratings.yaml"] != ratings {
		t.Errorf("ratings.yaml in etcd = %q, want the file", got["/mesh/config/ratings.yaml"])
	}

	if err := os.Remove(filepath.Join(dir, "reviews.yaml")); err != nil {
		t.Fatal(err)
	}
	out = runOK("apply", "-store", store, dir)
	if !strings.Contains(out, "deleted: reviews.yaml") || !strings.Contains(out, "0 written, 1 deleted, 1 unchanged") {
		t.Errorf("second apply printed:\n%s", out)
	}
	if got := keys(); len(got) != 1 {
		t.Errorf("keys after removing a file = %v, want ratings.yaml alone", got)
	}

	write(t, dir, "ratings.yaml", ratings+"  bogus: 1\n")
	write(t, dir, "new.yaml", strings.ReplaceAll(ratings, "ratings", "details"))
	var stdout, stderr bytes.Buffer
	if code := run([]string{"apply", "-store", store, dir}, &stdout, &stderr); code != 1 {
		t.Errorf("apply of an invalid directory = %d, want 1", code)
	}
	if want := "error: " + filepath.Join(dir, "ratings.yaml") + ":1: ServiceEntry default/ratings: spec.bogus:"; !strings.Contains(stdout.String(), want) {
		t.Errorf("apply of an invalid directory printed:\n%s\nwant %q", &stdout, want)
	}
	if got := keys(); len(got) != 1 || got["/mesh/config/ratings.yaml"] != ratings {
		t.Errorf("an invalid directory changed etcd: %v", got)
	}

	for _, args := range [][]string{
		{"apply", dir},
		{"apply", "-store", "memory", dir},
		{"apply", "-store", store},
	} {
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}
