package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testServer is a Server behind a loopback listener, stopped at the end of
// its test: listener closed, Server closed, every ServeConn returned.
type testServer struct {
	srv      *Server
	addr     string
	accepted atomic.Int32
	calls    atomic.Int32 // handler calls
	logs     *syncBuffer
}

// startServer serves h (counted in calls) with srv's settings.
func startServer(t *testing.T, srv *Server, h http.HandlerFunc) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, addr: ln.Addr().String(), logs: &syncBuffer{}}
	if srv.ErrorLog == nil {
		srv.ErrorLog = log.New(ts.logs, "", 0)
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.calls.Add(1)
		h(w, r)
	})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(context.Background(), c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		_ = srv.Close()
		wg.Wait()
	})
	return ts
}

// dial opens a client connection that the test closes at its end; every
// read and write must be done within 5 seconds.
func (ts *testServer) dial(t *testing.T) *testClient {
	t.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return &testClient{t: t, c: c.(*net.TCPConn), br: bufio.NewReader(c)}
}

type testClient struct {
	t  *testing.T
	c  *net.TCPConn
	br *bufio.Reader
}

func (tc *testClient) send(s string) {
	tc.t.Helper()
	if _, err := io.WriteString(tc.c, s); err != nil {
		tc.t.Fatalf("write: %v", err)
	}
}

// response reads one response to a request with the given method.
func (tc *testClient) response(method string) *http.Response {
	tc.t.Helper()
	resp, err := http.ReadResponse(tc.br, &http.Request{Method: method})
	if err != nil {
		tc.t.Fatalf("reading response: %v", err)
	}
	return resp
}

// body reads a response's whole body.
func (tc *testClient) body(resp *http.Response) string {
	tc.t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tc.t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

// roundTrip sends a GET-like request and returns its response and body.
func (tc *testClient) roundTrip(req string) (*http.Response, string) {
	tc.t.Helper()
	tc.send(req)
	method, _, _ := strings.Cut(req, " ")
	resp := tc.response(method)
	return resp, tc.body(resp)
}

// rest reads everything up to the connection's end.
func (tc *testClient) rest() string {
	tc.t.Helper()
	b, err := io.ReadAll(tc.br)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		tc.t.Fatalf("reading to the end: %v", err)
	}
	return string(b)
}

// closed checks that the server ended the connection: nothing more comes
// but its end.
func (tc *testClient) closed() {
	tc.t.Helper()
	if rest := tc.rest(); rest != "" {
		tc.t.Fatalf("more after the response: %q", rest)
	}
}

// open checks that the connection is still open a moment later.
func (tc *testClient) open(d time.Duration) {
	tc.t.Helper()
	_ = tc.c.SetReadDeadline(time.Now().Add(d))
	_, err := tc.br.Peek(1)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		tc.t.Fatalf("connection not open and idle: %v", err)
	}
	_ = tc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// syncBuffer is a bytes.Buffer for a log written on several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// wrapped is how meshd wraps the ResponseWriter: http.ResponseController
// finds Flush and Hijack through Unwrap.
type wrapped struct{ http.ResponseWriter }

func (w wrapped) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func ok(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }
