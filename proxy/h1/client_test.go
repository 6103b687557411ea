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
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clientTestDialError is the dial error type of the tests' dialer, as
// meshd's *DialError is of its own.
type clientTestDialError struct {
	addr string
	err  error
}

func (e *clientTestDialError) Error() string { return "dial " + e.addr + ": " + e.err.Error() }
func (e *clientTestDialError) Unwrap() error { return e.err }

// clientTestTransport returns a Transport dialling loopback addresses;
// tweak sets its options. Its idle connections are closed when the test
// ends.
func clientTestTransport(t *testing.T, tweak func(*Transport)) *Transport {
	t.Helper()
	var d net.Dialer
	tr := &Transport{DialContext: func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, &clientTestDialError{addr: addr, err: err}
		}
		return c, nil
	}}
	if tweak != nil {
		tweak(tr)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// clientTestHTTPServer starts a net/http server and counts the
// connections it accepts.
func clientTestHTTPServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var accepted atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepted.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &accepted
}

// clientRawServer is a loopback TCP server whose handler writes raw bytes,
// for exact control over the wire.
type clientRawServer struct {
	addr     string
	accepted atomic.Int32
	done     chan struct{} // closed when the test ends
	ln       net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

// clientTestRawServer serves each connection with handle, given the
// connection's number (from 1).
func clientTestRawServer(t *testing.T, handle func(n int, c net.Conn, br *bufio.Reader)) *clientRawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &clientRawServer{addr: ln.Addr().String(), done: make(chan struct{}), ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(s.accepted.Add(1))
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(n, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		close(s.done)
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// clientReadRequest reads one request and its body on the server side.
func clientReadRequest(br *bufio.Reader) (*http.Request, []byte, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

// clientServeFixed answers every request on a connection with resp.
func clientServeFixed(resp string) func(int, net.Conn, *bufio.Reader) {
	return func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := clientReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	}
}

func clientGet(t *testing.T, tr *Transport, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tr.RoundTrip(req)
}

// clientGetBody does a GET and reads the whole body.
func clientGetBody(t *testing.T, tr *Transport, url string) (*http.Response, string) {
	t.Helper()
	resp, err := clientGet(t, tr, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	if err := resp.Body.Close(); err != nil {
		t.Fatalf("GET %s: closing body: %v", url, err)
	}
	return resp, string(b)
}

// clientWithin runs f, failing the test if it takes longer than 5 s (a
// hang fails rather than blocks the test binary).
func clientWithin(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

// clientWaitFor polls cond for up to 5 s.
func clientWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// clientTestBody is a request body that is not an in-memory reader (its
// reads could block, as far as the Transport knows), has no GetBody, and
// records being closed.
type clientTestBody struct {
	r      io.Reader
	closed atomic.Bool
	once   sync.Once
	ch     chan struct{}
}

func clientNewTestBody(s string) *clientTestBody {
	return &clientTestBody{r: strings.NewReader(s), ch: make(chan struct{})}
}

func (b *clientTestBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *clientTestBody) Close() error {
	b.closed.Store(true)
	b.once.Do(func() { close(b.ch) })
	return nil
}

func (b *clientTestBody) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-b.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("request body was never closed")
	}
}

func TestClientKeepAliveReuse(t *testing.T) {
	srv, accepted := clientTestHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "path="+r.URL.Path)
	})
	tr := clientTestTransport(t, nil)
	for i := 0; i < 10; i++ {
		resp, body := clientGetBody(t, tr, fmt.Sprintf("%s/r%d", srv.URL, i))
		if resp.StatusCode != 200 || body != fmt.Sprintf("path=/r%d", i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("10 sequential requests used %d connections, want 1", n)
	}
}

func TestClientNoIdleConns(t *testing.T) {
	srv, accepted := clientTestHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {})
	tr := clientTestTransport(t, func(tr *Transport) { tr.MaxIdleConnsPerHost = -1 })
	for i := 0; i < 3; i++ {
		clientGetBody(t, tr, srv.URL)
	}
	if n := accepted.Load(); n != 3 {
		t.Fatalf("with MaxIdleConnsPerHost < 0, 3 requests used %d connections, want 3", n)
	}
}

func TestClientMaxIdleConnsPerHost(t *testing.T) {
	release := make(chan struct{})
	srv, _ := clientTestHTTPServer(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	tr := clientTestTransport(t, func(tr *Transport) { tr.MaxIdleConnsPerHost = 2 })
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := clientGet(t, tr, srv.URL)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	clientWaitFor(t, "5 connections", func() bool { return clientPoolCounts(tr, srv.Listener.Addr().String()).conns == 5 })
	close(release)
	wg.Wait()
	if c := clientPoolCounts(tr, srv.Listener.Addr().String()); c.idle != 2 || c.conns != 2 {
		t.Fatalf("after 5 concurrent requests: %d idle of %d connections, want 2 of 2", c.idle, c.conns)
	}
}

type clientCounts struct{ idle, conns, waiters int }

// clientPoolCounts looks into a Transport's pool for addr.
func clientPoolCounts(tr *Transport, addr string) clientCounts {
	v, ok := tr.pools.Load(addr)
	if !ok {
		return clientCounts{}
	}
	p := v.(*clientPool)
	p.mu.Lock()
	defer p.mu.Unlock()
	return clientCounts{idle: len(p.idle), conns: p.conns, waiters: len(p.waiters)}
}

func TestClientResponseBodies(t *testing.T) {
	big := strings.Repeat("v", 6000)
	tests := []struct {
		name     string
		method   string
		resp     string
		closeNow bool // the server closes after the response
		code     int
		body     string
		length   int64
		header   http.Header // fields that must be there, with exactly these values
		absent   []string    // fields that must not be there
		trailer  http.Header
		reuse    bool
	}{
		{name: "content-length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
			code: 200, body: "hello", length: 5, header: http.Header{"X-A": {"1"}}, reuse: true},
		{name: "chunked with trailers", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n" +
			"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nX-T: v\r\nx-u: u\r\n\r\n",
			code: 200, body: "hello world", length: -1, absent: []string{"Transfer-Encoding", "Trailer"},
			trailer: http.Header{"X-T": {"v"}, "X-U": {"u"}}, reuse: true},
		{name: "chunked upper-case hex, no trailers", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n" +
			"A\r\n0123456789\r\n0\r\n\r\n", code: 200, body: "0123456789", length: -1, reuse: true},
		{name: "close-delimited", resp: "HTTP/1.1 200 OK\r\n\r\nuntil the end", closeNow: true,
			code: 200, body: "until the end", length: -1, reuse: false},
		{name: "HTTP/1.0 keep-alive", resp: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
			code: 200, body: "ok", length: 2, reuse: true},
		{name: "HTTP/1.0 closes by default", resp: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
			code: 200, body: "ok", length: 2, reuse: false},
		{name: "Connection: close", resp: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
			code: 200, body: "ok", length: 2, reuse: false},
		{name: "Transfer-Encoding overrides Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
			code: 200, body: "ok", length: -1, absent: []string{"Content-Length"}, reuse: false},
		{name: "204", resp: "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", code: 204, length: 0, reuse: true},
		{name: "304 with Content-Length", resp: "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", code: 304, length: 0, reuse: true},
		{name: "HEAD", method: http.MethodHead, resp: "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
			code: 200, length: 1000, header: http.Header{"Content-Length": {"1000"}}, reuse: true},
		{name: "zero Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", code: 200, length: 0, reuse: true},
		{name: "bare LF line ends", resp: "HTTP/1.1 201 Created\nContent-Length: 2\nX-A:  spaced \t\n\nok",
			code: 201, body: "ok", length: 2, header: http.Header{"X-A": {"spaced"}}, reuse: true},
		{name: "identical Content-Length fields", resp: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
			code: 200, body: "ok", length: 2, header: http.Header{"Content-Length": {"2"}}, reuse: true},
		{name: "repeated and lower-case fields", resp: "HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nSET-COOKIE: b=2\r\nx-request-id: r\r\nContent-Length: 0\r\n\r\n",
			code: 200, header: http.Header{"Set-Cookie": {"a=1", "b=2"}, "X-Request-Id": {"r"}}, reuse: true},
		{name: "head larger than the read buffer", resp: "HTTP/1.1 200 OK\r\nX-Big: " + big + "\r\nContent-Length: 2\r\n\r\nok",
			code: 200, body: "ok", length: 2, header: http.Header{"X-Big": {big}}, reuse: true},
		{name: "status without reason", resp: "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", code: 200, body: "ok", length: 2, reuse: true},
		{name: "bytes after the response", resp: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK",
			code: 200, body: "ok", length: 2, reuse: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
				for {
					if _, _, err := clientReadRequest(br); err != nil {
						return
					}
					if _, err := io.WriteString(c, tc.resp); err != nil || tc.closeNow {
						return
					}
				}
			})
			tr := clientTestTransport(t, nil)
			for i := 0; i < 2; i++ {
				method := tc.method
				if method == "" {
					method = http.MethodGet
				}
				req, _ := http.NewRequest(method, "http://"+srv.addr+"/", nil)
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatalf("request %d: reading body: %v", i, err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.code || string(body) != tc.body || resp.ContentLength != tc.length {
					t.Fatalf("request %d: got %d %q length %d, want %d %q length %d",
						i, resp.StatusCode, body, resp.ContentLength, tc.code, tc.body, tc.length)
				}
				if resp.Request != req {
					t.Errorf("resp.Request is not the request")
				}
				for k, want := range tc.header {
					if got := resp.Header[k]; fmt.Sprint(got) != fmt.Sprint(want) {
						t.Errorf("header %s = %q, want %q", k, got, want)
					}
				}
				for _, k := range tc.absent {
					if v, ok := resp.Header[k]; ok {
						t.Errorf("header %s = %q, want none", k, v)
					}
				}
				if fmt.Sprint(resp.Trailer) != fmt.Sprint(tc.trailer) && (len(resp.Trailer) > 0 || len(tc.trailer) > 0) {
					t.Errorf("trailer = %v, want %v", resp.Trailer, tc.trailer)
				}
			}
			want := int32(2)
			if tc.reuse {
				want = 1
			}
			if n := srv.accepted.Load(); n != want {
				t.Fatalf("two requests used %d connections, want %d", n, want)
			}
		})
	}
}

func TestClientMalformedResponses(t *testing.T) {
	tests := []struct {
		name     string
		resp     string
		maxHead  int64
		inBody   bool   // the error comes from reading the body
		contains string // in the error
	}{
		{name: "garbage", resp: "garbage\r\n\r\n", contains: "status line"},
		{name: "HTTP/2 status line", resp: "HTTP/2.0 200 OK\r\n\r\n", contains: "status line"},
		{name: "non-digit status", resp: "HTTP/1.1 2x0 OK\r\n\r\n", contains: "status code"},
		{name: "status below 100", resp: "HTTP/1.1 099 Low\r\n\r\n", contains: "status code"},
		{name: "empty status line", resp: "\r\nHTTP/1.1 200 OK\r\n\r\n", contains: "status line"},
		{name: "space before colon", resp: "HTTP/1.1 200 OK\r\nX-A : b\r\nContent-Length: 0\r\n\r\n", contains: "field name"},
		{name: "line folding", resp: "HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n", contains: "folded"},
		{name: "no colon", resp: "HTTP/1.1 200 OK\r\nX-A\r\n\r\n", contains: "header line"},
		{name: "NUL in value", resp: "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n", contains: "field value"},
		{name: "bare CR in value", resp: "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n", contains: "field value"},
		{name: "conflicting Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", contains: "Content-Length"},
		{name: "negative Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", contains: "Content-Length"},
		{name: "signed Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\na", contains: "Content-Length"},
		{name: "Content-Length list", resp: "HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\na", contains: "Content-Length"},
		{name: "gzip transfer coding", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", contains: "transfer encoding"},
		{name: "Transfer-Encoding in HTTP/1.0", resp: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", contains: "HTTP/1.0"},
		{name: "forbidden trailer announced", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n", contains: "trailer"},
		{name: "truncated head", resp: "HTTP/1.1 200 OK\r\nX-A: b", contains: "unexpected EOF"},
		{name: "head too large", resp: "HTTP/1.1 200 OK\r\nX-A: " + strings.Repeat("a", 2000) + "\r\n\r\n", maxHead: 1024, contains: "too large"},
		{name: "head too large, beyond the buffer", resp: "HTTP/1.1 200 OK\r\nX-A: " + strings.Repeat("a", 9000) + "\r\n\r\n", maxHead: 8000, contains: "too large"},
		{name: "bad chunk size", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", inBody: true, contains: "chunk-size"},
		{name: "chunk size overflow", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", inBody: true, contains: "chunk-size"},
		{name: "no CRLF after chunk", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n", inBody: true, contains: "CRLF"},
		{name: "truncated chunked body", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", inBody: true, contains: "unexpected EOF"},
		{name: "truncated Content-Length body", resp: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", inBody: true, contains: "unexpected EOF"},
		{name: "bare LF in a chunk-size line", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n", inBody: true, contains: "chunk-size"},
		{name: "bare LF in the last chunk", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\n\n", inBody: true, contains: "chunk-size"},
		{name: "bare LF in the trailer section", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: v\n\r\n", inBody: true, contains: "CRLF"},
		{name: "bad trailer line", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n", inBody: true, contains: "header line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
				if _, _, err := clientReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, tc.resp)
			})
			tr := clientTestTransport(t, func(tr *Transport) { tr.MaxResponseHeaderBytes = tc.maxHead })
			resp, err := clientGet(t, tr, "http://"+srv.addr+"/")
			if !tc.inBody {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("RoundTrip succeeded (%d), want an error", resp.StatusCode)
				}
			} else {
				if err != nil {
					t.Fatalf("RoundTrip: %v", err)
				}
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Fatal("reading the body succeeded, want an error")
				}
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("error %q does not mention %q", err, tc.contains)
			}
			if errors.Is(err, ErrServerClosedIdle) {
				t.Fatalf("error %v on a new connection says the idle connection was closed", err)
			}
			if c := clientPoolCounts(tr, srv.addr); c.idle != 0 {
				t.Fatalf("the connection went back to the pool after a malformed response")
			}
		})
	}
}

// clientCapture is a raw server that records the bytes of each request
// (head and body) and answers 200 with an empty body.
func clientCapture(t *testing.T) (*clientRawServer, chan string) {
	got := make(chan string, 16)
	srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		// One request per connection: what the tee records is exactly
		// its bytes, the body read through the request.
		var rec bytes.Buffer
		req, err := http.ReadRequest(bufio.NewReader(io.TeeReader(br, &rec)))
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		got <- rec.String()
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	})
	return srv, got
}

func TestClientRequestWire(t *testing.T) {
	tests := []struct {
		name   string
		req    func(url string) *http.Request
		prefix string   // the request starts with it
		has    []string // lines the head has
		hasNot []string // substrings the request must not have
		suffix string   // the request ends with it
	}{
		{
			name: "GET with fields",
			req: func(url string) *http.Request {
				r, _ := http.NewRequest(http.MethodGet, url+"/a/b?x=1&y=2", nil)
				r.Header.Set("X-A", "  one ")
				r.Header.Add("X-Multi", "1")
				r.Header.Add("X-Multi", "2")
				r.Header.Set("User-Agent", "") // ReverseProxy's way to send none
				return r
			},
			prefix: "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: ",
			has:    []string{"X-A: one", "X-Multi: 1", "X-Multi: 2"},
			hasNot: []string{"User-Agent", "Content-Length", "Transfer-Encoding", "Connection"},
			suffix: "\r\n\r\n",
		},
		{
			name: "Host from req.Host, escaped path, User-Agent",
			req: func(url string) *http.Request {
				r, _ := http.NewRequest(http.MethodGet, url, nil)
				r.URL.Path = "/a b"
				r.Host = "virtual.example:8080"
				r.Header.Set("Host", "ignored.example")
				r.Header.Set("User-Agent", "meshd-test")
				return r
			},
			prefix: "GET /a%20b HTTP/1.1\r\nHost: virtual.example:8080\r\n",
			has:    []string{"User-Agent: meshd-test"},
			hasNot: []string{"ignored.example"},
		},
		{
			name: "OPTIONS *",
			req: func(url string) *http.Request {
				r, _ := http.NewRequest(http.MethodOptions, url, nil)
				r.URL.Path = "*"
				return r
			},
			prefix: "OPTIONS * HTTP/1.1\r\n",
		},
		{
			name: "POST without body sends Content-Length: 0",
			req: func(url string) *http.Request {
				r, _ := http.NewRequest(http.MethodPost, url, nil)
				return r
			},
			has: []string{"Content-Length: 0"},
		},
		{
			name: "Content-Length body",
			req: func(url string) *http.Request {
				r, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("hello"))
				r.Header.Set("Content-Length", "999") // the Transport frames the body itself
				r.Header.Set("Transfer-Encoding", "chunked")
				return r
			},
			has:    []string{"Content-Length: 5"},
			hasNot: []string{"999", "chunked"},
			suffix: "\r\n\r\nhello",
		},
		{
			name: "streamed Content-Length body",
			req: func(url string) *http.Request {
				r, _ := http.NewRequest(http.MethodPut, url, clientNewTestBody("streamed"))
				r.ContentLength = 8
				return r
			},
			has:    []string{"Content-Length: 8"},
			suffix: "\r\n\r\nstreamed",
		},
		{
			name: "chunked body with trailers",
			req: func(url string) *http.Request {
				r, _ := http.NewRequest(http.MethodPost, url, clientNewTestBody("hello chunked"))
				r.ContentLength = -1
				r.Trailer = http.Header{"X-Trailer": nil}
				// The value is only known at the body's end, as with a
				// proxied request's trailers.
				r.Body = &clientTrailerBody{ReadCloser: r.Body, set: func() { r.Trailer.Set("X-Trailer", "tv") }}
				return r
			},
			has:    []string{"Transfer-Encoding: chunked", "Trailer: X-Trailer"},
			hasNot: []string{"Content-Length"},
			suffix: "\r\n\r\nd\r\nhello chunked\r\n0\r\nX-Trailer: tv\r\n\r\n",
		},
		{
			name: "unknown length with DELETE is chunked",
			req: func(url string) *http.Request {
				r, _ := http.NewRequest(http.MethodDelete, url, clientNewTestBody("x"))
				r.ContentLength = 0
				return r
			},
			has:    []string{"Transfer-Encoding: chunked"},
			suffix: "\r\n\r\n1\r\nx\r\n0\r\n\r\n",
		},
		{
			name: "unknown length with GET sends no body",
			req: func(url string) *http.Request {
				r, _ := http.NewRequest(http.MethodGet, url, clientNewTestBody("dropped"))
				r.ContentLength = 0
				return r
			},
			hasNot: []string{"dropped", "Transfer-Encoding", "Content-Length"},
			suffix: "\r\n\r\n",
		},
		{
			name: "req.Close",
			req: func(url string) *http.Request {
				r, _ := http.NewRequest(http.MethodGet, url, nil)
				r.Close = true
				return r
			},
			has: []string{"Connection: close"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := clientCapture(t)
			tr := clientTestTransport(t, nil)
			req := tc.req("http://" + srv.addr)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if tb, ok := req.Body.(interface{ waitClosed(*testing.T) }); ok {
				tb.waitClosed(t)
			}
			wire := <-got
			head, _, _ := strings.Cut(wire, "\r\n\r\n")
			lines := strings.Split(head, "\r\n")
			if !strings.HasPrefix(wire, tc.prefix) {
				t.Errorf("request %q does not start with %q", wire, tc.prefix)
			}
			if !strings.HasPrefix(lines[1], "Host: ") {
				t.Errorf("second line %q is not Host", lines[1])
			}
			for _, h := range tc.has {
				found := false
				for _, l := range lines[1:] {
					found = found || l == h
				}
				if !found {
					t.Errorf("request head %q has no line %q", head, h)
				}
			}
			for _, s := range tc.hasNot {
				if strings.Contains(wire, s) {
					t.Errorf("request %q has %q", wire, s)
				}
			}
			if !strings.HasSuffix(wire, tc.suffix) {
				t.Errorf("request %q does not end with %q", wire, tc.suffix)
			}
		})
	}
}

// clientTrailerBody calls set when its body ends.
type clientTrailerBody struct {
	io.ReadCloser
	set  func()
	once sync.Once
}

func (b *clientTrailerBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.set)
	}
	return n, err
}

func (b *clientTrailerBody) waitClosed(t *testing.T) {
	if tb, ok := b.ReadCloser.(*clientTestBody); ok {
		tb.waitClosed(t)
	}
}

// TestClientRequestBodiesReachServer checks bodies and trailers as
// net/http's server reads them.
func TestClientRequestBodiesReachServer(t *testing.T) {
	srv, accepted := clientTestHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%s %d %v %q %s", r.Method, r.ContentLength, r.TransferEncoding, b, r.Trailer.Get("X-Sum"))
	})
	tr := clientTestTransport(t, nil)
	large := strings.Repeat("0123456789", 20000)
	tests := []struct {
		name   string
		req    func() *http.Request
		want   string
		closed *clientTestBody
	}{
		{name: "in-memory", req: func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("small"))
			return r
		}, want: `POST 5 [] "small" `},
		{name: "in-memory, larger than the buffer", req: func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(large))
			return r
		}, want: fmt.Sprintf(`POST %d [] %q `, len(large), large)},
		{name: "streamed with length", req: func() *http.Request {
			r, _ := http.NewRequest(http.MethodPut, srv.URL, clientNewTestBody(large))
			r.ContentLength = int64(len(large))
			return r
		}, want: fmt.Sprintf(`PUT %d [] %q `, len(large), large)},
		{name: "chunked with trailer", req: func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
			r.Body = &clientTrailerBody{ReadCloser: clientNewTestBody("abc"), set: func() { r.Trailer.Set("X-Sum", "42") }}
			r.ContentLength = -1
			r.Trailer = http.Header{"X-Sum": nil}
			return r
		}, want: `POST -1 [chunked] "abc" 42`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req()
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != tc.want {
				t.Fatalf("server saw %.200q, want %.200q", b, tc.want)
			}
		})
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1: every request should have left it reusable", n)
	}
}

// clientWriteCounter counts the writes on a connection.
type clientWriteCounter struct {
	net.Conn
	writes *atomic.Int32
}

func (c clientWriteCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func TestClientOneWritePerSmallRequest(t *testing.T) {
	srv, _ := clientTestHTTPServer(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	var writes atomic.Int32
	tr := clientTestTransport(t, nil)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := dial(ctx, addr)
		if err != nil {
			return nil, err
		}
		return clientWriteCounter{Conn: c, writes: &writes}, nil
	}
	for _, body := range []io.Reader{nil, strings.NewReader(strings.Repeat("b", 1024))} {
		writes.Store(0)
		req, _ := http.NewRequest(http.MethodPost, srv.URL, body)
		req.Header.Set("X-Some", strings.Repeat("h", 200))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n := writes.Load(); n != 1 {
			t.Errorf("body %T: the request took %d writes, want 1", body, n)
		}
	}
}

func TestClientInvalidRequests(t *testing.T) {
	srv, accepted := clientTestHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {})
	tr := clientTestTransport(t, nil)
	tests := []struct {
		name string
		mod  func(r *http.Request)
	}{
		{"CRLF in a value", func(r *http.Request) { r.Header["X-A"] = []string{"a\r\nInjected: yes"} }},
		{"LF in a value", func(r *http.Request) { r.Header["X-A"] = []string{"a\nb"} }},
		{"NUL in a value", func(r *http.Request) { r.Header["X-A"] = []string{"a\x00b"} }},
		{"CRLF in the second value", func(r *http.Request) { r.Header["X-A"] = []string{"ok", "b\r\n"} }},
		{"space in a name", func(r *http.Request) { r.Header["X A"] = []string{"b"} }},
		{"colon in a name", func(r *http.Request) { r.Header["X:A"] = []string{"b"} }},
		{"CRLF in Host", func(r *http.Request) { r.Host = "a\r\nX: y" }},
		{"space in the method", func(r *http.Request) { r.Method = "GET /x" }},
		{"space in the query", func(r *http.Request) { r.URL.RawQuery = "a=b HTTP/1.1\r\nX: y" }},
		{"https scheme", func(r *http.Request) { r.URL.Scheme = "https" }},
		{"no scheme", func(r *http.Request) { r.URL.Scheme = "" }},
		{"CONNECT", func(r *http.Request) { r.Method = http.MethodConnect }},
		{"ContentLength without body", func(r *http.Request) { r.Body = nil; r.ContentLength = 3 }},
		{"CRLF in a trailer name", func(r *http.Request) { r.ContentLength = -1; r.Trailer = http.Header{"X\r\nY": nil} }},
		{"Content-Length as a trailer", func(r *http.Request) { r.ContentLength = -1; r.Trailer = http.Header{"Content-Length": nil} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := clientNewTestBody("body")
			req, _ := http.NewRequest(http.MethodPost, srv.URL, body)
			req.ContentLength = 4
			tc.mod(req)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Fatal("RoundTrip succeeded, want an error")
			}
			if req.Body != nil && !body.closed.Load() {
				t.Error("the request body was not closed")
			}
		})
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("invalid requests opened %d connections: something was sent", n)
	}
}

func TestClientInterimResponses(t *testing.T) {
	srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := clientReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"+
				"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr := clientTestTransport(t, nil)

	// Without a trace the 1xx responses are skipped.
	resp, body := clientGetBody(t, tr, "http://"+srv.addr)
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}

	var mu sync.Mutex
	var got []string
	var got100 bool
	trace := &httptrace.ClientTrace{
		Got100Continue: func() { mu.Lock(); got100 = true; mu.Unlock() },
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, fmt.Sprintf("%d %s", code, h.Get("Link")))
			return nil
		},
	}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, "http://"+srv.addr, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	mu.Lock()
	saw, saw100 := fmt.Sprint(got), got100
	mu.Unlock()
	if want := "[100  103 </style.css>; rel=preload]"; saw != want || !saw100 {
		t.Fatalf("trace saw %v (100 Continue: %v), want %s", saw, saw100, want)
	}
	if n := srv.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}

	// A trace's error ends the request.
	trace.Got1xxResponse = func(int, textproto.MIMEHeader) error { return errors.New("no hints please") }
	req, _ = http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, "http://"+srv.addr, nil)
	if resp, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "no hints please") {
		if resp != nil {
			resp.Body.Close()
		}
		t.Fatalf("RoundTrip: %v, want the trace's error", err)
	}
}

func TestClientExpectContinue(t *testing.T) {
	// The server checks that no body byte comes before its 100 Continue
	// (or ever, when it answers without one).
	srvErr := make(chan error, 4)
	handled := make(chan struct{}, 4)
	srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		defer func() { handled <- struct{}{} }()
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := br.Peek(1); err == nil {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 19\r\nConnection: close\r\n\r\nbody before 100-ish")
			return
		}
		c.SetReadDeadline(time.Time{})
		if req.URL.Path == "/reject" {
			io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := br.Peek(1); err == nil {
				srvErr <- errors.New("the body was sent after a final answer that closes the connection")
			}
			return
		}
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(b), b)
	})
	tr := clientTestTransport(t, func(tr *Transport) { tr.ExpectContinueTimeout = 10 * time.Second })

	start := time.Now()
	body := clientNewTestBody("the body")
	req, _ := http.NewRequest(http.MethodPost, "http://"+srv.addr+"/", body)
	req.ContentLength = 8
	req.Header.Set("Expect", "100-continue")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "the body" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v: the body waited for the timeout, not for 100 Continue", d)
	}
	body.waitClosed(t)

	body = clientNewTestBody("unwanted")
	req, _ = http.NewRequest(http.MethodPost, "http://"+srv.addr+"/reject", body)
	req.ContentLength = 8
	req.Header.Set("Expect", "100-continue")
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("got %d, want 401", resp.StatusCode)
	}
	body.waitClosed(t)
	<-handled
	<-handled
	select {
	case err := <-srvErr:
		t.Fatal(err)
	default:
	}
}

func TestClientUpgrade(t *testing.T) {
	srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Header.Get("Upgrade") != "echo" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			// The first bytes of the new protocol come in the same write
			// as the 101.
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nEARLY")
			buf := make([]byte, 64)
			for {
				n, err := br.Read(buf)
				if n > 0 {
					c.Write(bytes.ToUpper(buf[:n]))
				}
				if err != nil {
					return
				}
			}
		}
	})
	tr := clientTestTransport(t, func(tr *Transport) { tr.MaxConnsPerHost = 1 })
	req, _ := http.NewRequest(http.MethodGet, "http://"+srv.addr+"/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("got %d", resp.StatusCode)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body %T is not an io.ReadWriteCloser", resp.Body)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(rwc, buf); err != nil || string(buf) != "EARLY" {
		t.Fatalf("first bytes %q, %v; want EARLY", buf, err)
	}
	for _, msg := range []string{"ping", "pong"} {
		if _, err := rwc.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf = make([]byte, len(msg))
		if _, err := io.ReadFull(rwc, buf); err != nil || string(buf) != strings.ToUpper(msg) {
			t.Fatalf("echo of %q: %q, %v", msg, buf, err)
		}
	}
	if err := rwc.Close(); err != nil {
		t.Fatal(err)
	}
	// The tunnel's slot is free again (MaxConnsPerHost is 1) and the
	// tunnel's connection was not pooled.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.addr+"/", nil)
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("request after the tunnel closed: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n := srv.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// TestClientStaleIdleConnection has a server that closes each connection
// after one response, without saying so: every pooled connection is stale.
func TestClientStaleIdleConnection(t *testing.T) {
	var served atomic.Int32
	closed := make(chan struct{}, 16)
	srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		defer func() { closed <- struct{}{} }()
		defer c.Close()
		_, body, err := clientReadRequest(br)
		if err != nil {
			return
		}
		served.Add(1)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body)+2, "ok"+string(body))
	})
	url := "http://" + srv.addr + "/"
	tr := clientTestTransport(t, nil)

	// do sends a request on the stale connection the previous one left.
	do := func(method string, body io.Reader, setup func(*http.Request)) (string, error) {
		t.Helper()
		req, _ := http.NewRequest(method, url, body)
		if setup != nil {
			setup(req)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			<-closed // the server closed this connection, now in the pool
		}
		return string(b), err
	}
	if _, err := do(http.MethodGet, nil, nil); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		method   string
		body     func() io.Reader
		setup    func(*http.Request)
		retried  bool
		wantBody string
	}{
		{name: "GET is retried", method: http.MethodGet, retried: true, wantBody: "ok"},
		{name: "DELETE is retried", method: http.MethodDelete, retried: true, wantBody: "ok"},
		{name: "PUT with GetBody is retried", method: http.MethodPut, body: func() io.Reader { return strings.NewReader("data") },
			retried: true, wantBody: "okdata"},
		{name: "POST with Idempotency-Key and GetBody is retried", method: http.MethodPost,
			body:  func() io.Reader { return strings.NewReader("data") },
			setup: func(r *http.Request) { r.Header.Set("Idempotency-Key", "k1") }, retried: true, wantBody: "okdata"},
		{name: "POST without body is not", method: http.MethodPost},
		{name: "POST with GetBody is not", method: http.MethodPost, body: func() io.Reader { return strings.NewReader("data") }},
		{name: "PUT without GetBody is not", method: http.MethodPut, body: func() io.Reader { return clientNewTestBody("data") },
			setup: func(r *http.Request) { r.ContentLength = 4 }},
		{name: "streamed chunked POST is not", method: http.MethodPost, body: func() io.Reader { return clientNewTestBody("data") },
			setup: func(r *http.Request) { r.ContentLength = -1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if c := clientPoolCounts(tr, srv.addr); c.idle != 1 {
				t.Fatalf("%d idle connections before the request, want the 1 stale one", c.idle)
			}
			before := srv.accepted.Load()
			var body io.Reader
			if tc.body != nil {
				body = tc.body()
			}
			got, err := do(tc.method, body, tc.setup)
			if tc.retried {
				if err != nil || got != tc.wantBody {
					t.Fatalf("got %q, %v; want %q from a retry", got, err, tc.wantBody)
				}
				if n := srv.accepted.Load() - before; n != 1 {
					t.Fatalf("%d new connections, want 1", n)
				}
				return
			}
			if !errors.Is(err, ErrServerClosedIdle) {
				t.Fatalf("got %q, %v; want an error matching ErrServerClosedIdle", got, err)
			}
			if tb, ok := body.(*clientTestBody); ok {
				tb.waitClosed(t)
			}
			if n := srv.accepted.Load() - before; n != 0 {
				t.Fatalf("%d new connections, want none: the request must not be retried", n)
			}
			// Leave a stale connection for the next case.
			if _, err := do(http.MethodGet, nil, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestClientIdle408 has a server that times out each idle connection with
// a 408 before closing it, as nginx does.
func TestClientIdle408(t *testing.T) {
	// Once the test has the response (and the connection is idle in the
	// pool), the server sends its 408 and closes.
	timeOut, timedOut := make(chan struct{}), make(chan struct{})
	stop := make(chan struct{})
	srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		_, body, err := clientReadRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nok%s", len(body)+2, body)
		select {
		case <-timeOut:
		case <-stop:
			return
		}
		io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 7\r\n\r\ntimeout")
		timedOut <- struct{}{}
	})
	t.Cleanup(func() { close(stop) })
	tr := clientTestTransport(t, nil)
	url := "http://" + srv.addr + "/"
	idleOut := func() {
		t.Helper()
		if c := clientPoolCounts(tr, srv.addr); c.idle != 1 {
			t.Fatalf("%d idle connections, want 1", c.idle)
		}
		timeOut <- struct{}{}
		<-timedOut
	}
	clientGetBody(t, tr, url)
	idleOut()

	// The 408 is not taken for the answer: a GET, and a POST whose
	// body can be sent again, go out again on a new connection.
	resp, body := clientGetBody(t, tr, url)
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	idleOut()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("data"))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "okdata" {
		t.Fatalf("POST: %d %q", resp.StatusCode, b)
	}
	if n := srv.accepted.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
	idleOut()

	// One that cannot be sent again says so.
	before := srv.accepted.Load()
	req, _ = http.NewRequest(http.MethodPost, url, clientNewTestBody("data"))
	req.ContentLength = 4
	if _, err := tr.RoundTrip(req); !errors.Is(err, ErrServerClosedIdle) {
		t.Fatalf("POST without GetBody: %v, want ErrServerClosedIdle", err)
	}
	if srv.accepted.Load() != before {
		t.Fatal("a request that cannot be replayed was sent again")
	}

	// On a new connection a 408 is an answer like any other.
	srv408 := clientTestRawServer(t, clientServeFixed("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
	if resp, _ := clientGetBody(t, tr, "http://"+srv408.addr); resp.StatusCode != 408 {
		t.Fatalf("got %d, want the 408", resp.StatusCode)
	}
}

// clientEndlessBody is a streamed request body that never ends until it is
// closed, and counts the bytes read.
type clientEndlessBody struct {
	n      atomic.Int64
	closed chan struct{}
	once   sync.Once
}

func (b *clientEndlessBody) Read(p []byte) (int, error) {
	select {
	case <-b.closed:
		return 0, errors.New("read after close")
	default:
	}
	for i := range p {
		p[i] = 'x'
	}
	b.n.Add(int64(len(p)))
	return len(p), nil
}

func (b *clientEndlessBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

func TestClientEarlyResponse(t *testing.T) {
	tests := []struct {
		name string
		srv  func(t *testing.T) string
	}{
		{name: "net/http server answering 413", srv: func(t *testing.T) string {
			srv, _ := clientTestHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "close")
				http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			})
			return srv.URL
		}},
		{name: "server that answers and stops reading, connection left open", srv: func(t *testing.T) string {
			stop := make(chan struct{})
			srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
				<-stop
			})
			t.Cleanup(func() { close(stop) }) // before the server's cleanup, which waits for handlers
			return "http://" + srv.addr
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.srv(t)
			tr := clientTestTransport(t, nil)
			for _, length := range []int64{1 << 30, -1} {
				body := &clientEndlessBody{closed: make(chan struct{})}
				req, _ := http.NewRequest(http.MethodPost, url, body)
				req.ContentLength = length
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				req = req.WithContext(ctx)
				resp, err := tr.RoundTrip(req)
				if err != nil {
					cancel()
					t.Fatalf("length %d: %v", length, err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				cancel()
				if resp.StatusCode != 413 || !strings.Contains(string(b), "too large") || err != nil {
					t.Fatalf("length %d: got %d %q %v", length, resp.StatusCode, b, err)
				}
				select {
				case <-body.closed:
				case <-time.After(5 * time.Second):
					t.Fatalf("length %d: the request body was never closed: its writer is stuck", length)
				}
				if c := clientPoolCounts(tr, strings.TrimPrefix(url, "http://")); c.idle != 0 {
					t.Fatalf("length %d: the connection was pooled with its request unfinished", length)
				}
			}
		})
	}
}

func TestClientRequestBodyError(t *testing.T) {
	boom := errors.New("client went away")
	srv, _ := clientTestHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	})
	tr := clientTestTransport(t, nil)
	for _, length := range []int64{-1, 100} {
		body := &clientFailingBody{err: boom, closed: make(chan struct{})}
		req, _ := http.NewRequest(http.MethodPost, srv.URL, body)
		req.ContentLength = length
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("length %d: RoundTrip succeeded, want the body's error", length)
		}
		if !errors.Is(err, boom) {
			t.Fatalf("length %d: %v does not wrap the body's error", length, err)
		}
		<-body.closed
	}
	// A body shorter than its Content-Length.
	for _, body := range []io.Reader{clientNewTestBody("abc"), strings.NewReader("abc")} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, body)
		req.ContentLength = 10
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%T: RoundTrip succeeded with a short body", body)
		}
		if !errors.Is(err, clientErrShortBody) {
			t.Fatalf("%T: %v", body, err)
		}
	}
	if c := clientPoolCounts(tr, srv.Listener.Addr().String()); c.idle != 0 {
		t.Fatal("a connection with a broken request went back to the pool")
	}
}

// clientFailingBody sends a few bytes then fails.
type clientFailingBody struct {
	err    error
	sent   bool
	closed chan struct{}
	once   sync.Once
}

func (b *clientFailingBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, "abc"), nil
	}
	return 0, b.err
}

func (b *clientFailingBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

func TestClientCancel(t *testing.T) {
	// The server hangs on its first connection's request, and answers
	// with a body that stalls halfway on the second; later ones are
	// answered in full.
	srv := clientTestRawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		for {
			req, _, err := clientReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/hang":
				<-clientUntilClosed(c)
				return
			case "/stall":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
				<-clientUntilClosed(c)
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	url := "http://" + srv.addr
	tr := clientTestTransport(t, nil)

	check := func(t *testing.T, err error, start time.Time, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("error %v does not wrap %v", err, want)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %v to notice", d)
		}
		// The connection was not reused: the next request works, on a
		// connection of its own.
		before := srv.accepted.Load()
		clientGetBody(t, tr, url+"/")
		clientGetBody(t, tr, url+"/")
		if c := clientPoolCounts(tr, srv.addr); c.conns != 1 {
			t.Fatalf("%d connections left, want 1", c.conns)
		}
		if srv.accepted.Load() != before+1 {
			t.Fatalf("the connection of the cancelled request was reused")
		}
		tr.CloseIdleConnections()
	}

	t.Run("waiting for the response head", func(t *testing.T) {
		for _, want := range []error{context.Canceled, context.DeadlineExceeded} {
			ctx, cancel := context.WithCancel(context.Background())
			if want == context.DeadlineExceeded {
				ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
			} else {
				time.AfterFunc(50*time.Millisecond, cancel)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/hang", nil)
			start := time.Now()
			var err error
			clientWithin(t, "RoundTrip", func() { _, err = tr.RoundTrip(req) })
			cancel()
			check(t, err, start, want)
		}
	})
	t.Run("reading the body after RoundTrip returned", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/stall", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 10)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		clientWithin(t, "reading the body", func() { _, err = io.ReadAll(resp.Body) })
		resp.Body.Close()
		check(t, err, start, context.Canceled)
	})
	t.Run("with a request body being written", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		body := &clientEndlessBody{closed: make(chan struct{})}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/hang", body)
		req.ContentLength = -1
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		var err error
		clientWithin(t, "RoundTrip", func() { _, err = tr.RoundTrip(req) })
		<-body.closed
		check(t, err, start, context.Canceled)
	})
}

// clientUntilClosed returns a channel closed when the peer closes c (or
// the test's cleanup does); what comes meanwhile is read and dropped.
func clientUntilClosed(c net.Conn) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		io.Copy(io.Discard, c)
	}()
	return ch
}

func TestClientCancelDial(t *testing.T) {
	dialing := make(chan struct{}, 1)
	tr := clientTestTransport(t, nil)
	tr.DialContext = func(ctx context.Context, addr string) (net.Conn, error) {
		dialing <- struct{}{}
		<-ctx.Done()
		return nil, &clientTestDialError{addr: addr, err: ctx.Err()}
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-dialing; cancel() }()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://192.0.2.1:80/", nil)
	start := time.Now()
	_, err := tr.RoundTrip(req)
	var de *clientTestDialError
	if !errors.As(err, &de) || !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v: want the dialer's, wrapping context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	if c := clientPoolCounts(tr, "192.0.2.1:80"); c.conns != 0 {
		t.Fatalf("%d connections counted after a failed dial", c.conns)
	}
}

func TestClientDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	tr := clientTestTransport(t, func(tr *Transport) { tr.MaxConnsPerHost = 1 })
	for i := 0; i < 3; i++ { // the slot is given back each time
		body := clientNewTestBody("x")
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", body)
		_, err = tr.RoundTrip(req)
		var de *clientTestDialError
		if !errors.As(err, &de) {
			t.Fatalf("error %T %v: want the dialer's own type", err, err)
		}
		if !body.closed.Load() {
			t.Fatal("the request body was not closed")
		}
	}
}

func TestClientMaxConnsPerHost(t *testing.T) {
	var inFlight atomic.Int32
	release, releaseClose := make(chan struct{}), make(chan struct{})
	srv, accepted := clientTestHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		wait := release
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
			wait = releaseClose
		}
		select {
		case <-wait:
		case <-r.Context().Done():
		}
		io.WriteString(w, "done")
	})
	var closeRelease, closeReleaseClose sync.Once
	t.Cleanup(func() { // unblocks the handlers if the test fails early
		closeRelease.Do(func() { close(release) })
		closeReleaseClose.Do(func() { close(releaseClose) })
	})
	addr := srv.Listener.Addr().String()
	tr := clientTestTransport(t, func(tr *Transport) { tr.MaxConnsPerHost = 2 })

	results := make(chan error, 4)
	get := func(path string) {
		resp, err := clientGet(t, tr, srv.URL+path)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		results <- err
	}
	go get("/")
	go get("/close")
	clientWaitFor(t, "2 requests at the server", func() bool { return inFlight.Load() == 2 })
	go get("/")
	go get("/")
	clientWaitFor(t, "2 waiters", func() bool { return clientPoolCounts(tr, addr).waiters == 2 })

	// A waiter whose context ends gives up alone.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiter with a deadline: %v", err)
	}
	if n, w := inFlight.Load(), clientPoolCounts(tr, addr).waiters; n != 2 || w != 2 {
		t.Fatalf("%d requests at the server and %d waiting, want 2 and 2", n, w)
	}

	// A connection that closes gives its slot to the first waiter, which
	// dials.
	closeReleaseClose.Do(func() { close(releaseClose) })
	if err := <-results; err != nil {
		t.Fatal(err)
	}
	clientWaitFor(t, "a third connection", func() bool { return accepted.Load() == 3 })
	clientWaitFor(t, "the waiter's request at the server", func() bool { return inFlight.Load() == 2 })
	if c := clientPoolCounts(tr, addr); c.conns != 2 || c.waiters != 1 {
		t.Fatalf("pool: %+v, want 2 connections and 1 waiter", c)
	}

	// A connection that is kept goes straight to the last waiter.
	closeRelease.Do(func() { close(release) })
	for i := 0; i < 3; i++ {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if n := accepted.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
	if c := clientPoolCounts(tr, addr); c.conns != 2 || c.idle != 2 || c.waiters != 0 {
		t.Fatalf("pool: %+v, want 2 idle connections", c)
	}
}

func TestClientIdleConnTimeout(t *testing.T) {
	closed := make(chan time.Time, 4)
	srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := clientReadRequest(br); err != nil {
				closed <- time.Now()
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	const timeout = 100 * time.Millisecond
	tr := clientTestTransport(t, func(tr *Transport) { tr.IdleConnTimeout = timeout })
	clientGetBody(t, tr, "http://"+srv.addr)
	idleSince := time.Now()
	select {
	case at := <-closed:
		if d := at.Sub(idleSince); d < timeout/2 {
			t.Fatalf("the idle connection closed after %v, before its timeout", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the idle connection was never closed")
	}
	clientGetBody(t, tr, "http://"+srv.addr)
	if n := srv.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	// The janitor stops with no idle connection left (goleak checks).
	tr.CloseIdleConnections()
	clientWaitFor(t, "the janitor to stop", func() bool { return !tr.janitor.on.Load() })
}

func TestClientBodyClosedEarly(t *testing.T) {
	big := strings.Repeat("b", 1<<20)
	tests := []struct {
		name  string
		resp  string
		read  int
		reuse bool
	}{
		{"large body, partly read", "HTTP/1.1 200 OK\r\nContent-Length: " + fmt.Sprint(len(big)) + "\r\n\r\n" + big, 10, false},
		{"small body, unread but buffered", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("s", 100), 0, true},
		{"small chunked body, buffered", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n" +
			"5\r\nhello\r\n5\r\nworld\r\n0\r\nX-T: 1\r\n\r\n", 3, true},
		{"large chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(big), big), 3, false},
		{"close-delimited body", "HTTP/1.1 200 OK\r\n\r\nforever", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := clientTestRawServer(t, clientServeFixed(tc.resp))
			tr := clientTestTransport(t, nil)
			for i := 0; i < 2; i++ {
				resp, err := clientGet(t, tr, "http://"+srv.addr)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(resp.Body, make([]byte, tc.read)); err != nil {
					t.Fatal(err)
				}
				if err := resp.Body.Close(); err != nil {
					t.Fatal(err)
				}
				if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
					t.Fatal("Read after Close succeeded")
				}
				resp.Body.Close() // twice is fine
			}
			want := int32(2)
			if tc.reuse {
				want = 1
			}
			if n := srv.accepted.Load(); n != want {
				t.Fatalf("%d connections, want %d", n, want)
			}
		})
	}
}

func TestClientCloseDuringRead(t *testing.T) {
	srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, _, err := clientReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
		<-clientUntilClosed(c)
	})
	tr := clientTestTransport(t, nil)
	resp, err := clientGet(t, tr, "http://"+srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, func() { resp.Body.Close() })
	clientWithin(t, "a Read blocked when the body was closed", func() {
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Error("a Read blocked when the body was closed did not fail")
		}
	})
	if c := clientPoolCounts(tr, srv.addr); c.conns != 0 {
		t.Fatalf("%d connections left", c.conns)
	}
}

func TestClientConcurrent(t *testing.T) {
	srv, _ := clientTestHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Query().Get("chunked") != "" {
			w.(http.Flusher).Flush()
		}
		fmt.Fprintf(w, "%s:%s", r.URL.Path, b)
	})
	for _, maxConns := range []int{0, 3} {
		t.Run(fmt.Sprint("MaxConnsPerHost=", maxConns), func(t *testing.T) {
			tr := clientTestTransport(t, func(tr *Transport) { tr.MaxConnsPerHost = maxConns; tr.MaxIdleConnsPerHost = 4 })
			var wg sync.WaitGroup
			for g := 0; g < 16; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 30; i++ {
						path := fmt.Sprintf("/g%d/%d", g, i)
						var body io.Reader
						url := srv.URL + path
						switch i % 4 {
						case 1:
							body = strings.NewReader("in-memory")
						case 2:
							body = clientNewTestBody("streamed")
						case 3:
							url += "?chunked=1"
						}
						req, _ := http.NewRequest(http.MethodPost, url, body)
						if i%4 == 2 {
							req.ContentLength = -1
						}
						resp, err := tr.RoundTrip(req)
						if err != nil {
							t.Error(err)
							return
						}
						b, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						want := path + ":"
						if body != nil {
							want += map[int]string{1: "in-memory", 2: "streamed"}[i%4]
						}
						if err != nil || string(b) != want {
							t.Errorf("%s: %q %v, want %q", path, b, err, want)
							return
						}
					}
				}()
			}
			wg.Wait()
			if c := clientPoolCounts(tr, srv.Listener.Addr().String()); (maxConns > 0 && c.conns > maxConns) || c.idle > 4 {
				t.Fatalf("pool: %+v", c)
			}
		})
	}
}

func TestClientCloseIdleConnections(t *testing.T) {
	srv, _ := clientTestHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {})
	tr := clientTestTransport(t, nil)
	clientGetBody(t, tr, srv.URL)
	addr := srv.Listener.Addr().String()
	if c := clientPoolCounts(tr, addr); c.idle != 1 {
		t.Fatalf("%d idle connections, want 1", c.idle)
	}
	tr.CloseIdleConnections()
	if c := clientPoolCounts(tr, addr); c.idle != 0 || c.conns != 0 {
		t.Fatalf("after CloseIdleConnections: %+v", c)
	}
	if _, ok := tr.pools.Load(addr); ok {
		t.Fatal("an empty pool stayed in the Transport")
	}
	clientWaitFor(t, "the janitor to stop", func() bool { return !tr.janitor.on.Load() })
	clientGetBody(t, tr, srv.URL) // the Transport still works
}

func TestClientHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:8080": "10.0.0.1:8080",
		"example.com":   "example.com:80",
		"[::1]:9000":    "[::1]:9000",
		"[::1]":         "[::1]:80",
	} {
		if got := clientHostPort(in); got != want {
			t.Errorf("clientHostPort(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestClientIdleClosedByUpstream: an upstream that closes an idle
// connection (its own idle timeout) gets it closed by the Transport too
// within a few probe intervals, long before IdleConnTimeout: meshd must not
// hold half-closed sockets until their next use.
func TestClientIdleClosedByUpstream(t *testing.T) {
	srv := clientTestRawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, _, err := clientReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		time.Sleep(50 * time.Millisecond)
		c.Close()
	})
	tr := clientTestTransport(t, func(tr *Transport) { tr.IdleConnTimeout = time.Hour })
	clientGetBody(t, tr, "http://"+srv.addr)
	idle := func() int {
		n := 0
		tr.pools.Range(func(_, v any) bool {
			p := v.(*clientPool)
			p.mu.Lock()
			n += len(p.idle)
			p.mu.Unlock()
			return true
		})
		return n
	}
	if n := idle(); n != 1 {
		t.Fatalf("%d idle connections after the first request, want 1", n)
	}
	clientWaitFor(t, "the closed idle connection to leave the pool", func() bool { return idle() == 0 })
	// The next request gets a fresh connection, at once.
	clientGetBody(t, tr, "http://"+srv.addr)
	if n := srv.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	tr.CloseIdleConnections()
	clientWaitFor(t, "the janitor to stop", func() bool { return !tr.janitor.on.Load() })
}
