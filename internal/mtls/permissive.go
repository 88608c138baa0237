package mtls

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// recordTypeHandshake is the TLS record type that opens every TLS
// connection: the record carrying the ClientHello.
const recordTypeHandshake = 0x16

// looksLikeTLS reports whether b, the first three bytes a client sent,
// open a TLS handshake record: type 0x16, then a record version 3.0 to
// 3.4 (clients put 3.1 here even for TLS 1.3). No plaintext protocol the
// mesh serves starts so: HTTP/1 starts with a method, HTTP/2 with
// "PRI * HTTP/2.0".
func looksLikeTLS(b []byte) bool {
	return len(b) >= 3 && b[0] == recordTypeHandshake && b[1] == 3 && b[2] <= 4
}

// sniff reads the first bytes of conn, as few as the decision needs, and
// reports whether they open a TLS handshake. The returned connection
// replays them. conn's read deadline bounds the wait; on error conn is
// left open for the caller to close.
func sniff(conn net.Conn) (bool, net.Conn, error) {
	var buf [3]byte
	n, err := io.ReadAtLeast(conn, buf[:], 1)
	if err != nil {
		return false, nil, err
	}
	if buf[0] == recordTypeHandshake && n < len(buf) {
		m, err := io.ReadFull(conn, buf[n:])
		n += m
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return false, nil, err
		}
		// A client that sent less than a record header and closed is
		// not TLS; its bytes are replayed to the plaintext handler.
	}
	return looksLikeTLS(buf[:n]), &replayConn{Conn: conn, pending: buf[:n:n]}, nil
}

// replayConn is a connection whose first reads return bytes already read
// from it. It is safe for concurrent use, as net.Conn requires.
type replayConn struct {
	net.Conn
	mu      sync.Mutex
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// PermissiveListener serves PERMISSIVE mutual TLS on one port: Accept
// returns a *tls.Conn (server side, not yet handshaken, as tls.Listener
// does) for a connection that opens with a TLS ClientHello, and the
// connection itself, its first bytes replayed, for anything else. Which
// one is decided on a goroutine per connection, within the handshake
// timeout (WithHandshakeTimeout); a connection that stays silent is
// closed, and never delays Accept for others.
//
// For net/http, a handler tells the two apart by r.TLS, and
// PeerID(*r.TLS) gives the client's SPIFFE ID. For gRPC, prefer
// PermissiveCredentials on a plain listener. For STRICT mode, use
// tls.NewListener(inner, ServerConfig(...)): a plaintext client fails its
// handshake and is disconnected.
//
// It is safe for concurrent use. Close stops it: it closes the inner
// listener and connections still being sniffed, and waits for its
// goroutines.
type PermissiveListener struct {
	inner   net.Listener
	tls     *tls.Config
	cfg     config
	results chan acceptResult
	done    chan struct{}
	wg      sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	sniffing map[net.Conn]struct{}
	closeErr error
}

type acceptResult struct {
	conn net.Conn
	err  error
}

var _ net.Listener = (*PermissiveListener)(nil)

// NewPermissiveListener starts accepting on inner, which it owns from
// then on. tlsConfig serves the TLS connections; it is normally
// ServerConfig's. Options: WithHandshakeTimeout, WithLogger.
func NewPermissiveListener(inner net.Listener, tlsConfig *tls.Config, opts ...Option) *PermissiveListener {
	l := &PermissiveListener{
		inner:    inner,
		tls:      tlsConfig,
		cfg:      newConfig(opts),
		results:  make(chan acceptResult),
		done:     make(chan struct{}),
		sniffing: make(map[net.Conn]struct{}),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *PermissiveListener) acceptLoop() {
	defer l.wg.Done()
	for {
		conn, err := l.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Like net/http, leave the decision to the caller: a
			// temporary error is passed on, and the loop goes on once
			// it is taken.
			select {
			case l.results <- acceptResult{err: fmt.Errorf("mtls: accept: %w", err)}:
				continue
			case <-l.done:
				return
			}
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			conn.Close()
			return
		}
		l.sniffing[conn] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.classify(conn)
	}
}

// classify sniffs conn and hands it to Accept.
func (l *PermissiveListener) classify(conn net.Conn) {
	defer l.wg.Done()
	isTLS, replay, err := l.sniff(conn)
	l.mu.Lock()
	delete(l.sniffing, conn)
	l.mu.Unlock()
	if err != nil {
		l.cfg.log.Debug("mtls: dropped connection", "remote", conn.RemoteAddr().String(), "err", err)
		conn.Close()
		return
	}
	var out net.Conn = replay
	if isTLS {
		out = tls.Server(replay, l.tls)
	}
	select {
	case l.results <- acceptResult{conn: out}:
	case <-l.done:
		conn.Close()
	}
}

func (l *PermissiveListener) sniff(conn net.Conn) (bool, net.Conn, error) {
	if err := conn.SetReadDeadline(timeNow().Add(l.cfg.handshakeTimeout)); err != nil {
		return false, nil, err
	}
	isTLS, replay, err := sniff(conn)
	if err != nil {
		return false, nil, err
	}
	// The server that takes the connection sets its own deadlines.
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return false, nil, err
	}
	return isTLS, replay, nil
}

// Accept waits for the next classified connection: a *tls.Conn for TLS,
// the plain connection otherwise. After Close it returns net.ErrClosed.
func (l *PermissiveListener) Accept() (net.Conn, error) {
	select {
	case r := <-l.results:
		return r.conn, r.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close closes the inner listener and the connections not yet accepted,
// and waits for the listener's goroutines. It is idempotent and returns
// the inner listener's Close error.
func (l *PermissiveListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.wg.Wait()
		return l.closeErr
	}
	l.closed = true
	close(l.done)
	l.closeErr = l.inner.Close()
	for conn := range l.sniffing {
		conn.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return l.closeErr
}

// Addr returns the inner listener's address.
func (l *PermissiveListener) Addr() net.Addr { return l.inner.Addr() }
