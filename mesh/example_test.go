package mesh_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

// startControlPlane runs an in-process control plane for the examples; in
// production it is `go run ./cmd/xdsserver`.
func startControlPlane() (addr string, stop func()) {
	cp, err := xdsserver.New(xdsserver.WithInsecureRegistration()) // servers without identities register
	if err != nil {
		log.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go cp.Serve(lis)
	return lis.Addr().String(), func() { cp.Close() }
}

func Example() {
	cp, stop := startControlPlane()
	defer stop()

	// A server joins the mesh as greeter v1 on service port 9080.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv, err := mesh.NewServer(
		mesh.WithControlPlane(cp),
		mesh.WithService("greeter", "v1"),
		mesh.WithServicePort(9080),
	)
	if err != nil {
		log.Fatal(err)
	}
	greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: "v1"})
	go srv.Serve(lis)
	defer srv.Close()

	// A client dials it by name. Dial never blocks; WaitForReady lets the
	// first RPC wait until the control plane knows the endpoint.
	conn, err := mesh.Dial("greeter:9080", mesh.WithControlPlane(cp))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var reply *greeterpb.HelloReply
	for reply == nil {
		reply, err = greeterpb.NewGreeterClient(conn).SayHello(ctx, &greeterpb.HelloRequest{Name: "mesh"})
		if ctx.Err() != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(reply.GetMessage())
	// Output: hello mesh from v1
}
