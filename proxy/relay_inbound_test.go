package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/internal/loopserve"
	"github.com/meshd/meshd/metrics"
	"github.com/meshd/meshd/proxy/sockio"
)

// inboundFront serves a loopback listener's connections as meshd's inbound
// listener serves redirected ones whose original destination is app (the
// iptables redirect and its lookup are e2e's): what the inbound path does
// with them runs as it does in a pod.
// m may be nil: no metrics.
func inboundFront(t testing.TB, app string, m *metrics.Metrics, mod func(*config.Config)) (*Proxy, string) {
	t.Helper()
	cfg := config.Default()
	if mod != nil {
		mod(cfg)
	}
	opts := Options{Config: cfg, Resolver: discovery.Chain{}, Log: zap.NewNop()}
	if m != nil {
		opts.Metrics = m
	}
	p := New(opts)
	dst := netip.MustParseAddrPort(app)
	addr := loopserve.Serve(t, func(nc net.Conn) {
		c := p.track(nc.(*net.TCPConn))
		if c == nil {
			return
		}
		c.info = connInfo{inbound: true, dst: dst, redirected: true}
		c.sock = sockio.New(c.tcp)
		p.inbound.serveConn(c)
	})
	t.Cleanup(func() { p.Close() })
	return p, addr
}

// scriptedApp is a loopback app that reads request heads (no bodies) and
// hands each to answer, which writes what it likes; false ends the
// connection. A connection lives 10 s at most, so that a failing meshd
// fails the test rather than hang it.
func scriptedApp(t *testing.T, answer func(c net.Conn, br *bufio.Reader, head string) bool) string {
	t.Helper()
	return loopserve.Serve(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for {
			head, err := readHead(br)
			if err != nil || !answer(c, br, head) {
				return
			}
		}
	})
}

// An inbound request reaches the app as the client sent it, with a
// request ID added and the client's attempt number kept, over one kept-
// alive connection; it is counted under the inbound direction.
func TestRelayInboundPassesBytesOn(t *testing.T) {
	up := newRawUpstream(t, func(n int, head string) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
	})
	m := metrics.New()
	p, addr := inboundFront(t, up.addr, m, nil)
	c := dialRaw(t, addr)
	for i := 0; i < 3; i++ {
		resp, body := c.do("GET /x?q=1 HTTP/1.1\r\nHost: app.example\r\nX-Meshd-Attempt: 2\r\nConnection: keep-alive\r\n\r\n", "GET")
		if resp.StatusCode != 200 || body != "hi" {
			t.Fatalf("answer %d: %d %q", i, resp.StatusCode, body)
		}
		h := up.head(i)
		if !strings.HasPrefix(h, "GET /x?q=1 HTTP/1.1\r\nHost: app.example\r\nX-Meshd-Attempt: 2\r\n") ||
			strings.Count(h, "X-Meshd-Attempt") != 1 || strings.Contains(h, "Connection") || !uuidV4.MatchString(h) {
			t.Errorf("the app saw %q", h)
		}
	}
	if n := up.conns.Load(); n != 1 {
		t.Errorf("%d connections to the app for 3 requests in a row, want 1", n)
	}
	waitCount(t, m, p, "200", 3) // the answer goes out before it is counted
}

// waitCount waits, a few seconds at most, for meshd_requests_total of
// the inbound direction and code to be want.
func waitCount(t *testing.T, m *metrics.Metrics, p *Proxy, code string, want float64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		got := counterValue(m.Requests.WithLabelValues("inbound", p.label(nil, "inbound"), code))
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshd_requests_total{inbound,%s} = %v, want %v", code, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An app that takes longer than the relay's look at its client still
// answers: the client is there, so the wait goes on. A client that goes
// away while the app works ends the request, and the app's connection is
// closed (a 499 is counted); the same holds while a streamed answer is
// passed on.
func TestRelayInboundWatchesTheClient(t *testing.T) {
	type call struct {
		head   string
		closed chan struct{} // closed when the app sees its connection end
	}
	calls := make(chan call, 8)
	app := scriptedApp(t, func(c net.Conn, br *bufio.Reader, head string) bool {
		cl := call{head: head, closed: make(chan struct{})}
		calls <- cl
		switch {
		case strings.HasPrefix(head, "GET /slow "):
			time.Sleep(350 * time.Millisecond)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
		case strings.HasPrefix(head, "GET /hang "):
			_, _ = br.Peek(1) // until meshd closes the connection
			close(cl.closed)
			return false
		case strings.HasPrefix(head, "GET /stream "):
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
			_, _ = br.Peek(1)
			close(cl.closed)
			return false
		}
		return true
	})
	m := metrics.New()
	p, addr := inboundFront(t, app, m, nil)

	c := dialRaw(t, addr)
	start := time.Now()
	resp, body := c.do("GET /slow HTTP/1.1\r\nHost: app\r\nx-lower: 1\r\n\r\n", "GET")
	if resp.StatusCode != 200 || body != "slow" {
		t.Fatalf("slow answer: %d %q", resp.StatusCode, body)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("the slow answer came after %v: not the app's", d)
	}
	if cl := <-calls; !strings.Contains(cl.head, "\r\nx-lower: 1\r\n") {
		t.Errorf("the app saw %q: not relayed (the general path writes field names canonical)", cl.head)
	}

	for _, path := range []string{"/hang", "/stream"} {
		c := dialRaw(t, addr)
		if _, err := io.WriteString(c.c, "GET "+path+" HTTP/1.1\r\nHost: app\r\nx-lower: 1\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		cl := <-calls
		if !strings.Contains(cl.head, "\r\nx-lower: 1\r\n") {
			t.Errorf("%s: the app saw %q: not relayed", path, cl.head)
		}
		if path == "/stream" {
			line, err := c.br.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
				t.Fatalf("%s: the answer's first line %q, %v", path, line, err)
			}
		}
		_ = c.c.Close()
		select {
		case <-cl.closed:
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: the app's connection is still open 3 s after the client went away", path)
		}
	}
	waitCount(t, m, p, "499", 1) // the hung request; the streamed one began as a 200
}

// A client that pipelines its next request while the app works is still
// there: both are answered, in order.
func TestRelayInboundPipelinedWhileSlow(t *testing.T) {
	up := newRawUpstream(t, func(n int, head string) string {
		if n == 1 {
			time.Sleep(250 * time.Millisecond)
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" + string(rune('0'+n))
	})
	_, addr := inboundFront(t, up.addr, nil, nil)
	c := dialRaw(t, addr)
	if _, err := io.WriteString(c.c, "GET /1 HTTP/1.1\r\nHost: app\r\nx-lower: 1\r\n\r\nGET /2 HTTP/1.1\r\nHost: app\r\nx-lower: 2\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"1", "2"} {
		resp, body := c.do("", "GET")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("answer %d: %d %q, want %q", i, resp.StatusCode, body, want)
		}
		if h := up.head(i); !strings.Contains(h, "\r\nx-lower: "+want+"\r\n") {
			t.Errorf("request %d: the app saw %q: not relayed", i, h)
		}
	}
}

// An inbound request's wait is not bounded by anything but its client:
// an app slower than the head's read timeout, a wait for a connection at
// MaxConnsPerEndpoint, a body that comes well after its head, all reach
// the client. Field names pass as the client wrote them, which says the
// relay carried the request (the general path writes them canonical).
func TestRelayInboundSlowParts(t *testing.T) {
	seen := make(chan string, 16)
	app := scriptedApp(t, func(c net.Conn, _ *bufio.Reader, head string) bool {
		seen <- head
		switch {
		case strings.HasPrefix(head, "GET /slow "):
			time.Sleep(600 * time.Millisecond)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
		case strings.HasPrefix(head, "GET /late-body "):
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
			time.Sleep(300 * time.Millisecond)
			_, _ = io.WriteString(c, "late")
		case strings.HasPrefix(head, "HEAD /chunked "):
			// Not a short answer (a transfer coding): the streamed path.
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: 1\r\n\r\n")
		default:
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
		return true
	})
	_, addr := inboundFront(t, app, nil, func(cfg *config.Config) {
		cfg.ReadHeaderTimeout = 200 * time.Millisecond
		cfg.MaxConnsPerEndpoint = 1
	})

	c := dialRaw(t, addr)
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/slow", "slow"},      // longer than ReadHeaderTimeout, on the connection's first request
		{"GET", "/late-body", "late"}, // the body 300 ms after the head
		{"HEAD", "/chunked", ""},      // a HEAD answer with a transfer coding, then another request
		{"GET", "/ok", "ok"},
	} {
		resp, body := c.do(tc.method+" "+tc.path+" HTTP/1.1\r\nHost: app\r\nx-lower: 1\r\n\r\n", tc.method)
		if resp.StatusCode != 200 || body != tc.body {
			t.Fatalf("%s %s: %d %q (%v), want 200 %q", tc.method, tc.path, resp.StatusCode, body, resp.Header, tc.body)
		}
		if h := <-seen; !strings.Contains(h, "\r\nx-lower: 1\r\n") {
			t.Errorf("%s %s: the app saw %q: not relayed", tc.method, tc.path, h)
		}
	}

	// Two clients, one connection to the app: the second waits for the
	// first's slow answer.
	results := make(chan string, 2)
	for range 2 {
		go func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				results <- err.Error()
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
				results <- err.Error()
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				results <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			results <- resp.Status + " " + string(b)
		}()
	}
	for range 2 {
		if r := <-results; r != "200 OK slow" {
			t.Errorf("a client sharing the app's one connection got %q, want 200 OK slow", r)
		}
	}
}
