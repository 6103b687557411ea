package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/balance"
	"github.com/meshd/meshd/resilience"
)

// serveConnect opens a tunnel for "CONNECT host:port" (what HTTPS_PROXY
// clients send in explicit mode): through discovery when host is a mesh
// service, else straight to host:port.
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request, info *connInfo) {
	rt, err := p.connectRoute(r, info)
	if err != nil {
		p.localReply(w, r, nil, localReplyFor(err), err.Error())
		return
	}
	up, err := p.dialRoute(r.Context(), rt)
	if err != nil {
		p.localReply(w, r, rt, localReplyFor(err), err.Error())
		return
	}
	p.tunnel(w, up, func(c io.Writer) error {
		_, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		return err
	}, rt.policy(p).TCPIdleTimeout, rt.key)
}

// tunnel takes the client's connection over from the HTTP server, writes
// head to it (the answer that opens the tunnel), and joins it with up as
// an opaque tunnel. Whatever the client sent after its request, and the
// server already read, goes upstream first.
func (p *Proxy) tunnel(w http.ResponseWriter, up net.Conn, head func(io.Writer) error, idle time.Duration, key string) {
	cc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = up.Close()
		p.localReply(w, nil, nil, replyReset, "connection cannot be taken over")
		return
	}
	c, ok := cc.(*conn)
	if !ok {
		_ = cc.Close()
		_ = up.Close()
		return
	}
	if err := head(c.tcp); err != nil {
		_ = c.Close()
		_ = up.Close()
		return
	}
	var pre []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		pre = append(pre, b...)
	}
	pre = append(pre, c.pending...)
	c.dropPending()
	p.pipe(c, up, pre, idle, key)
}

func (p *Proxy) connectRoute(r *http.Request, info *connInfo) (*route, error) {
	target := authorityAddr(r.Host, "443")
	if target == "" {
		return nil, errors.New("CONNECT without host:port")
	}
	if name := ServiceName(r.Host); name != "" && !info.inbound {
		rt, err := p.serviceRoute(r.Context(), name)
		if err == nil || !errors.Is(err, discovery.ErrUnknownService) {
			return rt, err
		}
	}
	if info.inbound {
		return nil, errors.New("CONNECT is not served inbound")
	}
	if p.isSelf(target) {
		return nil, ErrLoop
	}
	return &route{key: target, up: p.passthrough(target), target: target}, nil
}

// dialRoute connects to the route: a balanced, non-ejected endpoint of the
// service, failing over to others on connect failure, or the passthrough
// target; the service breaker refuses at once while open.
func (p *Proxy) dialRoute(ctx context.Context, rt *route) (net.Conn, error) {
	pol := rt.policy(p)
	if rt.up == nil {
		return p.dial(ctx, rt.target, pol.ConnectTimeout)
	}
	u := rt.up
	done, err := u.breaker.Allow()
	if err != nil {
		return nil, err
	}
	if rt.eps == nil {
		c, err := p.dial(ctx, rt.target, pol.ConnectTimeout)
		if err != nil {
			done(resilience.Failure)
			return nil, err
		}
		done(resilience.Success)
		return c, nil
	}
	var tried []*balance.Endpoint
	skip := func(e *balance.Endpoint) bool {
		if !u.ejector.Usable(e.Addr) {
			return true
		}
		for _, t := range tried {
			if t == e {
				return true
			}
		}
		return false
	}
	var lastErr error = ErrNoHealthyUpstream
	for attempt := 0; attempt <= pol.RetryMax; attempt++ {
		ep := balance.Pick(rt.eps, p.rand, skip)
		if ep == nil {
			break
		}
		tried = append(tried, ep)
		if !u.ejector.Begin(ep.Addr) {
			continue
		}
		c, err := p.dial(ctx, ep.Addr, pol.ConnectTimeout)
		u.ejector.Done(ep.Addr, err != nil)
		if err == nil {
			done(resilience.Success)
			return c, nil
		}
		if ce := p.log.Check(zap.DebugLevel, "connect failed, trying another endpoint"); ce != nil {
			ce.Write(zap.String("upstream", rt.key), zap.String("endpoint", ep.Addr), zap.Error(err))
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	if errors.Is(lastErr, ErrNoHealthyUpstream) {
		done(resilience.Ignore)
	} else {
		done(resilience.Failure)
	}
	return nil, lastErr
}
