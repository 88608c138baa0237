// Command plainclient is a standard grpc-go xDS client with no Trellis code
// linked in: it reads the bootstrap named by GRPC_XDS_BOOTSTRAP, dials
// xds:///<target>, sends -n RPCs and prints how many each version answered.
// The end-to-end tests build and run it to show that the control plane
// serves clients other than mesh.Dial, including clusters that use
// Trellis's own LB policies (which such a client does not have).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/xds" // the xds:/// resolver and xDS balancers

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
)

func main() {
	target := flag.String("target", "greeter:9080", "mesh target")
	n := flag.Int("n", 20, "RPCs to send")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cc, err := grpc.NewClient("xds:///"+*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "plainclient:", err)
		os.Exit(1)
	}
	defer cc.Close()
	client := greeterpb.NewGreeterClient(cc)
	versions := map[string]int{}
	for range *n {
		r, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "plain"}, grpc.WaitForReady(true))
		if err != nil {
			fmt.Fprintln(os.Stderr, "plainclient:", err)
			os.Exit(1)
		}
		versions[r.GetVersion()]++
	}
	fmt.Printf("plain client: %d replies from v1\n", versions["v1"])
}
