package recycle_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	_ "github.com/trellismesh/trellis/balancer/recycle" // registers trellis_recycle
	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
)

// A client replaces each connection after it has carried 100 RPCs, and
// round-robins over the backends.
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
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"trellis_recycle":{
			"maxRequestsPerConnection": 100,
			"childPolicy": [{"round_robin": {}}]
		}}]}`),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	client := greeterpb.NewGreeterClient(cc)
	for range 250 {
		if _, err := client.SayHello(context.Background(), &greeterpb.HelloRequest{Name: "mesh"}); err != nil {
			log.Fatal(err)
		}
	}
	reply, err := client.SayHello(context.Background(), &greeterpb.HelloRequest{Name: "mesh"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.GetMessage())
	// Output: hello mesh from v1
}
