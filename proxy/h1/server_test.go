package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every request head the server must refuse: the status, the connection
// closed, and the handler never called.
func TestServerRefusesHeads(t *testing.T) {
	const host = "Host: a\r\n"
	long := strings.Repeat("x", 300)
	cases := []struct {
		name   string
		req    string
		status int
	}{
		// Line endings (RFC 9112 §2.2).
		{"bare LF after request line", "GET / HTTP/1.1\n" + host + "\r\n", 400},
		{"bare LF after field", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400},
		{"bare LF ending head", "GET / HTTP/1.1\r\n" + host + "\n", 400},
		{"bare LF only", "GET / HTTP/1.1\nHost: a\n\n", 400},
		{"bare LF before request line", "\nGET / HTTP/1.1\r\n" + host + "\r\n", 400},
		{"bare CR before request line", "\rGET / HTTP/1.1\r\n" + host + "\r\n", 400},
		{"bare CR in value", "GET / HTTP/1.1\r\n" + host + "X: a\rb\r\n\r\n", 400},
		{"bare CR in request line", "GET /\r HTTP/1.1\r\n" + host + "\r\n", 400},
		{"bare CR ending field", "GET / HTTP/1.1\r\n" + host + "X: a\r\r\n\r\n", 400},
		// Field lines (RFC 9112 §5, RFC 9110 §5).
		{"obs-fold SP", "GET / HTTP/1.1\r\n" + host + "X: a\r\n b\r\n\r\n", 400},
		{"obs-fold HTAB", "GET / HTTP/1.1\r\n" + host + "X: a\r\n\tb\r\n\r\n", 400},
		{"fold as first field", "GET / HTTP/1.1\r\n " + host + "\r\n", 400},
		{"SP before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
		{"HTAB before colon", "GET / HTTP/1.1\r\n" + host + "X\t: a\r\n\r\n", 400},
		{"empty field name", "GET / HTTP/1.1\r\n" + host + ": a\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\n" + host + "X a\r\n\r\n", 400},
		{"field name not a token", "GET / HTTP/1.1\r\n" + host + "X@Y: a\r\n\r\n", 400},
		{"field name with SP", "GET / HTTP/1.1\r\n" + host + "X Y: a\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\n" + host + "X: a\x00b\r\n\r\n", 400},
		{"CTL in value", "GET / HTTP/1.1\r\n" + host + "X: a\x01b\r\n\r\n", 400},
		{"DEL in value", "GET / HTTP/1.1\r\n" + host + "X: a\x7fb\r\n\r\n", 400},
		{"ESC in value", "GET / HTTP/1.1\r\n" + host + "X: \x1b[31m\r\n\r\n", 400},
		// Request line (RFC 9112 §3).
		{"double SP", "GET  / HTTP/1.1\r\n" + host + "\r\n", 400},
		// Absolute-form must name a host (RFC 9110 §4.2.1).
		{"http URI without authority", "POST http:b/x HTTP/1.1\r\n" + host + "\r\n", 400},
		{"http URI with empty host", "GET http:///x HTTP/1.1\r\n" + host + "\r\n", 400},
		{"non-http absolute URI", "GET mailto:x@y HTTP/1.1\r\n" + host + "\r\n", 400},
		{"ftp absolute URI", "GET ftp://h/x HTTP/1.1\r\n" + host + "\r\n", 400},
		{"SP before version", "GET /  HTTP/1.1\r\n" + host + "\r\n", 400},
		{"trailing SP", "GET / HTTP/1.1 \r\n" + host + "\r\n", 400},
		{"two parts", "GET /\r\n" + host + "\r\n", 400},
		{"four parts", "GET / x HTTP/1.1\r\n" + host + "\r\n", 400},
		{"HTAB separator", "GET\t/ HTTP/1.1\r\n" + host + "\r\n", 400},
		{"method not a token", "G@T / HTTP/1.1\r\n" + host + "\r\n", 400},
		{"no method", " / HTTP/1.1\r\n" + host + "\r\n", 400},
		{"lowercase version", "GET / http/1.1\r\n" + host + "\r\n", 400},
		{"version 1.10", "GET / HTTP/1.10\r\n" + host + "\r\n", 400},
		{"version 1", "GET / HTTP/1\r\n" + host + "\r\n", 400},
		{"version 01.1", "GET / HTTP/01.1\r\n" + host + "\r\n", 400},
		{"HTTP/2.0", "GET / HTTP/2.0\r\n" + host + "\r\n", 505},
		{"HTTP/0.9", "GET / HTTP/0.9\r\n" + host + "\r\n", 505},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
		{"CTL in target", "GET /a\x01b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"relative target", "GET a/b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"asterisk for GET", "GET * HTTP/1.1\r\n" + host + "\r\n", 400},
		{"bad escape in target", "GET /a%zz HTTP/1.1\r\n" + host + "\r\n", 400},
		{"CONNECT with userinfo", "CONNECT u@a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 400},
		{"CONNECT with path", "CONNECT a:443/x HTTP/1.1\r\nHost: a:443\r\n\r\n", 400},
		// Host (RFC 9112 §3.2).
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400},
		{"two Hosts in 1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"malformed Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"CONNECT without Host", "CONNECT a:443 HTTP/1.1\r\n\r\n", 400},
		// Framing, request smuggling (RFC 9112 §6).
		{"CL and TE", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE and CL", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
		{"TE hidden by obs-fold", "POST / HTTP/1.1\r\n" + host + "X: y\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
		{"TE value folded", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE with SP before colon", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"TE after bare LF", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"differing CLs", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
		{"CL list", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5, 5\r\n\r\nhello", 400},
		{"negative CL", "POST / HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n", 400},
		{"CL with sign", "POST / HTTP/1.1\r\n" + host + "Content-Length: +5\r\n\r\nhello", 400},
		{"CL hex", "POST / HTTP/1.1\r\n" + host + "Content-Length: 0x5\r\n\r\nhello", 400},
		{"empty CL", "POST / HTTP/1.1\r\n" + host + "Content-Length: \r\n\r\n", 400},
		{"CL overflow", "POST / HTTP/1.1\r\n" + host + "Content-Length: 99999999999999999999\r\n\r\n", 400},
		{"TE chunked, identity", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400},
		{"TE identity", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: identity\r\n\r\n", 400},
		{"TE xchunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE chunked twice", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
		{"two TE fields", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"Trailer declares CL", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n", 400},
		// Expectations (RFC 9110 §10.1.1).
		{"unknown expectation", "POST / HTTP/1.1\r\n" + host + "Expect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417},
		// Size.
		{"head too large", "GET / HTTP/1.1\r\n" + host + "X: " + long + "\r\n\r\n", 431},
		{"request line too large", "GET /" + long + " HTTP/1.1\r\n" + host + "\r\n", 431},
		{"too many empty lines", strings.Repeat("\r\n", 200) + "GET / HTTP/1.1\r\n" + host + "\r\n", 431},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, &Server{MaxHeaderBytes: 256}, ok)
			c := ts.dial(t)
			c.send(tc.req)
			resp := c.response("GET")
			body := c.body(resp)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d (%q)", resp.StatusCode, tc.status, body)
			}
			if !resp.Close {
				t.Errorf("no Connection: close: %v", resp.Header)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q", ct)
			}
			if !strings.HasPrefix(body, strconv.Itoa(tc.status)+" ") {
				t.Errorf("body %q", body)
			}
			c.closed()
			if n := ts.calls.Load(); n != 0 {
				t.Errorf("handler called %d times", n)
			}
		})
	}
}

// A refused request after good ones on the same connection: the good
// ones are answered, the bad one refused, what follows never served.
func TestServerRefusesAfterGoodRequests(t *testing.T) {
	ts := startServer(t, &Server{}, ok)
	c := ts.dial(t)
	c.send("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp := c.response("GET"); resp.StatusCode != 200 || c.body(resp) != "ok" {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	if resp := c.response("GET"); resp.StatusCode != 400 {
		t.Fatalf("second: %d", resp.StatusCode)
	} else {
		c.body(resp)
	}
	c.closed()
	if n := ts.calls.Load(); n != 1 {
		t.Fatalf("handler called %d times", n)
	}
}

// What the handler sees of valid requests, the forms of request targets
// included.
func TestServerRequestFields(t *testing.T) {
	type seen struct {
		Method, Host, RequestURI, Proto, RemoteAddr string
		ProtoMajor, ProtoMinor                      int
		URL                                         url.URL
		Header                                      http.Header
		ContentLength                               int64
		TransferEncoding                            []string
		Close                                       bool
		NoBody                                      bool
	}
	cases := []struct {
		name string
		req  string
		want seen
	}{
		{"origin-form", "GET /a/b?c=d&e HTTP/1.1\r\nHost: example.com\r\nUser-Agent: x\r\naccept: */*\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n", seen{
			Method: "GET", Host: "example.com", RequestURI: "/a/b?c=d&e", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL:    url.URL{Path: "/a/b", RawQuery: "c=d&e"},
			Header: http.Header{"User-Agent": {"x"}, "Accept": {"*/*"}, "X-Multi": {"1", "2"}}, NoBody: true,
		}},
		{"escaped path", "GET /a%2Fb%20c?q HTTP/1.1\r\nHost: a\r\n\r\n", seen{
			Method: "GET", Host: "a", RequestURI: "/a%2Fb%20c?q", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL:    url.URL{Path: "/a/b c", RawPath: "/a%2Fb%20c", RawQuery: "q"},
			Header: http.Header{}, NoBody: true,
		}},
		{"absolute-form", "GET http://example.com:8080/x?y HTTP/1.1\r\nHost: other\r\n\r\n", seen{
			Method: "GET", Host: "example.com:8080", RequestURI: "http://example.com:8080/x?y", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL:    url.URL{Scheme: "http", Host: "example.com:8080", Path: "/x", RawQuery: "y"},
			Header: http.Header{}, NoBody: true,
		}},
		{"authority-form", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", seen{
			Method: "CONNECT", Host: "example.com:443", RequestURI: "example.com:443", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL:    url.URL{Host: "example.com:443"},
			Header: http.Header{}, NoBody: true,
		}},
		{"asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", seen{
			Method: "OPTIONS", Host: "a", RequestURI: "*", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL:    url.URL{Path: "*"},
			Header: http.Header{}, NoBody: true,
		}},
		{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", seen{
			Method: "GET", RequestURI: "/", Proto: "HTTP/1.0", ProtoMajor: 1, ProtoMinor: 0,
			URL: url.URL{Path: "/"}, Header: http.Header{}, Close: true, NoBody: true,
		}},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", seen{
			Method: "GET", RequestURI: "/", Proto: "HTTP/1.0", ProtoMajor: 1, ProtoMinor: 0,
			URL: url.URL{Path: "/"}, Header: http.Header{"Connection": {"keep-alive"}}, NoBody: true,
		}},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", seen{
			Method: "GET", Host: "a", RequestURI: "/", Proto: "HTTP/1.2", ProtoMajor: 1, ProtoMinor: 2,
			URL: url.URL{Path: "/"}, Header: http.Header{}, NoBody: true,
		}},
		{"leading empty lines", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", seen{
			Method: "GET", Host: "a", RequestURI: "/", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL: url.URL{Path: "/"}, Header: http.Header{}, NoBody: true,
		}},
		{"OWS and empty value", "GET / HTTP/1.1\r\nHost:a\r\nX-A: \t v w \t\r\nX-Empty:\r\nX-Obs: caf\xe9\r\n\r\n", seen{
			Method: "GET", Host: "a", RequestURI: "/", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL: url.URL{Path: "/"}, Header: http.Header{"X-A": {"v w"}, "X-Empty": {""}, "X-Obs": {"caf\xe9"}}, NoBody: true,
		}},
		{"identical CLs", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", seen{
			Method: "POST", Host: "a", RequestURI: "/p", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL: url.URL{Path: "/p"}, Header: http.Header{"Content-Length": {"3"}}, ContentLength: 3,
		}},
		{"CL 0", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", seen{
			Method: "POST", Host: "a", RequestURI: "/p", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL: url.URL{Path: "/p"}, Header: http.Header{"Content-Length": {"0"}}, NoBody: true,
		}},
		{"chunked", "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n0\r\n\r\n", seen{
			Method: "POST", Host: "a", RequestURI: "/p", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL: url.URL{Path: "/p"}, Header: http.Header{"Connection": {"close"}}, ContentLength: -1,
			TransferEncoding: []string{"chunked"}, Close: true,
		}},
		{"Pragma no-cache", "GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n", seen{
			Method: "GET", Host: "a", RequestURI: "/", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			URL: url.URL{Path: "/"}, Header: http.Header{"Pragma": {"no-cache"}, "Cache-Control": {"no-cache"}}, NoBody: true,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan seen, 1)
			ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				got <- seen{r.Method, r.Host, r.RequestURI, r.Proto, r.RemoteAddr, r.ProtoMajor, r.ProtoMinor,
					*r.URL, r.Header, r.ContentLength, r.TransferEncoding, r.Close, r.Body == http.NoBody}
			})
			c := ts.dial(t)
			c.send(tc.req)
			if resp := c.response("GET"); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			s := <-got
			if s.RemoteAddr != c.c.LocalAddr().String() {
				t.Errorf("RemoteAddr %q, want %q", s.RemoteAddr, c.c.LocalAddr())
			}
			s.RemoteAddr = ""
			if !reflect.DeepEqual(s, tc.want) {
				t.Errorf("got  %+v\nwant %+v", s, tc.want)
			}
		})
	}
}

// Keep-alive: several requests on one connection, bodies of all kinds in
// between, one connection accepted.
func TestServerKeepAlive(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("body: %v", err)
		}
		_, _ = fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	})
	c := ts.dial(t)
	reqs := []struct{ req, want string }{
		{"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n", "GET /1 "},
		{"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", "POST /2 hello"},
		{"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n", "POST /3 abcde"},
		{"\r\nGET /4 HTTP/1.1\r\nHost: a\r\n\r\n", "GET /4 "},
		{"GET /5 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET /5 "},
	}
	for _, r := range reqs {
		resp, body := c.roundTrip(r.req)
		if resp.StatusCode != 200 || body != r.want || resp.Close {
			t.Fatalf("%q: %d %q close=%v", r.req, resp.StatusCode, body, resp.Close)
		}
	}
	c.open(50 * time.Millisecond)
	if n := ts.accepted.Load(); n != 1 {
		t.Fatalf("%d connections", n)
	}
}

// Pipelined requests are answered in order, each once.
// SetHeader takes a whole header in place of the response's: its fields
// win, fields set before and not in it stay.
func TestServerSetHeader(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/set-first" {
			w.Header().Set("A", "before")
			w.Header().Set("B", "before")
		}
		w.(interface{ SetHeader(http.Header) }).SetHeader(http.Header{"B": {"set"}, "C": {"set"}})
		w.Header().Set("D", "after") // Header is the set one from now on
		_, _ = io.WriteString(w, "ok")
	})
	c := ts.dial(t)
	for _, tc := range []struct {
		path    string
		a, b, d string
	}{
		{"/set-first", "before", "set", "after"},
		{"/none-first", "", "set", "after"},
	} {
		resp, body := c.roundTrip("GET " + tc.path + " HTTP/1.1\r\nHost: a\r\n\r\n")
		h := resp.Header
		if body != "ok" || h.Get("A") != tc.a || h.Get("B") != tc.b || h.Get("C") != "set" || h.Get("D") != tc.d {
			t.Errorf("%s: body %q, header %v; want A=%q B=%q C=set D=%q", tc.path, body, h, tc.a, tc.b, tc.d)
		}
	}
}

func TestServerPipelining(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "%s:%s", r.URL.Path, b)
	})
	c := ts.dial(t)
	var all strings.Builder
	for i := range 20 {
		if i%3 == 0 {
			fmt.Fprintf(&all, "POST /%d HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nxy", i)
		} else {
			fmt.Fprintf(&all, "GET /%d HTTP/1.1\r\nHost: a\r\n\r\n", i)
		}
	}
	c.send(all.String())
	for i := range 20 {
		resp := c.response("GET")
		want := fmt.Sprintf("/%d:", i)
		if i%3 == 0 {
			want += "xy"
		}
		if body := c.body(resp); body != want {
			t.Fatalf("response %d: %q, want %q", i, body, want)
		}
	}
	if n := ts.calls.Load(); n != 20 {
		t.Fatalf("%d calls", n)
	}
}

// A chunked request body with trailers: declared ones announced before the
// body is read, all of them in req.Trailer once it has ended.
func TestServerChunkedRequestTrailers(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Trailer["X-Sum"]; r.URL.Path == "/declared" && (!ok || r.Trailer.Get("X-Sum") != "") {
			t.Errorf("Trailer before the body: %v", r.Trailer)
		}
		if r.Header.Get("Trailer") != "" || r.Header.Get("Transfer-Encoding") != "" {
			t.Errorf("header: %v", r.Header)
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("body: %v", err)
		}
		_, _ = fmt.Fprintf(w, "%s|%s|%s|%v", b, r.Trailer.Get("X-Sum"), r.Trailer.Get("X-Other"), r.Trailer["Content-Type"])
	})
	c := ts.dial(t)
	_, body := c.roundTrip("POST /declared HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n" +
		"5\r\nhello\r\n1 ; a=b\r\n!\r\n0\r\nX-Sum: 42\r\nx-other:  y \r\nContent-Type: dropped\r\n\r\n")
	if body != "hello!|42|y|[]" {
		t.Fatalf("body %q", body)
	}
	// And the connection carries the next one.
	if _, body := c.roundTrip("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"); body != "|||[]" {
		t.Fatalf("second body %q", body)
	}
}

// Malformed chunked bodies: the handler's read fails, and the connection
// is not used again.
func TestServerMalformedChunkedBody(t *testing.T) {
	cases := []struct{ name, body string }{
		{"bad size", "z\r\nhello\r\n0\r\n\r\n"},
		{"no size", "\r\nhello\r\n0\r\n\r\n"},
		{"size with SP garbage", "5 x\r\nhello\r\n0\r\n\r\n"},
		{"size overflow", "fffffffffffffffff\r\nx\r\n0\r\n\r\n"},
		{"bare LF after size", "5\nhello\r\n0\r\n\r\n"},
		{"data longer than size", "3\r\nhello\r\n0\r\n\r\n"},
		{"bare LF after data", "5\r\nhello\n0\r\n\r\n"},
		{"CTL in extension", "5;a\x01\r\nhello\r\n0\r\n\r\n"},
		{"obs-fold in trailer", "5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n"},
		{"bare LF in trailer", "5\r\nhello\r\n0\r\nX: a\n\r\n"},
		{"bad trailer name", "5\r\nhello\r\n0\r\nX Y: a\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
				_, err := io.ReadAll(r.Body)
				if !errors.Is(err, errSrvChunk) {
					t.Errorf("body error %v", err)
				}
				w.WriteHeader(400)
			})
			c := ts.dial(t)
			c.send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + tc.body + "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			resp := c.response("POST")
			if resp.StatusCode != 400 || !resp.Close {
				t.Fatalf("status %d close=%v", resp.StatusCode, resp.Close)
			}
			c.body(resp)
			c.closed()
			if n := ts.calls.Load(); n != 1 {
				t.Fatalf("%d calls", n)
			}
		})
	}
}

// A body shorter than its Content-Length is the client's error.
func TestServerShortBody(t *testing.T) {
	errc := make(chan error, 1)
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		errc <- err
	})
	c := ts.dial(t)
	c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
	_ = c.c.CloseWrite()
	if err := <-errc; !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("body error %v", err)
	}
	resp := c.response("POST")
	if !resp.Close {
		t.Fatal("connection kept")
	}
	c.body(resp)
	c.closed()
}

// A body the handler did not read: a small rest is dropped and the
// connection kept, a large one closes it, announced.
func TestServerUnreadBody(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			if err := r.Body.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			if _, err := r.Body.Read(make([]byte, 1)); !errors.Is(err, http.ErrBodyReadAfterClose) {
				t.Errorf("read after close: %v", err)
			}
		}
		ok(w, r)
	})
	c := ts.dial(t)
	resp0, _ := c.roundTrip("POST /close HTTP/1.1\r\nHost: a\r\nContent-Length: 3000\r\n\r\n" + strings.Repeat("x", 3000))
	if resp0.Close {
		t.Fatal("closed body closed the connection")
	}
	resp, _ := c.roundTrip("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000\r\n\r\n" + strings.Repeat("x", 10000))
	if resp.Close {
		t.Fatal("small unread body closed the connection")
	}
	resp, _ = c.roundTrip("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + "2710\r\n" + strings.Repeat("x", 10000) + "\r\n0\r\n\r\n")
	if resp.Close {
		t.Fatal("small unread chunked body closed the connection")
	}
	if resp, body := c.roundTrip("GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("next: %d %q", resp.StatusCode, body)
	}

	c = ts.dial(t)
	c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + strings.Repeat("x", 1000))
	resp = c.response("POST")
	if !resp.Close {
		t.Fatal("large unread body kept the connection")
	}
	c.body(resp)
	c.closed()
}

// Reads of a body after the handler returned fail, and take nothing of
// the next request.
func TestServerBodyReadAfterHandler(t *testing.T) {
	bodies := make(chan io.ReadCloser, 1)
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/keep" {
			bodies <- r.Body
		}
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})
	c := ts.dial(t)
	c.send("POST /keep HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
	body := <-bodies
	c.send("abc")
	if resp := c.response("POST"); c.body(resp) != "abc" {
		t.Fatal("first request's body")
	}
	c.send("POST /next HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
	if n, err := body.Read(make([]byte, 10)); n != 0 || !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Fatalf("late read: %d %v", n, err)
	}
	c.send("xyz")
	if resp := c.response("POST"); c.body(resp) != "xyz" {
		t.Fatal("next request lost its body")
	}
	_ = body.Close()
}

// Expect: 100-continue: the 100 comes with the first read of the body, and
// not at all when the handler answers without reading it (the connection
// then closes: the client may never send the body).
func TestServerExpectContinue(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reject" {
			w.WriteHeader(403)
			return
		}
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})
	c := ts.dial(t)
	c.send("POST /read HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	line, err := c.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q %v", line, err)
	}
	if line, _ = c.br.ReadString('\n'); line != "\r\n" {
		t.Fatalf("got %q", line)
	}
	c.send("hello")
	resp := c.response("POST")
	if body := c.body(resp); body != "hello" || resp.Close {
		t.Fatalf("body %q close=%v", body, resp.Close)
	}
	// No 100 to an HTTP/1.0 client (RFC 9110 §15.2).
	c.send("POST /read HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
	if line, _ := c.br.ReadString('\n'); line != "HTTP/1.1 200 OK\r\n" {
		t.Fatalf("HTTP/1.0 got %q", line)
	}
	readHead(t, c.br)
	if _, err := c.br.Discard(2); err != nil {
		t.Fatal(err)
	}

	c.send("POST /reject HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	resp = c.response("POST")
	if resp.StatusCode != 403 || !resp.Close {
		t.Fatalf("status %d close=%v", resp.StatusCode, resp.Close)
	}
	c.body(resp)
	c.closed()
}

// HEAD, 204 and 304: no body; HEAD keeps the Content-Length the handler
// set or would have had; the connection goes on.
func TestServerNoBodyResponses(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head-written":
			_, _ = io.WriteString(w, "hello")
		case "/head-cl":
			w.Header().Set("Content-Length", "100")
		case "/204":
			w.Header().Set("Content-Length", "3")
			w.WriteHeader(204)
			if _, err := io.WriteString(w, "abc"); !errors.Is(err, http.ErrBodyNotAllowed) {
				t.Errorf("write in 204: %v", err)
			}
		case "/304":
			w.Header().Set("Content-Length", "7")
			w.WriteHeader(304)
		}
	})
	c := ts.dial(t)
	for _, tc := range []struct {
		req, method string
		status      int
		cl          string
	}{
		{"HEAD /head-written HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD", 200, "5"},
		{"HEAD /head-cl HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD", 200, "100"},
		{"HEAD /nothing HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD", 200, ""},
		{"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n", "GET", 204, ""},
		{"GET /304 HTTP/1.1\r\nHost: a\r\n\r\n", "GET", 304, "7"},
	} {
		c.send(tc.req)
		head := readHead(t, c.br)
		if !strings.HasPrefix(head, fmt.Sprintf("HTTP/1.1 %d ", tc.status)) {
			t.Fatalf("%q: head %q", tc.req, head)
		}
		if got := headerValue(head, "Content-Length"); got != tc.cl {
			t.Errorf("%q: Content-Length %q, want %q", tc.req, got, tc.cl)
		}
		if strings.Contains(head, "Transfer-Encoding") || strings.Contains(head, "Connection") {
			t.Errorf("%q: head %q", tc.req, head)
		}
	}
	// Nothing was sent after the heads: the next response comes first.
	if _, body := c.roundTrip("GET /x HTTP/1.1\r\nHost: a\r\n\r\n"); body != "" {
		t.Fatalf("body %q", body)
	}
}

// readHead reads a response head as raw text.
func readHead(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading head: %v (%q)", err, b.String())
		}
		b.WriteString(line)
		if line == "\r\n" {
			return b.String()
		}
	}
}

func headerValue(head, name string) string {
	for _, line := range strings.Split(head, "\r\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && k == name {
			return v
		}
	}
	return ""
}

// Response framing: the handler's Content-Length, a computed one, chunked;
// raw bytes checked.
func TestServerResponseFraming(t *testing.T) {
	big := strings.Repeat("b", 5000)
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/declared":
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hel")
			_, _ = io.WriteString(w, "lo")
			if n, err := io.WriteString(w, "!"); n != 0 || !errors.Is(err, http.ErrContentLength) {
				t.Errorf("write past Content-Length: %d %v", n, err)
			}
		case "/computed":
			_, _ = io.WriteString(w, "hello")
			_, _ = w.Write([]byte(" world"))
		case "/big":
			_, _ = io.WriteString(w, big)
		case "/flushed":
			_, _ = io.WriteString(w, "abc")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "de")
		case "/suppressed":
			w.Header()["Content-Length"] = nil
			_, _ = io.WriteString(w, "abc")
		case "/empty":
		}
	})
	c := ts.dial(t)
	for _, tc := range []struct{ path, want string }{
		{"/declared", "Content-Length: 5\r\n\r\nhello"},
		{"/computed", "Content-Length: 11\r\n\r\nhello world"},
		{"/empty", "Content-Length: 0\r\n\r\n"},
		{"/flushed", "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"},
		{"/suppressed", "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"/big", "Transfer-Encoding: chunked\r\n\r\n1388\r\n" + big + "\r\n0\r\n\r\n"},
	} {
		c.send("GET " + tc.path + " HTTP/1.1\r\nHost: a\r\n\r\n")
		head := readHead(t, c.br)
		rest := make([]byte, len(tc.want)-len("\r\n\r\n")-strings.Index(tc.want, "\r\n\r\n"))
		if _, err := io.ReadFull(c.br, rest); err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		date := headerValue(head, "Date")
		if _, err := http.ParseTime(date); err != nil {
			t.Errorf("%s: Date %q", tc.path, date)
		}
		got := strings.Replace(head, "Date: "+date+"\r\n", "", 1) + string(rest)
		if want := "HTTP/1.1 200 OK\r\n" + tc.want; got != want {
			t.Errorf("%s:\n got %q\nwant %q", tc.path, got, want)
		}
	}
}

// A response too big for the buffer leaves in several writes, a small one
// with its head in one.
func TestServerSmallResponseOneWrite(t *testing.T) {
	var writes []int
	var mu sync.Mutex
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(make([]byte, 1024))
	})}
	cc, sc := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(context.Background(), &countingConn{Conn: sc, onWrite: func(n int) {
			mu.Lock()
			writes = append(writes, n)
			mu.Unlock()
		}})
	}()
	go func() { _, _ = io.WriteString(cc, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") }()
	b, _ := io.ReadAll(cc)
	<-done
	_ = cc.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(writes) != 1 || writes[0] != len(b) {
		t.Fatalf("writes %v for %d bytes", writes, len(b))
	}
}

type countingConn struct {
	net.Conn
	onWrite func(int)
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.onWrite(len(p))
	return c.Conn.Write(p)
}

// Trailers, declared before the head and prefixed, on the wire.
func TestServerResponseTrailers(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Declared, Host")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Declared", "d")
		w.Header().Set("Host", "not a trailer field")
		w.Header().Set(http.TrailerPrefix+"X-Late", "l")
		w.Header().Set(http.TrailerPrefix+"X-Empty", "")
		w.Header()[http.TrailerPrefix+"X-Nil"] = nil
	})
	c := ts.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	head := readHead(t, c.br)
	if headerValue(head, "Trailer") != "X-Declared, Host" || headerValue(head, "Transfer-Encoding") != "chunked" {
		t.Fatalf("head %q", head)
	}
	want := "4\r\nbody\r\n0\r\nX-Declared: d\r\nX-Empty: \r\nX-Late: l\r\n\r\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c.br, got); err != nil || string(got) != want {
		t.Fatalf("got %q %v\nwant %q", got, err, want)
	}
	c.open(20 * time.Millisecond)

	// Through a client.
	resp, _ := c.roundTrip("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.Trailer.Get("X-Declared") != "d" || resp.Trailer.Get("X-Late") != "l" {
		t.Fatalf("trailer %v", resp.Trailer)
	}
}

// Prefixed trailers set before the head force chunking too, and an
// HTTP/1.0 client gets none.
func TestServerTrailersForceChunked(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(http.TrailerPrefix+"X-T", "v")
		_, _ = io.WriteString(w, "x")
	})
	c := ts.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	head := readHead(t, c.br)
	if headerValue(head, "Transfer-Encoding") != "chunked" || strings.Contains(head, "X-T") {
		t.Fatalf("head %q", head)
	}
	want := "1\r\nx\r\n0\r\nX-T: v\r\n\r\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c.br, got); err != nil || string(got) != want {
		t.Fatalf("got %q %v", got, err)
	}

	c = ts.dial(t)
	c.send("GET / HTTP/1.0\r\n\r\n")
	if got := c.rest(); !strings.HasSuffix(got, "\r\n\r\nx") || strings.Contains(got, "X-T") {
		t.Fatalf("HTTP/1.0 got %q", got)
	}
}

// 1xx informational responses before the final one; 103 several times.
func TestServerInformational(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(103)
		w.Header().Set("Link", "</b.js>; rel=preload")
		w.WriteHeader(103)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "done")
	})
	c := ts.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if h := readHead(t, c.br); h != "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" {
		t.Fatalf("first %q", h)
	}
	if h := readHead(t, c.br); h != "HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n" {
		t.Fatalf("second %q", h)
	}
	resp := c.response("GET")
	if resp.StatusCode != 200 || resp.Header.Get("Link") != "" || c.body(resp) != "done" {
		t.Fatalf("final %d %v", resp.StatusCode, resp.Header)
	}
	// HTTP/1.0 clients get no 1xx (RFC 9110 §15.2).
	c = ts.dial(t)
	c.send("GET / HTTP/1.0\r\n\r\n")
	if got := c.rest(); !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") {
		t.Fatalf("HTTP/1.0 got %q", got)
	}
}

// Flush streams: the client has the first chunk while the handler waits,
// through http.ResponseController and a wrapper as meshd's.
func TestServerFlushStreams(t *testing.T) {
	release := make(chan struct{})
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(wrapped{w})
		_, _ = io.WriteString(w, "first")
		if err := rc.Flush(); err != nil {
			t.Errorf("flush: %v", err)
		}
		<-release
		_, _ = io.WriteString(w, "second")
	})
	c := ts.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp := c.response("GET")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("got %q %v", buf, err)
	}
	close(release)
	if rest := c.body(resp); rest != "second" {
		t.Fatalf("rest %q", rest)
	}
}

// Hijack: bytes the client sent after its request come with the reader,
// the head of a 101 is sent first, and the server lets the connection be.
func TestServerHijack(t *testing.T) {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	ts := startServer(t, &Server{ReadHeaderTimeout: 100 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Upgrade", "test")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := http.NewResponseController(wrapped{w}).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		if _, _, err := w.(http.Hijacker).Hijack(); !errors.Is(err, http.ErrHijacked) {
			t.Errorf("second hijack: %v", err)
		}
		if _, err := w.Write([]byte("x")); !errors.Is(err, http.ErrHijacked) {
			t.Errorf("write after hijack: %v", err)
		}
		if _, err := r.Body.Read(make([]byte, 1)); err == nil {
			t.Error("body read after hijack")
		}
		wg.Add(1)
		go func() {
			// After the handler returned, and past ReadHeaderTimeout.
			defer wg.Done()
			defer conn.Close()
			pre := make([]byte, brw.Reader.Buffered())
			_, _ = io.ReadFull(brw.Reader, pre)
			time.Sleep(200 * time.Millisecond)
			more, _ := brw.ReadString('\n')
			_, _ = fmt.Fprintf(conn, "pre=%q more=%q\n", pre, more)
		}()
	})
	c := ts.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\nEARLY")
	head := readHead(t, c.br)
	if !strings.HasPrefix(head, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\nDate: ") ||
		strings.Contains(head, "Content-Length") || strings.Contains(head, "chunked") {
		t.Fatalf("head %q", head)
	}
	c.send("LATE\n")
	if got := c.rest(); got != "pre=\"EARLY\" more=\"LATE\\n\"\n" {
		t.Fatalf("got %q", got)
	}
}

// A handler that panics with http.ErrAbortHandler mid-body leaves the
// response incomplete: no last chunk, fewer bytes than announced.
func TestServerAbortHandler(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cl" {
			w.Header().Set("Content-Length", "100")
		}
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "-buffered")
		panic(http.ErrAbortHandler)
	})
	for _, path := range []string{"/chunked", "/cl"} {
		c := ts.dial(t)
		c.send("GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n")
		resp := c.response("GET")
		b, err := io.ReadAll(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: body %q, error %v", path, b, err)
		}
		if !strings.HasPrefix(string(b), "partial") {
			t.Errorf("%s: body %q", path, b)
		}
		c.closed()
	}
	if logs := ts.logs.String(); logs != "" {
		t.Fatalf("logged %q", logs)
	}
	// Before anything was sent: nothing is.
	ts2 := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "never")
		panic(http.ErrAbortHandler)
	})
	c := ts2.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if got := c.rest(); got != "" {
		t.Fatalf("got %q", got)
	}
}

// Any other panic is logged, and ends only its connection.
func TestServerPanic(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		ok(w, r)
	})
	c := ts.dial(t)
	c.send("GET /panic HTTP/1.1\r\nHost: a\r\n\r\n")
	if got := c.rest(); got != "" {
		t.Fatalf("got %q", got)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "panic serving") || !strings.Contains(logs, "boom") {
		t.Fatalf("logged %q", logs)
	}
	if _, body := ts.dial(t).roundTrip("GET / HTTP/1.1\r\nHost: a\r\n\r\n"); body != "ok" {
		t.Fatalf("next connection: %q", body)
	}
}

// HTTP/1.0: a body of unknown length is delimited by the connection's end;
// a known one keeps a keep-alive connection.
func TestServerHTTP10(t *testing.T) {
	big := strings.Repeat("z", 10000)
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = io.WriteString(w, big)
			return
		}
		ok(w, r)
	})
	c := ts.dial(t)
	c.send("GET /big HTTP/1.0\r\n\r\n")
	got := c.rest()
	head, body, _ := strings.Cut(got, "\r\n\r\n")
	if body != big || strings.Contains(head, "Content-Length") || strings.Contains(head, "Transfer-Encoding") {
		t.Fatalf("head %q, %d bytes of body", head, len(body))
	}

	c = ts.dial(t)
	resp, body := c.roundTrip("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if body != "ok" || resp.Header.Get("Connection") != "keep-alive" || resp.ContentLength != 2 {
		t.Fatalf("keep-alive: %q %v", body, resp.Header)
	}
	resp, body = c.roundTrip("GET / HTTP/1.0\r\n\r\n")
	if body != "ok" || resp.Header.Get("Connection") != "" {
		t.Fatalf("second: %q %v", body, resp.Header)
	}
	c.closed()
}

// The handler asks for the connection to close.
func TestServerHandlerConnectionClose(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		ok(w, r)
	})
	c := ts.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp := c.response("GET")
	if !resp.Close || c.body(resp) != "ok" {
		t.Fatalf("close=%v", resp.Close)
	}
	c.closed()
	if n := ts.calls.Load(); n != 1 {
		t.Fatalf("%d calls", n)
	}
}

// Date: present, right, and suppressed by a nil value; Content-Type
// never added.
func TestServerDate(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/nodate" {
			w.Header()["Date"] = nil
			w.Header()["Content-Type"] = nil
		}
		_, _ = io.WriteString(w, "<html>")
	})
	c := ts.dial(t)
	resp, _ := c.roundTrip("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	d, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil || time.Since(d).Abs() > 2*time.Second {
		t.Fatalf("Date %q: %v", resp.Header.Get("Date"), err)
	}
	if _, ok := resp.Header["Content-Type"]; ok {
		t.Fatal("Content-Type added")
	}
	resp, _ = c.roundTrip("GET /nodate HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, ok := resp.Header["Date"]; ok {
		t.Fatal("Date not suppressed")
	}
}

// Header values cannot split the response; invalid names are dropped.
func TestServerResponseSplitting(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-A", "a\r\nX-Injected: 1")
		w.Header()["Bad Name"] = []string{"x"}
		w.Header()["Bad\r\nName"] = []string{"x"}
	})
	c := ts.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	head := readHead(t, c.br)
	if !strings.Contains(head, "X-A: a  X-Injected: 1\r\n") || strings.Contains(head, "Bad") {
		t.Fatalf("head %q", head)
	}
}

// A connection waiting for its next request longer than IdleTimeout is
// closed.
func TestServerIdleTimeout(t *testing.T) {
	ts := startServer(t, &Server{IdleTimeout: 100 * time.Millisecond, ReadHeaderTimeout: 5 * time.Second}, ok)
	c := ts.dial(t)
	c.roundTrip("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	start := time.Now()
	c.closed()
	if d := time.Since(start); d < 80*time.Millisecond || d > 2*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

// A head that does not arrive within ReadHeaderTimeout closes the
// connection without an answer: for a first request, and for a later one
// once its first byte came.
func TestServerReadHeaderTimeout(t *testing.T) {
	ts := startServer(t, &Server{ReadHeaderTimeout: 150 * time.Millisecond, IdleTimeout: 5 * time.Second}, ok)
	c := ts.dial(t)
	start := time.Now()
	for _, part := range []string{"GET / HTTP/1.1\r\n", "Host: a\r\n", "X-Slow: 1\r\n", "X-Slow: 2\r\n"} {
		c.send(part)
		time.Sleep(60 * time.Millisecond)
	}
	c.closed()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %v", d)
	}

	c = ts.dial(t)
	c.roundTrip("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(200 * time.Millisecond) // idle, not yet timed out
	c.send("G")
	start = time.Now()
	c.closed()
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

// With keep-alives turned off, the request in flight is answered with
// Connection: close, and idle connections are closed at once.
func TestServerSetKeepAlivesEnabled(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	srv := &Server{}
	ts := startServer(t, srv, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			close(entered)
			<-release
		}
		ok(w, r)
	})
	idle := ts.dial(t)
	idle.roundTrip("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	busy := ts.dial(t)
	busy.send("GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
	<-entered
	srv.SetKeepAlivesEnabled(false)
	idle.closed()
	close(release)
	resp, body := busy.response("GET"), ""
	body = busy.body(resp)
	if !resp.Close || body != "ok" {
		t.Fatalf("close=%v body=%q", resp.Close, body)
	}
	busy.closed()

	// A new connection gets one request served, then closes.
	c := ts.dial(t)
	if resp, _ := c.roundTrip("GET / HTTP/1.1\r\nHost: a\r\n\r\n"); !resp.Close {
		t.Fatal("no Connection: close")
	}
	c.closed()
	srv.SetKeepAlivesEnabled(true)
	c = ts.dial(t)
	if resp, _ := c.roundTrip("GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.Close {
		t.Fatal("keep-alives still off")
	}
}

// Close ends idle and busy connections, and cancels requests in flight;
// connections served later are closed at once.
func TestServerClose(t *testing.T) {
	entered := make(chan struct{})
	canceled := make(chan error, 1)
	srv := &Server{}
	ts := startServer(t, srv, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			close(entered)
			select {
			case <-r.Context().Done():
				canceled <- r.Context().Err()
			case <-time.After(5 * time.Second):
				canceled <- errors.New("not canceled")
			}
			return
		}
		ok(w, r)
	})
	idle := ts.dial(t)
	idle.roundTrip("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	busy := ts.dial(t)
	busy.send("GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
	<-entered
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-canceled; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler: %v", err)
	}
	idle.closed()
	busy.closed()
	c := ts.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	c.closed()
}

// The client going away cancels the context of a handler that runs long,
// once the delay has passed, after its body was read.
func TestServerClientGone(t *testing.T) {
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	} {
		result := make(chan error, 1)
		ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(srvWatchDelay / 2)
			_, _ = io.ReadAll(r.Body)
			select {
			case <-r.Context().Done():
				result <- nil
			case <-time.After(3 * time.Second):
				result <- errors.New("context not canceled")
			}
		})
		c := ts.dial(t)
		c.send(req)
		time.Sleep(srvWatchDelay + 50*time.Millisecond)
		_ = c.c.Close()
		if err := <-result; err != nil {
			t.Fatalf("%q: %v", req, err)
		}
	}
}

// A handler that runs long while its client stays is not canceled, and a
// request the client pipelines meanwhile (read by the watch) is served
// after it.
func TestServerWatchKeepsPipelined(t *testing.T) {
	ctxErr := make(chan error, 2)
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(3 * srvWatchDelay)
		}
		ctxErr <- r.Context().Err()
		_, _ = io.WriteString(w, r.URL.Path)
	})
	c := ts.dial(t)
	c.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(2 * srvWatchDelay) // the watch reads now
	c.send("GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, want := range []string{"/slow", "/next"} {
		if resp := c.response("GET"); c.body(resp) != want {
			t.Fatalf("want %s", want)
		}
		if err := <-ctxErr; err != nil {
			t.Fatalf("%s: context %v", want, err)
		}
	}
	// The watch had ended: a quiet connection stays open.
	c.open(50 * time.Millisecond)
}

// Go's own client against the server, on one kept-alive connection.
func TestServerWithHTTPClient(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("Trailer", "X-Len")
		_, _ = fmt.Fprintf(w, "%s:%s", r.URL.Path, b)
		w.Header().Set("X-Len", strconv.Itoa(len(b)))
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	base := "http://" + ts.addr
	for i := range 5 {
		var resp *http.Response
		var err error
		switch i {
		case 1:
			resp, err = client.Post(base+"/post", "text/plain", strings.NewReader("data"))
		case 2:
			pr, pw := io.Pipe()
			go func() { _, _ = io.WriteString(pw, "streamed"); _ = pw.Close() }()
			resp, err = client.Post(base+"/chunked", "text/plain", pr)
		case 3:
			resp, err = client.Head(base + "/head")
		default:
			resp, err = client.Get(base + "/get")
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%d: %d %v", i, resp.StatusCode, err)
		}
		want := map[int]string{0: "/get:", 1: "/post:data", 2: "/chunked:streamed", 3: "", 4: "/get:"}[i]
		if string(b) != want {
			t.Fatalf("%d: %q, want %q", i, b, want)
		}
		if i != 3 && resp.Trailer.Get("X-Len") == "" {
			t.Fatalf("%d: trailer %v", i, resp.Trailer)
		}
	}
	if n := ts.accepted.Load(); n != 1 {
		t.Fatalf("%d connections", n)
	}
}

// The request context comes from ServeConn's and ends with the handler.
func TestServerRequestContext(t *testing.T) {
	type key struct{}
	var reqCtx context.Context
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqCtx = r.Context()
		if r.Context().Value(key{}) != "conn" || r.Context().Err() != nil {
			t.Errorf("context %v", r.Context())
		}
	})}
	cc, sc := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(context.WithValue(context.Background(), key{}, "conn"), sc)
	}()
	go func() { _, _ = io.WriteString(cc, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") }()
	_, _ = io.ReadAll(cc)
	<-done
	_ = cc.Close()
	if reqCtx == nil || reqCtx.Err() == nil {
		t.Fatal("request context not canceled after the handler")
	}
}

// A CONNECT tunnel as meshd opens one: Hijack without WriteHeader, the
// answer written on the connection, the bytes sent after the request kept.
func TestServerConnectTunnel(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || r.Host != "upstream:443" {
			t.Errorf("request %s %s", r.Method, r.Host)
		}
		conn, brw, err := http.NewResponseController(wrapped{w}).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
		_, _ = io.Copy(conn, brw.Reader) // echo, buffered bytes first
	})
	c := ts.dial(t)
	c.send("CONNECT upstream:443 HTTP/1.1\r\nHost: upstream:443\r\n\r\nclient hello")
	if line, _ := c.br.ReadString('\n'); line != "HTTP/1.1 200 Connection established\r\n" {
		t.Fatalf("got %q", line)
	}
	c.send(" and more")
	_ = c.c.CloseWrite()
	if got := c.rest(); got != "\r\nclient hello and more" {
		t.Fatalf("got %q", got)
	}
}

// A 101 the handler does not follow with a hijack ends the connection.
func TestServerSwitchingWithoutHijack(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusSwitchingProtocols)
	})
	c := ts.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if head := readHead(t, c.br); !strings.HasPrefix(head, "HTTP/1.1 101 ") {
		t.Fatalf("head %q", head)
	}
	c.closed()
}

// The request body can be read after the response began: echo line by
// line, each flushed before the next is sent.
func TestServerFullDuplex(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			t.Errorf("full duplex: %v", err)
		}
		_ = rc.Flush()
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			_, _ = io.WriteString(w, strings.ToUpper(line))
			_ = rc.Flush()
			if err != nil {
				return
			}
		}
	})
	c := ts.dial(t)
	c.send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
	resp := c.response("POST")
	lines := bufio.NewReader(resp.Body)
	for _, s := range []string{"one\n", "two\n"} {
		c.send(fmt.Sprintf("%x\r\n%s\r\n", len(s), s))
		if got, err := lines.ReadString('\n'); err != nil || got != strings.ToUpper(s) {
			t.Fatalf("got %q %v", got, err)
		}
	}
	c.send("0\r\n\r\n")
	if rest, err := io.ReadAll(lines); err != nil || len(rest) != 0 {
		t.Fatalf("rest %q %v", rest, err)
	}
}

// Misuses of the ResponseWriter are logged, not fatal.
func TestServerSuperfluousWriteHeader(t *testing.T) {
	ts := startServer(t, &Server{}, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(201)
		w.WriteHeader(500)
		w.Header().Set("Content-Length", "x")
	})
	resp, _ := ts.dial(t).roundTrip("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 201 || resp.ContentLength != 0 {
		t.Fatalf("status %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "superfluous WriteHeader(500)") {
		t.Fatalf("logged %q", logs)
	}
}

// A head longer than the read buffer is read; one over MaxHeaderBytes is
// refused.
func TestServerLargeHead(t *testing.T) {
	ts := startServer(t, &Server{MaxHeaderBytes: 64 << 10}, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strconv.Itoa(len(r.Header.Get("X-Big"))))
	})
	c := ts.dial(t)
	if _, body := c.roundTrip("GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("v", 40000) + "\r\n\r\n"); body != "40000" {
		t.Fatalf("body %q", body)
	}
	c.send("GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("v", 100000) + "\r\n\r\n")
	resp := c.response("GET")
	if resp.StatusCode != 431 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.body(resp)
	c.closed()
}

// A connection that cannot half-close (as meshd's own) gets its refusal
// too.
func TestServerRefusesOverPipe(t *testing.T) {
	srv := &Server{Handler: http.HandlerFunc(ok)}
	cc, sc := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(context.Background(), sc)
	}()
	go func() { _, _ = io.WriteString(cc, "GET / HTTP/1.1\r\nHost: a\r\n X: folded\r\n\r\n") }()
	_ = cc.SetDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(cc)
	<-done
	_ = cc.Close()
	if !strings.HasPrefix(string(got), "HTTP/1.1 400 Bad Request\r\n") || !strings.HasSuffix(string(got), "obsolete line folding\n") {
		t.Fatalf("got %q", got)
	}
}
