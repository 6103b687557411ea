package h1

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// errSrvHandlerDone is a ResponseWriter used after its handler returned.
var errSrvHandlerDone = errors.New("h1: ResponseWriter used after the handler returned")

// How a response body is delimited (RFC 9112 §6.3).
const (
	srvFrameNone    uint8 = iota // no body: HEAD, 1xx, 204, 304
	srvFrameLength               // Content-Length
	srvFrameChunked              // chunked transfer coding
	srvFrameClose                // the connection's end
)

// srvResponse is the http.ResponseWriter of one request; also an
// http.Flusher and an http.Hijacker.
//
// Body bytes written before the head is sent wait in the connection's
// write buffer; the head goes in front of them when they overflow it, on
// Flush, or when the handler returns, in which case their length becomes
// the Content-Length and the whole response leaves in one write.
type srvResponse struct {
	c      *srvConn
	req    *http.Request
	body   *srvBody // nil without a body
	header http.Header

	status      int
	cl          int64 // the Content-Length sent, or -1
	written     int64 // body bytes the handler wrote
	trailers    []string
	framing     uint8
	wroteHeader bool // the final status is set
	headSent    bool // the final head is in the write buffer or sent
	bodyAllowed bool
	isHEAD      bool
	closeAfter  bool // the connection closes after this response
	done        bool // the handler returned
	hijacked    bool

	// 100 Continue is written by the body's first read, on whichever
	// goroutine that happens, unless the response has begun.
	canContinue     atomic.Bool
	continueSkipped bool // the response began with 100 Continue still owed
	continueMu      sync.Mutex
}

var (
	_ http.ResponseWriter = (*srvResponse)(nil)
	_ http.Flusher        = (*srvResponse)(nil)
	_ http.Hijacker       = (*srvResponse)(nil)
)

func (w *srvResponse) init(c *srvConn, req *http.Request, info *headInfo) {
	w.c, w.req = c, req
	w.cl = -1
	w.isHEAD = req.Method == http.MethodHead
	if info.expect {
		w.canContinue.Store(true)
	}
}

// Header returns the response header. Fields whose name has
// http.TrailerPrefix, and those the "Trailer" field declared before
// WriteHeader, are sent as trailers of a chunked response. A key with a
// nil value suppresses the field the server would add (Date; Content-Length
// computed when the handler returns).
func (w *srvResponse) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

// SetHeader makes h the response header from now on, as if its fields
// had been set one by one through Header (they win over fields set
// before, which are kept otherwise). A proxy passing an answer on saves
// the copy. h is the response's from then on: the caller must not use it
// elsewhere.
func (w *srvResponse) SetHeader(h http.Header) {
	for k, vv := range w.header {
		if _, ok := h[k]; !ok {
			h[k] = vv
		}
	}
	w.header = h
}

// WriteHeader sends an informational (1xx but 101) response at once, or
// sets the final status; the final head is sent with the body's first
// bytes that do not fit the buffer, on Flush or when the handler returns.
func (w *srvResponse) WriteHeader(code int) {
	switch {
	case w.hijacked:
		w.c.srv.logf("h1: WriteHeader(%d) on a hijacked connection", code)
		return
	case w.done:
		w.c.srv.logf("h1: WriteHeader(%d) after the handler returned", code)
		return
	case w.wroteHeader:
		w.c.srv.logf("h1: superfluous WriteHeader(%d)", code)
		return
	case code < 100 || code > 999:
		panic(fmt.Sprintf("invalid WriteHeader code %v", code)) // as net/http
	case code < 200 && code != http.StatusSwitchingProtocols:
		w.writeInformational(code)
		return
	}
	w.wroteHeader = true
	w.status = code
	w.bodyAllowed = code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
	w.stopContinue()
	if v := w.header["Content-Length"]; len(v) > 0 {
		if n, ok := headParseContentLength(textproto.TrimString(v[0])); ok {
			w.cl = n
		} else {
			w.c.srv.logf("h1: invalid Content-Length %q in response", v[0])
			delete(w.header, "Content-Length")
		}
	}
}

// writeInformational sends a 1xx response with the header as it is,
// framing fields excepted (RFC 9110 §15.2); an HTTP/1.0 client gets none.
func (w *srvResponse) writeInformational(code int) {
	if !w.req.ProtoAtLeast(1, 1) {
		return
	}
	c := w.c
	w.continueMu.Lock()
	defer w.continueMu.Unlock()
	if code == http.StatusContinue {
		w.canContinue.Store(false)
	}
	b := srvAppendStatusLine(c.hbuf[:0], code)
	w.collectFields(false)
	b = srvAppendFields(b, c.fields)
	c.clearFields()
	b = append(b, "\r\n"...)
	c.hbuf = b
	c.write(b)
	_ = c.flush()
}

// Write writes body bytes, after a 200 head unless WriteHeader set
// another status.
func (w *srvResponse) Write(p []byte) (int, error) {
	out, err := w.beginWrite(len(p))
	if out <= srvOutDiscard || err != nil {
		return srvWritten(out, len(p)), err
	}
	c := w.c
	if out == srvOutBuffer {
		c.wbuf = append(c.wbuf, p...)
		return len(p), nil
	}
	if w.framing == srvFrameChunked {
		c.writeChunkHeader(len(p))
		c.write(p)
		c.writeString("\r\n")
	} else {
		c.write(p)
	}
	if c.werr != nil {
		return 0, c.werr
	}
	return len(p), nil
}

// WriteString is Write for a string, without copying it to a []byte.
func (w *srvResponse) WriteString(s string) (int, error) {
	out, err := w.beginWrite(len(s))
	if out <= srvOutDiscard || err != nil {
		return srvWritten(out, len(s)), err
	}
	c := w.c
	if out == srvOutBuffer {
		c.wbuf = append(c.wbuf, s...)
		return len(s), nil
	}
	if w.framing == srvFrameChunked {
		c.writeChunkHeader(len(s))
		c.writeString(s)
		c.writeString("\r\n")
	} else {
		c.writeString(s)
	}
	if c.werr != nil {
		return 0, c.werr
	}
	return len(s), nil
}

// What beginWrite leaves a write to do.
const (
	srvOutNothing = iota // nothing: an error, or no bytes
	srvOutDiscard        // count them only: a HEAD response
	srvOutBuffer         // append them to the write buffer: the head is not sent
	srvOutFramed         // write them in the response's framing
)

func srvWritten(out, n int) int {
	if out == srvOutDiscard {
		return n
	}
	return 0
}

func (w *srvResponse) beginWrite(n int) (int, error) {
	if w.hijacked {
		return srvOutNothing, http.ErrHijacked
	}
	if w.done {
		return srvOutNothing, errSrvHandlerDone
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if n == 0 {
		return srvOutNothing, nil
	}
	if !w.bodyAllowed {
		return srvOutNothing, http.ErrBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(n) > w.cl {
		return srvOutNothing, http.ErrContentLength
	}
	w.written += int64(n)
	c := w.c
	if w.isHEAD {
		if !w.headSent && w.written > int64(cap(c.wbuf)) {
			if err := w.sendHead(false); err != nil {
				return srvOutNothing, err
			}
		}
		return srvOutDiscard, nil
	}
	if !w.headSent {
		if len(c.wbuf)+n <= cap(c.wbuf) {
			return srvOutBuffer, nil
		}
		if err := w.sendHead(false); err != nil {
			return srvOutNothing, err
		}
	}
	if c.werr != nil {
		return srvOutNothing, c.werr
	}
	return srvOutFramed, nil
}

// Flush sends the head if it was not yet, and what the buffer holds.
func (w *srvResponse) Flush() { _ = w.FlushError() }

// FlushError is Flush, reporting a write error; http.ResponseController
// calls it.
func (w *srvResponse) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if w.done {
		return errSrvHandlerDone
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		if err := w.sendHead(false); err != nil {
			return err
		}
	}
	return w.c.flush()
}

// EnableFullDuplex lets http.ResponseController's EnableFullDuplex
// succeed: the request body can always be read after the response began.
func (w *srvResponse) EnableFullDuplex() error { return nil }

// Hijack hands the connection over: the head set by WriteHeader (a 101
// typically) and whatever was written are sent first. The returned
// reader holds the bytes the client sent that were read already (the
// rest of the request body included); the writer is a new one over the
// connection. From then on the Server neither reads, writes, times out
// nor closes the connection, and the request body can no longer be read.
func (w *srvResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	switch {
	case w.hijacked:
		return nil, nil, http.ErrHijacked
	case w.done:
		return nil, nil, errSrvHandlerDone
	}
	if w.wroteHeader && !w.headSent {
		if err := w.sendHead(false); err != nil {
			return nil, nil, err
		}
	}
	if err := c.flush(); err != nil {
		return nil, nil, err
	}
	c.stopWatch(true)
	if w.body != nil {
		w.body.seal(http.ErrHijacked)
	}
	c.setReadTimeout(0)
	w.hijacked = true
	c.srv.forget(c)
	return c.nc, bufio.NewReadWriter(c.br, bufio.NewWriter(c.nc)), nil
}

// sendContinue writes "100 Continue" unless the response has begun.
func (w *srvResponse) sendContinue() {
	if !w.canContinue.Load() {
		return
	}
	w.continueMu.Lock()
	defer w.continueMu.Unlock()
	if !w.canContinue.Load() {
		return
	}
	w.canContinue.Store(false)
	if _, err := w.c.nc.Write(srvContinueLine); err != nil {
		w.c.broken.Store(true)
	}
}

var srvContinueLine = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// stopContinue is called when the final response begins: no 100 Continue
// may follow it.
func (w *srvResponse) stopContinue() {
	if !w.canContinue.Load() {
		return
	}
	w.continueMu.Lock()
	if w.canContinue.Load() {
		w.canContinue.Store(false)
		w.continueSkipped = true
	}
	w.continueMu.Unlock()
}

// collectFields gathers the header fields to send into c.fields, sorted
// by name, without those the server writes itself (and Connection when
// skipConn); it reports whether a field name has http.TrailerPrefix.
func (w *srvResponse) collectFields(skipConn bool) (prefixed bool) {
	fs := w.c.fields[:0]
	for k, vv := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			prefixed = true
			continue
		}
		if len(vv) == 0 {
			continue
		}
		switch k {
		case "Content-Length", "Transfer-Encoding":
			continue
		case "Connection":
			if skipConn {
				continue
			}
		}
		fs = append(fs, srvField{k, vv})
	}
	slices.SortFunc(fs, srvCompareFields)
	w.c.fields = fs
	return prefixed
}

// sendHead puts the final head in front of the body bytes buffered so
// far. final says the handler has returned: the body is all there.
func (w *srvResponse) sendHead(final bool) error {
	c, req, h := w.c, w.req, w.header
	w.headSent = true
	http11 := req.ProtoAtLeast(1, 1)

	for _, v := range h["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = textproto.TrimString(k); k != "" {
				// RFC 9110 §6.5.1: no framing, routing, ... fields.
				if k = http.CanonicalHeaderKey(k); httpguts.ValidTrailerHeader(k) {
					w.trailers = append(w.trailers, k)
				}
			}
		}
	}
	clv, clKey := h["Content-Length"]
	clKey = clKey && len(clv) == 0 // present with no value: no computed length
	pre := len(c.wbuf)

	// Framing, RFC 9112 §6.3.
	switch {
	case !w.bodyAllowed:
		w.framing = srvFrameNone
		if w.status != http.StatusNotModified {
			w.cl = -1 // RFC 9110 §8.6: none in a 1xx or 204
		}
	case w.isHEAD:
		w.framing = srvFrameNone
	case w.cl >= 0:
		w.framing = srvFrameLength
	}
	connClose := w.closeAfter || req.Close || c.srv.noKeepAlive.Load() || c.broken.Load() ||
		httpguts.HeaderValuesContainsToken(h["Connection"], "close") ||
		w.body != nil && w.body.leftUnread(w.continueSkipped)
	prefixed := w.collectFields(connClose && http11 && w.status != http.StatusSwitchingProtocols)
	trailers := prefixed || len(w.trailers) > 0
	if w.bodyAllowed && !w.isHEAD && w.cl < 0 {
		switch {
		case final && !trailers && !clKey:
			w.framing, w.cl = srvFrameLength, int64(pre)
		case http11:
			w.framing = srvFrameChunked
		default:
			w.framing = srvFrameClose
			connClose = true
		}
	}
	if w.isHEAD && w.cl < 0 && final && w.written > 0 && !trailers && !clKey {
		w.cl = w.written // what a GET would have had, as net/http does
	}
	w.closeAfter = connClose

	b := srvAppendStatusLine(c.hbuf[:0], w.status)
	b = srvAppendFields(b, c.fields)
	c.clearFields()
	if _, ok := h["Date"]; !ok {
		b = append(b, srvDateField(time.Now())...)
	}
	if w.cl >= 0 {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, w.cl, 10)
		b = append(b, "\r\n"...)
	}
	if w.framing == srvFrameChunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if w.status != http.StatusSwitchingProtocols {
		if connClose {
			if http11 {
				b = append(b, "Connection: close\r\n"...)
			}
		} else if _, set := h["Connection"]; !http11 && !set {
			b = append(b, "Connection: keep-alive\r\n"...)
		}
	}
	b = append(b, "\r\n"...)
	if pre > 0 && w.framing == srvFrameChunked {
		b = srvAppendChunkHeader(b, pre)
	}
	c.hbuf = b
	c.prepend(b)
	if pre > 0 && w.framing == srvFrameChunked {
		c.writeString("\r\n")
	}
	return c.werr
}

// finish completes the response once the handler has returned: the head
// if it was not sent, the last chunk and trailers, and a flush.
func (w *srvResponse) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		_ = w.sendHead(true)
	}
	w.done = true
	c := w.c
	switch w.framing {
	case srvFrameChunked:
		c.writeString("0\r\n")
		w.writeTrailers()
		c.writeString("\r\n")
	case srvFrameLength:
		if w.written < w.cl {
			w.closeAfter = true // the client waits for bytes that never come
		}
	case srvFrameNone:
		if w.status == http.StatusSwitchingProtocols {
			w.closeAfter = true // switched to nothing: no more HTTP here
		}
	}
	_ = c.flush()
}

// writeTrailers writes the trailer fields: those with http.TrailerPrefix,
// then the declared ones, as net/http does.
func (w *srvResponse) writeTrailers() {
	c := w.c
	fs := c.fields[:0]
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && len(vv) > 0 {
			fs = append(fs, srvField{name, vv})
		}
	}
	for _, k := range w.trailers {
		if vv := w.header[k]; len(vv) > 0 {
			fs = append(fs, srvField{k, vv})
		}
	}
	if len(fs) == 0 {
		return
	}
	slices.SortStableFunc(fs, srvCompareFields)
	c.fields = fs
	b := srvAppendFields(c.hbuf[:0], fs)
	c.clearFields()
	c.hbuf = b
	c.write(b)
}

// srvField is a header field to write.
type srvField struct {
	key string
	vv  []string
}

func srvCompareFields(a, b srvField) int { return strings.Compare(a.key, b.key) }

func (c *srvConn) clearFields() {
	clear(c.fields)
	c.fields = c.fields[:0]
}

// srvAppendFields appends field lines; a name that is not a token is
// dropped, and CR or LF in a value become spaces (no response splitting).
func srvAppendFields(b []byte, fs []srvField) []byte {
	for _, f := range fs {
		if !headIsToken(f.key) {
			continue
		}
		for _, v := range f.vv {
			b = append(b, f.key...)
			b = append(b, ':', ' ')
			start := len(b)
			b = append(b, textproto.TrimString(v)...)
			for i := start; i < len(b); i++ {
				if b[i] == '\r' || b[i] == '\n' {
					b[i] = ' '
				}
			}
			b = append(b, '\r', '\n')
		}
	}
	return b
}

func srvAppendStatusLine(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	if text := http.StatusText(code); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(code), 10)
	}
	return append(b, '\r', '\n')
}

func srvAppendChunkHeader(b []byte, n int) []byte {
	b = strconv.AppendUint(b, uint64(n), 16)
	return append(b, '\r', '\n')
}

// srvDate is the Date field line of one second.
type srvDate struct {
	sec   int64
	field []byte
}

var srvDateCache atomic.Pointer[srvDate]

// srvDateField returns "Date: ...\r\n" for now (RFC 9110 §6.6.1), formatted
// once a second.
func srvDateField(now time.Time) []byte {
	sec := now.Unix()
	if d := srvDateCache.Load(); d != nil && d.sec == sec {
		return d.field
	}
	b := make([]byte, 0, 40)
	b = append(b, "Date: "...)
	b = now.UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, '\r', '\n')
	srvDateCache.Store(&srvDate{sec, b})
	return b
}

// write buffers p, writing out what the buffer cannot hold; a write
// larger than the buffer goes out directly. The first error stays in
// c.werr.
func (c *srvConn) write(p []byte) {
	if c.werr != nil {
		return
	}
	for len(p) > cap(c.wbuf)-len(c.wbuf) {
		if len(c.wbuf) == 0 {
			if _, err := c.nc.Write(p); err != nil {
				c.werr = err
			}
			return
		}
		n := copy(c.wbuf[len(c.wbuf):cap(c.wbuf)], p)
		c.wbuf = c.wbuf[:cap(c.wbuf)]
		p = p[n:]
		if c.flush() != nil {
			return
		}
	}
	c.wbuf = append(c.wbuf, p...)
}

// writeString is write for a string.
func (c *srvConn) writeString(s string) {
	for c.werr == nil && len(s) > cap(c.wbuf)-len(c.wbuf) {
		n := copy(c.wbuf[len(c.wbuf):cap(c.wbuf)], s)
		c.wbuf = c.wbuf[:cap(c.wbuf)]
		s = s[n:]
		_ = c.flush()
	}
	if c.werr == nil {
		c.wbuf = append(c.wbuf, s...)
	}
}

func (c *srvConn) writeChunkHeader(n int) {
	if cap(c.wbuf)-len(c.wbuf) < 18 {
		if c.flush() != nil {
			return
		}
	}
	c.wbuf = srvAppendChunkHeader(c.wbuf, n)
}

// prepend puts p in front of the buffered bytes, or writes it out first
// when both do not fit the buffer.
func (c *srvConn) prepend(p []byte) {
	if c.werr != nil {
		return
	}
	n := len(c.wbuf)
	if len(p)+n <= cap(c.wbuf) {
		c.wbuf = c.wbuf[:len(p)+n]
		copy(c.wbuf[len(p):], c.wbuf[:n])
		copy(c.wbuf, p)
		return
	}
	if _, err := c.nc.Write(p); err != nil {
		c.werr = err
	}
}

// flush writes the buffered bytes out.
func (c *srvConn) flush() error {
	if c.werr == nil && len(c.wbuf) > 0 {
		if _, err := c.nc.Write(c.wbuf); err != nil {
			c.werr = err
		}
	}
	c.wbuf = c.wbuf[:0]
	return c.werr
}
