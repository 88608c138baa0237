// Command standardclient is grpc-go's own xDS client with no Trellis code
// linked in: it reads the bootstrap named by GRPC_XDS_BOOTSTRAP, dials
// xds:///<target> with xDS client credentials (plaintext as the fallback)
// or, with -creds insecure, plaintext only, and calls
// grpc.testing.TestService's UnaryCall and EmptyCall once each. It prints
// one line per call: "UnaryCall: OK peer=<x-peer header>" or
// "UnaryCall: <code>", and the same for EmptyCall.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	_ "google.golang.org/grpc/xds" // the xds:/// resolver and xDS balancers
)

func main() {
	target := flag.String("target", "echo:50051", "mesh target")
	mode := flag.String("creds", "xds", "xds or insecure")
	wait := flag.Bool("wait", true, "wait for the server to be ready")
	timeout := flag.Duration("timeout", 5*time.Second, "per-call timeout")
	flag.Parse()
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if *mode == "xds" {
		var err error
		if creds, err = xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()}); err != nil {
			fmt.Fprintln(os.Stderr, "standardclient:", err)
			os.Exit(1)
		}
	}
	cc, err := grpc.NewClient("xds:///"+*target, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintln(os.Stderr, "standardclient:", err)
		os.Exit(1)
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)
	call := func(name string, f func(context.Context) (metadata.MD, error)) {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		md, err := f(ctx)
		if err != nil {
			fmt.Printf("%s: %s\n", name, status.Code(err))
			fmt.Fprintf(os.Stderr, "standardclient: %s: %v\n", name, err)
			return
		}
		if peer := md.Get("x-peer"); len(peer) > 0 {
			fmt.Printf("%s: OK peer=%s\n", name, strings.Join(peer, ","))
			return
		}
		fmt.Printf("%s: OK\n", name)
	}
	call("UnaryCall", func(ctx context.Context) (metadata.MD, error) {
		var md metadata.MD
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&md), grpc.WaitForReady(*wait))
		return md, err
	})
	call("EmptyCall", func(ctx context.Context) (metadata.MD, error) {
		_, err := client.EmptyCall(ctx, &testgrpc.Empty{}, grpc.WaitForReady(*wait))
		return nil, err
	})
}
