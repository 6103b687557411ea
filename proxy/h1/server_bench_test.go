package h1

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// benchHandler answers every request with the same 1 KiB body, as a
// proxied response would come: with its own Content-Type and length.
func benchHandler() http.Handler {
	body := []byte(strings.Repeat("x", 1024))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/plain")
		h.Set("Content-Length", "1024")
		_, _ = w.Write(body)
	})
}

const benchRequest = "GET /api/v1/items?id=42 HTTP/1.1\r\n" +
	"Host: service.mesh.local\r\n" +
	"User-Agent: bench/1.0\r\n" +
	"Accept: */*\r\n" +
	"Accept-Encoding: gzip\r\n" +
	"X-Request-Id: 5f0c4a2e-9d6b-4c1a-8e2f-3b7d9a1c6e40\r\n" +
	"\r\n"

// benchServe runs serve on a loopback listener, and one keep-alive
// client that sends benchRequest and reads its 1 KiB answer b.N times.
func benchServe(b *testing.B, serve func(net.Listener), stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		serve(ln)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	br := bufio.NewReader(c)
	req := []byte(benchRequest)
	// A client that allocates nothing, so that allocs/op are the server's:
	// the head is skipped line by line, the body by its known length.
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) == 2 {
				break
			}
		}
		if n, err := br.Discard(1024); err != nil || n != 1024 {
			b.Fatalf("%d bytes: %v", n, err)
		}
	}
	roundTrip()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		roundTrip()
	}
	b.StopTimer()
	_ = c.Close()
	_ = ln.Close()
	stop()
	wg.Wait()
}

// BenchmarkServerLoopback: one request and response at a time over a
// loopback keep-alive connection, this package's Server.
func BenchmarkServerLoopback(b *testing.B) {
	srv := &Server{Handler: benchHandler()}
	var conns sync.WaitGroup
	benchServe(b, func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				srv.ServeConn(context.Background(), c)
			}()
		}
	}, func() {
		_ = srv.Close()
		conns.Wait()
	})
}

// BenchmarkNetHTTPServerLoopback is BenchmarkServerLoopback with
// net/http's server, for comparison.
func BenchmarkNetHTTPServerLoopback(b *testing.B) {
	srv := &http.Server{Handler: benchHandler()}
	benchServe(b, func(ln net.Listener) { _ = srv.Serve(ln) }, func() { _ = srv.Close() })
}

// BenchmarkHeadParse parses a typical request head in memory.
func BenchmarkHeadParse(b *testing.B) {
	b.ReportAllocs()
	for range b.N {
		var req http.Request
		var u url.URL
		if _, err := headParse(benchRequest, &req, &u); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeadParseNetHTTP is BenchmarkHeadParse with http.ReadRequest,
// for comparison.
func BenchmarkHeadParseNetHTTP(b *testing.B) {
	b.ReportAllocs()
	r := strings.NewReader(benchRequest)
	br := bufio.NewReader(r)
	for range b.N {
		r.Reset(benchRequest)
		br.Reset(r)
		if _, err := http.ReadRequest(br); err != nil {
			b.Fatal(err)
		}
	}
}
