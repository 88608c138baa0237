package e2e

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// faultProxy is a TCP proxy on 127.0.0.1 that tests can cut or black-hole:
// it forwards to target until told otherwise. Black-holing keeps
// connections open but drops every byte both ways (a half-open link: no
// FIN, no RST, nothing), which a peer notices only through its own
// keepalives or timeouts.
type faultProxy struct {
	t      testing.TB
	lis    net.Listener
	target string

	mu        sync.Mutex
	blackhole bool
	conns     map[net.Conn]bool
	wg        sync.WaitGroup
}

func startFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{t: t, lis: lis, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) addr() string { return p.lis.Addr().String() }

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies from src to dst, dropping the bytes while black-holed.
func (p *faultProxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			drop := p.blackhole
			p.mu.Unlock()
			if !drop {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				p.t.Logf("fault proxy: %v", err)
			}
			return
		}
	}
}

// setBlackhole starts or stops dropping every byte of every connection.
func (p *faultProxy) setBlackhole(on bool) {
	p.mu.Lock()
	p.blackhole = on
	p.mu.Unlock()
}

// cut closes every connection at once (a reset link).
func (p *faultProxy) cut() {
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
	p.mu.Unlock()
}

func (p *faultProxy) close() {
	p.lis.Close()
	p.cut()
	p.wg.Wait()
}
