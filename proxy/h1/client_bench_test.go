package h1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"

	"github.com/meshd/meshd/internal/fixedhttp"
)

// clientBenchBody is the 1 KiB response body of the benchmarks.
var clientBenchBody = bytes.Repeat([]byte("0123456789abcdef"), 64)

// clientBenchRawServer answers every request with a fixed 1 KiB response
// without allocating, so that allocs/op counts the client's own.
func clientBenchRawServer(b *testing.B) string {
	resp := append([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "+
		strconv.Itoa(len(clientBenchBody))+"\r\n\r\n"), clientBenchBody...)
	return "http://" + fixedhttp.Start(b, resp) + "/bench?q=1"
}

func clientBenchHTTPServer(b *testing.B) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{strconv.Itoa(len(clientBenchBody))}
		w.Write(clientBenchBody)
	}))
	b.Cleanup(srv.Close)
	return srv.URL + "/bench?q=1"
}

// clientBenchTransports are the two clients compared: this package's and
// net/http's, configured as meshd configures its upstream client.
func clientBenchTransports(b *testing.B) []struct {
	name string
	rt   http.RoundTripper
} {
	var d net.Dialer
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	h1 := &Transport{DialContext: dial, MaxIdleConnsPerHost: 256}
	std := &http.Transport{
		DialContext:         func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) },
		MaxIdleConnsPerHost: 256,
		DisableCompression:  true,
	}
	b.Cleanup(h1.CloseIdleConnections)
	b.Cleanup(std.CloseIdleConnections)
	return []struct {
		name string
		rt   http.RoundTripper
	}{{"h1", h1}, {"net-http", std}}
}

// clientBenchGet is one keep-alive GET whose 1 KiB body is read and closed.
func clientBenchGet(b *testing.B, rt http.RoundTripper, req *http.Request) {
	resp, err := rt.RoundTrip(req)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != int64(len(clientBenchBody)) {
		b.Fatalf("read %d bytes: %v", n, err)
	}
}

func clientBenchRequest(b *testing.B, rawURL string, ctx context.Context) *http.Request {
	u, err := url.Parse(rawURL)
	if err != nil {
		b.Fatal(err)
	}
	req := (&http.Request{Method: http.MethodGet, URL: u, Host: u.Host, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Accept": {"*/*"}, "User-Agent": {"bench"}, "X-Request-Id": {"0f8e2a9c-3b1d-4c5e-9a7b-6d2f1e0c8b4a"}}}).WithContext(ctx)
	return req
}

// BenchmarkClientGet compares keep-alive GETs of a 1 KiB body over loopback
// TCP, serial and parallel, with a cancellable request context (as
// requests proxied by net/http's server have) and without one. The "raw"
// server allocates nothing, so allocs/op there are the client's alone.
func BenchmarkClientGet(b *testing.B) {
	for _, server := range []struct {
		name  string
		start func(*testing.B) string
	}{{"server=raw", clientBenchRawServer}, {"server=net-http", clientBenchHTTPServer}} {
		b.Run(server.name, func(b *testing.B) {
			target := server.start(b)
			for _, tr := range clientBenchTransports(b) {
				for _, cancellable := range []bool{false, true} {
					name := tr.name
					if cancellable {
						name += "/ctx=cancel"
					}
					newCtx := func() (context.Context, context.CancelFunc) {
						if cancellable {
							return context.WithCancel(context.Background())
						}
						return context.Background(), func() {}
					}
					b.Run(name+"/serial", func(b *testing.B) {
						ctx, cancel := newCtx()
						defer cancel()
						req := clientBenchRequest(b, target, ctx)
						b.ReportAllocs()
						for b.Loop() {
							clientBenchGet(b, tr.rt, req)
						}
					})
					b.Run(name+"/parallel", func(b *testing.B) {
						b.ReportAllocs()
						b.RunParallel(func(pb *testing.PB) {
							ctx, cancel := newCtx()
							defer cancel()
							req := clientBenchRequest(b, target, ctx)
							for pb.Next() {
								clientBenchGet(b, tr.rt, req)
							}
						})
					})
				}
			}
		})
	}
}

// BenchmarkClientPost1K compares a keep-alive POST of a 1 KiB in-memory
// body (written with the head, on the caller's goroutine) and of a
// streamed one (written by a goroutine of its own).
func BenchmarkClientPost1K(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Length"] = []string{strconv.Itoa(len(clientBenchBody))}
		w.Write(clientBenchBody)
	}))
	b.Cleanup(srv.Close)
	for _, tr := range clientBenchTransports(b) {
		for _, streamed := range []bool{false, true} {
			name := tr.name + "/in-memory"
			if streamed {
				name = tr.name + "/streamed"
			}
			b.Run(name, func(b *testing.B) {
				req := clientBenchRequest(b, srv.URL, context.Background())
				req.Method = http.MethodPost
				req.ContentLength = int64(len(clientBenchBody))
				var r bytes.Reader
				body := io.NopCloser(&r)
				if streamed {
					body = io.NopCloser(struct{ io.Reader }{&r})
				}
				b.ReportAllocs()
				for b.Loop() {
					r.Reset(clientBenchBody)
					req.Body = body
					clientBenchGet(b, tr.rt, req)
				}
			})
		}
	}
}

// BenchmarkClientParseHead compares this package's response head parser
// with http.ReadResponse on a typical upstream response head.
func BenchmarkClientParseHead(b *testing.B) {
	head := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n" +
		"date: Mon, 02 Jan 2026 15:04:05 GMT\r\nserver: envoy\r\nx-envoy-upstream-service-time: 3\r\n" +
		"Cache-Control: no-cache\r\nX-Request-Id: 0f8e2a9c-3b1d-4c5e-9a7b-6d2f1e0c8b4a\r\nVary: Accept-Encoding\r\n\r\n"
	req := &http.Request{Method: http.MethodGet}
	raw := []byte(head)
	b.Run("h1", func(b *testing.B) {
		var src bytes.Reader
		cc := &clientConn{br: bufio.NewReaderSize(&src, clientBufSize)}
		b.ReportAllocs()
		for b.Loop() {
			src.Reset(raw)
			cc.br.Reset(&src)
			var h clientHead
			var fb [32]clientField
			fields, _, err := cc.readHead(&h, fb[:0], 1<<20, true)
			if err != nil {
				b.Fatal(err)
			}
			resp := &http.Response{Status: h.status, StatusCode: h.code, Proto: h.proto, ProtoMajor: 1,
				ProtoMinor: h.minor, Header: clientHeader(h.s, fields, nil), Request: req}
			if _, err := clientFrame(resp, req.Method); err != nil || resp.ContentLength != 1024 {
				b.Fatal(err)
			}
		}
	})
	b.Run("net-http", func(b *testing.B) {
		var src bytes.Reader
		br := bufio.NewReaderSize(&src, clientBufSize)
		b.ReportAllocs()
		for b.Loop() {
			src.Reset(raw)
			br.Reset(&src)
			resp, err := http.ReadResponse(br, req)
			if err != nil || resp.ContentLength != 1024 {
				b.Fatal(err)
			}
		}
	})
}
