// Package greeter is the service the Trellis examples run: a gRPC Greeter
// that says which version and instance answered, so that traffic splits are
// visible.
package greeter

import (
	"context"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
)

// Server implements greeterpb.GreeterServer.
type Server struct {
	greeterpb.UnimplementedGreeterServer
	// Version is reported in every reply.
	Version string
	// Instance is reported in every reply (for example the listen address).
	Instance string
}

// SayHello greets req.Name.
func (s *Server) SayHello(_ context.Context, req *greeterpb.HelloRequest) (*greeterpb.HelloReply, error) {
	return &greeterpb.HelloReply{
		Message:  "hello " + req.GetName() + " from " + s.Version,
		Version:  s.Version,
		Instance: s.Instance,
	}, nil
}
