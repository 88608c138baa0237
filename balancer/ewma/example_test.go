package ewma_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	_ "github.com/trellismesh/trellis/balancer/ewma" // registers trellis_ewma
	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
)

// A client selects the policy with its service config.
func Example() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer()
	greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: "v1"})
	go srv.Serve(lis)
	defer srv.Stop()

	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"trellis_ewma":{"decay":"10s"}}]}`),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	reply, err := greeterpb.NewGreeterClient(cc).SayHello(context.Background(), &greeterpb.HelloRequest{Name: "mesh"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.GetMessage())
	// Output: hello mesh from v1
}
