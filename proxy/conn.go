package proxy

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/origdst"
	"github.com/meshd/meshd/proxy/sniff"
	"github.com/meshd/meshd/proxy/sockio"
)

// connInfo is what meshd knows of a client connection before its first
// request: its direction and where the client was going.
type connInfo struct {
	inbound    bool
	dst        netip.AddrPort // original destination (the listener's own address when not redirected)
	redirected bool           // false: explicit mode
}

// conn is an accepted client connection. Its Read first returns the bytes
// read for protocol detection, so nothing the client sent is lost. It has
// net.Conn's methods and CloseWrite (a half-close, so that an answer sent
// before closing is read, not reset), and no WriteTo: an io.Copy from it
// must go through Read.
type conn struct {
	tcp     *net.TCPConn
	sock    *sockio.Conn // reads and writes of HTTP connections; nil: tcp's
	p       *Proxy
	info    connInfo
	pending []byte
	buf     *[]byte // pooled detection buffer behind pending
	onClose func()  // the listener's accounting

	once sync.Once
}

var _ net.Conn = (*conn)(nil)

func (c *conn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.dropPending()
		}
		return n, nil
	}
	if c.sock != nil {
		return c.sock.Read(b)
	}
	return c.tcp.Read(b)
}

func (c *conn) Write(b []byte) (int, error) {
	if c.sock != nil {
		return c.sock.Write(b)
	}
	return c.tcp.Write(b)
}

// Socket is the connection's socket, for a look at its state that reads
// nothing (proxy/h1 peeks to learn that a client went away). It is not
// SyscallConn: the standard library would then take the connection for
// a file to send from, and miss the detection bytes.
func (c *conn) Socket() syscall.Conn { return c.tcp }

func (c *conn) CloseWrite() error                  { return c.tcp.CloseWrite() }
func (c *conn) LocalAddr() net.Addr                { return c.tcp.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr               { return c.tcp.RemoteAddr() }
func (c *conn) SetDeadline(t time.Time) error      { return c.tcp.SetDeadline(t) }
func (c *conn) SetReadDeadline(t time.Time) error  { return c.tcp.SetReadDeadline(t) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.tcp.SetWriteDeadline(t) }

// Close closes the connection and ends its accounting, once.
func (c *conn) Close() error {
	err := c.tcp.Close()
	c.once.Do(func() {
		c.p.untrack(c)
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}

// dropPending gives the detection buffer back once its bytes are read. It
// is the reading goroutine's: Close, which another goroutine may call
// while a read runs (a shutdown), leaves the buffer alone, and a
// connection closed with bytes unread leaves it to the garbage collector.
func (c *conn) dropPending() {
	c.pending = nil
	if c.buf != nil {
		putBuf(c.buf)
		c.buf = nil
	}
}

// reset closes the connection so that the client sees a reset, the TCP
// way of saying "refused".
func (c *conn) reset() {
	_ = c.tcp.SetLinger(0)
	_ = c.Close()
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, sniff.MaxPeek); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

var connectPrefix = []byte("CONNECT ")

// handle serves one accepted connection to its end. Nothing a client sends
// may crash meshd: a panic is logged and ends only this connection.
func (p *Proxy) handle(c *conn, inbound bool) {
	defer c.dropPending() // everything that read c has returned
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("connection handler panicked", zap.Any("panic", r), zap.Stack("stack"))
			c.reset()
		}
	}()
	dst, redirected, err := origdst.Lookup(c.tcp)
	if err != nil {
		p.log.Warn("original destination unknown", zap.Error(err))
		c.reset()
		return
	}
	c.info = connInfo{inbound: inbound, dst: dst, redirected: redirected}
	if inbound && (!redirected || p.ownPort(dst.Port())) {
		// Straight to the inbound port, or redirected to one of meshd's own
		// ports: never an open proxy, never a loop.
		if ce := p.log.Check(zap.DebugLevel, "inbound connection refused"); ce != nil {
			ce.Write(zap.Stringer("client", c.RemoteAddr()), zap.Stringer("dst", dst), zap.Bool("redirected", redirected))
		}
		c.reset()
		return
	}
	if redirected && p.cfg.OpaquePorts.Contains(dst.Port()) {
		p.serveTCP(c, nil)
		return
	}

	c.buf = getBuf()
	proto, peek, err := sniff.Detect(c.tcp, p.cfg.DetectTimeout, *c.buf)
	if err != nil {
		// The client closed or reset before meshd could decide; for a
		// redirected connection whatever it sent still goes on.
		if len(peek) == 0 || !redirected {
			_ = c.Close()
			return
		}
		proto = sniff.Opaque
	}
	side := p.outbound
	if inbound {
		side = p.inbound
	}
	switch {
	case proto == sniff.HTTP1 && !(redirected && bytes.HasPrefix(peek, connectPrefix)):
		c.pending, c.sock = peek, sockio.New(c.tcp)
		side.serveConn(c)
	case proto == sniff.HTTP2:
		c.pending, c.sock = peek, sockio.New(c.tcp)
		side.serveH2(c)
	case !redirected:
		// Explicit mode carries HTTP (and CONNECT) only: there is no
		// destination to send anything else to.
		if ce := p.log.Check(zap.DebugLevel, "explicit-mode connection is not HTTP/1"); ce != nil {
			ce.Write(zap.Stringer("client", c.RemoteAddr()), zap.Stringer("protocol", proto))
		}
		_ = c.Close()
	default:
		// Opaque TCP, and a redirected CONNECT (the app talks to a proxy
		// of its own), go through unchanged.
		p.serveTCP(c, peek)
	}
}

// serveTCP copies the connection to its destination: the inbound target
// inbound; outbound, the original destination, or, when that address is an
// endpoint of a service discovery watches, a balanced endpoint of that
// service with failover on connect failure.
func (p *Proxy) serveTCP(c *conn, pre []byte) {
	rt := &route{key: c.info.dst.String(), target: c.info.dst.String()}
	if c.info.inbound {
		rt.key, rt.target = "inbound", p.inboundTarget(c.info.dst)
	} else {
		if idx, ok := p.resolver.(discovery.AddressIndex); ok {
			if svc, ok := idx.ServiceOf(rt.target); ok {
				ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Defaults.ConnectTimeout)
				srt, err := p.serviceRoute(ctx, svc)
				cancel()
				if err == nil {
					rt = srt
				}
			}
		}
		if rt.up == nil {
			rt.up = p.passthrough(rt.target)
		}
	}
	pol := rt.policy(p)
	ctx, cancel := context.WithTimeout(context.Background(), pol.ConnectTimeout*time.Duration(pol.RetryMax+1))
	up, err := p.dialRoute(ctx, rt)
	cancel()
	if err != nil {
		if ce := p.log.Check(zap.DebugLevel, "tcp connect failed"); ce != nil {
			ce.Write(zap.String("upstream", rt.key), zap.Error(err))
		}
		c.reset()
		return
	}
	p.pipe(c, up, pre, pol.TCPIdleTimeout, rt.key)
}
