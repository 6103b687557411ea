package h1

import (
	"bufio"
	"bytes"
	"context"
	"log"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves HTTP/1.x requests on connections handed to ServeConn, one
// request after another on each (pipelined requests are answered in
// order), on the goroutine that called ServeConn: no goroutine is started
// per request.
//
// Request heads are parsed strictly (RFC 9112); one that is malformed, or
// ambiguous about where its body ends, is answered with 400 Bad Request
// (431 when too large, 505 for a major version other than 1, 417 for an
// expectation other than 100-continue) and the connection is closed; the
// handler never sees it. The requests the handler gets look like those of
// net/http's server: Host is in req.Host and not in req.Header, and
// Transfer-Encoding is in req.TransferEncoding only.
//
// The ResponseWriter is also an http.Flusher and an http.Hijacker, which
// http.NewResponseController finds. It never adds a Content-Type (there is
// no sniffing) and adds a Date only when the handler's header has no Date
// key: a key present with a nil value suppresses it.
//
// A request's context is canceled when its handler returns, when the
// Server is closed, and when the client is seen to go away. The server
// only watches for that while a handler has run for more than 100 ms with
// the request body read to its end: a quick request costs no read of its
// own.
//
// The exported fields must not change after the first ServeConn. The
// methods are safe for concurrent use.
type Server struct {
	// Handler answers the requests; nil means http.DefaultServeMux.
	Handler http.Handler

	// ReadHeaderTimeout bounds the reading of a request head: for a
	// connection's first request it counts from ServeConn, for the next
	// ones from the first byte of their head (the wait before that byte is
	// IdleTimeout's). It also bounds the discarding of a request body the
	// handler left unread. A head not read in time closes the connection
	// without an answer. Zero means no limit.
	ReadHeaderTimeout time.Duration

	// IdleTimeout is how long a keep-alive connection may wait for the
	// first byte of its next request. Zero means no limit.
	IdleTimeout time.Duration

	// MaxHeaderBytes limits the size of a request head: the request line
	// and the field lines with their CRLFs, the empty line ending them and
	// any empty lines before the request line. A larger head is answered
	// with 431 Request Header Fields Too Large and the connection closed.
	// It also limits a chunked request body's trailer section. Zero means
	// 1 MiB.
	MaxHeaderBytes int

	// ErrorLog receives handler panics (other than http.ErrAbortHandler)
	// and misuses of the ResponseWriter. Nil means the log package's
	// standard logger.
	ErrorLog *log.Logger

	// Relay, when set, is offered each plain request (see RelayConn)
	// before the Handler; a request it does not take goes to the Handler.
	Relay func(rc *RelayConn)

	noKeepAlive atomic.Bool
	mu          sync.Mutex
	conns       map[*srvConn]struct{}
	closed      bool
}

const (
	// srvDefaultMaxHeaderBytes is the request head limit when
	// Server.MaxHeaderBytes is zero.
	srvDefaultMaxHeaderBytes = 1 << 20
	// srvReadBufSize is the size of a connection's read buffer.
	srvReadBufSize = 4 << 10
	// srvWriteBufSize is the size of a connection's write buffer: a
	// response whose head and body fit is sent by one write, and a
	// handler that returns having written less body than this, without
	// flushing, gets a computed Content-Length.
	srvWriteBufSize = 4 << 10
	// srvWatchDelay is how long a handler runs before the server starts
	// watching its connection for the client going away.
	srvWatchDelay = 100 * time.Millisecond
	// srvMaxDiscard is the most of a request body that the handler left
	// unread that is read and dropped after it returns, to keep the
	// connection; it is closed instead when more is left.
	srvMaxDiscard = 256 << 10
	// srvLingerTimeout is how long a connection closed with bytes of the
	// client possibly unread is drained first, after its write side is
	// closed, so that the kernel does not answer them with a reset that
	// could destroy the last response before the client reads it.
	srvLingerTimeout = 500 * time.Millisecond
)

// States of a connection, for SetKeepAlivesEnabled and Close.
const (
	srvActive  int32 = iota // reading a request, or serving it
	srvIdle                 // waiting for the next request's first byte
	srvClosing              // being closed by the Server
)

// srvPast is a deadline that has passed: it interrupts a read.
var srvPast = time.Unix(1, 0)

var (
	srvReaders   sync.Pool // *bufio.Reader
	srvWriteBufs = sync.Pool{New: func() any { b := make([]byte, 0, srvWriteBufSize); return &b }}
)

// ServeConn serves requests on c until the connection ends, fails, times
// out, is closed by the client or by Close, or a response must be its
// last; it then closes c and returns. A connection taken over by a handler
// (Hijack) is left open and is no longer the Server's.
//
// ctx is the parent of every request's context: values meshd knows of the
// connection are found there. ServeConn does not return when ctx is done.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	sc := &srvConn{srv: s, nc: c, ctx: ctx}
	if !s.track(sc) {
		_ = c.Close()
		return
	}
	defer func() {
		// Handler panics are recovered where the handler is called; this
		// is for the server's own, which must end only this connection.
		if p := recover(); p != nil {
			buf := make([]byte, 64<<10)
			s.logf("h1: panic serving %s: %v\n%s", sc.remote, p, buf[:runtime.Stack(buf, false)])
		}
	}()
	sc.serve()
}

// SetKeepAlivesEnabled turns keep-alives on or off; they are on by
// default. With them off, which is how a draining listener stops its
// connections, every response says "Connection: close" (one whose head was
// sent already does not, but its connection still closes after it), and
// connections waiting for their next request are closed at once.
func (s *Server) SetKeepAlivesEnabled(v bool) {
	s.noKeepAlive.Store(!v)
	if v {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(srvIdle, srvClosing) {
			_ = c.nc.SetReadDeadline(srvPast) // wakes the wait; serve closes
		}
	}
}

// Close closes every connection being served and cancels the contexts of
// their requests in flight; connections handed to ServeConn afterwards are
// closed at once. Hijacked connections are not the Server's and stay
// open. Close does not wait for handlers to return. It returns nil.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.shut()
	}
	return nil
}

func (s *Server) track(c *srvConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*srvConn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) forget(c *srvConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return srvDefaultMaxHeaderBytes
}

// srvConn is one connection being served.
type srvConn struct {
	srv    *Server
	nc     net.Conn
	ctx    context.Context
	remote string // nc.RemoteAddr().String(), for every request

	br        *bufio.Reader
	wbufp     *[]byte     // pooled buffer behind wbuf
	wbuf      []byte      // output not written yet; its capacity is srvWriteBufSize
	werr      error       // the first write error: nothing is written after it
	hbuf      []byte      // a response head being composed
	hin       []byte      // a request head or trailer section too long for br
	fields    []srvField  // a response's header fields being sorted
	timer     *time.Timer // starts the watch of a long-running handler
	rdeadline bool        // a read deadline may be set on nc
	idleBy    time.Time   // the read deadline setIdleTimeout set, while nothing else changed it
	linger    bool        // client bytes may be left unread: close gently
	relay     RelayConn   // the request offered to Server.Relay

	state  atomic.Int32 // srvActive, srvIdle or srvClosing
	broken atomic.Bool  // the connection cannot carry another request

	// Shared with the watch, the request body's readers and Close.
	mu          sync.Mutex
	cancel      context.CancelFunc // the current request's
	inHandler   bool
	bodyDone    bool // the current request body was read to its end
	watchWanted bool // the handler has run long; watch once bodyDone
	watching    bool
	watchStop   bool
	watchDone   chan struct{}
	hijacked    bool
}

// srvExchange is one request and its response: a single allocation.
type srvExchange struct {
	req  http.Request
	url  url.URL
	res  srvResponse
	body srvBody
	info headInfo
}

func (c *srvConn) serve() {
	if a := c.nc.RemoteAddr(); a != nil {
		c.remote = a.String()
	}
	if v := srvReaders.Get(); v != nil {
		c.br = v.(*bufio.Reader)
		c.br.Reset(c.nc)
	} else {
		c.br = bufio.NewReaderSize(c.nc, srvReadBufSize)
	}
	c.wbufp = srvWriteBufs.Get().(*[]byte)
	c.wbuf = (*c.wbufp)[:0]
	defer c.end()
	for first := true; ; first = false {
		if !c.waitRequest(first) {
			return
		}
		if c.srv.Relay != nil && c.tryRelay() {
			if c.flush() != nil || c.relay.close || c.broken.Load() || c.srv.noKeepAlive.Load() {
				return
			}
			continue
		}
		c.idleBy = time.Time{} // the Handler path may change the deadline in many ways
		x, err := c.readRequest()
		if err != nil {
			c.refuse(err)
			return
		}
		if !c.serveRequest(x) {
			return
		}
	}
}

// end closes the connection, unless hijacked, and gives its buffers back.
func (c *srvConn) end() {
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Lock()
	hijacked := c.hijacked
	c.mu.Unlock()
	if !hijacked {
		c.close()
		c.br.Reset(nil)
		srvReaders.Put(c.br)
	}
	c.br = nil
	*c.wbufp = c.wbuf[:0]
	srvWriteBufs.Put(c.wbufp)
	c.wbufp, c.wbuf = nil, nil
	c.srv.forget(c)
}

// close writes out what is buffered and closes the connection; when bytes
// of the client may be left unread, it first closes the write side and
// drains them for a while, so that the client reads the last response
// rather than a reset.
func (c *srvConn) close() {
	err := c.flush()
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && c.linger && err == nil && cw.CloseWrite() == nil {
		_ = c.nc.SetReadDeadline(time.Now().Add(srvLingerTimeout))
		buf := c.wbuf[:cap(c.wbuf)]
		for n := 0; n < srvMaxDiscard; {
			m, err := c.nc.Read(buf)
			n += m
			if err != nil {
				break
			}
		}
	}
	_ = c.nc.Close()
}

// shut is Close's: the connection ends now.
func (c *srvConn) shut() {
	c.state.Store(srvClosing)
	// The connection closes before the handler hears of it: a handler
	// that returns at once must find nothing left to answer on.
	_ = c.nc.Close()
	c.mu.Lock()
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// setReadTimeout sets nc's read deadline d from now; zero clears it.
func (c *srvConn) setReadTimeout(d time.Duration) {
	c.idleBy = time.Time{}
	if d > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(d))
		c.rdeadline = true
	} else if c.rdeadline {
		_ = c.nc.SetReadDeadline(time.Time{})
		c.rdeadline = false
	}
}

// waitRequest waits for the first byte of the next request, within
// IdleTimeout (ReadHeaderTimeout for the first request), then arms the
// head's timeout. It reports false when the connection should end.
func (c *srvConn) waitRequest(first bool) bool {
	s := c.srv
	if !first && (s.noKeepAlive.Load() || c.state.Load() == srvClosing) {
		return false
	}
	if first {
		c.setReadTimeout(s.ReadHeaderTimeout)
	}
	if c.br.Buffered() > 0 {
		if !first {
			c.headTimeout()
		}
		return true
	}
	if !first {
		c.setIdleTimeout(s.IdleTimeout)
		c.state.Store(srvIdle)
		if s.noKeepAlive.Load() {
			return false
		}
	}
	_, err := c.br.Peek(1)
	if !first && !c.state.CompareAndSwap(srvIdle, srvActive) {
		return false // closed while idle (SetKeepAlivesEnabled, Close)
	}
	if err != nil {
		return false
	}
	if !first {
		c.headTimeout()
	}
	return true
}

// setIdleTimeout arms the wait for the next request's first byte. After a
// relayed request, a deadline it armed before that is still at least d
// away is kept, so that a busy connection does not move its deadline (a
// timer update) at every request: the wait may last up to d/16 longer.
// The relay's reading of the clock, if it made one, stands for now.
func (c *srvConn) setIdleTimeout(d time.Duration) {
	if d <= 0 {
		c.setReadTimeout(0)
		return
	}
	now := c.relay.now
	c.relay.now = time.Time{} // this request's only
	if now.IsZero() {
		now = time.Now()
	}
	want := now.Add(d)
	if !c.idleBy.IsZero() && !c.idleBy.Before(want) {
		return
	}
	by := want.Add(d / 16)
	_ = c.nc.SetReadDeadline(by)
	c.rdeadline, c.idleBy = true, by
}

// headTimeout arms ReadHeaderTimeout for a head not wholly buffered yet.
func (c *srvConn) headTimeout() {
	buf, _ := c.br.Peek(c.br.Buffered())
	if bytes.Contains(buf, []byte("\r\n\r\n")) {
		return // reading it cannot block
	}
	c.setReadTimeout(c.srv.ReadHeaderTimeout)
}

func (c *srvConn) readRequest() (*srvExchange, error) {
	s, err := headRead(c.br, &c.hin, c.srv.maxHeaderBytes())
	if err != nil {
		return nil, err
	}
	x := new(srvExchange)
	info, herr := headParse(s, &x.req, &x.url)
	if herr != nil {
		return nil, herr
	}
	x.info = info
	return x, nil
}

// refuse answers a request head that is refused, and closes. A read error
// or timeout gets no answer.
func (c *srvConn) refuse(err error) {
	herr, ok := err.(*headError)
	if !ok {
		return
	}
	c.linger = true
	text := strconv.Itoa(herr.status) + " " + http.StatusText(herr.status) + ": " + herr.reason + "\n"
	b := srvAppendStatusLine(c.hbuf[:0], herr.status)
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"...)
	b = append(b, srvDateField(time.Now())...)
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(text)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, text...)
	c.hbuf = b
	c.write(b)
}

// serveRequest runs the handler for x and finishes its response. It
// reports whether the connection may carry another request.
func (c *srvConn) serveRequest(x *srvExchange) bool {
	s := c.srv
	req, w := &x.req, &x.res
	req.RemoteAddr = c.remote
	w.init(c, req, &x.info)
	if x.info.chunked || req.ContentLength > 0 {
		b := &x.body
		b.init(c, w, req, &x.info)
		req.Body, w.body = b, b
		c.setReadTimeout(0) // the handler reads the body at its own pace
	} else {
		req.Body = http.NoBody
	}
	ctx, cancel := context.WithCancel(c.ctx)
	*req = *req.WithContext(ctx)

	c.mu.Lock()
	c.cancel = cancel
	c.inHandler = true
	c.bodyDone = w.body == nil
	c.watchWanted = false
	c.mu.Unlock()
	if c.timer == nil {
		c.timer = time.AfterFunc(srvWatchDelay, c.watchFire)
	} else {
		c.timer.Reset(srvWatchDelay)
	}

	ok := c.runHandler(w, req)

	hijacked := c.stopWatch(false)
	cancel()
	if hijacked {
		return false
	}
	if !ok {
		// A panic: what was sent stays incomplete (no last chunk, fewer
		// bytes than announced), and the connection closes.
		w.done = true
		if w.body != nil {
			w.body.finish(false)
		}
		if !w.headSent {
			c.wbuf = c.wbuf[:0] // body bytes of a head never sent
		}
		return false
	}
	w.finish()
	keep := !w.closeAfter && c.werr == nil
	if w.body != nil {
		keep = w.body.finish(keep)
	}
	return keep && !c.broken.Load() && !s.noKeepAlive.Load()
}

// runHandler calls the handler; it reports false when the handler
// panicked (or exited its goroutine).
func (c *srvConn) runHandler(w *srvResponse, req *http.Request) (ok bool) {
	defer func() {
		if ok {
			return
		}
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.srv.logf("h1: panic serving %s: %v\n%s", c.remote, p, buf)
		}
	}()
	h := c.srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	h.ServeHTTP(w, req)
	return true
}

// watchFire runs srvWatchDelay after a handler started.
func (c *srvConn) watchFire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.inHandler || c.hijacked || c.watching {
		return
	}
	if !c.bodyDone {
		c.watchWanted = true // the body reader starts it at the body's end
		return
	}
	c.startWatchLocked()
}

// bodyEnded is called by the request body when it has been read to its
// end, which is when a watch may start.
func (c *srvConn) bodyEnded() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bodyDone = true
	if c.watchWanted && c.inHandler && !c.hijacked && !c.watching {
		c.startWatchLocked()
	}
}

// startWatchLocked starts a read that ends the request's context when the
// client closes the connection or it fails. Whatever it reads (a request
// pipelined after this one) stays in br for the next request.
func (c *srvConn) startWatchLocked() {
	if c.br.Buffered() > 0 {
		return // the client sent more already; nothing to learn
	}
	c.watching, c.watchStop = true, false
	c.watchDone = make(chan struct{})
	_ = c.nc.SetReadDeadline(time.Time{})
	go c.watch(c.watchDone)
}

func (c *srvConn) watch(done chan struct{}) {
	defer close(done)
	if _, err := c.br.Peek(1); err == nil {
		return
	}
	c.mu.Lock()
	stopped, cancel := c.watchStop, c.cancel
	c.mu.Unlock()
	if stopped {
		return // our own deadline; a real end shows again on the next read
	}
	c.broken.Store(true)
	if cancel != nil {
		cancel()
	}
}

// stopWatch is called when the handler returns, or hijacks (then the
// watch stops for good): it stops a running watch and waits for its read
// to end. It reports whether the connection was hijacked.
func (c *srvConn) stopWatch(hijack bool) bool {
	c.mu.Lock()
	if hijack {
		c.hijacked = true
	} else {
		c.inHandler = false
		c.cancel = nil
	}
	hijacked := c.hijacked
	watching, done := c.watching, c.watchDone
	if watching {
		c.watching, c.watchStop = false, true
		_ = c.nc.SetReadDeadline(srvPast)
	}
	c.mu.Unlock()
	c.timer.Stop()
	if watching {
		<-done
		c.rdeadline, c.idleBy = true, time.Time{}
	}
	return hijacked
}
