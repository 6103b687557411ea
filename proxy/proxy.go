// Package proxy owns meshd's traffic listeners: the outbound listener that
// takes the app's redirected and explicit traffic, and the inbound listener
// that takes redirected traffic addressed to the pod.
//
// Each accepted connection goes through the same steps: read its original
// destination (proxy/origdst), detect the protocol from its first bytes
// (proxy/sniff), then either forward HTTP/1.x request by request, routed by
// authority through discovery and balanced over the service's endpoints
// (proxy/balance), or copy opaque TCP to its destination (proxy/opaque).
package proxy

//lint:file-ignore SA1019 see http.go: golang.org/x/net/http2 is meshd's chosen HTTP/2 implementation.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/metrics"
	"github.com/meshd/meshd/proxy/balance"
	"github.com/meshd/meshd/proxy/h1"
)

// Options configure a Proxy.
type Options struct {
	Config   *config.Config
	Resolver discovery.Resolver
	Log      *zap.Logger
	// OwnPorts are meshd's own listening ports: inbound traffic for them is
	// refused, and passthrough to them on loopback is a loop.
	OwnPorts []uint16
	// Rand is the balancer's randomness; nil is the default source.
	Rand balance.Rand
	// Metrics, when set, receive request, retry, breaker and TCP figures.
	Metrics *metrics.Metrics
}

// Proxy serves the outbound and inbound listeners. Its methods are safe
// for concurrent use.
type Proxy struct {
	cfg      *config.Config
	resolver discovery.Resolver
	log      *zap.Logger
	ownPorts []uint16
	rand     balance.Rand
	metrics  *metrics.Metrics

	transport   *h1.Transport
	h2transport *http2.Transport
	outbound    *httpSide
	inbound     *httpSide

	upstreams  sync.Map // service name or passthrough host:port → *upstream
	nUpstreams atomic.Int64

	mu       sync.Mutex
	conns    map[*conn]struct{}
	lns      map[net.Listener]struct{}
	closed   bool
	lastIdle atomic.Int64 // unix nanoseconds when the last connection closed

	limitLogged atomic.Int64 // unix nanoseconds of the last "limit reached" line

	// dialAllowed, when set, is asked before every upstream connection
	// (and before any name lookup): tests that feed meshd arbitrary
	// traffic keep it on loopback with it.
	dialAllowed func(addr string) bool
}

// errDialNotAllowed is a connection dialAllowed refused.
var errDialNotAllowed = errors.New("connection not allowed")

// New returns a Proxy; it serves nothing until ServeOutbound or
// ServeInbound is called.
func New(o Options) *Proxy {
	p := &Proxy{
		cfg:      o.Config,
		resolver: o.Resolver,
		log:      o.Log,
		ownPorts: o.OwnPorts,
		rand:     o.Rand,
		metrics:  o.Metrics,
		conns:    map[*conn]struct{}{},
		lns:      map[net.Listener]struct{}{},
	}
	if p.resolver == nil {
		p.resolver = discovery.Chain{}
	}
	p.transport = p.newTransport()
	p.h2transport = p.newH2Transport()
	p.outbound = p.newHTTPSide("outbound", sideOutbound)
	p.inbound = p.newHTTPSide("inbound", sideInbound)
	p.lastIdle.Store(time.Now().UnixNano())
	return p
}

// ServeOutbound accepts the app's connections on ln (redirected ones and
// explicit-proxy ones) until ln is closed.
func (p *Proxy) ServeOutbound(ln net.Listener) error { return p.serve(ln, false) }

// ServeInbound accepts redirected inbound connections on ln until ln is
// closed.
func (p *Proxy) ServeInbound(ln net.Listener) error { return p.serve(ln, true) }

func (p *Proxy) serve(ln net.Listener, inbound bool) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return net.ErrClosed
	}
	p.lns[ln] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.lns, ln)
		p.mu.Unlock()
	}()
	var backoff time.Duration
	var open atomic.Int64 // connections of this listener
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait and go on, as
			// net/http does, rather than give up the listener.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", zap.Bool("inbound", inbound), zap.Error(err), zap.Duration("retry_in", backoff))
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			_ = c.Close()
			continue
		}
		if open.Load() >= int64(p.cfg.MaxConnections) {
			// Over the limit: this one connection is refused at once, the
			// others go on.
			p.limitHit("connections", zap.Bool("inbound", inbound), zap.Int("max", p.cfg.MaxConnections))
			_ = tc.SetLinger(0)
			_ = tc.Close()
			continue
		}
		pc := p.track(tc)
		if pc == nil {
			continue
		}
		open.Add(1)
		pc.onClose = func() { open.Add(-1) }
		go p.handle(pc, inbound)
	}
}

// limitHit counts a limit being hit and logs it at most once per
// limitLogInterval.
func (p *Proxy) limitHit(limit string, fields ...zap.Field) {
	if p.metrics != nil {
		p.metrics.LimitRejections.WithLabelValues(limit).Inc()
	}
	now := time.Now().UnixNano()
	last := p.limitLogged.Load()
	if now-last < int64(limitLogInterval) || !p.limitLogged.CompareAndSwap(last, now) {
		return
	}
	p.log.Warn("limit reached", append([]zap.Field{zap.String("limit", limit)}, fields...)...)
}

// limitLogInterval spaces the log lines of limits being hit.
const limitLogInterval = 10 * time.Second

// track registers an accepted connection; nil when the proxy is closed.
func (p *Proxy) track(tc *net.TCPConn) *conn {
	c := &conn{tcp: tc, p: p}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = tc.Close()
		return nil
	}
	p.conns[c] = struct{}{}
	return c
}

func (p *Proxy) untrack(c *conn) {
	p.mu.Lock()
	delete(p.conns, c)
	if len(p.conns) == 0 {
		p.lastIdle.Store(time.Now().UnixNano())
	}
	p.mu.Unlock()
}

// Open returns the number of client connections open now.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// IdleFor returns how long no client connection has been open (0 while
// one is).
func (p *Proxy) IdleFor() time.Duration {
	if p.Open() > 0 {
		return 0
	}
	return time.Since(time.Unix(0, p.lastIdle.Load()))
}

// Drain makes every HTTP connection close after its current request, and
// closes idle keep-alive connections now. Listeners keep accepting: the
// caller closes the inbound one, and the outbound one serves the app's last
// calls.
func (p *Proxy) Drain() {
	p.outbound.drain()
	p.inbound.drain()
}

// Close closes the listeners being served and every open connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	lns := make([]net.Listener, 0, len(p.lns))
	for ln := range p.lns {
		lns = append(lns, ln)
	}
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, ln := range lns {
		_ = ln.Close()
	}
	_ = p.outbound.close()
	_ = p.inbound.close()
	for _, c := range conns {
		_ = c.Close()
	}
	p.transport.CloseIdleConnections()
	p.h2transport.CloseIdleConnections()
	return nil
}

// ownPort reports whether port is one of meshd's own.
func (p *Proxy) ownPort(port uint16) bool {
	for _, o := range p.ownPorts {
		if o == port {
			return true
		}
	}
	return false
}

// isSelf reports whether a passthrough target would reach meshd itself.
func (p *Proxy) isSelf(target string) bool {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return false
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(hostOrLoopback(host), port))
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	return (a.IsLoopback() || a.IsUnspecified()) && p.ownPort(ap.Port())
}

func hostOrLoopback(h string) string {
	if h == "localhost" || h == "" {
		return "127.0.0.1"
	}
	return h
}

// inboundTarget is where inbound traffic for dst is delivered.
func (p *Proxy) inboundTarget(dst netip.AddrPort) string {
	if p.cfg.InboundTarget == "localhost" {
		if dst.Addr().Is6() && !dst.Addr().Is4In6() {
			return netip.AddrPortFrom(netip.IPv6Loopback(), dst.Port()).String()
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dst.Port()).String()
	}
	return dst.String()
}

// dial connects to addr within the connect timeout.
func (p *Proxy) dial(ctx context.Context, addr string, timeout time.Duration) (*net.TCPConn, error) {
	if p.dialAllowed != nil && !p.dialAllowed(addr) {
		return nil, &DialError{Addr: addr, Err: errDialNotAllowed}
	}
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &DialError{Addr: addr, Err: err}
	}
	return c.(*net.TCPConn), nil
}
