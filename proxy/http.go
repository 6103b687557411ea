package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/balance"
)

// Request headers meshd reads or writes.
const (
	HeaderRequestID = "X-Request-Id"
	HeaderAttempt   = "X-Meshd-Attempt"
)

type ctxKey int

const (
	connInfoKey ctxKey = iota
	routeKey
)

// httpSide is the HTTP/1.x server of one listener. Connections reach it
// after protocol detection, through a listener fed by handle.
type httpSide struct {
	name string
	srv  *http.Server
	ln   *chanListener
	rp   *httputil.ReverseProxy
}

func (p *Proxy) newHTTPSide(name string) *httpSide {
	s := &httpSide{name: name, ln: newChanListener()}
	s.rp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    p,
		BufferPool:   copyBufPool{},
		ErrorHandler: p.answerError,
		ErrorLog:     zap.NewStdLog(p.log.Named(name).WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
	}
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serveHTTP(s, w, r) }),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*conn); ok {
				return context.WithValue(ctx, connInfoKey, &pc.info)
			}
			return ctx
		},
		ReadHeaderTimeout:            time.Minute,
		IdleTimeout:                  5 * time.Minute,
		MaxHeaderBytes:               1 << 20,
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     zap.NewStdLog(p.log.Named(name).WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
	}
	go func() { _ = s.srv.Serve(s.ln) }()
	return s
}

// serveConn hands a detected HTTP/1.x connection to the server.
func (s *httpSide) serveConn(c *conn) {
	if !s.ln.push(c) {
		_ = c.Close()
	}
}

func (s *httpSide) close() error {
	_ = s.ln.Close()
	return s.srv.Close()
}

// chanListener is the net.Listener an http.Server reads connections from.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// route is where one HTTP request goes: a mesh service's endpoints, or a
// single passthrough address.
type route struct {
	key    string // the upstream's name: the service, or host:port for passthrough
	policy *config.Policy
	eps    []*balance.Endpoint // nil for passthrough
	target string              // passthrough address
}

// forwardedHeaders are the headers ReverseProxy's Rewrite drops from the
// outgoing request; a sidecar passes the app's own values through.
var forwardedHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

func rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.Host = pr.In.Host
	// Request trailers arrive in In.Trailer when the body ends; the
	// outgoing request must share that map, not a copy made before.
	pr.Out.Trailer = pr.In.Trailer
	for _, h := range forwardedHeaders {
		if v, ok := pr.In.Header[h]; ok {
			pr.Out.Header[h] = v
		}
	}
}

func (p *Proxy) serveHTTP(s *httpSide, w http.ResponseWriter, r *http.Request) {
	info, _ := r.Context().Value(connInfoKey).(*connInfo)
	if info == nil {
		info = &connInfo{}
	}
	if r.Method == http.MethodConnect {
		p.serveConnect(w, r, info)
		return
	}
	rt, err := p.routeHTTP(r, info)
	if err != nil {
		writeLocalReply(w, localReplyFor(err), err.Error())
		return
	}
	if r.Header.Get(HeaderRequestID) == "" {
		r.Header.Set(HeaderRequestID, newRequestID())
	}
	start := time.Now()
	lw := &responseWriter{ResponseWriter: w}
	s.rp.ServeHTTP(lw, r.WithContext(context.WithValue(r.Context(), routeKey, rt)))
	if p.cfg.AccessLog {
		p.log.Info("request", zap.String("direction", s.name), zap.String("method", r.Method),
			zap.String("authority", r.Host), zap.String("path", r.URL.Path), zap.Int("code", lw.code),
			zap.Duration("duration", time.Since(start)), zap.String("upstream", rt.key),
			zap.String("x_meshd_error", lw.Header().Get(HeaderError)), zap.String("request_id", r.Header.Get(HeaderRequestID)))
	}
}

// routeHTTP decides where a request goes. Inbound requests go to the inbound
// target; outbound ones to the service their authority names, or, when
// discovery does not know it, to the original destination (redirected) or
// the authority itself (explicit mode).
func (p *Proxy) routeHTTP(r *http.Request, info *connInfo) (*route, error) {
	if info.inbound {
		return &route{key: "inbound", policy: &p.cfg.Defaults, target: p.inboundTarget(info.dst)}, nil
	}
	if name := ServiceName(r.Host); name != "" {
		rt, err := p.serviceRoute(r.Context(), name)
		if err == nil || !errors.Is(err, discovery.ErrUnknownService) {
			return rt, err
		}
	}
	target := info.dst.String()
	if !info.redirected {
		target = authorityAddr(r.Host, "80")
		if target == "" {
			return nil, errors.New("explicit-mode request without an authority")
		}
	}
	if p.isSelf(target) {
		return nil, ErrLoop
	}
	pol := p.cfg.Policy(target)
	return &route{key: target, policy: &pol, target: target}, nil
}

// serviceRoute resolves a mesh service to its current endpoints.
func (p *Proxy) serviceRoute(ctx context.Context, name string) (*route, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Defaults.ConnectTimeout)
	defer cancel()
	snap, err := p.resolver.Resolve(ctx, name)
	if err != nil {
		return nil, err
	}
	u := p.upstream(name)
	return &route{key: name, policy: &u.policy, eps: u.endpoints(snap)}, nil
}

// RoundTrip sends one request upstream: to a balanced endpoint of the
// route's service, trying another endpoint when a connect fails (nothing
// was sent), or to the passthrough target.
func (p *Proxy) RoundTrip(req *http.Request) (*http.Response, error) {
	rt, _ := req.Context().Value(routeKey).(*route)
	if rt == nil {
		return nil, errors.New("request without a route")
	}
	if rt.eps == nil {
		req.URL.Host = rt.target
		req.Header.Set(HeaderAttempt, "1")
		return p.transport.RoundTrip(req)
	}
	replayable := req.Body == nil || req.Body == http.NoBody
	var tried []*balance.Endpoint
	skip := func(e *balance.Endpoint) bool {
		for _, t := range tried {
			if t == e {
				return true
			}
		}
		return false
	}
	var lastErr error
	for attempt := 1; ; attempt++ {
		ep := balance.Pick(rt.eps, p.rand, skip)
		if ep == nil {
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, ErrNoHealthyUpstream
		}
		req.URL.Host = ep.Addr
		req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
		ep.Acquire()
		resp, err := p.transport.RoundTrip(req)
		if err == nil {
			if resp.StatusCode == http.StatusSwitchingProtocols {
				ep.Release() // the connection is now a tunnel, not a request
				return resp, nil
			}
			resp.Body = &releaseOnClose{ReadCloser: resp.Body, ep: ep}
			return resp, nil
		}
		ep.Release()
		var de *DialError
		if !errors.As(err, &de) || !replayable || attempt > rt.policy.RetryMax ||
			!rt.policy.RetryOn.Has(config.RetryConnectFailure) || req.Context().Err() != nil {
			return nil, err
		}
		lastErr = err
		tried = append(tried, ep)
	}
}

// answerError is ReverseProxy's ErrorHandler: the local reply for err, or
// nothing when the client went away.
func (p *Proxy) answerError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
		return // the client is gone: nobody to answer
	}
	lr := localReplyFor(err)
	if ce := p.log.Check(zap.DebugLevel, "local reply"); ce != nil {
		ce.Write(zap.String("authority", r.Host), zap.String("reason", lr.reason), zap.Error(err))
	}
	writeLocalReply(w, lr, err.Error())
}

// releaseOnClose ends an endpoint's outstanding request when the response
// body is done.
type releaseOnClose struct {
	io.ReadCloser
	ep   *balance.Endpoint
	once sync.Once
}

func (b *releaseOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.ep.Release)
	return err
}

// newTransport is the upstream HTTP/1.1 client: connections pooled per
// endpoint address, no proxy from the environment, no compression added.
func (p *Proxy) newTransport() *http.Transport {
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			timeout := p.cfg.Defaults.ConnectTimeout
			if rt, ok := ctx.Value(routeKey).(*route); ok {
				timeout = rt.policy.ConnectTimeout
			}
			return p.dial(ctx, addr, timeout)
		},
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
		TLSNextProto:           map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
}

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}

// copyBufPool lends ReverseProxy 32 KiB buffers for body copies.
type copyBufPool struct{}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (copyBufPool) Get() []byte  { return *(copyBufs.Get().(*[]byte)) }
func (copyBufPool) Put(b []byte) { copyBufs.Put(&b) }

// responseWriter passes the upstream's response on as it came: net/http
// would add a Date and a sniffed Content-Type the upstream did not send.
// It also remembers the status code for the access log.
type responseWriter struct {
	http.ResponseWriter
	code int
}

func (w *responseWriter) WriteHeader(code int) {
	if code >= 200 && w.code == 0 {
		w.code = code
		h := w.ResponseWriter.Header()
		if _, ok := h["Date"]; !ok {
			h["Date"] = nil
		}
		if _, ok := h["Content-Type"]; !ok {
			h["Content-Type"] = nil
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer
// (flushes, and hijacking for protocol upgrades).
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
