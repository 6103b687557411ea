package h1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// ErrUnaskedUpgrade is an upstream answering 101 Switching Protocols to a
// relayed request, which never asks for it.
var ErrUnaskedUpgrade = errors.New("h1: the upstream switched protocols for a request that did not ask to")

// RelayResponse is an upstream's answer to a relayed request (Relay). A
// short answer, with no body or a Content-Length body that fits the
// connection's read buffer with its head, stays where it lies in that
// buffer: Status, the fields and Body, valid until Release. Any other
// answer comes as Resp, a response like RoundTrip's, whose body gives the
// connection back when read to its end or closed.
type RelayResponse struct {
	Status int
	Body   []byte         // the short answer's body
	Resp   *http.Response // the answer when it is not short

	// Watch, when set, is called when Relay's deadline passes while it
	// writes the request or reads the answer's head (and a short
	// answer's body), or has passed already when Relay has a connection:
	// a time it returns is the new deadline, and the work goes on; the
	// zero time ends it with the deadline's error. It is how a caller
	// without a deadline of its own looks at something else (its client)
	// now and then.
	Watch func() time.Time

	head   []byte
	fields []clientField
	fbuf   [relayMaxFields]clientField
	cc     *clientConn // a short answer's
	bodyCC *clientConn // a Resp's
	size   int
	keep   bool
}

// SetReadDeadline sets the deadline of the reads of a Resp's body, in
// place of Relay's.
func (rr *RelayResponse) SetReadDeadline(t time.Time) {
	if cc := rr.bodyCC; cc != nil {
		cc.deadline = true
		_ = cc.nc.SetReadDeadline(t)
	}
}

// NumFields is the number of header fields of a short answer.
func (rr *RelayResponse) NumFields() int { return len(rr.fields) }

// Field returns field i of a short answer: its name, made canonical, and
// its value.
func (rr *RelayResponse) Field(i int) (name, value []byte) {
	f := rr.fields[i]
	return rr.head[f.k0:f.k1], rr.head[f.v0:f.v1]
}

// Release ends a short answer: its connection goes back to the pool, or is
// closed when it cannot carry another request. Body and the fields are no
// longer valid. A Resp is released by its body instead.
func (rr *RelayResponse) Release() { rr.ReleaseAt(time.Time{}) }

// ReleaseAt is Release for a caller that read the clock already: the
// connection is idle from now (zero: the clock's time).
func (rr *RelayResponse) ReleaseAt(now time.Time) {
	cc := rr.cc
	if cc == nil {
		return
	}
	_, _ = cc.br.Discard(rr.size)
	rr.cc, rr.Body, rr.head, rr.fields = nil, nil, nil, nil
	cc.idleFrom = now
	cc.release(rr.keep, nil, nil)
}

// Relay sends req, a whole HTTP/1.1 request (head and body) for method,
// to addr on a pooled connection (now is the time of the request) and reads its answer's head into rr, the
// short answer's body with it. Writing the request and reading the answer
// end at deadline (zero: no limit), a Resp's body included; ctx bounds the
// wait for a connection and the dial. A reused connection that fails
// before a byte of the answer came back is replaced by a new one once,
// when the request cannot have been seen or method is idempotent; else
// the error wraps ErrServerClosedIdle. 1xx answers are skipped; a 101
// is ErrUnaskedUpgrade. rr.Watch may move the deadline while the request
// is written and the answer's head (and a short answer's body) read.
func (t *Transport) Relay(ctx context.Context, addr string, now, deadline time.Time, req []byte, method string, rr *RelayResponse) error {
	fresh := false
	for {
		cc, err := t.getConnAt(ctx, addr, fresh, now)
		if err != nil {
			return err
		}
		err = cc.relay(deadline, req, method, rr)
		if err == nil {
			return nil
		}
		var se *clientStaleError
		if !errors.As(err, &se) {
			return err
		}
		if !fresh && (se.unseen || relayIdempotent(method)) {
			fresh = true
			continue
		}
		return fmt.Errorf("%w: %w", ErrServerClosedIdle, se.err)
	}
}

func relayIdempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

func (cc *clientConn) relay(deadline time.Time, req []byte, method string, rr *RelayResponse) error {
	if rr.Watch != nil {
		// The wait for this connection may have taken the deadline.
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			if d := rr.Watch(); !d.IsZero() {
				deadline = d
			}
		}
		// Set until the connection may leave this goroutine (relayResponse
		// clears it): a connection released to the pool must not carry it.
		cc.watch = rr
	}
	// The deadline stays when the connection goes back to the pool: the
	// next relayed request sets its own, and RoundTrip clears it.
	if !deadline.IsZero() || cc.deadline {
		_ = cc.nc.SetDeadline(deadline)
		cc.deadline = !deadline.IsZero()
	}
	startRead, startWritten := cc.nread, cc.nwritten
	// The request is written by the answer's first read (writeRead).
	cc.pending, cc.werr = req, nil
	if err := cc.relayResponse(method, rr); err != nil {
		cc.pending, cc.watch = nil, nil
		cc.p.closeConn(cc, true, true)
		if werr := cc.werr; werr != nil {
			if cc.reused && clientIsStale(werr) {
				return &clientStaleError{err: werr, unseen: cc.nwritten == startWritten}
			}
			return fmt.Errorf("h1: write request: %w", werr)
		}
		switch {
		case cc.reused && errors.Is(err, clientErrIdle408):
			return &clientStaleError{err: err, unseen: true}
		case cc.reused && cc.nread == startRead && clientIsStale(err):
			return &clientStaleError{err: err}
		}
		return fmt.Errorf("h1: read response: %w", err)
	}
	return nil
}

// relayResponse reads the answer's head, and a short answer's body.
func (cc *clientConn) relayResponse(method string, rr *RelayResponse) error {
	budget := cc.p.t.maxHead()
	br := cc.br
	var h clientHead
	var raw []byte
	var inBuf bool
	var fields []clientField
	var statusEnd int
	for {
		var err error
		raw, inBuf, err = cc.rawHead(budget)
		if err != nil {
			return err
		}
		fields, statusEnd, err = h.parse(raw, rr.fbuf[:0], true)
		if err != nil {
			return err
		}
		if h.code >= 200 || h.code == http.StatusSwitchingProtocols {
			break
		}
		budget -= len(raw) // an interim answer, skipped
		if inBuf {
			_, _ = br.Discard(len(raw))
		}
	}
	switch {
	case h.code == http.StatusSwitchingProtocols:
		return ErrUnaskedUpgrade
	case h.code == http.StatusRequestTimeout && cc.reused:
		return clientErrIdle408
	}
	n, keep, short, err := relayFrame(raw, fields, h.minor, h.code, method)
	if err != nil {
		return err
	}
	rr.Status, rr.Resp, rr.Body, rr.bodyCC = h.code, nil, nil, nil
	if short && inBuf && len(raw)+int(n) <= br.Size() {
		all, err := br.Peek(len(raw) + int(n))
		for err != nil && cc.resumeWait(err) {
			all, err = br.Peek(len(raw) + int(n))
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		rr.head, rr.Body, rr.fields = all[:len(raw)], all[len(raw):], fields
		rr.cc, rr.size, rr.keep = cc, len(all), keep
		cc.watch = nil
		return nil
	}

	// Anything else is read as RoundTrip reads it, with no Watch: the
	// connection may go back to the pool from here (an answer without a
	// body), and a body's reads are the caller's to bound.
	cc.watch = nil
	h.s = string(raw)
	if inBuf {
		_, _ = br.Discard(len(raw))
	}
	h.status = h.s[len("HTTP/1.x "):statusEnd]
	h.proto = "HTTP/1.1"
	if h.minor == 0 {
		h.proto = "HTTP/1.0"
	}
	x := new(clientResponse)
	resp := &x.resp
	*resp = http.Response{Status: h.status, StatusCode: h.code, Proto: h.proto, ProtoMajor: 1, ProtoMinor: h.minor,
		Header: clientHeader(h.s, fields, x.vals[:])}
	if err := cc.frameBody(x, method, context.Background(), false, nil, nil); err != nil {
		return err
	}
	rr.Resp, rr.fields = resp, nil
	if _, ok := resp.Body.(*clientBody); ok {
		rr.bodyCC = cc // else it went back to the pool already
	}
	return nil
}

// relayFrame reads how a short answer is delimited: n bytes of body, and
// whether the connection persists. short false leaves the answer to the
// general reader: a transfer coding, trailers, hop-by-hop fields other
// than Connection: close or keep-alive, repeated Content-Length fields, or
// a body delimited by the connection's end.
func relayFrame(raw []byte, fields []clientField, minor, code int, method string) (n int64, keep, short bool, err error) {
	cl, lengths := int64(-1), 0
	keepAlive, closing := false, false
	for _, f := range fields {
		v := raw[f.v0:f.v1]
		switch string(raw[f.k0:f.k1]) {
		case "Connection":
			c, k, ok := relayConnection(v)
			if !ok {
				return 0, false, false, nil
			}
			closing, keepAlive = closing || c, keepAlive || k
		case "Content-Length":
			lengths++
			m, ok := clientParseLength(string(v))
			if !ok {
				return 0, false, false, fmt.Errorf("h1: malformed response: invalid Content-Length %q", v)
			}
			cl = m
		case "Transfer-Encoding", "Trailer", "Keep-Alive", "Proxy-Connection", "Upgrade", "Te",
			"Proxy-Authenticate", "Proxy-Authorization":
			return 0, false, false, nil
		}
	}
	if lengths > 1 {
		return 0, false, false, nil
	}
	keep = !closing && (minor == 1 || keepAlive)
	switch {
	case method == http.MethodHead || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified:
		return 0, keep, true, nil
	case cl >= 0:
		return cl, keep, true, nil
	}
	return 0, false, false, nil
}

// resumeWait is called with the error of a read or write of a relayed
// exchange: when it is the deadline's, the relay's Watch may move the
// deadline (true: the work goes on).
func (cc *clientConn) resumeWait(err error) bool {
	rr := cc.watch
	if rr == nil || cc.werr != nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	d := rr.Watch()
	if d.IsZero() {
		return false
	}
	_ = cc.nc.SetDeadline(d)
	return true
}
