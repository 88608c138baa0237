package e2e

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
)

// rawCall sends one gRPC call with the given :path over a plaintext
// HTTP/2 connection built frame by frame (as an attacker would, since
// grpc-go's client always sends a well-formed path) and returns the
// grpc-status the server answers with.
func rawCall(t *testing.T, addr, path string) codes.Code {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "greeter:9080"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	msg, _ := proto.Marshal(&greeterpb.HelloRequest{Name: "raw"})
	body := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
	if err := fr.WriteData(1, true, body); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer to %q: %v", path, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if v := f.PseudoValue("status"); v != "" && v != "200" {
				return codes.Unknown
			}
			for _, hf := range f.RegularFields() {
				if hf.Name == "grpc-status" {
					n, _ := strconv.Atoi(hf.Value)
					return codes.Code(n)
				}
			}
		case *http2.RSTStreamFrame:
			return codes.Canceled
		case *http2.GoAwayFrame:
			return codes.Unavailable
		}
	}
}

// TestMalformedGRPCPathCannotSlipPastDeny: a :path without its leading
// slash (which grpc-go would still route to the method) or with a double
// slash never reaches a handler that a DENY rule covers; the well-formed
// path is denied too, and another method still works.
func TestMalformedGRPCPathCannotSlipPastDeny(t *testing.T) {
	ctx := testContext(t)
	m := startSecureMesh(t, fmt.Sprintf(peerAuthn, "PERMISSIVE")+`
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-hello, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["`+sayHello+`"]}}]
`)
	g, seen := m.startSecureGreeter(t)
	waitFor(ctx, t, "the policy in force", func() error {
		if c := rawCall(t, g.addr, sayHello); c != codes.PermissionDenied {
			return fmt.Errorf("well-formed path: grpc-status %v, want PermissionDenied", c)
		}
		return nil
	})
	for _, path := range []string{
		sayHello[1:],         // no leading slash
		"/" + sayHello,       // double slash
		sayHello + "/",       // trailing slash
		"/./" + sayHello[1:], // dot segment
	} {
		if c := rawCall(t, g.addr, path); c == codes.OK {
			t.Errorf("raw call with :path %q = OK, want it refused", path)
		}
	}
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if len(seen.ids) > 0 {
		t.Errorf("handler ran %d times for denied paths, want 0", len(seen.ids))
	}
}
