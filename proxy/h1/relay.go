package h1

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// A relay answers plain requests without the http.Request, header map and
// context that the Handler path builds for every request: a proxy that
// only passes requests on can read the request head where it lies in the
// connection's read buffer and write the answer into its write buffer.
//
// Server.Relay is offered each request whose head ScanRequest accepts and
// whose body, if any, is already buffered with its head. It either takes
// the request (RelayConn.Take) and answers it, or declines, and the
// request goes to the Handler as usual. Anything unusual about a request
// (a transfer coding, an upgrade, an expectation, hop-by-hop fields other
// than Connection: keep-alive or close, a target in a form other than
// origin-form or an http absolute-form one, HTTP/1.0,
// obsolete line folding, a bare LF) makes it go to the Handler, whose
// strict parser answers it.

// relayMaxFields is the most header fields of a request a relay is
// offered.
const relayMaxFields = 32

// RawRequest is a request head as the client sent it, its parts slices of
// the connection's read buffer: valid until the relay returns, and never
// to be kept.
type RawRequest struct {
	Method        string // one of the methods a relay is offered, as a constant
	Target        []byte // origin-form: "/" and the rest of the target
	Host          []byte // the Host field's value, or the authority of an absolute-form target
	HostInTarget  bool   // the target was in absolute form: Host is its authority, the Host field a hop field
	ContentLength int64  // 0 when the request has no body
	HasLength     bool   // a Content-Length field was sent
	Close         bool   // the client asked to close the connection after the answer
	Body          []byte // the whole body, ContentLength bytes

	head   []byte
	fields [relayMaxFields]relayField
	nf     int
}

type relayField struct {
	k0, k1, v0, v1 int32
	hop            bool // Connection: not passed on
}

// NumFields is the number of header fields of the request.
func (r *RawRequest) NumFields() int { return r.nf }

// Field returns field i's name as sent and its value without the
// surrounding whitespace; hop reports a hop-by-hop field (Connection),
// which a proxy does not pass on.
func (r *RawRequest) Field(i int) (name, value []byte, hop bool) {
	f := &r.fields[i]
	return r.head[f.k0:f.k1], r.head[f.v0:f.v1], f.hop
}

// Get returns the value of the first field named name (compared without
// regard to case), and whether there is one.
func (r *RawRequest) Get(name string) ([]byte, bool) {
	for i := 0; i < r.nf; i++ {
		f := &r.fields[i]
		if EqualFold(r.head[f.k0:f.k1], name) {
			return r.head[f.v0:f.v1], true
		}
	}
	return nil, false
}

// relayMethods are the methods a relay is offered.
var relayMethods = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodDelete, http.MethodOptions, http.MethodPatch}

// relayRefused are the fields whose presence sends a request to the
// Handler: framing, upgrades, expectations and hop-by-hop fields a relay
// does not handle.
var relayRefused = [...]string{"Transfer-Encoding", "Upgrade", "Expect", "Te", "Trailer",
	"Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate", "Http2-Settings"}

// ScanRequest checks that head (through the empty line that ends it) is a
// plain HTTP/1.1 request a relay can pass on as it is, and fills r from
// it. It is stricter than the Server's parser: false means only that the
// Handler path must take the request, which may be well-formed.
func ScanRequest(head []byte, r *RawRequest) bool {
	*r = RawRequest{head: head}
	nl := bytes.IndexByte(head, '\n')
	if nl < 1 || head[nl-1] != '\r' {
		return false
	}
	line := head[:nl-1]
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return false
	}
	for _, m := range relayMethods {
		if string(line[:sp]) == m {
			r.Method = m
			break
		}
	}
	if r.Method == "" {
		return false
	}
	rest := line[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 || string(rest[sp+1:]) != "HTTP/1.1" {
		return false
	}
	r.Target = rest[:sp]
	for _, c := range r.Target {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	if t, ok := bytes.CutPrefix(r.Target, []byte("http://")); ok {
		// The absolute form a client sends to a proxy: the target's
		// authority is the request's host (RFC 9112 §3.2.2), and the
		// rest its origin-form target.
		end := bytes.IndexAny(t, "/?#")
		if end < 0 {
			end = len(t)
		}
		if !relayValidAuthority(t[:end]) || end == len(t) || t[end] != '/' {
			return false
		}
		r.Host, r.Target, r.HostInTarget = t[:end], t[end:], true
	} else if r.Target[0] != '/' {
		return false
	}
	for _, c := range r.Target {
		if c == '?' {
			break
		}
		if headClass[c]&headPathSafe == 0 {
			return false // a path the Server's parser would unescape, or refuse
		}
	}
	off := nl + 1
	hosts, lengths := 0, 0
	for {
		nl := bytes.IndexByte(head[off:], '\n')
		if nl < 1 || head[off+nl-1] != '\r' {
			return false
		}
		line := head[off : off+nl-1]
		if len(line) == 0 {
			if off+nl+1 != len(head) {
				return false // bytes after the head's end
			}
			break
		}
		if r.nf == relayMaxFields {
			return false
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return false
		}
		for _, c := range line[:colon] {
			if !clientTchar[c] {
				return false
			}
		}
		v0, v1, ok := fieldValue(line, colon)
		if !ok {
			return false
		}
		name, value := line[:colon], line[v0:v1]
		f := relayField{k0: int32(off), k1: int32(off + colon), v0: int32(off + v0), v1: int32(off + v1)}
		switch {
		case EqualFold(name, "Host"):
			hosts++
			if !relayValidHost(value) {
				return false
			}
			if r.HostInTarget {
				f.hop = true // the target's authority goes in its place
			} else {
				r.Host = value
			}
		case EqualFold(name, "Content-Length"):
			lengths++
			n, ok := clientParseLength(string(value))
			if !ok {
				return false
			}
			r.ContentLength = n
		case EqualFold(name, "Connection"):
			f.hop = true
			close, _, ok := relayConnection(value)
			if !ok {
				return false
			}
			r.Close = r.Close || close
		case EqualFold(name, "Content-Type"):
			if bytes.HasPrefix(value, []byte("application/grpc")) {
				return false
			}
		default:
			for _, k := range relayRefused {
				if EqualFold(name, k) {
					return false
				}
			}
		}
		r.fields[r.nf] = f
		r.nf++
		off += nl + 1
	}
	r.HasLength = lengths == 1
	return hosts == 1 && lengths <= 1
}

// relayConnection reads a Connection field made only of the keep-alive and
// close options.
func relayConnection(v []byte) (close, keepAlive, ok bool) {
	for len(v) > 0 {
		var opt []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			opt, v = v[:i], v[i+1:]
		} else {
			opt, v = v, nil
		}
		opt = bytes.TrimSpace(opt)
		switch {
		case len(opt) == 0:
		case EqualFold(opt, "close"):
			close = true
		case EqualFold(opt, "keep-alive"):
			keepAlive = true
		default:
			return false, false, false
		}
	}
	return close, keepAlive, true
}

// relayValidAuthority accepts a host name or IPv4 address and an
// optional port of digits.
func relayValidAuthority(v []byte) bool {
	host, port := v, []byte(nil)
	if i := bytes.IndexByte(v, ':'); i >= 0 {
		host, port = v[:i], v[i+1:]
		if len(port) == 0 || len(port) > 5 {
			return false
		}
		for _, c := range port {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	if len(host) == 0 {
		return false
	}
	for _, c := range host {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// relayValidHost accepts a host and optional port made of the bytes of
// names and IP addresses only.
func relayValidHost(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

// EqualFold reports whether b and s are the same ASCII text without
// regard to case.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// RelayConn is the client connection a relay answers on. It is the
// Server's, and valid only during the call to Relay.
type RelayConn struct {
	// Req is the request offered.
	Req RawRequest
	// State is the relay's own, kept from one request of the connection
	// to the next.
	State any

	c     *srvConn
	size  int // the head's and body's bytes in the read buffer
	taken bool
	close bool
	now   time.Time // the relay's last reading of the clock (SetNow)
}

// SetNow tells the connection the relay's last reading of the clock, near
// the end of its answer: the wait for the next request counts from it.
func (rc *RelayConn) SetNow(t time.Time) { rc.now = t }

// Context is the context ServeConn was given: the values the caller set
// for the connection. It is never canceled.
func (rc *RelayConn) Context() context.Context { return rc.c.ctx }

// Take makes the request the relay's: it must answer it. Req stays valid
// until the relay returns.
func (rc *RelayConn) Take() {
	rc.taken = true
	rc.close = rc.close || rc.Req.Close
}

// Closing reports whether the connection ends after this answer: the
// client asked to, or the Server is shutting down or draining. A relay
// says so in its answer (Connection: close).
func (rc *RelayConn) Closing() bool {
	return rc.close || rc.c.srv.noKeepAlive.Load() || rc.c.state.Load() == srvClosing
}

// CloseAfter makes the connection end after this answer.
func (rc *RelayConn) CloseAfter() { rc.close = true }

// ClientGone reports whether the client has closed or reset the
// connection, by a look at the socket that does not wait. Bytes the
// client sent after the request (or a connection that cannot be looked
// at) say it is still there.
func (rc *RelayConn) ClientGone() bool {
	c := rc.c
	switch {
	case c.state.Load() == srvClosing:
		return true // the Server closed it
	case c.br.Buffered() > rc.size:
		return false
	}
	return peekSocket(c.nc) == peekEnded
}

// WatchClient has gone called, on another goroutine, if the client goes
// away before StopWatch: as for a Handler, the connection is watched once
// the answer has taken 100 ms. The request's bytes leave the read
// buffer first (what the client sends next is read into it): Req's byte
// slices are no longer valid (its Method and lengths are). A relay calls
// it before passing on an answer whose end it cannot bound in time, and
// must call StopWatch, even when it panics.
func (rc *RelayConn) WatchClient(gone func()) {
	c := rc.c
	_, _ = c.br.Discard(rc.size)
	rc.size = 0
	c.mu.Lock()
	c.cancel = gone
	c.inHandler, c.bodyDone, c.watchWanted = true, true, false
	c.mu.Unlock()
	if c.timer == nil {
		c.timer = time.AfterFunc(srvWatchDelay, c.watchFire)
	} else {
		c.timer.Reset(srvWatchDelay)
	}
}

// StopWatch ends WatchClient's watch, waiting for its read to end. When
// the client was seen to go away, the connection ends after this answer.
func (rc *RelayConn) StopWatch() {
	rc.c.stopWatch(false)
	if rc.c.broken.Load() {
		rc.close = true
	}
}

// Write buffers answer bytes, writing out what the buffer cannot hold.
// The first write error is returned by it and every later call.
func (rc *RelayConn) Write(p []byte) (int, error) {
	rc.c.write(p)
	if rc.c.werr != nil {
		return 0, rc.c.werr
	}
	return len(p), nil
}

// WriteString is Write for a string.
func (rc *RelayConn) WriteString(s string) (int, error) {
	rc.c.writeString(s)
	if rc.c.werr != nil {
		return 0, rc.c.werr
	}
	return len(s), nil
}

// Flush writes out what is buffered.
func (rc *RelayConn) Flush() error { return rc.c.flush() }

// AppendStatusLine appends an HTTP/1.1 status line for code to b.
func AppendStatusLine(b []byte, code int) []byte { return srvAppendStatusLine(b, code) }

// AppendDate appends a Date field line for now to b.
func AppendDate(b []byte, now time.Time) []byte { return append(b, srvDateField(now)...) }

// WriteResponse sends resp, a response of an upstream that is not read
// whole (a chunked or long body, or one delimited by the connection's
// end): its status, its fields without the hop-by-hop ones (and those
// Connection names) and without Content-Length unless resp.ContentLength
// says the length, its body (chunked when its length is not known, with
// resp.Trailer as trailers) and extra, field lines each ending in CRLF.
// An answer without a body keeps the upstream's Content-Length, but a 204.
// flush sends each piece of the body as it comes. The error is the
// body's or the client's: the answer is then cut, and the connection
// closes.
func (rc *RelayConn) WriteResponse(resp *http.Response, method string, extra []byte, flush bool) error {
	c := rc.c
	chunked := resp.ContentLength < 0
	body := method != http.MethodHead && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified
	b := srvAppendStatusLine(c.hbuf[:0], resp.StatusCode)
	hop := relayHopFields(resp.Header)
	for k, vv := range resp.Header {
		// Without a body, the upstream's Content-Length passes on as it
		// is (HEAD: the length a GET would get; 304: the stored one),
		// but never on a 204 (RFC 9110 §8.6).
		if hop(k) || k == "Content-Length" && (body || resp.StatusCode == http.StatusNoContent) {
			continue
		}
		for _, v := range vv {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	switch {
	case !body:
	case chunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	default:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, resp.ContentLength, 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, extra...)
	if rc.Closing() {
		rc.close = true
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	c.hbuf = b
	c.write(b)
	if !body {
		return c.werr
	}
	bp := clientCopyBufs.Get().(*[]byte)
	defer clientCopyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		m, rerr := resp.Body.Read(buf)
		if m > 0 {
			n += int64(m)
			if chunked {
				c.writeChunkHeader(m)
			}
			c.write(buf[:m])
			if chunked {
				c.writeString("\r\n")
			}
			if flush {
				_ = c.flush()
			}
			if c.werr != nil {
				rc.close = true
				return c.werr
			}
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				rc.close = true
				return rerr
			}
			break
		}
	}
	if !chunked {
		if n != resp.ContentLength {
			rc.close = true
			return errRelayShort
		}
		return c.werr
	}
	c.writeString("0\r\n")
	for k, vv := range resp.Trailer {
		for _, v := range vv {
			c.writeString(k)
			c.writeString(": ")
			c.writeString(v)
			c.writeString("\r\n")
		}
	}
	c.writeString("\r\n")
	return c.werr
}

const errRelayShort = clientError("h1: upstream body shorter than its Content-Length")

// relayHopFields returns whether a field of h is hop-by-hop: the fixed
// ones and those its Connection field names.
func relayHopFields(h http.Header) func(string) bool {
	named := h["Connection"]
	return func(k string) bool {
		switch k {
		case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
			"Te", "Trailer", "Transfer-Encoding", "Upgrade":
			return true
		}
		for _, v := range named {
			for v != "" {
				var opt string
				if i := strings.IndexByte(v, ','); i >= 0 {
					opt, v = v[:i], v[i+1:]
				} else {
					opt, v = v, ""
				}
				if http.CanonicalHeaderKey(clientTrim(opt)) == k {
					return true
				}
			}
		}
		return false
	}
}

// tryRelay offers the next request to the Server's Relay. handled false
// leaves the request, untouched, to the Handler path.
func (c *srvConn) tryRelay() (handled bool) {
	br := c.br
	from := 0
	var buf []byte
	end := 0
	for {
		buf, _ = br.Peek(br.Buffered())
		if end = clientHeadEnd(buf, &from); end > 0 {
			break
		}
		if len(buf) == br.Size() {
			return false
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return false // the Handler path meets the same error
		}
	}
	rc := &c.relay
	if end > c.srv.maxHeaderBytes() || !ScanRequest(buf[:end], &rc.Req) {
		return false
	}
	size := end + int(rc.Req.ContentLength)
	if rc.Req.ContentLength > int64(br.Size()) || size > len(buf) {
		return false // its body is not all here
	}
	rc.Req.Body = buf[end:size]
	rc.c, rc.size, rc.taken, rc.close, rc.now = c, size, false, false, time.Time{}
	defer func() {
		if rc.taken {
			_, _ = br.Discard(rc.size)
			rc.Req = RawRequest{}
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			c.srv.logf("h1: panic relaying for %s: %v", c.remote, p)
			rc.taken, rc.close = true, true
		}
	}()
	c.srv.Relay(rc)
	return rc.taken
}
