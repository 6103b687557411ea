package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// clientField locates one field line's name and value in a head.
type clientField struct{ k0, k1, v0, v1 int }

// clientHead is a parsed response head (or trailer section): one string
// holding all of it, its field names already canonical. Where each field's
// name and value are in it is kept apart, in a []clientField on the
// reader's stack; the header map is built from both only when wanted, with
// no allocation per field.
type clientHead struct {
	s      string
	code   int
	minor  int
	status string
	proto  string
}

// clientHeader builds a head's header map from the head s and its fields:
// one map, the names and values substrings of s, the values in vals when
// it is long enough, else in one slice made for them.
func clientHeader(s string, fields []clientField, vals []string) http.Header {
	hdr := make(http.Header, len(fields))
	if len(fields) == 0 {
		return hdr
	}
	if len(vals) < len(fields) {
		vals = make([]string, len(fields))
	}
	for i, f := range fields {
		k, v := s[f.k0:f.k1], s[f.v0:f.v1]
		vals[i] = v
		if old, ok := hdr[k]; ok {
			hdr[k] = append(old, v)
		} else {
			hdr[k] = vals[i : i+1 : i+1]
		}
	}
	return hdr
}

// readHead reads and parses the next head: a status line and header
// section (RFC 9112 §4, §5) when status is true, a trailer section (§7.1.2)
// otherwise. It returns the head's fields, appended to fields, and the
// bytes it took, at most max.
func (cc *clientConn) readHead(h *clientHead, fields []clientField, max int, status bool) ([]clientField, int, error) {
	raw, inBuf, err := cc.rawHead(max)
	if err != nil {
		return nil, 0, err
	}
	fields, statusEnd, err := h.parse(raw, fields, status)
	if err != nil {
		return nil, 0, err
	}
	// Field names were made canonical in place: one copy makes the whole
	// head a string that names and values share.
	h.s = string(raw)
	if inBuf {
		_, _ = cc.br.Discard(len(raw))
	}
	if status {
		h.status = h.s[len("HTTP/1.x "):statusEnd]
		switch h.minor {
		case 0:
			h.proto = "HTTP/1.0"
		case 1:
			h.proto = "HTTP/1.1"
		default:
			h.proto = h.s[:len("HTTP/1.x")]
		}
	}
	return fields, len(raw), nil
}

// rawHead returns the bytes of the next head, through the empty line that
// ends it. When the head fits in the read buffer the slice is the buffer's
// own (inBuf): the caller discards it once parsed. Otherwise it is a copy.
// A connection that ends before any byte of it gives io.EOF; one that ends
// within it io.ErrUnexpectedEOF. A read deadline that passes is the
// relay's to move (resumeWait).
func (cc *clientConn) rawHead(max int) (raw []byte, inBuf bool, err error) {
	br := cc.br
	from := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		if end := clientHeadEnd(buf, &from); end > 0 {
			if end > max {
				return nil, false, clientErrHeadTooBig
			}
			return buf[:end], true, nil
		}
		if len(buf) >= max {
			return nil, false, clientErrHeadTooBig
		}
		if len(buf) == br.Size() {
			break // larger than the buffer
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if br.Buffered() > len(buf) {
				continue // bytes came with the error: look at them first
			}
			if cc.resumeWait(err) {
				continue
			}
			if err == io.EOF && br.Buffered() > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, false, err
		}
	}
	acc := make([]byte, 0, 2*br.Size())
	from = 0
	for {
		line, err := br.ReadSlice('\n')
		acc = append(acc, line...)
		if len(acc) > max {
			return nil, false, clientErrHeadTooBig
		}
		switch {
		case err == bufio.ErrBufferFull, err != nil && cc.resumeWait(err):
			continue // ReadSlice consumed what it returned
		case err == io.EOF:
			return nil, false, io.ErrUnexpectedEOF
		case err != nil:
			return nil, false, err
		}
		if end := clientHeadEnd(acc, &from); end > 0 {
			return acc[:end], false, nil
		}
	}
}

// clientHeadEnd returns the length of the head at the start of buf through
// its ending empty line, or 0 when buf does not hold all of it yet. *from
// is where the next line to look at starts, kept between calls as buf
// grows. A line ends with CRLF or, tolerated as RFC 9112 §2.2 allows, a
// bare LF.
func clientHeadEnd(buf []byte, from *int) int {
	for {
		i := *from
		if i >= len(buf) {
			return 0
		}
		switch buf[i] {
		case '\n':
			return i + 1
		case '\r':
			if i+1 >= len(buf) {
				return 0
			}
			if buf[i+1] == '\n' {
				return i + 2
			}
		}
		nl := bytes.IndexByte(buf[i:], '\n')
		if nl < 0 {
			return 0
		}
		*from = i + nl + 1
	}
}

// clientTchar marks the bytes of a token (RFC 9110 §5.6.2).
var clientTchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func clientIsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !clientTchar[s[i]] {
			return false
		}
	}
	return true
}

// clientBadByte reports the bytes not allowed in a field value or reason
// phrase: controls other than HTAB, and DEL (RFC 9110 §5.5). CR, LF and NUL
// among them are what splitting and smuggling attacks use.
func clientBadByte(c byte) bool { return (c < ' ' && c != '\t') || c == 0x7f }

// fieldValue locates the value of a field line whose colon is at colon,
// without the whitespace around it, and reports whether it holds only
// bytes a value may hold.
func fieldValue(line []byte, colon int) (v0, v1 int, ok bool) {
	v0, v1 = colon+1, len(line)
	for v0 < v1 && (line[v0] == ' ' || line[v0] == '\t') {
		v0++
	}
	for v1 > v0 && (line[v1-1] == ' ' || line[v1-1] == '\t') {
		v1--
	}
	for _, c := range line[v0:v1] {
		if clientBadByte(c) {
			return 0, 0, false
		}
	}
	return v0, v1, true
}

// clientMalformed is the error for a response that breaks HTTP/1.1's
// syntax.
func clientMalformed(what string, b []byte) error {
	const max = 64
	if len(b) > max {
		b = b[:max]
	}
	return fmt.Errorf("h1: malformed response: %s %q", what, b)
}

// parse checks a raw head, makes its field names canonical in place and
// appends where its fields are to fields. It returns where the status line
// ends. A trailer section (no status line) must end its lines with CRLF:
// the bare LF tolerated in a head (RFC 9112 §2.2) is not in chunked
// framing, where it has served request smuggling.
func (h *clientHead) parse(raw []byte, fields []clientField, status bool) (_ []clientField, statusEnd int, err error) {
	off := 0
	if status {
		// status-line = HTTP-version SP status-code SP [ reason-phrase ]
		nl := bytes.IndexByte(raw, '\n')
		line := raw[:nl]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[7] < '0' || line[7] > '9' ||
			line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
			return nil, 0, clientMalformed("status line", line)
		}
		code := 0
		for _, c := range line[9:12] {
			if c < '0' || c > '9' {
				return nil, 0, clientMalformed("status code", line)
			}
			code = code*10 + int(c-'0')
		}
		if code < 100 {
			return nil, 0, clientMalformed("status code", line)
		}
		for _, c := range line[min(len(line), 13):] {
			if clientBadByte(c) {
				return nil, 0, clientMalformed("reason phrase", line)
			}
		}
		h.code, h.minor = code, int(line[7]-'0')
		statusEnd = len(line)
		off = nl + 1
	}
	for {
		nl := off + bytes.IndexByte(raw[off:], '\n')
		line := raw[off:nl]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		} else if !status {
			return nil, 0, clientMalformed("trailer line without CRLF", line)
		}
		if len(line) == 0 {
			return fields, statusEnd, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			// RFC 9112 §5.2: a proxy may reject obsolete line folding.
			return nil, 0, clientMalformed("folded header line", line)
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, 0, clientMalformed("header line", line)
		}
		// field-name = token, with no whitespace before the colon (RFC
		// 9112 §5.1), made canonical as http.CanonicalHeaderKey does.
		upper := true
		for i, c := range line[:colon] {
			if !clientTchar[c] {
				return nil, 0, clientMalformed("header field name", line)
			}
			if upper && 'a' <= c && c <= 'z' {
				line[i] = c - ('a' - 'A')
			} else if !upper && 'A' <= c && c <= 'Z' {
				line[i] = c + ('a' - 'A')
			}
			upper = c == '-'
		}
		v0, v1, ok := fieldValue(line, colon)
		if !ok {
			return nil, 0, clientMalformed("header field value", line)
		}
		fields = append(fields, clientField{off, off + colon, off + v0, off + v1})
		off = nl + 1
	}
}

// How a response body is delimited (RFC 9112 §6.3).
const (
	clientBodyNone    = iota // no body
	clientBodyLength         // Content-Length
	clientBodyChunked        // chunked transfer coding
	clientBodyClose          // until the connection closes
)

type clientFraming struct {
	kind uint8
	n    int64
	keep bool // the connection may carry another request after this one
}

// clientFrame decides how a response's body is delimited and whether its
// connection persists (RFC 9112 §6.3, §9.3), and sets the response's
// ContentLength, TransferEncoding and Trailer as http.ReadResponse does.
func clientFrame(resp *http.Response, method string) (clientFraming, error) {
	var fr clientFraming
	h := resp.Header
	conn := h["Connection"]
	if resp.ProtoMinor == 0 {
		fr.keep = httpguts.HeaderValuesContainsToken(conn, "keep-alive") &&
			!httpguts.HeaderValuesContainsToken(conn, "close")
	} else {
		fr.keep = !httpguts.HeaderValuesContainsToken(conn, "close")
	}

	cl := int64(-1)
	if vv := h["Content-Length"]; len(vv) > 0 {
		// A list of identical values is one value (RFC 9110 §8.6);
		// different ones are an error.
		for _, v := range vv[1:] {
			if v != vv[0] {
				return fr, fmt.Errorf("h1: malformed response: conflicting Content-Length values %q", vv)
			}
		}
		if len(vv) > 1 {
			h["Content-Length"] = vv[:1]
		}
		n, ok := clientParseLength(vv[0])
		if !ok {
			return fr, fmt.Errorf("h1: malformed response: invalid Content-Length %q", vv[0])
		}
		cl = n
	}

	te, chunked := h["Transfer-Encoding"]
	if chunked {
		switch {
		case resp.ProtoMinor == 0:
			// RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding
			// is faulty framing.
			return fr, errors.New("h1: malformed response: Transfer-Encoding in an HTTP/1.0 response")
		case len(te) != 1 || !strings.EqualFold(te[0], "chunked"):
			// Only chunked alone can be decoded; anything else could
			// not be passed on as what it is.
			return fr, fmt.Errorf("h1: unsupported transfer encoding %q", te)
		}
		delete(h, "Transfer-Encoding")
		te[0] = "chunked"
		resp.TransferEncoding = te[:1:1]
		if err := clientDeclaredTrailer(resp); err != nil {
			return fr, err
		}
	}

	code := resp.StatusCode
	switch {
	case method == http.MethodHead || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified:
		// RFC 9112 §6.3 (1): no content, whatever the fields say. A
		// HEAD response's Content-Length is the length a GET would get
		// (RFC 9110 §8.6).
		fr.kind = clientBodyNone
		if method == http.MethodHead {
			resp.ContentLength = cl
		}
	case chunked:
		if cl >= 0 {
			// RFC 9112 §6.3 (3): Transfer-Encoding overrides
			// Content-Length, which is removed; such a message may be
			// a smuggling attempt, so the connection is not reused.
			delete(h, "Content-Length")
			fr.keep = false
		}
		fr.kind = clientBodyChunked
		resp.ContentLength = -1
	case cl == 0:
		fr.kind = clientBodyNone
	case cl > 0:
		fr.kind, fr.n = clientBodyLength, cl
		resp.ContentLength = cl
	default:
		// RFC 9112 §6.3 (8): read until the connection closes.
		fr.kind = clientBodyClose
		fr.keep = false
		resp.ContentLength = -1
	}
	return fr, nil
}

// clientDeclaredTrailer moves the fields a chunked response announces in
// its Trailer header (RFC 9110 §6.6.2) into resp.Trailer, with nil values
// until the trailer section arrives, as http.ReadResponse does.
func clientDeclaredTrailer(resp *http.Response) error {
	vv, ok := resp.Header["Trailer"]
	if !ok {
		return nil
	}
	delete(resp.Header, "Trailer")
	tr := make(http.Header)
	for _, v := range vv {
		for _, k := range strings.Split(v, ",") {
			if k = clientTrim(k); k == "" {
				continue
			}
			if !clientIsToken(k) || clientForbiddenTrailer(k) {
				return fmt.Errorf("h1: malformed response: bad trailer field %q", k)
			}
			tr[http.CanonicalHeaderKey(k)] = nil
		}
	}
	resp.Trailer = tr
	return nil
}

// clientParseLength parses a Content-Length value: digits only.
func clientParseLength(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// States of a chunked body's decoder (RFC 9112 §7.1).
const (
	clientChunkSize    = iota // a chunk-size line is next
	clientChunkData           // n bytes of chunk data are next
	clientChunkDataEnd        // the CRLF after chunk data is next
	clientChunkTrailer        // the trailer section is next
	clientChunkDone
)

// clientBody is a response body. It reads from the connection and gives
// the connection back to the pool at its end; Close before the end closes
// the connection, unless the rest is already buffered.
//
// Read and Close may be called from different goroutines: a Close during
// a Read breaks the connection, and the Read, failing, releases it.
type clientBody struct {
	cc         *clientConn
	w          *clientWriter
	stop       func() bool
	ctx        context.Context
	resp       *http.Response
	kind       uint8
	state      uint8 // chunked
	n          int64 // Content-Length: bytes left; chunked: bytes left in the chunk
	keep       bool
	maxTrailer int

	mu       sync.Mutex
	reading  bool
	closed   bool
	released bool
	err      error // sticky; io.EOF at the end
}

func (b *clientBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return 0, clientErrBodyClosed
	case b.err != nil:
		err := b.err
		b.mu.Unlock()
		return 0, err
	case b.reading:
		b.mu.Unlock()
		return 0, clientErrConcurrent
	}
	b.reading = true
	b.mu.Unlock()

	n, err := b.read(p)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading = false
	switch {
	case err == io.EOF:
		b.err = err
		b.release(!b.closed)
	case err != nil:
		if b.closed {
			err = clientErrBodyClosed
		} else {
			err = clientCtxErr(b.ctx, "read response body", err)
		}
		b.err = err
		b.release(false)
	case b.closed:
		b.release(false)
	}
	return n, err
}

// release ends the request once, with the body read to its end (eof) or
// not.
func (b *clientBody) release(eof bool) {
	if b.released {
		return
	}
	b.released = true
	b.cc.release(eof && b.keep, b.w, b.stop)
}

func (b *clientBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	switch {
	case b.released:
	case b.reading:
		b.cc.abort() // the Read fails and releases
	default:
		b.release(b.discardBuffered())
	}
	return nil
}

// discardBuffered skips the rest of the body if the read buffer holds it
// all, so the connection can be reused; it reports whether it did. It
// never blocks.
func (b *clientBody) discardBuffered() bool {
	br := b.cc.br
	switch b.kind {
	case clientBodyLength:
		if b.n > int64(br.Buffered()) {
			return false
		}
		_, _ = br.Discard(int(b.n))
		b.n = 0
		return true
	case clientBodyChunked:
		for {
			if b.state == clientChunkData {
				k := min(b.n, int64(br.Buffered()))
				_, _ = br.Discard(int(k))
				if b.n -= k; b.n > 0 {
					return false
				}
				b.state = clientChunkDataEnd
			}
			done, err := b.advance(false)
			if err != nil || b.state != clientChunkData {
				return done && err == nil
			}
		}
	}
	return false
}

func (b *clientBody) read(p []byte) (int, error) {
	br := b.cc.br
	switch b.kind {
	case clientBodyLength:
		if b.n == 0 {
			return 0, io.EOF
		}
		if int64(len(p)) > b.n {
			p = p[:b.n]
		}
		n, err := br.Read(p)
		b.n -= int64(n)
		if b.n == 0 {
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	case clientBodyChunked:
		return b.readChunked(p)
	default:
		return br.Read(p)
	}
}

func (b *clientBody) readChunked(p []byte) (int, error) {
	br := b.cc.br
	for {
		if b.state != clientChunkData {
			done, err := b.advance(true)
			if err != nil {
				return 0, err
			}
			if done {
				return 0, io.EOF
			}
			continue
		}
		if len(p) == 0 {
			return 0, nil
		}
		if int64(len(p)) > b.n {
			p = p[:b.n]
		}
		n, err := br.Read(p)
		b.n -= int64(n)
		if err == io.EOF {
			return n, io.ErrUnexpectedEOF
		}
		if err != nil {
			return n, err
		}
		if b.n == 0 {
			b.state = clientChunkDataEnd
			// When the end of the body is already buffered, say so with
			// these bytes: the connection is free sooner.
			if done, err := b.advance(false); err != nil || done {
				if err == nil {
					err = io.EOF
				}
				return n, err
			}
		}
		return n, nil
	}
}

// advance moves a chunked body's decoder past the framing that comes
// before the next chunk data or the end: chunk-data CRLF, chunk-size
// lines, the trailer section. Unless block, it stops instead of reading
// from the connection. done reports the end of the body.
func (b *clientBody) advance(block bool) (done bool, err error) {
	br := b.cc.br
	for {
		switch b.state {
		case clientChunkData:
			return false, nil
		case clientChunkDone:
			return true, nil
		case clientChunkDataEnd:
			if !block && br.Buffered() < 2 {
				return false, nil
			}
			cr, err := br.ReadByte()
			if err != nil {
				return false, clientUnexpected(err)
			}
			lf, err := br.ReadByte()
			if err != nil {
				return false, clientUnexpected(err)
			}
			if cr != '\r' || lf != '\n' {
				return false, errors.New("h1: malformed chunked response body: no CRLF after chunk data")
			}
			b.state = clientChunkSize
		case clientChunkSize:
			if !block && !clientHasLine(br) {
				return false, nil
			}
			line, err := br.ReadSlice('\n')
			if err == bufio.ErrBufferFull {
				return false, errors.New("h1: malformed chunked response body: chunk-size line too long")
			}
			if err != nil {
				return false, clientUnexpected(err)
			}
			n, ok := clientChunkLen(line)
			if !ok {
				return false, clientMalformed("chunk-size line", line)
			}
			if n == 0 {
				b.state = clientChunkTrailer
			} else {
				b.state, b.n = clientChunkData, n
			}
		case clientChunkTrailer:
			if err := b.readTrailer(block); err != nil || b.state != clientChunkDone {
				return false, err
			}
		}
	}
}

// readTrailer reads the trailer section (RFC 9112 §7.1.2) into
// resp.Trailer, adding to the fields announced.
func (b *clientBody) readTrailer(block bool) error {
	br := b.cc.br
	if !block {
		buf, _ := br.Peek(br.Buffered())
		from := 0
		if clientHeadEnd(buf, &from) == 0 {
			return nil
		}
	}
	// The common case: no trailer fields, the empty line already here.
	if buf, _ := br.Peek(br.Buffered()); len(buf) > 0 {
		if len(buf) > 1 && buf[0] == '\r' && buf[1] == '\n' {
			_, _ = br.Discard(2)
			b.state = clientChunkDone
			return nil
		}
	}
	var h clientHead
	var fb [8]clientField
	fields, _, err := b.cc.readHead(&h, fb[:0], b.maxTrailer, false)
	if err != nil {
		if errors.Is(err, clientErrHeadTooBig) {
			return errors.New("h1: response trailer section too large")
		}
		return clientUnexpected(err)
	}
	if len(fields) > 0 {
		tr := clientHeader(h.s, fields, nil)
		if b.resp.Trailer == nil {
			b.resp.Trailer = tr
		} else {
			for k, vv := range tr {
				b.resp.Trailer[k] = vv
			}
		}
	}
	b.state = clientChunkDone
	return nil
}

// clientHasLine reports whether a whole line is buffered.
func clientHasLine(br *bufio.Reader) bool {
	buf, _ := br.Peek(br.Buffered())
	return bytes.IndexByte(buf, '\n') >= 0
}

// clientUnexpected turns the end of the connection within a body into
// io.ErrUnexpectedEOF.
func clientUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// clientChunkLen parses a chunk-size line: chunk-size [ chunk-ext ] CRLF
// (RFC 9112 §7.1.1). Extensions are ignored.
func clientChunkLen(line []byte) (int64, bool) {
	if !bytes.HasSuffix(line, []byte("\r\n")) {
		return 0, false
	}
	line = line[:len(line)-2]
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		for _, c := range line[i:] {
			if clientBadByte(c) {
				return 0, false
			}
		}
		line = line[:i]
		for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
			line = line[:len(line)-1] // BWS before the extension
		}
	}
	if len(line) == 0 || len(line) > 16 {
		return 0, false
	}
	var n uint64
	for _, c := range line {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		n = n<<4 | uint64(c)
	}
	if n > 1<<62 {
		return 0, false
	}
	return int64(n), true
}

// clientUpgradeBody is the body of a 101 Switching Protocols response: the
// connection itself, for the new protocol, both ways. Bytes the upstream
// sent after the 101 and that were already read come first.
type clientUpgradeBody struct {
	cc   *clientConn
	stop func() bool
	once sync.Once
}

func (u *clientUpgradeBody) Read(p []byte) (int, error) { return u.cc.br.Read(p) }

func (u *clientUpgradeBody) Write(p []byte) (int, error) { return u.cc.nc.Write(p) }

// CloseWrite half-closes the connection when it can (TCP), so that the
// upstream reads the end of the stream.
func (u *clientUpgradeBody) CloseWrite() error {
	if cw, ok := u.cc.nc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("h1: connection cannot half-close")
}

// Close closes the connection and frees its slot in the pool.
func (u *clientUpgradeBody) Close() error {
	u.once.Do(func() {
		if u.stop != nil {
			u.stop()
		}
		// Reads may still be running on other goroutines: the buffers
		// are left to the garbage collector.
		u.cc.p.closeConn(u.cc, false, false)
	})
	return nil
}
