package etcdstore

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellismesh/trellis/internal/config"
)

// configDebounce gathers the changes of one burst into one reload.
var configDebounce = 100 * time.Millisecond

// ConfigSource is a config.Source reading the YAML documents kept under
// <prefix>/config/. Each key is one file, named by its key in errors
// ("/trellis/config/reviews.yaml:12: VirtualService default/reviews: ...").
// The whole prefix loads as one configuration or not at all. It is safe for
// concurrent use.
type ConfigSource struct {
	c   *Client
	log *slog.Logger
}

var _ config.Source = (*ConfigSource)(nil)

// ConfigSource returns a source of the configuration kept under the
// Client's prefix. logger may be nil.
func (c *Client) ConfigSource(logger *slog.Logger) *ConfigSource {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &ConfigSource{c: c, log: logger}
}

// String returns the etcd URI.
func (s *ConfigSource) String() string { return s.c.String() }

// Run reads the configuration, calls update with it, and again after every
// change (debounced), until ctx is done. While etcd is away it waits and
// retries; the last configuration delivered stays in force meanwhile.
func (s *ConfigSource) Run(ctx context.Context, update func(*config.Set, error)) error {
	var last map[string][]byte // the files of the last delivery
	deliver := func(files map[string][]byte) {
		if last != nil && maps.EqualFunc(files, last, bytes.Equal) {
			return
		}
		last = maps.Clone(files)
		update(config.Load(files))
	}
	backoff := newRetrier()
	failing := false
	for ctx.Err() == nil {
		files, rev, err := s.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			level := slog.LevelDebug // once per outage at warn
			if !failing {
				level, failing = slog.LevelWarn, true
			}
			s.log.Log(ctx, level, "cannot read the configuration from etcd; keeping the last one", "source", s.String(), "error", err)
			if !backoff.wait(ctx) {
				break
			}
			continue
		}
		failing = false
		backoff.reset()
		deliver(files)
		s.watch(ctx, files, rev, deliver)
	}
	return nil
}

func (s *ConfigSource) list(ctx context.Context) (map[string][]byte, int64, error) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := s.c.cli.Get(rctx, s.c.configPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	files := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		files[string(kv.Key)] = kv.Value
	}
	return files, resp.Header.Revision, nil
}

// watch follows the changes after rev, delivering the files after each
// burst, until ctx is done or the watch fails (compaction).
func (s *ConfigSource) watch(ctx context.Context, files map[string][]byte, rev int64, deliver func(map[string][]byte)) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := s.c.cli.Watch(wctx, s.c.configPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	var timer *time.Timer
	var fire <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case resp, ok := <-wch:
			if !ok {
				return
			}
			if err := resp.Err(); err != nil {
				s.log.Warn("etcd watch of the configuration ended; reading it again", "source", s.String(), "error", err)
				return
			}
			for _, ev := range resp.Events {
				switch ev.Type {
				case clientv3.EventTypePut:
					files[string(ev.Kv.Key)] = ev.Kv.Value
				case clientv3.EventTypeDelete:
					delete(files, string(ev.Kv.Key))
				}
			}
			if len(resp.Events) > 0 && fire == nil {
				timer = time.NewTimer(configDebounce)
				fire = timer.C
			}
		case <-fire:
			fire, timer = nil, nil
			deliver(files)
		}
	}
}

// ApplyResult says what Apply changed, by file name.
type ApplyResult struct {
	Put, Deleted, Unchanged []string
}

// Apply makes the configuration kept in etcd exactly files (file name →
// contents; names are base names such as "reviews.yaml"): it puts the
// files that changed and deletes the keys of files not given, in one
// transaction, so replicas never see half of a change. It validates files
// first (as config.Load, naming each file by the key it will have) and
// writes nothing if they are invalid. It fails without writing if the
// configuration in etcd changed while Apply ran.
func (c *Client) Apply(ctx context.Context, files map[string][]byte) (ApplyResult, error) {
	var res ApplyResult
	byKey := make(map[string][]byte, len(files))
	for name, data := range files {
		if name == "" || strings.Contains(name, "/") || name != path.Clean(name) || name == ".." {
			return res, fmt.Errorf("etcdstore: file name %q: want a base name", name)
		}
		byKey[c.configPrefix()+name] = data
	}
	if _, err := config.Load(byKey); err != nil {
		return res, err
	}
	cur, rev, err := (&ConfigSource{c: c}).list(ctx)
	if err != nil {
		return res, fmt.Errorf("etcdstore: %s: read configuration: %w", c, err)
	}
	var ops []clientv3.Op
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		name := strings.TrimPrefix(k, c.configPrefix())
		if old, ok := cur[k]; ok && bytes.Equal(old, byKey[k]) {
			res.Unchanged = append(res.Unchanged, name)
			continue
		}
		ops = append(ops, clientv3.OpPut(k, string(byKey[k])))
		res.Put = append(res.Put, name)
	}
	for _, k := range slices.Sorted(maps.Keys(cur)) {
		if _, ok := byKey[k]; !ok {
			ops = append(ops, clientv3.OpDelete(k))
			res.Deleted = append(res.Deleted, strings.TrimPrefix(k, c.configPrefix()))
		}
	}
	if len(ops) == 0 {
		return res, nil
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	// Nothing under the prefix may have been written after the read.
	resp, err := c.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.ModRevision(c.configPrefix()), "<", rev+1).WithPrefix()).
		Then(ops...).
		Commit()
	if err != nil {
		return ApplyResult{}, fmt.Errorf("etcdstore: %s: write configuration (%d changes in one transaction): %w", c, len(ops), err)
	}
	if !resp.Succeeded {
		return ApplyResult{}, fmt.Errorf("etcdstore: %s: the configuration changed while it was being written; nothing was written, try again", c)
	}
	return res, nil
}
