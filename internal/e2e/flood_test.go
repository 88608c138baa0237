package e2e

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/trellismesh/trellis/mesh"
)

// rapidReset opens a plaintext HTTP/2 connection to addr and sends n
// streams, each cancelled at once with RST_STREAM (CVE-2023-44487), as
// fast as it can. It returns how many it sent before the server closed
// the connection.
func rapidReset(t *testing.T, addr, path string, n int) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go discard(conn) // read (and ignore) what the server answers
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	sent := 0
	for i := range n {
		id := uint32(2*i + 1)
		hb.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "flood"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}) != nil {
			break
		}
		if fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
		sent++
	}
	return sent
}

func discard(c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// TestRapidResetFloodLeavesServersServing: an HTTP/2 rapid-reset flood
// against a mesh server (gRPC and HTTP) does not stop it serving other
// clients, during the flood and after it.
func TestRapidResetFloodLeavesServersServing(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testContext(t)
			m := startSecureMesh(t, "")
			var addr, path string
			if p.name == "grpc" {
				g := startGreeter(t, m.addr, "v1", serverOpts(m.as("greeter-token"))...)
				addr, path = g.addr, sayHello
			} else {
				lis, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				srv, err := mesh.NewHTTPServer((&behaviour{}).handler("v1", lis.Addr().String()), httpServerOpts(m.as("hello-token"), mesh.WithService("hello", "v1"), mesh.WithServicePort(9080))...)
				if err != nil {
					t.Fatal(err)
				}
				done := make(chan error, 1)
				go func() { done <- srv.Serve(lis) }()
				t.Cleanup(func() {
					srv.Close()
					if err := <-done; !errors.Is(err, mesh.ErrServerClosed) {
						t.Errorf("Serve() = %v", err)
					}
				})
				addr, path = lis.Addr().String(), "/hello"
			}
			call := p.client(t, m, clientOpts(m.as("client-token"))...)
			ready(ctx, t, call)

			var wg sync.WaitGroup
			var sent atomic.Int64
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sent.Add(int64(rapidReset(t, addr, path, 20000)))
				}()
			}
			var calls, failed int
			floodDone := make(chan struct{})
			go func() { wg.Wait(); close(floodDone) }()
		loop:
			for {
				select {
				case <-floodDone:
					break loop
				default:
				}
				calls++
				if r := call(ctx); r.outcome != ok {
					failed++
				}
			}
			t.Logf("%s: %d reset streams sent; %d calls during the flood, %d failed", p.name, sent.Load(), calls, failed)
			if failed > 0 {
				t.Errorf("%d of %d calls failed during the flood", failed, calls)
			}
			if o, _, last := callMany(ctx, call, 50); o[ok] != 50 {
				t.Errorf("after the flood: outcomes %v (%v), want 50 ok", o, last.err)
			}
		})
	}
}
