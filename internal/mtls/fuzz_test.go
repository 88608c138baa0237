package mtls

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// memConn is a connection that reads fixed bytes, then io.EOF, and
// discards what is written: nothing on it can block.
type memConn struct{ r *bytes.Reader }

func (c memConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c memConn) Close() error                     { return nil }
func (c memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c memConn) SetDeadline(time.Time) error      { return nil }
func (c memConn) SetReadDeadline(time.Time) error  { return nil }
func (c memConn) SetWriteDeadline(time.Time) error { return nil }

// clientHello returns the first TLS record a ClientConfig client sends.
func clientHello(f *testing.F, cfg *tls.Config) []byte {
	f.Helper()
	server, client := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(client, cfg).Handshake()
	}()
	header := make([]byte, 5)
	if _, err := io.ReadFull(server, header); err != nil {
		f.Fatal(err)
	}
	body := make([]byte, int(header[3])<<8|int(header[4]))
	if _, err := io.ReadFull(server, body); err != nil {
		f.Fatal(err)
	}
	server.Close()
	client.Close()
	<-done
	return append(header, body...)
}

// FuzzSniff feeds arbitrary first bytes to PERMISSIVE mode: the sniff
// never panics or blocks, classifies exactly the TLS record header as
// TLS, replays every byte, and the gRPC credentials then either finish
// (plaintext) or fail the TLS handshake, never hang.
func FuzzSniff(f *testing.F) {
	p := newPKI(f)
	creds := PermissiveCredentials(ServerConfig(p.server, nil))
	hello := clientHello(f, mustClientConfig(f, p.client, serverID))
	for _, seed := range [][]byte{
		nil,
		{0x16},
		{0x16, 0x03},
		{0x16, 0x03, 0x01},
		hello,
		hello[:len(hello)/2],
		[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		isTLS, conn, err := sniff(memConn{bytes.NewReader(data)})
		if len(data) == 0 {
			if err == nil {
				t.Fatalf("sniff(empty) = nil error, want io.EOF")
			}
			return
		}
		if err != nil {
			t.Fatalf("sniff(%q) = %v, want success", data, err)
		}
		if want := looksLikeTLS(data); isTLS != want {
			t.Errorf("sniff(%q) TLS = %v, want %v", data, isTLS, want)
		}
		replayed, err := io.ReadAll(conn)
		if err != nil || !bytes.Equal(replayed, data) {
			t.Errorf("sniff(%q) replays %q, %v, want all bytes", data, replayed, err)
		}

		out, info, err := creds.ServerHandshake(memConn{bytes.NewReader(data)})
		switch {
		case isTLS && err == nil:
			t.Errorf("ServerHandshake(%q) = %v, want a failed TLS handshake", data, info)
		case !isTLS && (err != nil || info.AuthType() != "plaintext"):
			t.Errorf("ServerHandshake(%q) = %v, %v, want plaintext", data, info, err)
		case out != nil:
			out.Close()
		}
	})
}
