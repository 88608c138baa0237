// Command standardserver is grpc-go's own xDS server with no Trellis code
// linked in: xds.NewGRPCServer with xDS server credentials (plaintext as
// the fallback), as grpc-go's interop server runs in secure mode, serving
// grpc.testing.TestService. It reads the bootstrap named by
// GRPC_XDS_BOOTSTRAP, listens on -addr, prints "listening on HOST:PORT"
// and serves until it is killed. UnaryCall answers with the header
// x-peer: the caller's SPIFFE ID (the URI SAN of its certificate), or
// "plaintext".
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds"
)

type testService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func (testService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	who := "plaintext"
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 && len(ti.State.PeerCertificates[0].URIs) > 0 {
			who = ti.State.PeerCertificates[0].URIs[0].String()
		}
	}
	grpc.SetHeader(ctx, metadata.Pairs("x-peer", who))
	host, _ := os.Hostname()
	return &testgrpc.SimpleResponse{Hostname: host}, nil
}

func main() {
	addr := flag.String("addr", "0.0.0.0:0", "listen address")
	flag.Parse()
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "standardserver:", err)
		os.Exit(1)
	}
	srv, err := xds.NewGRPCServer(grpc.Creds(creds), xds.ServingModeCallback(func(addr net.Addr, args xds.ServingModeChangeArgs) {
		fmt.Fprintf(os.Stderr, "standardserver: %s serving mode %v (%v)\n", addr, args.Mode, args.Err)
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "standardserver:", err)
		os.Exit(1)
	}
	testgrpc.RegisterTestServiceServer(srv, testService{})
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "standardserver:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", lis.Addr())
	if err := srv.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, "standardserver:", err)
		os.Exit(1)
	}
}
