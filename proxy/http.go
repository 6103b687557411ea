package proxy

//lint:file-ignore SA1019 golang.org/x/net/http2 is meshd's chosen HTTP/2 implementation; its newer releases deprecate the API in favour of the copy bundled in net/http, whose stream errors are not typed.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
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
	"github.com/meshd/meshd/proxy/sockio"
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

// httpSide serves the HTTP of one listener: HTTP/1.x with meshd's own
// strict server (proxy/h1), HTTP/2 with prior knowledge with x/net/http2,
// both on the connection's own goroutine after protocol detection.
type httpSide struct {
	name  string
	index int                          // sideOutbound or sideInbound
	local atomic.Pointer[requestStats] // the request metrics of requests with no upstream
	h1    *h1.Server
	base  *http.Server // HTTP/2's base configuration; it serves nothing itself
	h2    *http2.Server
}

func (p *Proxy) newHTTPSide(name string, index int) *httpSide {
	s := &httpSide{name: name, index: index}
	errorLog := zap.NewStdLog(p.log.Named(name).WithOptions(zap.IncreaseLevel(zap.WarnLevel)))
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serveHTTP(s, w, r) })
	s.h1 = &h1.Server{
		Handler:           handler,
		ReadHeaderTimeout: p.cfg.ReadHeaderTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		MaxHeaderBytes:    int(p.cfg.MaxHeaderBytes),
		ErrorLog:          errorLog,
	}
	s.base = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: p.cfg.ReadHeaderTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		MaxHeaderBytes:    int(p.cfg.MaxHeaderBytes),
		ErrorLog:          errorLog,
	}
	// HTTP/2 with prior knowledge (h2c, so gRPC) is served by x/net/http2
	// on the same handler; its flow control is the library's.
	s.h1.Relay = func(rc *h1.RelayConn) { p.relay(s, rc) }
	s.h2 = &http2.Server{IdleTimeout: p.cfg.IdleTimeout, MaxReadFrameSize: 1 << 20}
	return s
}

// serveH2 serves a detected HTTP/2 prior-knowledge connection until it
// ends. A protocol error closes that connection with a GOAWAY and nothing
// else; a stream reset ends only that stream.
func (s *httpSide) serveH2(c *conn) {
	ctx := context.WithValue(context.Background(), connInfoKey, &c.info)
	s.h2.ServeConn(c, &http2.ServeConnOpts{Context: ctx, BaseConfig: s.base, Handler: s.base.Handler})
	_ = c.Close()
}

// serveConn serves a detected HTTP/1.x connection until it ends or is
// taken over (CONNECT, protocol upgrades).
func (s *httpSide) serveConn(c *conn) {
	// http.ServerContextKey tells ReverseProxy that it runs in a server:
	// only then does it abort the response (http.ErrAbortHandler) when the
	// upstream's body breaks, rather than end it as if it were whole.
	ctx := context.WithValue(context.Background(), http.ServerContextKey, s.base)
	s.h1.ServeConn(context.WithValue(ctx, connInfoKey, &c.info), c)
}

// drain makes every connection end after its current request.
func (s *httpSide) drain() {
	s.h1.SetKeepAlivesEnabled(false)
	s.base.SetKeepAlivesEnabled(false)
}

func (s *httpSide) close() error { return s.h1.Close() }

// route is where one HTTP request goes: a mesh service's endpoints, or a
// single passthrough address.
type route struct {
	key    string              // the upstream's name: the service, or host:port for passthrough
	up     *upstream           // nil inbound: no policy on the way to the local app
	eps    []*balance.Endpoint // nil for passthrough
	target string              // passthrough address

	// What happened, for the access log.
	attempts int
	endpoint string
}

// policy is the route's resilience policy (the defaults inbound).
func (rt *route) policy(p *Proxy) *config.Policy {
	if rt.up != nil {
		return &rt.up.policy
	}
	return &p.cfg.Defaults
}

func (p *Proxy) serveHTTP(s *httpSide, w http.ResponseWriter, r *http.Request) {
	info, _ := r.Context().Value(connInfoKey).(*connInfo)
	if info == nil {
		info = &connInfo{}
	}
	if n := headerCount(r.Header); n > p.cfg.MaxHeaderCount {
		p.limitHit("header-count", zap.Int("headers", n), zap.String("authority", r.Host))
		w.Header().Set("Connection", "close")
		http.Error(w, "meshd: too many header fields", http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	if r.Method == http.MethodConnect {
		p.serveConnect(w, r, info)
		return
	}
	start := time.Now()
	st := &requestState{}
	lw := &st.w
	lw.ResponseWriter, lw.st = w, st
	var rt *route
	defer func() {
		if v := recover(); v != nil {
			// ReverseProxy aborts when the upstream's body breaks after the
			// headers went out: the client's connection is cut, and the
			// request is still one to count.
			if v == http.ErrAbortHandler {
				p.account(s, r, rt, lw, start, true)
			}
			panic(v)
		}
	}()
	var err error
	rt, err = p.routeHTTP(r, info, st)
	if err != nil {
		p.localReply(lw, r, nil, localReplyFor(err), err.Error())
	} else {
		if r.Header.Get(HeaderRequestID) == "" {
			lw.requestID[0] = newRequestID()
			r.Header[HeaderRequestID] = lw.requestID[:]
		}
		if isUpgrade(r) {
			p.serveUpgrade(lw, r, rt)
		} else {
			p.forward(lw, r, rt)
		}
	}
	p.account(s, r, rt, lw, start, false)
}

// account counts a finished request in the metrics and the access log.
// aborted says its response was cut after it began.
func (p *Proxy) account(s *httpSide, r *http.Request, rt *route, lw *responseWriter, start time.Time, aborted bool) {
	code := lw.code
	switch {
	case code == 0 && aborted:
		code = http.StatusBadGateway // the upstream broke off before anything reached the client
	case code == 0:
		code = 499 // the client went away before an answer
	}
	if p.metrics != nil {
		st := p.stats(s, rt)
		st.count(p, code)
		end := lw.headersAt
		if end.IsZero() {
			end = time.Now()
		}
		st.duration.Observe(end.Sub(start).Seconds())
	}
	if p.cfg.AccessLog {
		var attempts int
		var endpoint, key string
		if rt != nil {
			attempts, endpoint, key = rt.attempts, rt.endpoint, rt.key
		}
		p.log.Info("request", zap.String("direction", s.name), zap.String("method", r.Method),
			zap.String("authority", r.Host), zap.String("path", r.URL.Path), zap.Int("code", code),
			zap.Duration("duration", time.Since(start)), zap.String("upstream", key),
			zap.Int("attempts", attempts), zap.String("endpoint", endpoint),
			zap.String("x_meshd_error", lw.Header().Get(HeaderError)), zap.Bool("cut", aborted),
			zap.String("request_id", r.Header.Get(HeaderRequestID)))
	}
}

// headerCount is the number of header field lines of a request.
func headerCount(h http.Header) int {
	n := 0
	for _, v := range h {
		n += len(v)
	}
	return n
}

// label is the metrics label of a route's upstream.
func (p *Proxy) label(rt *route, direction string) string {
	switch {
	case rt != nil && rt.up != nil:
		return rt.up.label
	case direction == "inbound" && p.cfg.ServiceName != "":
		return p.cfg.ServiceName
	case direction == "inbound":
		return "inbound"
	}
	return metrics.Passthrough
}

// localReply answers by itself, the gRPC way to a gRPC client, and counts
// it.
func (p *Proxy) localReply(w http.ResponseWriter, r *http.Request, rt *route, lr localReply, detail string) {
	if p.metrics != nil {
		p.metrics.LocalReplies.WithLabelValues(p.label(rt, ""), lr.reason).Inc()
	}
	if isGRPC(r) {
		writeGRPCReply(w, lr, detail)
		return
	}
	writeLocalReply(w, lr, detail)
}

// routeHTTP decides where a request goes. Inbound requests go to the inbound
// target; outbound ones to the service their authority names, or, when
// discovery does not know it, to the original destination (redirected) or
// the authority itself (explicit mode).
func (p *Proxy) routeHTTP(r *http.Request, info *connInfo, st *requestState) (*route, error) {
	if info.inbound {
		st.rt = route{key: "inbound", target: p.inboundTarget(info.dst)}
		return &st.rt, nil
	}
	if name := ServiceName(r.Host); name != "" {
		rt, err := p.serviceRouteInto(r.Context(), name, &st.rt, &st.lt)
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
	st.rt = route{key: target, up: p.passthrough(target), target: target}
	return &st.rt, nil
}

// requestState is what serving one HTTP request needs of its own, made in
// one allocation: the response writer, the route, the discovery wait's
// context and the exchange.
type requestState struct {
	w  responseWriter
	rt route
	lt lazyTimeout
	x  exchange
}

// serviceRoute resolves a mesh service to its current endpoints.
func (p *Proxy) serviceRoute(ctx context.Context, name string) (*route, error) {
	return p.serviceRouteInto(ctx, name, new(route), new(lazyTimeout))
}

// serviceRouteInto is serviceRoute filling rt, with lt for the wait.
func (p *Proxy) serviceRouteInto(ctx context.Context, name string, rt *route, lt *lazyTimeout) (*route, error) {
	// Discovery answers at once for a name it watches; it waits, at most
	// the connect timeout, only for a name's first answer. The wait is not
	// tied to the client's cancellation, and its timer is made only if
	// discovery waits (lazyTimeout): most lookups need neither.
	*lt = lazyTimeout{values: ctx, timeout: p.cfg.Defaults.ConnectTimeout}
	defer lt.release()
	snap, err := p.resolver.Resolve(lt, name)
	if err != nil {
		return nil, err
	}
	u := p.upstream(name)
	*rt = route{key: name, up: u, eps: u.endpoints(snap)}
	return rt, nil
}

// lazyTimeout is a context with a timeout whose timer is armed only when
// something asks for Done, Err or Deadline: the timeout counts from then,
// when a wait begins. It has its parent's values, not its cancellation.
type lazyTimeout struct {
	values   context.Context
	timeout  time.Duration
	deadline time.Time // when set, the deadline in place of the timeout

	once   sync.Once
	armed  context.Context
	cancel context.CancelFunc
}

func (c *lazyTimeout) arm() context.Context {
	c.once.Do(func() {
		if c.deadline.IsZero() {
			c.deadline = time.Now().Add(c.timeout)
		}
		c.armed, c.cancel = context.WithDeadline(context.WithoutCancel(c.values), c.deadline)
	})
	if c.armed == nil {
		return releasedContext // used after release
	}
	return c.armed
}

// releasedContext is what a lazyTimeout is once released: done.
var releasedContext = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func (c *lazyTimeout) Deadline() (time.Time, bool) { return c.arm().Deadline() }
func (c *lazyTimeout) Done() <-chan struct{}       { return c.arm().Done() }
func (c *lazyTimeout) Err() error                  { return c.arm().Err() }
func (c *lazyTimeout) Value(key any) any           { return c.values.Value(key) }

// release stops the timer, if one was made.
func (c *lazyTimeout) release() {
	c.once.Do(func() {}) // no timer from here on
	if c.cancel != nil {
		c.cancel()
	}
}

// answerError answers an upstream error: the local reply for err, or
// nothing when the client went away.
func (p *Proxy) answerError(w http.ResponseWriter, r *http.Request, rt *route, err error) {
	if r.Context().Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
		return // the client is gone: nobody to answer
	}
	lr := localReplyFor(err)
	if ce := p.log.Check(zap.DebugLevel, "local reply"); ce != nil {
		ce.Write(zap.String("authority", r.Host), zap.String("reason", lr.reason), zap.Error(err))
	}
	p.localReply(w, r, rt, lr, err.Error())
}

// newH2Transport is the upstream HTTP/2 client for h2c requests: one
// connection per endpoint carries many streams; a new one opens only when
// the server's stream limit is reached.
//
// meshd uses golang.org/x/net/http2 directly, as its design chose, rather
// than the copy bundled in net/http: its stream errors (REFUSED_STREAM) are
// typed, so the retry logic can tell them apart.
func (p *Proxy) newH2Transport() *http2.Transport {
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, _, addr string, _ *tls.Config) (net.Conn, error) {
			return p.dialHTTP(ctx, addr)
		},
		DisableCompression: true,
		ReadIdleTimeout:    30 * time.Second,
		PingTimeout:        10 * time.Second,
	}
}

// dialHTTP connects to an HTTP upstream within the connect timeout of the
// request's route (the default one without a route). The connection reads
// and writes with raw system calls (proxy/sockio).
func (p *Proxy) dialHTTP(ctx context.Context, addr string) (net.Conn, error) {
	timeout := p.cfg.Defaults.ConnectTimeout
	if rt, ok := ctx.Value(routeKey).(*route); ok {
		timeout = rt.policy(p).ConnectTimeout
	}
	c, err := p.dial(ctx, addr, timeout)
	if err != nil {
		return nil, err
	}
	if s := sockio.New(c); s != nil {
		return s, nil
	}
	return c, nil
}

// transportFor picks the upstream client matching the request's protocol.
func (p *Proxy) transportFor(r *http.Request) http.RoundTripper {
	if r.ProtoMajor == 2 {
		return p.h2transport
	}
	return p.transport
}

// newTransport is the upstream HTTP/1.1 client (proxy/h1): requests are
// written and answers read on the request's own goroutine, over
// connections pooled per endpoint address.
func (p *Proxy) newTransport() *h1.Transport {
	return &h1.Transport{
		DialContext:            p.dialHTTP,
		MaxIdleConnsPerHost:    256,
		MaxConnsPerHost:        p.cfg.MaxConnsPerEndpoint,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 1 << 20,
		ExpectContinueTimeout:  time.Second,
	}
}

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var s [36]byte
	appendRequestID(&s)
	return string(s[:])
}

// appendRequestID writes a random (version 4) UUID into s.
func appendRequestID(s *[36]byte) {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
}

// copyBufs are the 32 KiB buffers of body copies.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// responseWriter passes the upstream's response on as it came: net/http
// would add a Date and a sniffed Content-Type the upstream did not send.
// It also remembers the status code for the access log.
type responseWriter struct {
	http.ResponseWriter
	st        *requestState // the request's, whose part this writer is
	code      int
	headersAt time.Time
	requestID [1]string // the X-Request-Id field meshd adds, without an allocation of its own
}

func (w *responseWriter) WriteHeader(code int) {
	if code >= 200 && w.code == 0 {
		w.code = code
		w.headersAt = time.Now()
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

// Flush sends what is buffered to the client.
func (w *responseWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection's writer
// (flushes, and hijacking for protocol upgrades).
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
