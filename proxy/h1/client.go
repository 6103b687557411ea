package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Transport is an http.RoundTripper for HTTP/1.1 upstreams: requests are
// written and responses read on the caller's goroutine, over connections
// pooled per address. Only a request body (unless it is small and in
// memory, then written with the head) is written by a goroutine of its
// own, so that an upstream may answer before it has read all of it.
//
// The address dialled is req.URL.Host ("host:port"; port 80 when it has
// none); the Host header sent is req.Host, or req.URL.Host when that is
// empty. The scheme must be "http". The header fields of req.Header are
// sent as they are, hop-by-hop ones included: removing those is the
// caller's job. The Transport itself frames the body (Content-Length or
// chunked, as http.Request.Write does), adds "Connection: close" when
// req.Close is set, and adds no User-Agent or Accept-Encoding of its own.
// A body of unknown length (ContentLength -1, or 0 with a body) is sent
// chunked, with req.Trailer after it, announced in a Trailer field; except
// that a GET or HEAD with ContentLength 0 is taken to have no body, which
// is closed unread (net/http reads a byte to find out instead). A request
// with an invalid header field, Host or request-target is refused before
// anything is sent.
//
// Its methods are safe for concurrent use. Its fields must not change
// after the first request. Idle connections, and the goroutine that closes
// them when they expire, last until CloseIdleConnections is called or they
// expire.
type Transport struct {
	// DialContext opens a connection to addr ("host:port"). It is
	// required. Its errors are returned by RoundTrip unchanged.
	DialContext func(ctx context.Context, addr string) (net.Conn, error)

	// MaxIdleConnsPerHost is how many idle connections are kept per
	// address: 0 means 256, a negative value keeps none (every
	// connection is closed after its request).
	MaxIdleConnsPerHost int

	// MaxConnsPerHost limits the connections per address, counting
	// those being dialled, in use and idle; 0 means no limit. At the
	// limit RoundTrip waits, until the request's context ends, for a
	// connection to become idle or to close.
	MaxConnsPerHost int

	// IdleConnTimeout is how long a connection may stay idle before it
	// is closed: 0 means 90 seconds, a negative value no limit.
	IdleConnTimeout time.Duration

	// MaxResponseHeaderBytes limits the size of a response head (status
	// line and header section, any 1xx responses before it included),
	// and of a chunked response's trailer section: 0 means 1 MiB.
	MaxResponseHeaderBytes int64

	// ExpectContinueTimeout, when positive, is how long a request that
	// has a body and "Expect: 100-continue" waits for the upstream's
	// 100 Continue before its body is sent anyway. When zero the body is
	// sent at once.
	ExpectContinueTimeout time.Duration

	pools   sync.Map // address → *clientPool
	janitor clientJanitor
}

// ErrServerClosedIdle is wrapped in the error RoundTrip returns when a
// request went out on a reused idle connection that the upstream had
// closed: the connection ended (EOF, reset, broken pipe) before a single
// byte of a response came back, or the upstream's answer was the 408 it
// sends when it times out an idle connection. The Transport sends such a
// request again itself, once, on a new connection when its body can be
// replayed (none, or GetBody) and it is idempotent (or a 408 proves the
// upstream did not act on it); this error is for the others.
//
// Such a request almost certainly never reached the upstream's
// application: the upstream closed the connection before reading it. (The
// one other way to end like this, without a 408, is an upstream that
// crashed while handling the request, which no client can tell apart.)
var ErrServerClosedIdle = errors.New("h1: server closed idle connection")

// Defaults for the Transport's zero fields.
const (
	clientDefaultMaxIdle    = 256
	clientDefaultIdleTime   = 90 * time.Second
	clientDefaultMaxHead    = 1 << 20
	clientBufSize           = 4 << 10
	clientCopyBufSize       = 32 << 10
	clientWriteWaitForReuse = 50 * time.Millisecond
)

// clientError is the type of the Transport's own constant errors.
type clientError string

func (e clientError) Error() string { return string(e) }

const (
	clientErrBodyClosed  = clientError("h1: read on closed response body")
	clientErrHeadTooBig  = clientError("h1: response head too large")
	clientErrShortBody   = clientError("h1: request body shorter than its Content-Length")
	clientErrNoDial      = clientError("h1: Transport.DialContext is nil")
	clientErrConcurrent  = clientError("h1: concurrent Read on a response body")
	clientErrBodySkipped = clientError("h1: request body not sent: the upstream answered without 100 Continue")
	clientErrIdle408     = clientError("h1: the upstream timed out the idle connection (408)")
)

// clientPast is a deadline already passed: it fails blocked I/O at once.
var clientPast = time.Unix(1, 0)

// RoundTrip sends req and returns the upstream's response, implementing
// http.RoundTripper. It always closes req.Body, possibly after it has
// returned (a body still being written while the response is read).
//
// The response body gives the connection back to the pool when it is read
// to its end, or when it is closed with the rest of it already buffered;
// otherwise closing it closes the connection. Cancelling the request's
// context aborts a dial, a wait for a connection, a write or a read, the
// response body's included, and errors it causes wrap ctx.Err().
//
// A 101 Switching Protocols response has a body that is also an
// io.Writer (an io.ReadWriteCloser over the connection, which is then
// no longer pooled). Other 1xx responses are skipped; they are reported
// to an httptrace.ClientTrace's Got1xxResponse (and Got100Continue) when
// the request's context carries one.
//
// A request that fails on a reused connection before any byte of a
// response came back is sent again once on a new connection when it can
// be replayed (no body, or GetBody) and is idempotent; see
// ErrServerClosedIdle for the others.
//
// Connection-level failures are returned wrapped with %w; dial errors are
// returned as DialContext returned them.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	orig := req
	fresh := false
	for {
		pl, err := t.plan(req)
		if err != nil {
			clientCloseBody(req.Body)
			return nil, err
		}
		cc, err := t.getConn(req.Context(), pl.addr, fresh)
		if err != nil {
			clientCloseBody(req.Body)
			return nil, err
		}
		resp, err := cc.roundTrip(req, orig, &pl)
		if err == nil {
			return resp, nil
		}
		var se *clientStaleError
		if !errors.As(err, &se) {
			return nil, err
		}
		if !fresh {
			if r, ok := clientReplay(req, &pl, se.unseen); ok {
				req, fresh = r, true
				continue
			}
		}
		return nil, fmt.Errorf("%w: %w", ErrServerClosedIdle, se.err)
	}
}

// CloseIdleConnections closes the connections that are idle now; those in
// use are not affected. The goroutine that expires idle connections ends
// when none is left.
func (t *Transport) CloseIdleConnections() {
	t.pools.Range(func(_, v any) bool {
		v.(*clientPool).closeIdle()
		return true
	})
	t.janitor.kick()
}

func (t *Transport) maxIdle() int {
	if t.MaxIdleConnsPerHost == 0 {
		return clientDefaultMaxIdle
	}
	return t.MaxIdleConnsPerHost
}

func (t *Transport) idleTimeout() time.Duration {
	if t.IdleConnTimeout == 0 {
		return clientDefaultIdleTime
	}
	return t.IdleConnTimeout
}

func (t *Transport) maxHead() int {
	n := t.MaxResponseHeaderBytes
	if n <= 0 {
		return clientDefaultMaxHead
	}
	return int(min(n, 1<<30))
}

// clientPlan is what RoundTrip decided about a request before sending it.
type clientPlan struct {
	addr     string // the address dialled
	method   string
	path     string // the request-target, without its query
	host     string // the Host header's value
	query    bool   // the request-target has "?" and URL.RawQuery
	body     io.ReadCloser
	length   int64 // the body's Content-Length; -1: chunked (RFC 9112 §7.1)
	cl0      bool  // no body, but "Content-Length: 0" is sent
	inMem    bool  // the body is an in-memory reader: reading it never blocks
	expect   bool  // wait for 100 Continue before sending the body
	close    bool  // the request asks the connection to close
	trailers bool  // the body is chunked and trailers are declared
}

// plan checks req and decides how it is framed. Everything that could make
// the request unsendable is checked here, before a connection is taken,
// so that nothing of an invalid request is ever sent.
func (t *Transport) plan(req *http.Request) (clientPlan, error) {
	var pl clientPlan
	u := req.URL
	switch {
	case u == nil:
		return pl, errors.New("h1: nil Request.URL")
	case req.Header == nil:
		return pl, errors.New("h1: nil Request.Header")
	case u.Scheme != "http":
		return pl, fmt.Errorf("h1: unsupported protocol scheme %q", u.Scheme)
	case u.Host == "":
		return pl, errors.New("h1: no Host in request URL")
	case t.DialContext == nil:
		return pl, clientErrNoDial
	}
	pl.addr = clientHostPort(u.Host)
	pl.method = req.Method
	if pl.method == "" {
		pl.method = http.MethodGet
	} else if !clientIsToken(pl.method) {
		return pl, fmt.Errorf("h1: invalid method %q", pl.method)
	}
	if pl.method == http.MethodConnect {
		return pl, errors.New("h1: CONNECT is not supported")
	}
	pl.host = req.Host
	if pl.host == "" {
		pl.host = u.Host
	}
	if !httpguts.ValidHostHeader(pl.host) {
		return pl, fmt.Errorf("h1: invalid Host %q", pl.host)
	}

	// The request-target in origin form (RFC 9112 §3.2.1), or "*" for a
	// server-wide OPTIONS (§3.2.4): what URL.RequestURI gives, built
	// without concatenating.
	if u.Opaque != "" {
		pl.path = u.RequestURI()
	} else {
		pl.path = u.EscapedPath()
		if pl.path == "" {
			pl.path = "/"
		}
		pl.query = u.ForceQuery || u.RawQuery != ""
		if pl.query && !clientValidTarget(u.RawQuery) {
			return pl, fmt.Errorf("h1: invalid character in request query %q", u.RawQuery)
		}
	}
	if !clientValidTarget(pl.path) {
		return pl, fmt.Errorf("h1: invalid character in request target %q", pl.path)
	}

	for k, vv := range req.Header {
		if !clientIsToken(k) {
			return pl, fmt.Errorf("h1: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return pl, fmt.Errorf("h1: invalid header field value for %q", k)
			}
		}
	}
	pl.close = req.Close || httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close")

	// Body framing, as http.Request.Write decides it (RFC 9112 §6).
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	switch {
	case body == nil:
		if req.ContentLength > 0 {
			return pl, fmt.Errorf("h1: Request.ContentLength=%d with nil Body", req.ContentLength)
		}
		// Many servers expect a length for these methods, net/http sends
		// one.
		pl.cl0 = pl.method == http.MethodPost || pl.method == http.MethodPut || pl.method == http.MethodPatch
	case req.ContentLength > 0:
		pl.body, pl.length = body, req.ContentLength
	case req.ContentLength == 0 && (pl.method == http.MethodGet || pl.method == http.MethodHead):
		// A zero ContentLength with a body means "unknown"; net/http
		// reads a byte to find out. A GET or HEAD with a body is
		// treated as having none: the body is closed unread.
	default:
		pl.body, pl.length = body, -1
	}
	if pl.body != nil {
		pl.inMem = clientInMemory(pl.body)
		pl.expect = t.ExpectContinueTimeout > 0 &&
			httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue")
	}
	if pl.length < 0 && pl.body != nil && len(req.Trailer) > 0 {
		for k := range req.Trailer {
			switch {
			case !clientIsToken(k):
				return pl, fmt.Errorf("h1: invalid trailer field name %q", k)
			case clientForbiddenTrailer(k):
				return pl, fmt.Errorf("h1: %q is not allowed as a trailer field", k)
			}
		}
		pl.trailers = true
	}
	return pl, nil
}

// clientReplay returns the request to send again on a fresh connection
// after a stale one failed, and whether it may be sent again: its body must
// be replayable, and either the upstream cannot have seen it (unseen) or
// its method is idempotent (RFC 9110 §9.2.2).
func clientReplay(req *http.Request, pl *clientPlan, unseen bool) (*http.Request, bool) {
	if !unseen && !clientIdempotent(req) {
		return nil, false
	}
	if pl.body == nil {
		if req.Body == nil || req.Body == http.NoBody {
			return req, true
		}
		// A body that was not sent (a GET's of unknown length) and is
		// closed already.
		r := new(http.Request)
		*r = *req
		r.Body = nil
		return r, true
	}
	if req.GetBody == nil {
		return nil, false
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, false
	}
	r := new(http.Request)
	*r = *req
	r.Body = body
	return r, true
}

func clientIdempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	// Widely used to mark a request idempotent; net/http honours it too.
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

// clientStaleError is a failure on a reused connection before any byte of
// a response: the upstream had most likely closed the idle connection.
// RoundTrip retries or wraps it in ErrServerClosedIdle.
type clientStaleError struct {
	err error
	// The upstream cannot have acted on the request: not a byte of it
	// was written, or the upstream answered 408 on the idle connection.
	unseen bool
}

func (e *clientStaleError) Error() string { return "h1: stale connection: " + e.err.Error() }
func (e *clientStaleError) Unwrap() error { return e.err }

// clientIsStale reports whether err is how a connection the upstream
// closed fails.
func clientIsStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// clientCtxErr wraps the context's error when it ended, err otherwise.
func clientCtxErr(ctx context.Context, what string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("h1: %s: %w (%v)", what, cerr, err)
	}
	return fmt.Errorf("h1: %s: %w", what, err)
}

// roundTrip sends one request on cc, which it owns from now on: it goes
// back to the pool or is closed, now or when the response body is done.
// req.Body is closed in every case.
func (cc *clientConn) roundTrip(req, orig *http.Request, pl *clientPlan) (*http.Response, error) {
	if req.Body != nil && pl.body == nil {
		clientCloseBody(req.Body)
	}
	if cc.deadline {
		_ = cc.nc.SetDeadline(time.Time{}) // a relayed request's
		cc.deadline = false
	}
	ctx := req.Context()
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, cc.cancel)
	}
	startRead, startWritten := cc.nread, cc.nwritten
	bw := cc.bw
	err := cc.writeHead(req, pl)

	// A body-less request, and a small in-memory body, go out with the
	// head in one write, on this goroutine.
	var w *clientWriter
	switch {
	case err != nil:
		clientCloseBody(pl.body)
	case pl.body == nil:
		err = bw.Flush()
	case pl.inMem && !pl.expect && pl.length > 0 && pl.length <= int64(bw.Available()):
		var berr error
		if berr = cc.writeSmallBody(pl); berr == nil {
			err = bw.Flush()
		}
		clientCloseBody(pl.body)
		if berr != nil {
			cc.release(false, nil, stop)
			return nil, fmt.Errorf("h1: request body: %w", berr)
		}
	default:
		// The head goes out at once unless the body can be read without
		// blocking (net/http does the same): the upstream must see a
		// request whose body is slow to come.
		if !pl.inMem || pl.expect {
			err = bw.Flush()
		}
		if err == nil {
			w = &clientWriter{cc: cc, bw: bw, length: pl.length, inMem: pl.inMem, trailers: pl.trailers,
				trailer: req.Trailer, wait100: cc.p.t.ExpectContinueTimeout, done: make(chan struct{})}
			if pl.expect {
				w.cont = make(chan bool, 1)
			}
			go w.run(pl.body)
		} else {
			clientCloseBody(pl.body)
		}
	}
	if err != nil {
		cc.release(false, nil, stop)
		if ctx.Err() == nil && cc.reused && clientIsStale(err) {
			return nil, &clientStaleError{err: err, unseen: cc.nwritten == startWritten}
		}
		return nil, clientCtxErr(ctx, "write request", err)
	}

	resp, err := cc.readResponse(req, orig, pl, w, stop)
	if err != nil {
		if w != nil {
			w.answered(false)
		}
		cc.release(false, w, stop)
		if ctx.Err() != nil {
			return nil, clientCtxErr(ctx, "read response", err)
		}
		if w != nil {
			if berr := w.bodyErr(); berr != nil {
				return nil, fmt.Errorf("h1: request body: %w", berr)
			}
		}
		if cc.reused && errors.Is(err, clientErrIdle408) {
			return nil, &clientStaleError{err: err, unseen: true}
		}
		if cc.reused && cc.nread == startRead && clientIsStale(err) {
			return nil, &clientStaleError{err: err}
		}
		return nil, fmt.Errorf("h1: read response: %w", err)
	}
	return resp, nil
}

// writeHead writes the request line and header section (RFC 9112 §3, §5)
// into the connection's buffer, without flushing it.
func (cc *clientConn) writeHead(req *http.Request, pl *clientPlan) error {
	bw := cc.bw
	bw.WriteString(pl.method)
	bw.WriteByte(' ')
	bw.WriteString(pl.path)
	if pl.query {
		bw.WriteByte('?')
		bw.WriteString(req.URL.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(pl.host)
	bw.WriteString("\r\n")
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			// Host is req.Host; the framing fields are the Transport's.
			continue
		case "User-Agent":
			// As net/http: the first value only, none when empty (how
			// httputil.ReverseProxy says "send no User-Agent").
			if len(vv) == 0 || clientTrim(vv[0]) == "" {
				continue
			}
			vv = vv[:1]
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(clientTrim(v))
			bw.WriteString("\r\n")
		}
	}
	switch {
	case pl.body != nil && pl.length >= 0:
		bw.WriteString("Content-Length: ")
		clientWriteInt(bw, pl.length, 10)
		bw.WriteString("\r\n")
	case pl.body != nil:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if pl.trailers {
			// RFC 9110 §6.6.2: announce the trailer fields.
			bw.WriteString("Trailer: ")
			first := true
			for k := range req.Trailer {
				if !first {
					bw.WriteString(", ")
				}
				first = false
				bw.WriteString(k)
			}
			bw.WriteString("\r\n")
		}
	case pl.cl0:
		bw.WriteString("Content-Length: 0\r\n")
	}
	if req.Close && !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close") {
		bw.WriteString("Connection: close\r\n")
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// writeSmallBody reads a small in-memory body of known length straight
// into the write buffer, behind the head.
func (cc *clientConn) writeSmallBody(pl *clientPlan) error {
	buf := cc.bw.AvailableBuffer()[:pl.length]
	n, err := io.ReadFull(pl.body, buf)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return clientErrShortBody
		}
		return err
	}
	_, err = cc.bw.Write(buf[:n])
	return err
}

// clientWriteInt writes n in the given base without allocating.
func clientWriteInt(bw *bufio.Writer, n int64, base int) {
	if bw.Available() >= 24 {
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), n, base))
		return
	}
	bw.WriteString(strconv.FormatInt(n, base))
}

// clientWriter writes a request body on a goroutine of its own while the
// caller reads the response.
type clientWriter struct {
	cc       *clientConn
	bw       *bufio.Writer // the connection's, kept by the writer until it finishes
	wait100  time.Duration
	length   int64 // as clientPlan's
	inMem    bool
	trailers bool
	trailer  http.Header
	cont     chan bool // with Expect: 100-continue, whether to send the body
	done     chan struct{}

	mu       sync.Mutex
	err      error
	fromBody bool // err came from reading the body, not the connection
	finished bool
}

var clientCopyBufs = sync.Pool{New: func() any { b := make([]byte, clientCopyBufSize); return &b }}

func (w *clientWriter) run(body io.ReadCloser) {
	fromBody, err := w.write(body)
	clientCloseBody(body)
	w.mu.Lock()
	w.err, w.fromBody, w.finished = err, fromBody, true
	w.mu.Unlock()
	if err != nil && fromBody {
		// The request can no longer be completed: wake the reader, which
		// reports the body's error.
		w.cc.abort()
	}
	close(w.done)
}

// answered tells a writer waiting for 100 Continue that a final response
// came instead (or none will): send the body only when the connection is
// to be kept.
func (w *clientWriter) answered(keep bool) {
	if w.cont != nil {
		select {
		case w.cont <- keep:
		default:
		}
	}
}

func (w *clientWriter) write(body io.ReadCloser) (fromBody bool, err error) {
	bw := w.bw
	if w.cont != nil {
		t := time.NewTimer(w.wait100)
		select {
		case send := <-w.cont:
			t.Stop()
			if !send {
				return false, clientErrBodySkipped
			}
		case <-t.C:
		}
	}
	bufp := clientCopyBufs.Get().(*[]byte)
	defer clientCopyBufs.Put(bufp)
	buf := *bufp
	left := w.length
	chunked := left < 0
	for left != 0 {
		p := buf
		if !chunked && int64(len(p)) > left {
			p = p[:left]
		}
		n, rerr := body.Read(p)
		if n > 0 {
			if chunked {
				// RFC 9112 §7.1: chunk-size CRLF chunk-data CRLF.
				clientWriteInt(bw, int64(n), 16)
				bw.WriteString("\r\n")
			} else {
				left -= int64(n)
			}
			bw.Write(p[:n])
			if chunked {
				bw.WriteString("\r\n")
			}
			if _, err := bw.Write(nil); err != nil {
				return false, err // the connection failed: stop reading the body
			}
			// A streamed body goes out as it comes; an in-memory one
			// as the buffer fills.
			if !w.inMem && rerr == nil && left != 0 {
				if err := bw.Flush(); err != nil {
					return false, err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return true, rerr
		}
	}
	if left > 0 {
		return true, clientErrShortBody
	}
	if chunked {
		// The last chunk and the trailer section (RFC 9112 §7.1.2).
		// Trailer values may only be known now that the body ended.
		bw.WriteString("0\r\n")
		var trailer http.Header
		if w.trailers {
			trailer = w.trailer
		}
		for k, vv := range trailer {
			for _, v := range vv {
				if !httpguts.ValidHeaderFieldValue(v) {
					return true, fmt.Errorf("h1: invalid trailer field value for %q", k)
				}
				bw.WriteString(k)
				bw.WriteString(": ")
				bw.WriteString(clientTrim(v))
				bw.WriteString("\r\n")
			}
		}
		bw.WriteString("\r\n")
	}
	return false, bw.Flush()
}

// bodyErr returns the error reading the request body failed with, if it
// did.
func (w *clientWriter) bodyErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fromBody {
		return w.err
	}
	return nil
}

// wait waits up to d for the writer to finish; ok says it wrote the whole
// request.
func (w *clientWriter) wait(d time.Duration) (ok, finished bool) {
	select {
	case <-w.done:
	default:
		if d <= 0 {
			return false, false
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-w.done:
		case <-t.C:
			return false, false
		}
	}
	return w.err == nil, true
}

// readResponse reads the response head, skipping 1xx responses other than
// 101, and sets up the body.
func (cc *clientConn) readResponse(req, orig *http.Request, pl *clientPlan, w *clientWriter, stop func() bool) (*http.Response, error) {
	budget := cc.p.t.maxHead()
	var h clientHead
	var fb [32]clientField
	var fields []clientField
	for {
		var used int
		var err error
		fields, used, err = cc.readHead(&h, fb[:0], budget, true)
		if err != nil {
			return nil, err
		}
		budget -= used
		if h.code >= 200 || h.code == http.StatusSwitchingProtocols {
			break
		}
		// A 1xx interim response (RFC 9110 §15.2).
		if h.code == http.StatusContinue && w != nil {
			w.answered(true)
		}
		if trace := httptrace.ContextClientTrace(req.Context()); trace != nil {
			if h.code == http.StatusContinue && trace.Got100Continue != nil {
				trace.Got100Continue()
			}
			if trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(h.code, textproto.MIMEHeader(clientHeader(h.s, fields, nil))); err != nil {
					return nil, err
				}
			}
		}
	}

	// The response, its body and its header values are one allocation.
	x := new(clientResponse)
	resp := &x.resp
	*resp = http.Response{
		Status:     h.status,
		StatusCode: h.code,
		Proto:      h.proto,
		ProtoMajor: 1,
		ProtoMinor: h.minor,
		Header:     clientHeader(h.s, fields, x.vals[:]),
		Request:    orig,
	}
	if h.code == http.StatusSwitchingProtocols {
		if w != nil {
			w.answered(true)
			// The connection is handed over: the body must be out.
			select {
			case <-w.done:
			case <-req.Context().Done():
				return nil, req.Context().Err()
			}
			if err := w.bodyErr(); err != nil {
				return nil, err
			}
		}
		resp.Body = &clientUpgradeBody{cc: cc, stop: stop}
		resp.ContentLength = -1
		return resp, nil
	}

	if h.code == http.StatusRequestTimeout && cc.reused {
		// Servers send 408 on a keep-alive connection they time out,
		// before closing it: whenever it was sent, the request was not
		// acted on (RFC 9110 §15.5.9), and this connection is done.
		return nil, clientErrIdle408
	}
	if err := cc.frameBody(x, req.Method, req.Context(), pl.close, w, stop); err != nil {
		return nil, err
	}
	return resp, nil
}

// frameBody gives x.resp its body, as its framing says, or releases the
// connection when it has none. close says the request asked for the
// connection to close.
func (cc *clientConn) frameBody(x *clientResponse, method string, ctx context.Context, close bool, w *clientWriter, stop func() bool) error {
	resp := &x.resp
	fr, err := clientFrame(resp, method)
	if err != nil {
		return err
	}
	keep := fr.keep && !close
	resp.Close = !fr.keep
	if w != nil {
		w.answered(keep)
	}
	if fr.kind == clientBodyNone {
		resp.Body = http.NoBody
		cc.release(keep, w, stop)
		return nil
	}
	b := &x.body
	*b = clientBody{cc: cc, w: w, stop: stop, ctx: ctx, resp: resp,
		kind: fr.kind, n: fr.n, keep: keep, maxTrailer: cc.p.t.maxHead()}
	resp.Body = b
	return nil
}

// clientResponse is what a response needs, allocated at once.
type clientResponse struct {
	resp http.Response
	body clientBody
	vals [12]string
}

// clientHostPort adds port 80 to a host without one.
func clientHostPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || i < strings.LastIndexByte(host, ']') {
		return net.JoinHostPort(strings.Trim(host, "[]"), "80")
	}
	return host
}

// clientValidTarget reports whether a request-target has no byte that
// would break the request line: controls, spaces, DEL.
func clientValidTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// clientTrim trims optional whitespace (RFC 9110 §5.6.3) from a value.
func clientTrim(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// clientForbiddenTrailer reports the fields that must not be sent as
// trailers because they frame or route the message (RFC 9110 §6.5.1).
func clientForbiddenTrailer(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Transfer-Encoding", "Trailer", "Content-Length", "Host":
		return true
	}
	return false
}

func clientCloseBody(b io.ReadCloser) {
	if b != nil {
		_ = b.Close()
	}
}

var (
	clientNopCloserType         = reflect.TypeOf(io.NopCloser(nil))
	clientNopCloserWriterToType = reflect.TypeOf(io.NopCloser(struct {
		io.Reader
		io.WriterTo
	}{}))
)

// clientInMemory reports whether r is one of the readers whose reads never
// block (what http.NewRequest's bodies are), as net/http decides it.
func clientInMemory(r io.Reader) bool {
	for {
		switch r.(type) {
		case *bytes.Reader, *bytes.Buffer, *strings.Reader:
			return true
		}
		switch reflect.TypeOf(r) {
		case clientNopCloserType, clientNopCloserWriterToType:
			if r, _ = reflect.ValueOf(r).Field(0).Interface().(io.Reader); r == nil {
				return false
			}
		default:
			return false
		}
	}
}
