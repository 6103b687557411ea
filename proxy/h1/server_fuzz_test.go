package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzConn is a client stream in memory: reads return the input, then
// io.EOF (the client has sent everything and half-closed); writes are
// kept.
type fuzzConn struct {
	mu     sync.Mutex
	in     *bytes.Reader
	out    bytes.Buffer
	closed bool
}

func (c *fuzzConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.in.Read(p)
}

func (c *fuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(p)
}

func (c *fuzzConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzServerRequest feeds arbitrary bytes to ServeConn as a client's
// stream. The server must neither panic nor hang, the handler must only
// see requests as strict as the rules say, and whatever the server writes
// must read as a sequence of well-formed responses.
func FuzzServerRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n5;e=1\r\nhello\r\n0\r\nX: y\r\n\r\n",
		"POST /flush HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"HEAD /big HTTP/1.1\r\nHost: a\r\n\r\nGET /big HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /trailer HTTP/1.1\r\nHost: a\r\n\r\nGET /abort HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /hijack HTTP/1.1\r\nHost: a\r\n\r\nrest",
		"GET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /103 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n Folded: x\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\nHost: a\n\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var methods []string // of the requests the handler saw, in order
		aborted := false
		srv := &Server{
			MaxHeaderBytes: 4096,
			ErrorLog:       nil,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				methods = append(methods, r.Method)
				checkFuzzRequest(t, r)
				body, _ := io.ReadAll(r.Body)
				switch r.URL.Path {
				case "/flush":
					_, _ = w.Write(body)
					w.(http.Flusher).Flush()
				case "/big":
					_, _ = io.WriteString(w, strings.Repeat("b", 5000))
				case "/trailer":
					w.Header().Set("Trailer", "X-T")
					_, _ = w.Write(body)
					w.Header().Set("X-T", "t")
				case "/abort":
					aborted = true
					_, _ = io.WriteString(w, "partial")
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler)
				case "/hijack":
					aborted = true
					c, _, err := w.(http.Hijacker).Hijack()
					if err == nil {
						_ = c.Close()
					}
				case "/204":
					w.WriteHeader(204)
				case "/103":
					w.WriteHeader(103)
					_, _ = w.Write(body)
				default:
					_, _ = w.Write(body)
				}
			}),
		}
		conn := &fuzzConn{in: bytes.NewReader(in)}
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeConn(context.Background(), conn)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("ServeConn did not return for %q", in)
		}
		checkFuzzResponses(t, conn.out.Bytes(), methods, aborted)
	})
}

// checkFuzzRequest checks what a handler is given.
func checkFuzzRequest(t *testing.T, r *http.Request) {
	for k, vv := range r.Header {
		if !headIsToken(k) {
			t.Fatalf("field name %q", k)
		}
		for _, v := range vv {
			if !headValidValue(v) || v != headTrimOWS(v) {
				t.Fatalf("field %s value %q", k, v)
			}
		}
	}
	if _, ok := r.Header["Host"]; ok {
		t.Fatal("Host in the header")
	}
	if _, ok := r.Header["Transfer-Encoding"]; ok {
		t.Fatal("Transfer-Encoding in the header")
	}
	if r.ProtoMajor != 1 {
		t.Fatalf("version %s", r.Proto)
	}
	if len(r.TransferEncoding) > 0 && r.Header.Get("Content-Length") != "" {
		t.Fatal("both framings")
	}
	if r.ContentLength < -1 {
		t.Fatalf("Content-Length %d", r.ContentLength)
	}
}

// checkFuzzResponses reads out as the client would: responses one after
// another, a refusal only last, nothing left over.
func checkFuzzResponses(t *testing.T, out []byte, methods []string, aborted bool) {
	br := bufio.NewReader(bytes.NewReader(out))
	final := 0
	for {
		if _, err := br.Peek(1); err == io.EOF {
			break
		}
		method := "GET"
		if final < len(methods) {
			method = methods[final]
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			if aborted {
				return
			}
			t.Fatalf("response %d: %v\nall output: %q", final, err, out)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		if err != nil && !(aborted && errors.Is(err, io.ErrUnexpectedEOF)) {
			t.Fatalf("response %d body: %v\nall output: %q", final, err, out)
		}
		if resp.StatusCode < 200 {
			continue
		}
		final++
		if final > len(methods) {
			switch resp.StatusCode {
			case 400, 417, 431, 505:
			default:
				t.Fatalf("response %d, status %d, without a handler call\nall output: %q", final, resp.StatusCode, out)
			}
			if rest, _ := io.ReadAll(br); len(rest) > 0 {
				t.Fatalf("after a refusal: %q", rest)
			}
			return
		}
	}
	if final < len(methods) && !aborted {
		t.Fatalf("%d responses for %d requests\nall output: %q", final, len(methods), out)
	}
}
