// Package sniff decides which protocol a fresh client connection speaks
// from its first bytes: HTTP/1.x, HTTP/2 with prior knowledge (h2c, so
// gRPC), or anything else, which meshd proxies as opaque TCP.
//
// Detection peeks at most [MaxPeek] bytes and waits at most a caller-given
// timeout, so a server-first protocol (MySQL, SMTP), whose client says
// nothing until the server has spoken, is never hung: it is classified as
// [Opaque] when the timeout passes. The bytes read during detection are
// handed back to the caller, which must replay them to whoever handles the
// connection next (one Write before io.Copy keeps the splice path).
package sniff

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// Protocol is the outcome of detection.
type Protocol int

const (
	// Opaque is anything that is not recognisably HTTP: TLS, a database
	// protocol, a silent server-first client. It is proxied as plain TCP.
	Opaque Protocol = iota
	// HTTP1 is an HTTP/1.0 or HTTP/1.1 request line.
	HTTP1
	// HTTP2 is the HTTP/2 prior-knowledge connection preface (h2c).
	HTTP2
)

// String returns "tcp", "http/1" or "h2c".
func (p Protocol) String() string {
	switch p {
	case Opaque:
		return "tcp"
	case HTTP1:
		return "http/1"
	case HTTP2:
		return "h2c"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// MaxPeek is the most bytes detection ever reads or looks at.
const MaxPeek = 4096

// h2Preface is the client connection preface of HTTP/2 with prior
// knowledge (RFC 9113, section 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Detect reads the client's first bytes from c and decides the protocol,
// waiting at most timeout in total. It sets a read deadline on c and
// clears it (back to the zero time) before returning. A timeout <= 0 reads
// nothing and returns Opaque.
//
// Detect reads into buf[:min(len(buf), MaxPeek)]; a buf of length zero is
// extended to its capacity first, so a pooled buf[:0] works. buf is not
// retained. It returns the bytes it read, a prefix of that space, which
// the caller must replay to whoever gets the connection next: they are
// returned on every path, errors included, and never lost.
//
// Reading stops as soon as [Classify] decides, when the space is full,
// when the timeout passes or on a read error. When the space fills with
// the request line still incomplete, a line that begins with a standard
// method and a space is HTTP1 (a long URL: the HTTP server will answer
// 414 or 431); anything else is Opaque. When the timeout passes, or the
// client half-closes after sending some bytes, what was read so far is
// classified and an undecided prefix is Opaque: that is the server-first
// case.
//
// err is non-nil only for a read error other than the deadline (a reset,
// or EOF before any byte), or when the deadline cannot be set or cleared;
// p is then Opaque.
//
// Detect does not allocate when the connection is a *net.TCPConn and no
// error occurs.
func Detect(c net.Conn, timeout time.Duration, buf []byte) (p Protocol, peeked []byte, err error) {
	if len(buf) == 0 {
		buf = buf[:cap(buf)]
	}
	buf = buf[:min(len(buf), MaxPeek)]
	if len(buf) == 0 {
		// No room to peek into: nothing can be detected.
		return Opaque, buf, nil
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Opaque, buf[:0], fmt.Errorf("sniff: set read deadline: %w", err)
	}
	defer func() {
		if derr := c.SetReadDeadline(time.Time{}); derr != nil && err == nil {
			p, err = Opaque, fmt.Errorf("sniff: clear read deadline: %w", derr)
		}
	}()

	n := 0
	for {
		m, rerr := c.Read(buf[n:])
		n += m
		p, more := classify(buf[:n], n == len(buf))
		if !more {
			// A decision stands even if the same Read also reported an
			// error: the next reader of c will see that error again.
			return p, buf[:n], nil
		}
		if rerr == nil {
			continue
		}
		switch {
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			// Nothing, or not enough, within the timeout: server-first.
			return Opaque, buf[:n], nil
		case errors.Is(rerr, io.EOF) && n > 0:
			// The client half-closed after sending a few bytes; let the
			// opaque proxy carry them and the FIN on.
			return Opaque, buf[:n], nil
		default:
			return Opaque, buf[:n], rerr
		}
	}
}

// Classify decides the protocol from the bytes a client sent first.
// more=true means it cannot decide yet and the caller should read more;
// p is then Opaque. Empty input is undecided.
//
// The HTTP/2 prior-knowledge preface is HTTP2; a request line
//
//	method SP request-target SP ("HTTP/1.0" / "HTTP/1.1") CRLF
//
// (or a bare LF), where method is any RFC 9110 token and request-target is
// visible ASCII, is HTTP1. Classify answers Opaque as soon as the bytes
// can no longer become either, and only looks at the first line (the HTTP
// server judges the rest).
//
// Classify looks at no more than b[:MaxPeek]. An input of MaxPeek bytes or
// more whose request line is still incomplete is decided as [Detect]
// decides a full buffer: HTTP1 if it begins with a standard method and a
// space, otherwise Opaque. Once Classify decides for b, it decides the same
// for every extension of b.
func Classify(b []byte) (p Protocol, more bool) {
	if len(b) >= MaxPeek {
		return classify(b[:MaxPeek], true)
	}
	return classify(b, false)
}

// classify is Classify with full reporting that no more bytes will come
// because the peek space is full, so an incomplete line must be decided.
func classify(b []byte, full bool) (Protocol, bool) {
	if len(b) == 0 {
		return undecided(full)
	}

	// The h2c preface starts with "PRI * HTTP/2.0\r\n", a request line
	// that is not HTTP/1, so it is checked first.
	if n := min(len(b), len(h2Preface)); string(b[:n]) == h2Preface[:n] {
		if n == len(h2Preface) {
			return HTTP2, false
		}
		return undecided(full)
	}

	// method: one or more tchar, then SP.
	i := 0
	for i < len(b) && isTchar(b[i]) {
		i++
	}
	if i == len(b) {
		return undecided(full)
	}
	if i == 0 || b[i] != ' ' {
		return Opaque, false
	}
	method := b[:i]
	i++

	// request-target: one or more visible ASCII bytes, then SP. A CR or
	// LF here ends the line without a version (HTTP/0.9): not HTTP/1.
	start := i
	for i < len(b) && b[i] > ' ' && b[i] < 0x7f {
		i++
	}
	if i == len(b) {
		return incomplete(method, full)
	}
	if i == start || b[i] != ' ' {
		return Opaque, false
	}
	i++

	// HTTP-version, then CRLF or a bare LF.
	const version = "HTTP/1."
	rest := b[i:]
	n := min(len(rest), len(version))
	if string(rest[:n]) != version[:n] {
		return Opaque, false
	}
	if rest = rest[n:]; len(rest) == 0 {
		return incomplete(method, full)
	}
	if rest[0] != '0' && rest[0] != '1' {
		return Opaque, false
	}
	if rest = rest[1:]; len(rest) == 0 {
		return incomplete(method, full)
	}
	if rest[0] == '\r' {
		if rest = rest[1:]; len(rest) == 0 {
			return incomplete(method, full)
		}
	}
	if rest[0] == '\n' {
		return HTTP1, false
	}
	return Opaque, false
}

// undecided is the answer for bytes that may still become HTTP but do not
// yet hold a method and a space.
func undecided(full bool) (Protocol, bool) {
	if full {
		return Opaque, false
	}
	return Opaque, true
}

// incomplete is the answer for a valid but unfinished request line that
// already has its method and a space. When no more bytes will come, a
// standard method means a request with a very long target, which is left
// to the HTTP server to refuse with 414 or 431.
func incomplete(method []byte, full bool) (Protocol, bool) {
	if !full {
		return Opaque, true
	}
	switch string(method) {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		return HTTP1, false
	}
	return Opaque, false
}

// isTchar reports whether c may appear in an RFC 9110 token (section 5.6.2).
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
