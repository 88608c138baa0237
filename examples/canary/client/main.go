// Command client sends RPCs to the greeter service through the mesh and
// prints which versions and instances answered.
//
//	go run ./examples/canary/client
//	go run ./examples/canary/client -n 200 -header "x-canary: true"
//
// It exits with status 1 if any RPC failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
)

func main() {
	var (
		target       = flag.String("target", "greeter:9080", "mesh service to call, NAME:PORT")
		n            = flag.Int("n", 1000, "number of RPCs to send")
		controlPlane = flag.String("control-plane", "", "control-plane address (default $"+mesh.EnvControlPlane+", else "+mesh.DefaultControlPlane+")")
		timeout      = flag.Duration("timeout", 30*time.Second, "give up after this long")
		headers      []string
	)
	flag.Func("header", `header to send with every RPC, "name: value" (repeatable)`, func(s string) error {
		name, value, ok := strings.Cut(s, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("%q is not name: value", s)
		}
		headers = append(headers, strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value))
		return nil
	})
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	err := run(ctx, os.Stdout, *target, *controlPlane, *n, headers)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

// run sends n RPCs to target with the given headers (name, value pairs) and
// writes the count per version and instance to w.
func run(ctx context.Context, w io.Writer, target, controlPlane string, n int, headers []string) error {
	if n <= 0 {
		return fmt.Errorf("-n %d: want a positive number", n)
	}
	var opts []mesh.DialOption
	if controlPlane != "" {
		// Without this option, mesh uses $TRELLIS_CONTROL_PLANE, then
		// 127.0.0.1:15010.
		opts = append(opts, mesh.WithControlPlane(controlPlane))
	}
	// mesh.Dial instead of grpc.NewClient: routes and endpoints come from
	// the control plane. It does not block; the first RPC waits for them.
	cc, err := mesh.Dial(target, opts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	client := greeterpb.NewGreeterClient(cc)
	// Headers travel as gRPC metadata, which VirtualService header matches
	// see.
	ctx = metadata.AppendToOutgoingContext(ctx, headers...)

	versions := map[string]int{}
	instances := map[string]map[string]int{} // version → instance → count
	failed, sent := 0, 0
	var lastErr error
	for ; sent < n && ctx.Err() == nil; sent++ {
		reply, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "canary client"})
		if err != nil {
			failed++
			lastErr = err
			continue
		}
		v := reply.GetVersion()
		versions[v]++
		if instances[v] == nil {
			instances[v] = map[string]int{}
		}
		instances[v][reply.GetInstance()]++
	}

	fmt.Fprintf(w, "%d RPCs to %s", sent, target)
	for i := 0; i < len(headers); i += 2 {
		fmt.Fprintf(w, ", %s: %s", headers[i], headers[i+1])
	}
	fmt.Fprintln(w)
	for _, v := range slices.Sorted(maps.Keys(versions)) {
		var per []string
		for _, inst := range slices.Sorted(maps.Keys(instances[v])) {
			per = append(per, fmt.Sprintf("%s %d", inst, instances[v][inst]))
		}
		fmt.Fprintf(w, "  %-6s %5d  %5.1f%%   (%s)\n", v, versions[v], 100*float64(versions[v])/float64(sent), strings.Join(per, ", "))
	}
	if failed > 0 {
		fmt.Fprintf(w, "  %-6s %5d  %5.1f%%\n", "failed", failed, 100*float64(failed)/float64(sent))
	}
	switch {
	case failed > 0 && failed == sent:
		return fmt.Errorf("every RPC failed (are the control plane and the greeter servers running?), the last with: %w", lastErr)
	case failed > 0:
		return fmt.Errorf("%d of %d RPCs failed, the last with: %w", failed, sent, lastErr)
	case sent < n:
		return fmt.Errorf("sent %d of %d RPCs: %w", sent, n, ctx.Err())
	}
	return nil
}
