package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/trellismesh/trellis/internal/config"
	"github.com/trellismesh/trellis/internal/etcdstore"
)

const applyUsage = `  apply -store etcd://HOST:PORT[,HOST:PORT...][/PREFIX] DIR
                               write a configuration directory to etcd, for xdsserver -store
`

// applyTimeout bounds the whole of apply.
var applyTimeout = 30 * time.Second

// apply validates DIR as validate does and, if it is valid, makes the
// configuration in the store exactly DIR's files, in one transaction.
func apply(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	fs.SetOutput(stderr)
	store := fs.String("store", "", "where the configuration is kept: etcd://host:port[,host:port...][/prefix]")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || *store == "" {
		fmt.Fprint(stderr, "usage: trellisctl apply -store etcd://HOST:PORT[,HOST:PORT...][/PREFIX] DIR\n")
		return 2
	}
	dir := fs.Arg(0)
	loc, err := etcdstore.ParseURI(*store)
	if err != nil {
		fmt.Fprintln(stderr, "trellisctl:", err)
		return 2
	}
	if _, err := config.LoadDir(dir); err != nil {
		errs := config.Errors(err)
		if len(errs) == 0 {
			fmt.Fprintln(stderr, "trellisctl:", err)
			return 1
		}
		for _, e := range errs {
			fmt.Fprintln(stdout, "error:", e)
		}
		fmt.Fprintf(stdout, "%s: rejected (%d errors); nothing written to %s\n", dir, len(errs), loc)
		return 1
	}
	files, err := readDir(dir)
	if err != nil {
		fmt.Fprintln(stderr, "trellisctl:", err)
		return 1
	}
	c, err := etcdstore.Dial(loc)
	if err != nil {
		fmt.Fprintln(stderr, "trellisctl:", err)
		return 1
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
	defer cancel()
	res, err := c.Apply(ctx, files)
	if err != nil {
		// The files changed between the two reads, or etcd refused.
		fmt.Fprintln(stderr, "trellisctl:", err)
		return 1
	}
	for _, n := range res.Put {
		fmt.Fprintln(stdout, "put:", n)
	}
	for _, n := range res.Deleted {
		fmt.Fprintln(stdout, "deleted:", n)
	}
	fmt.Fprintf(stdout, "%s: applied to %s (%d written, %d deleted, %d unchanged)\n", dir, loc, len(res.Put), len(res.Deleted), len(res.Unchanged))
	return 0
}

// readDir reads the files config.LoadDir reads, by base name.
func readDir(dir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() || !config.IsConfigFile(e.Name()) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		files[e.Name()] = data
	}
	return files, nil
}
