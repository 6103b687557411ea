package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
)

// testProxy runs a Proxy's outbound listener on a loopback port, with
// static endpoints, and returns that address. Explicit mode needs no
// redirect, so these tests run as any user.
func testProxy(t *testing.T, static map[string][]string, mod func(*config.Config)) (*Proxy, string) {
	t.Helper()
	cfg := config.Default()
	cfg.DetectTimeout = 200 * time.Millisecond
	if mod != nil {
		mod(cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	p := New(Options{Config: cfg, Resolver: discovery.Chain{discovery.NewStatic(static)}, Log: zap.NewNop(), OwnPorts: []uint16{port}})
	done := make(chan struct{})
	go func() { _ = p.ServeOutbound(ln); close(done) }()
	t.Cleanup(func() {
		p.Close()
		<-done
	})
	return p, ln.Addr().String()
}

func proxyClient(addr string) *http.Client {
	return &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr}), DisableCompression: true},
	}
}

// instance is an upstream that names itself and records what it saw.
type instance struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newInstance(t *testing.T, name string, h http.HandlerFunc) *instance {
	t.Helper()
	in := &instance{name: name}
	in.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.mu.Lock()
		in.reqs = append(in.reqs, r.Clone(r.Context()))
		in.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		fmt.Fprint(w, name)
	}))
	t.Cleanup(in.srv.Close)
	return in
}

func (in *instance) addr() string { return in.srv.Listener.Addr().String() }

func (in *instance) count() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.reqs)
}

func (in *instance) last() *http.Request {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.reqs[len(in.reqs)-1]
}

func get(t *testing.T, c *http.Client, u string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestExplicitRoutingByServiceName(t *testing.T) {
	ins := []*instance{newInstance(t, "a", nil), newInstance(t, "b", nil), newInstance(t, "c", nil)}
	_, addr := testProxy(t, map[string][]string{"payments": {ins[0].addr(), ins[1].addr(), ins[2].addr()}}, nil)
	c := proxyClient(addr)
	hosts := []string{"payments", "payments:8080", "payments.service.consul", "payments.service.dc1.consul", "payments.default.svc.cluster.local", "PAYMENTS"}
	for i := 0; i < 60; i++ {
		host := hosts[i%len(hosts)]
		resp, body := get(t, c, "http://"+host+"/x?q=1", map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "b3": "80f198ee56343ba8-e457b5a2e4d86bd1-1"})
		if resp.StatusCode != 200 || (body != "a" && body != "b" && body != "c") {
			t.Fatalf("%s: %d %q", host, resp.StatusCode, body)
		}
	}
	for _, in := range ins {
		if in.count() == 0 {
			t.Fatalf("instance %s got no traffic over 60 requests", in.name)
		}
		r := in.last()
		if r.Header.Get("Traceparent") != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" || r.Header.Get("B3") == "" {
			t.Errorf("tracing headers changed: %v", r.Header)
		}
		if len(r.Header.Get("X-Request-Id")) != 36 || r.Header.Get("X-Meshd-Attempt") != "1" {
			t.Errorf("x-request-id %q, x-meshd-attempt %q", r.Header.Get("X-Request-Id"), r.Header.Get("X-Meshd-Attempt"))
		}
		if r.URL.Path != "/x" || r.URL.RawQuery != "q=1" || r.RequestURI != "/x?q=1" {
			t.Errorf("upstream saw %q", r.RequestURI)
		}
	}
	// An x-request-id the client sent is kept.
	get(t, c, "http://payments/", map[string]string{"X-Request-Id": "keep-me"})
	var kept bool
	for _, in := range ins {
		kept = kept || in.last().Header.Get("X-Request-Id") == "keep-me"
	}
	if !kept {
		t.Errorf("the client's x-request-id was replaced")
	}
}

func TestOriginFormHostRoutingAndPassthrough(t *testing.T) {
	svc := newInstance(t, "svc", nil)
	other := newInstance(t, "other", nil)
	_, addr := testProxy(t, map[string][]string{"payments": {svc.addr()}}, nil)
	// A raw origin-form request with Host: payments, as a redirected app sends it.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /hello HTTP/1.1\r\nHost: payments\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "svc" {
		t.Fatalf("Host routing: %q", body)
	}
	// A name discovery does not know goes to the authority itself.
	resp2, body2 := get(t, proxyClient(addr), "http://"+other.addr()+"/", nil)
	if resp2.StatusCode != 200 || body2 != "other" {
		t.Fatalf("passthrough: %d %q", resp2.StatusCode, body2)
	}
}

func TestKeepAliveBothSides(t *testing.T) {
	var mu sync.Mutex
	remotes := map[string]bool{}
	in := newInstance(t, "a", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		remotes[r.RemoteAddr] = true
		mu.Unlock()
		fmt.Fprint(w, "ok")
	})
	_, addr := testProxy(t, map[string][]string{"payments": {in.addr()}}, nil)
	c := proxyClient(addr)
	reused := 0
	for i := 0; i < 20; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://payments/", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			if i.Reused {
				reused++
			}
		}}))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if reused != 19 {
		t.Errorf("client connection reused %d times of 19", reused)
	}
	if len(remotes) != 1 {
		t.Errorf("upstream saw %d connections for 20 sequential requests, want 1", len(remotes))
	}
}

func TestHopByHopHeaders(t *testing.T) {
	in := newInstance(t, "a", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Upstream-Hop")
		w.Header().Set("X-Upstream-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End-To-End", "1")
		w.Header()["Content-Type"] = nil // send none: meshd must not add one
		w.Header()["Date"] = nil
		fmt.Fprint(w, "ok")
	})
	_, addr := testProxy(t, map[string][]string{"payments": {in.addr()}}, nil)
	resp, _ := get(t, proxyClient(addr), "http://payments/", map[string]string{
		"Connection": "X-Client-Hop", "X-Client-Hop": "1", "Keep-Alive": "timeout=5", "Proxy-Connection": "keep-alive", "X-Keep": "1",
	})
	r := in.last()
	for _, h := range []string{"X-Client-Hop", "Keep-Alive", "Proxy-Connection"} {
		if r.Header.Get(h) != "" {
			t.Errorf("hop-by-hop request header %s reached the upstream", h)
		}
	}
	if r.Header.Get("X-Keep") != "1" {
		t.Errorf("end-to-end request header lost")
	}
	if resp.Header.Get("X-Upstream-Hop") != "" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("hop-by-hop response headers reached the client: %v", resp.Header)
	}
	if resp.Header.Get("X-End-To-End") != "1" {
		t.Errorf("end-to-end response header lost")
	}
	for _, h := range []string{"Content-Type", "Date"} {
		if _, ok := resp.Header[h]; ok {
			t.Errorf("meshd added a %s the upstream did not send: %v", h, resp.Header)
		}
	}
}

func TestStreamingBodiesChunkedTrailersAndExpectContinue(t *testing.T) {
	const size = 10 << 20
	payload := make([]byte, size)
	rand.Read(payload)
	sum := sha256.Sum256(payload)
	in := newInstance(t, "a", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			w.Header().Set("Trailer", "X-Sum")
			fmt.Fprintf(w, "%d", n)
			w.Header().Set("X-Sum", fmt.Sprintf("%x", h.Sum(nil)))
			fmt.Fprintf(w, " trailer-in:%s", r.Trailer.Get("X-Client-Trailer"))
		case "/download":
			w.Write(payload)
		case "/reject":
			w.WriteHeader(http.StatusExpectationFailed)
		}
	})
	_, addr := testProxy(t, map[string][]string{"payments": {in.addr()}}, nil)
	c := proxyClient(addr)

	// Upload with chunked encoding and a request trailer.
	pr, pw := io.Pipe()
	go func() {
		for off := 0; off < size; off += 1 << 20 {
			pw.Write(payload[off : off+1<<20])
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, "http://payments/upload", pr)
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Client-Trailer": {"done"}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != fmt.Sprintf("%d trailer-in:done", size) || resp.Trailer.Get("X-Sum") != fmt.Sprintf("%x", sum) {
		t.Fatalf("upload: %q trailer %v", body, resp.Trailer)
	}

	// Download, streamed.
	resp, err = c.Get("http://payments/download")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, _ := io.Copy(h, resp.Body)
	resp.Body.Close()
	if n != size || !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatalf("download: %d bytes, sum mismatch", n)
	}

	// Expect: 100-continue reaches the upstream, and a rejection comes back
	// before the body is sent.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /reject HTTP/1.1\r\nHost: payments\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	r2, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || r2.StatusCode != http.StatusExpectationFailed {
		t.Fatalf("expect-continue rejection: %v %v", r2, err)
	}
	if in.last().Header.Get("Expect") != "100-continue" {
		t.Errorf("Expect header did not reach the upstream")
	}
}

// TestErrorAnswers checks every local reply and that meshd keeps serving
// after each.
func TestErrorAnswers(t *testing.T) {
	good := newInstance(t, "good", nil)
	garbage, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	go func() {
		for {
			c, err := garbage.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				bufio.NewReader(c).ReadString('\n')
				c.Write([]byte("HTTP/1.1 2OO OK\r\n\r\nnot http\r\n"))
			}()
		}
	}()
	dead := deadAddr(t)
	_, addr := testProxy(t, map[string][]string{
		"good": {good.addr()}, "broken": {garbage.Addr().String()}, "empty": nil, "dead": {dead},
	}, nil)
	c := proxyClient(addr)

	cases := []struct {
		host   string
		status int
		reason string
	}{
		{"broken", 502, "reset"},
		{"empty", 503, "no-healthy-upstream"},
		{"dead", 502, "connect-failure"},
		{addr, 400, "loop"},
	}
	for _, tc := range cases {
		resp, body := get(t, c, "http://"+tc.host+"/", nil)
		if resp.StatusCode != tc.status || resp.Header.Get("X-Meshd-Error") != tc.reason {
			t.Errorf("%s: %d %q (%q), want %d %q", tc.host, resp.StatusCode, resp.Header.Get("X-Meshd-Error"), body, tc.status, tc.reason)
		}
		if r, b := get(t, c, "http://good/", nil); r.StatusCode != 200 || b != "good" {
			t.Fatalf("after %s meshd no longer serves: %d %q", tc.host, r.StatusCode, b)
		}
	}

	raw := []struct {
		name, send string
		status     int // 0: the connection is just closed
	}{
		{"malformed header", "GET / HTTP/1.1\r\nHost: good\r\nBad Header\r\n\r\n", 400},
		{"two content lengths", "POST / HTTP/1.1\r\nHost: good\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"not http at all", "\x16\x03\x01\x00\xa5garbage", 0},
		{"garbage after a good request", "GET / HTTP/1.1\r\nHost: good\r\n\r\n\x00\x01\x02garbage\r\n\r\n", 200},
	}
	for _, tc := range raw {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(conn, tc.send)
			br := bufio.NewReader(conn)
			if tc.status != 0 {
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != tc.status {
					t.Fatalf("got %v, %v; want %d", resp, err, tc.status)
				}
				io.Copy(io.Discard, resp.Body)
			}
			// Then the connection is closed (a 400 closes it, garbage is
			// answered by a close).
			for {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					break
				}
				if resp.StatusCode != 400 {
					t.Fatalf("garbage answered %d", resp.StatusCode)
				}
				io.Copy(io.Discard, resp.Body)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Fatalf("connection still open")
			}
			if r, b := get(t, c, "http://good/", nil); r.StatusCode != 200 || b != "good" {
				t.Fatalf("meshd no longer serves: %d %q", r.StatusCode, b)
			}
		})
	}
}

func TestConnectTunnel(t *testing.T) {
	echo := echoServer(t)
	_, addr := testProxy(t, map[string][]string{"db": {deadAddr(t), echo}}, func(c *config.Config) { c.Defaults.RetryMax = 3 })
	for _, target := range []string{"db:5432", echo} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		// The first bytes ride in the same packet as the CONNECT request.
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nearly", target, target)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT %s: %v %v", target, resp, err)
		}
		io.WriteString(conn, " and late")
		conn.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(br)
		if err != nil || string(got) != "early and late" {
			t.Fatalf("tunnel to %s echoed %q, %v", target, got, err)
		}
		conn.Close()
	}
	// CONNECT to meshd itself is refused.
	conn, _ := net.Dial("tcp", addr)
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("CONNECT to meshd: %v %v", resp, err)
	}
}

func TestConnectFailureRetriesAnotherEndpoint(t *testing.T) {
	good := newInstance(t, "good", nil)
	_, addr := testProxy(t, map[string][]string{"payments": {deadAddr(t), deadAddr(t), good.addr()}}, nil)
	c := proxyClient(addr)
	for i := 0; i < 20; i++ {
		resp, body := get(t, c, "http://payments/", nil)
		if resp.StatusCode != 200 || body != "good" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if got := good.last().Header.Get("X-Meshd-Attempt"); got == "" {
		t.Fatalf("no attempt header")
	}
}

func TestServiceName(t *testing.T) {
	cases := map[string]string{
		"payments":                           "payments",
		"payments:8080":                      "payments",
		"Payments.Service.Consul":            "payments",
		"payments.service.dc1.consul":        "payments",
		"payments.service.dc1.consul.":       "payments",
		"payments.prod.svc.cluster.local":    "payments",
		"payments.prod.svc.cluster.local:80": "payments",
		"api.example.com":                    "api.example.com",
		"10.0.0.1:80":                        "",
		"[fd00::1]:80":                       "",
		"fd00::1":                            "",
		"":                                   "",
		"node.consul":                        "node.consul",
		"web.service.a.b.consul":             "web.service.a.b.consul",
	}
	for in, want := range cases {
		if got := ServiceName(in); got != want {
			t.Errorf("ServiceName(%q) = %q, want %q", in, got, want)
		}
	}
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// echoServer echoes every connection and half-closes when the client does.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRequestIDIsUUIDv4(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id := newRequestID()
		if len(id) != 36 || id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
}

// TestLimits: too many header fields or bytes are answered 431, connections
// over the listener's limit are closed at once, and meshd keeps serving.
func TestLimits(t *testing.T) {
	in := newInstance(t, "a", nil)
	px, addr := testProxy(t, map[string][]string{"svc": {in.addr()}}, func(c *config.Config) {
		c.MaxHeaderCount = 20
		c.MaxHeaderBytes = 4 << 10
		c.MaxConnections = 3
	})
	c := proxyClient(addr)
	many := map[string]string{}
	for i := 0; i < 30; i++ {
		many[fmt.Sprintf("X-H%d", i)] = "v"
	}
	if resp, _ := get(t, c, "http://svc/", many); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("30 header fields: %d, want 431", resp.StatusCode)
	}
	if resp, _ := get(t, c, "http://svc/", map[string]string{"X-Big": strings.Repeat("x", 16<<10)}); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("16 KiB header: %d, want 431", resp.StatusCode)
	}
	c2 := proxyClient(addr)
	if resp, body := get(t, c2, "http://svc/", nil); resp.StatusCode != 200 || body != "a" {
		t.Fatalf("after the limits: %d %q", resp.StatusCode, body)
	}
	c.CloseIdleConnections()
	c2.CloseIdleConnections()
	for deadline := time.Now().Add(5 * time.Second); px.Open() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", px.Open())
		}
	}
	// Hold the listener's 3 connections; a 4th is closed without an answer.
	var held []net.Conn
	for i := 0; i < 3; i++ {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection %d: %v %v", i, resp, err)
		}
		held = append(held, conn)
	}
	// The 4th is reset at once (the reset may even beat the dial's return).
	if extra, err := net.Dial("tcp", addr); err == nil {
		defer extra.Close()
		fmt.Fprint(extra, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
		extra.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := extra.Read(make([]byte, 1)); err == nil {
			t.Fatalf("a connection over the limit was served")
		}
	}
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			conn.Close()
			if err == nil && resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection served after one was freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// upgradeServer answers an upgrade request with 101, then echoes until
// the client half-closes, then half-closes too; it reports the bytes it
// read after the handshake.
func upgradeServer(t *testing.T) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || req.Header.Get("Upgrade") != "echo" || req.Header.Get("Keep-Alive") != "" {
					fmt.Fprint(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
					return
				}
				if req.URL.Path == "/refuse" {
					fmt.Fprint(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
					return
				}
				fmt.Fprint(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello ")
				var all []byte
				buf := make([]byte, 4096)
				for {
					n, err := br.Read(buf)
					all = append(all, buf[:n]...)
					c.Write(buf[:n])
					if err != nil {
						break
					}
				}
				c.(*net.TCPConn).CloseWrite()
				got <- string(all)
			}()
		}
	}()
	return ln.Addr().String(), got
}

// TestUpgradeTunnel: after 101 the connection is a tunnel with half-close
// both ways; a refusal comes back as an ordinary answer; an idle tunnel is
// cut at the stream idle timeout.
func TestUpgradeTunnel(t *testing.T) {
	up, got := upgradeServer(t)
	_, addr := testProxy(t, map[string][]string{"ws": {up}}, func(c *config.Config) { c.Defaults.StreamIdleTimeout = 400 * time.Millisecond })

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn, "GET /chat HTTP/1.1\r\nHost: ws\r\nConnection: keep-alive, Upgrade\r\nUpgrade: echo\r\nKeep-Alive: timeout=5\r\n\r\nearly ")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "echo" {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	io.WriteString(conn, "and late")
	conn.(*net.TCPConn).CloseWrite() // half-close: the server must see EOF, and still answer
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "hello early and late" {
		t.Fatalf("tunnel read %q, %v", rest, err)
	}
	select {
	case s := <-got:
		if s != "early and late" {
			t.Fatalf("server read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server never saw the client's half-close")
	}

	// A refused upgrade is an ordinary answer.
	c2 := proxyClient(addr)
	req, _ := http.NewRequest(http.MethodGet, "http://ws/refuse", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp2, err := c2.Do(req)
	if err != nil || resp2.StatusCode != http.StatusForbidden {
		t.Fatalf("refused upgrade: %v %v", resp2, err)
	}
	body, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if string(body) != "no" {
		t.Fatalf("refusal body %q", body)
	}

	// An idle tunnel is cut.
	conn3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn3.Close()
	conn3.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn3, "GET / HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br3 := bufio.NewReader(conn3)
	if resp, err := http.ReadResponse(br3, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	start := time.Now()
	io.ReadAll(br3)
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("idle tunnel ended after %v, want about 400ms", d)
	}
}

// TestMalformedClientBodyIsNotTheUpstreamsFault: a client whose chunked
// body is malformed gets 400, and however often it happens the service's
// breaker stays closed for everyone else.
func TestMalformedClientBodyIsNotTheUpstreamsFault(t *testing.T) {
	in := newInstance(t, "a", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, "a")
	})
	px, addr := testProxy(t, map[string][]string{"svc": {in.addr()}}, nil)
	for i := 0; i < 8; i++ {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(conn, "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("malformed body %d: %v %v", i, resp, err)
		}
	}
	if st := px.Breakers().Upstreams["svc"].State.String(); st != "closed" {
		t.Fatalf("breaker %s after malformed client bodies", st)
	}
	if resp, body := get(t, proxyClient(addr), "http://svc/", nil); resp.StatusCode != 200 || body != "a" {
		t.Fatalf("good request after them: %d %q", resp.StatusCode, body)
	}
}
