// Command secure runs a zero-trust Trellis mesh in one process: a control
// plane with its CA, a greeter server and two clients, each with a SPIFFE
// identity from a join token, under Istio security policy:
//
//   - PeerAuthentication STRICT: only mutual TLS reaches the greeter;
//
//   - RequestAuthentication: JWTs from the issuer https://issuer.example
//     are verified against its keys;
//
//   - AuthorizationPolicy: SayHello is allowed only to the workload
//     spiffe://cluster.local/ns/default/sa/frontend carrying a token of
//     the group "admins".
//
//     go run ./examples/secure
//
// It prints one line per call: who called, with which token, and what the
// greeter answered (or why not).
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/examples/greeter"
	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

func main() {
	timeout := flag.Duration("timeout", 20*time.Second, "how long to wait for the mesh to converge")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, *timeout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "secure:", err)
		os.Exit(1)
	}
}

// policy is the mesh's security configuration; %s is the issuer's JWKS.
const policy = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: issuer, namespace: default}
spec:
  jwtRules:
  - issuer: https://issuer.example
    jwks: '%s'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: greeter, namespace: default}
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/default/sa/frontend]
        requestPrincipals: [https://issuer.example/*]
    to:
    - operation: {paths: [/trellis.examples.greeter.v1.Greeter/SayHello]}
    when:
    - {key: "request.auth.claims[group]", values: [admins]}
`

func run(ctx context.Context, w io.Writer, timeout time.Duration) (err error) {
	var stops []func(context.Context) error
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, stop := range slices.Backward(stops) {
			err = errors.Join(err, stop(sctx))
		}
	}()

	// 1. The issuer's signing key, whose public half the mesh trusts.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "demo", Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		return err
	}

	// 2. The control plane: config, a data directory for its CA, join
	// tokens binding each workload to its identity, and its two ports.
	dir, err := os.MkdirTemp("", "trellis-secure-")
	if err != nil {
		return err
	}
	stops = append(stops, func(context.Context) error { return os.RemoveAll(dir) })
	config, data := filepath.Join(dir, "config"), filepath.Join(dir, "data")
	if err := os.Mkdir(config, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(config, "security.yaml"), fmt.Appendf(nil, policy, jwks), 0o644); err != nil {
		return err
	}
	cp, err := xdsserver.New(
		xdsserver.WithConfigDir(config),
		xdsserver.WithDataDir(data),
		xdsserver.WithJoinTokens(map[string]xdsserver.WorkloadIdentity{
			"greeter-token":  {Namespace: "default", ServiceAccount: "greeter"},
			"frontend-token": {Namespace: "default", ServiceAccount: "frontend"},
			"batch-token":    {Namespace: "default", ServiceAccount: "batch"},
		}))
	if err != nil {
		return err
	}
	stops = append(stops, func(context.Context) error { return cp.Close() })
	xdsLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	secureLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		xdsLis.Close()
		return err
	}
	go cp.Serve(xdsLis)
	go cp.ServeSecure(secureLis)
	fmt.Fprintf(w, "control plane  xDS %s, CA and secure xDS %s\n", xdsLis.Addr(), secureLis.Addr())

	// Every workload gets its identity the same way: a join token, and the
	// CA's root to check the control plane with. These are WorkloadOptions,
	// options of servers and clients alike.
	as := func(token string) []mesh.WorkloadOption {
		return []mesh.WorkloadOption{
			mesh.WithControlPlane(xdsLis.Addr().String()),
			mesh.WithCAAddr(secureLis.Addr().String()),
			mesh.WithTrustBundleFile(filepath.Join(data, "root-cert.pem")),
			mesh.WithJoinToken(token),
		}
	}

	// 3. The greeter, serving as spiffe://cluster.local/ns/default/sa/greeter.
	srvOpts := []mesh.ServerOption{mesh.WithService("greeter", "v1"), mesh.WithServicePort(9080)}
	for _, o := range as("greeter-token") {
		srvOpts = append(srvOpts, o) // a WorkloadOption is a ServerOption
	}
	srv, err := mesh.NewServer(srvOpts...)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	greeterpb.RegisterGreeterServer(srv, &greeter.Server{Version: "v1", Instance: lis.Addr().String()})
	go srv.Serve(lis)
	stops = append(stops, srv.Shutdown)
	fmt.Fprintf(w, "greeter        %s\n\n", lis.Addr())

	// 4. Two clients: the frontend, which the policy admits, and a batch
	// job, which it does not.
	frontend, err := dial(as("frontend-token"))
	if err != nil {
		return err
	}
	batch, err := dial(as("batch-token"))
	if err != nil {
		return err
	}
	stops = append(stops, func(context.Context) error { frontend.close(); batch.close(); return nil })

	admin, err := token(key, "alice", "admins")
	if err != nil {
		return err
	}
	user, err := token(key, "bob", "users")
	if err != nil {
		return err
	}

	// Wait until the allowed call goes through: identities issued, server
	// registered, policy delivered.
	deadline := time.Now().Add(timeout)
	for {
		_, err := frontend.call(ctx, admin)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the allowed call never succeeded: %w", err)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}

	for _, c := range []struct {
		who, what string
		client    *client
		token     string
	}{
		{"frontend", "admin token", frontend, admin},
		{"frontend", "user token", frontend, user},
		{"frontend", "no token", frontend, ""},
		{"frontend", "forged token", frontend, "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIn0."},
		{"batch", "admin token", batch, admin},
	} {
		reply, err := c.client.call(ctx, c.token)
		result := "allowed: " + reply.GetMessage()
		if err != nil {
			result = "denied:  " + status.Code(err).String()
		}
		fmt.Fprintf(w, "%-9s %-13s %s\n", c.who, c.what, result)
	}
	return nil
}

type client struct {
	greeterpb.GreeterClient
	close func()
}

func dial(identity []mesh.WorkloadOption) (*client, error) {
	var opts []mesh.DialOption
	for _, o := range identity {
		opts = append(opts, o) // and a DialOption
	}
	cc, err := mesh.Dial("greeter:9080", opts...)
	if err != nil {
		return nil, err
	}
	return &client{GreeterClient: greeterpb.NewGreeterClient(cc), close: func() { cc.Close() }}, nil
}

func (c *client) call(ctx context.Context, authorization string) (*greeterpb.HelloReply, error) {
	if authorization != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.SayHello(ctx, &greeterpb.HelloRequest{Name: "mesh"})
}

// token issues a JWT as the issuer would.
func token(key *rsa.PrivateKey, subject, group string) (string, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "demo"))
	if err != nil {
		return "", err
	}
	t, err := josejwt.Signed(s).
		Claims(josejwt.Claims{Issuer: "https://issuer.example", Subject: subject, Expiry: josejwt.NewNumericDate(time.Now().Add(time.Hour))}).
		Claims(map[string]any{"group": group}).
		Serialize()
	return "Bearer " + t, err
}
