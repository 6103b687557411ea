package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// States of a chunked body's decoding (RFC 9112 §7.1).
const (
	srvChunkSize    uint8 = iota // next: a chunk-size line
	srvChunkData                 // in a chunk's data
	srvChunkDataEnd              // next: the CRLF after a chunk's data
	srvChunkTrailer              // next: the trailer section
)

// errSrvChunk is a malformed chunked body.
var errSrvChunk = errors.New("h1: malformed chunked request body")

// srvBody is a request body read off the connection: Content-Length bytes,
// or chunked. Its Read is safe on any goroutine, one at a time; reads after
// the handler returned fail, so they can never take the next request's
// bytes.
type srvBody struct {
	c   *srvConn
	res *srvResponse
	req *http.Request

	mu      sync.Mutex
	chunked bool
	st      uint8 // chunked: srvChunk*
	remain  int64 // bytes left: of the body, or of the current chunk
	expect  bool  // the first read sends 100 Continue
	eof     bool
	err     error // the read error, returned again
	closed  bool
	sealErr error // returned by reads once closed
}

func (b *srvBody) init(c *srvConn, w *srvResponse, req *http.Request, info *headInfo) {
	b.c, b.res, b.req = c, w, req
	b.chunked = info.chunked
	b.remain = req.ContentLength
	b.expect = info.expect
}

// Read reads the body. A body shorter than its Content-Length, or a
// malformed chunk, is an error that wraps io.ErrUnexpectedEOF or
// errSrvChunk. A chunked body's trailer fields are in the request's
// Trailer when Read returns io.EOF.
func (b *srvBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return 0, b.sealErr
	case b.err != nil:
		return 0, b.err
	case b.eof:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	if b.expect {
		b.expect = false
		b.res.sendContinue()
	}
	n, err := b.readLocked(p)
	if err != nil && err != io.EOF {
		b.err = err
		b.c.broken.Store(true)
	}
	return n, err
}

// Close makes further reads fail. What is left of the body is dropped
// after the handler returns (within limits, or the connection closes).
func (b *srvBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed, b.sealErr = true, http.ErrBodyReadAfterClose
	}
	return nil
}

// seal makes further reads fail with err; a read in flight on another
// goroutine is interrupted.
func (b *srvBody) seal(err error) {
	b.lockInterrupting()
	b.closed, b.sealErr = true, err
	b.mu.Unlock()
}

// lockInterrupting locks b, interrupting a read that holds it; it reports
// whether it had to.
func (b *srvBody) lockInterrupting() bool {
	if b.mu.TryLock() {
		return false
	}
	_ = b.c.nc.SetReadDeadline(srvPast)
	b.c.rdeadline = true
	b.mu.Lock()
	return true
}

// leftUnread reports, when the response head is composed, a body whose
// rest will not be read to keep the connection: one the client was not
// asked to send (no 100 Continue), or more than srvMaxDiscard of it. It
// does not wait for a read in flight.
func (b *srvBody) leftUnread(continueSkipped bool) bool {
	if !b.mu.TryLock() {
		return false
	}
	defer b.mu.Unlock()
	if b.eof {
		return false
	}
	return continueSkipped || b.err != nil || !b.chunked && b.remain > srvMaxDiscard
}

// finish is called when the handler has returned: reads fail from now
// on, and, if keep, what is left of the body is read and dropped, up to
// srvMaxDiscard within ReadHeaderTimeout. It reports whether the
// connection can carry another request.
func (b *srvBody) finish(keep bool) bool {
	c := b.c
	if b.lockInterrupting() {
		keep = false
	}
	defer b.mu.Unlock()
	if !b.closed {
		b.closed, b.sealErr = true, http.ErrBodyReadAfterClose
	}
	if b.eof {
		return keep
	}
	c.linger = true
	if !keep || b.err != nil || b.res.continueSkipped || !b.chunked && b.remain > srvMaxDiscard {
		return false
	}
	c.setReadTimeout(c.srv.ReadHeaderTimeout)
	buf := c.wbuf[len(c.wbuf):cap(c.wbuf)]
	for n := 0; n <= srvMaxDiscard; {
		m, err := b.readLocked(buf)
		n += m
		if err == io.EOF {
			c.linger = false
			return true
		}
		if err != nil {
			b.err = err
			return false
		}
	}
	return false
}

func (b *srvBody) setEOF() {
	b.eof = true
	b.c.bodyEnded()
}

func (b *srvBody) readLocked(p []byte) (int, error) {
	if b.chunked {
		return b.readChunked(p)
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.c.br.Read(p)
	b.remain -= int64(n)
	if b.remain == 0 {
		b.setEOF()
		return n, io.EOF
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, fmt.Errorf("h1: reading request body: %w", err)
	}
	return n, nil
}

// readChunked decodes a chunked body (RFC 9112 §7.1) into p. Once it has
// bytes for p it goes on only while what it needs is buffered: a read
// never waits for more than the first bytes.
func (b *srvBody) readChunked(p []byte) (n int, err error) {
	br := b.c.br
	for n < len(p) {
		switch b.st {
		case srvChunkSize:
			if n > 0 && !srvLineBuffered(br) {
				return n, nil
			}
			size, err := srvReadChunkSize(br)
			if err != nil {
				return n, err
			}
			if size == 0 {
				b.st = srvChunkTrailer
			} else {
				b.st, b.remain = srvChunkData, size
			}
		case srvChunkData:
			if n > 0 && br.Buffered() == 0 {
				return n, nil
			}
			q := p[n:]
			if int64(len(q)) > b.remain {
				q = q[:b.remain]
			}
			m, err := br.Read(q)
			n += m
			if b.remain -= int64(m); b.remain == 0 {
				b.st = srvChunkDataEnd
			}
			if err != nil {
				return n, srvBodyErr(err)
			}
		case srvChunkDataEnd:
			if n > 0 && br.Buffered() < 2 {
				return n, nil
			}
			crlf, err := br.Peek(2)
			if err != nil {
				return n, srvBodyErr(err)
			}
			if crlf[0] != '\r' || crlf[1] != '\n' {
				return n, fmt.Errorf("%w: chunk data not followed by CRLF", errSrvChunk)
			}
			_, _ = br.Discard(2)
			b.st = srvChunkSize
		case srvChunkTrailer:
			if n > 0 && !srvSectionBuffered(br) {
				return n, nil
			}
			if err := b.readTrailer(); err != nil {
				return n, err
			}
			b.setEOF()
			return n, io.EOF
		}
	}
	return n, nil
}

func srvBodyErr(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("h1: reading request body: %w", err)
}

// srvLineBuffered reports whether a whole line is buffered in br.
func srvLineBuffered(br *bufio.Reader) bool {
	buf, _ := br.Peek(br.Buffered())
	return bytes.IndexByte(buf, '\n') >= 0
}

// srvSectionBuffered reports whether a whole field section is buffered.
func srvSectionBuffered(br *bufio.Reader) bool {
	buf, _ := br.Peek(br.Buffered())
	return bytes.HasPrefix(buf, []byte("\r\n")) || bytes.Contains(buf, []byte("\r\n\r\n"))
}

// srvReadChunkSize reads a chunk-size line: chunk-size [ chunk-ext ] CRLF
// (RFC 9112 §7.1, §7.1.1). Extensions are checked for their characters
// and ignored.
func srvReadChunkSize(br *bufio.Reader) (int64, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return 0, fmt.Errorf("%w: chunk-size line too long", errSrvChunk)
		}
		return 0, srvBodyErr(err)
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return 0, fmt.Errorf("%w: line not ended by CRLF", errSrvChunk)
	}
	line = line[:len(line)-2]
	var size int64
	i := 0
	for ; i < len(line); i++ {
		var d byte
		switch c := line[i]; {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if size > (1<<63-1)>>4 {
			return 0, fmt.Errorf("%w: chunk size too large", errSrvChunk)
		}
		size = size<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, fmt.Errorf("%w: no chunk size", errSrvChunk)
	}
	if ext := line[i:]; len(ext) > 0 {
		ext = bytes.TrimLeft(ext, " \t")
		if len(ext) == 0 || ext[0] != ';' || !headValidValue(string(ext)) {
			return 0, fmt.Errorf("%w: malformed chunk extension", errSrvChunk)
		}
	}
	return size, nil
}

// readTrailer reads the trailer section (RFC 9112 §7.1.2), as strictly as
// a head, and merges its fields into the request's Trailer the way
// net/http does; fields a trailer may not carry (RFC 9110 §6.5.1) are
// dropped.
func (b *srvBody) readTrailer() error {
	c := b.c
	s, err := headReadSection(c.br, &c.hin, c.srv.maxHeaderBytes())
	if err != nil {
		if err == errHeadEOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: trailer section: %w", errSrvChunk, err)
	}
	var t http.Header
	for {
		line, rest, herr := headNextLine(s)
		if herr != nil {
			return fmt.Errorf("%w: trailer section: %w", errSrvChunk, herr)
		}
		if s = rest; line == "" {
			break
		}
		k, v, herr := headParseField(line)
		if herr != nil {
			return fmt.Errorf("%w: trailer section: %w", errSrvChunk, herr)
		}
		if !httpguts.ValidTrailerHeader(k) {
			continue
		}
		if t == nil {
			t = make(http.Header)
		}
		t[k] = append(t[k], v)
	}
	if t == nil || b.closed {
		return nil
	}
	if b.req.Trailer == nil {
		b.req.Trailer = t
	} else {
		for k, vv := range t {
			b.req.Trailer[k] = vv
		}
	}
	return nil
}
