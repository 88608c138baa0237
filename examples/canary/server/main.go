// Command server runs one instance of the greeter service in the mesh. It
// listens on -addr and registers itself with the control plane as service
// "greeter", port 9080, with the label version=<-version>, which the
// DestinationRule in examples/canary/config turns into subsets.
//
//	go run ./examples/canary/server -version v1
//	go run ./examples/canary/server -version v2 -control-plane 127.0.0.1:15010
//
// SIGINT or SIGTERM deregister the instance (clients stop picking it) and
// stop it gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
)

func main() {
	var (
		version      = flag.String("version", "v1", "version of this instance, registered as the label version=<version>")
		addr         = flag.String("addr", "127.0.0.1:0", "address to listen on (port 0: any free port)")
		servicePort  = flag.Uint("service-port", 9080, "port clients dial (greeter:<port>), whatever port the instance listens on")
		controlPlane = flag.String("control-plane", "", "control-plane address (default $"+mesh.EnvControlPlane+", else "+mesh.DefaultControlPlane+")")
	)
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *version, *addr, *servicePort, *controlPlane)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done, then shuts down.
func run(ctx context.Context, version, addr string, servicePort uint, controlPlane string) error {
	if servicePort == 0 || servicePort > 65535 {
		return fmt.Errorf("-service-port %d is not between 1 and 65535", servicePort)
	}
	opts := []mesh.ServerOption{
		mesh.WithService("greeter", version),
		mesh.WithServicePort(uint16(servicePort)),
		// Log registration events to stderr; by default mesh logs nothing.
		mesh.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))),
	}
	if controlPlane != "" {
		// Without this option, mesh uses $TRELLIS_CONTROL_PLANE, then
		// 127.0.0.1:15010.
		opts = append(opts, mesh.WithControlPlane(controlPlane))
	}
	srv, err := mesh.NewServer(opts...)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: version, Instance: lis.Addr().String()})

	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	fmt.Printf("greeter %s serving on %s as greeter:%d\n", version, lis.Addr(), servicePort)

	select {
	case err := <-done: // Serve failed
		return err
	case <-ctx.Done():
	}
	// Shutdown deregisters first, so that clients stop sending new RPCs
	// here, then waits for the RPCs in flight.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, mesh.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err == nil {
		fmt.Printf("greeter %s on %s deregistered and stopped\n", version, lis.Addr())
	}
	return err
}
