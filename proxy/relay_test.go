package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/loopserve"
)

// rawUpstream is a loopback upstream that answers each request head with
// what answer returns for it, byte for byte; n counts the requests from 1.
// An answer ending in "<close>" closes the connection after the bytes
// before it.
type rawUpstream struct {
	addr  string
	conns atomic.Int32
	mu    sync.Mutex
	heads []string
}

func newRawUpstream(t *testing.T, answer func(n int, head string) string) *rawUpstream {
	t.Helper()
	u := &rawUpstream{}
	u.addr = loopserve.Serve(t, func(c net.Conn) {
		u.conns.Add(1)
		br := bufio.NewReader(c)
		for {
			head, err := readHead(br)
			if err != nil {
				return
			}
			if n := contentLength(head); n > 0 {
				body := make([]byte, n)
				if _, err := io.ReadFull(br, body); err != nil {
					return
				}
				head += string(body)
			}
			u.mu.Lock()
			u.heads = append(u.heads, head)
			n := len(u.heads)
			u.mu.Unlock()
			a := answer(n, head)
			out, closing := strings.CutSuffix(a, "<close>")
			if _, err := io.WriteString(c, out); err != nil || closing {
				return
			}
		}
	})
	return u
}

func (u *rawUpstream) head(i int) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if i >= len(u.heads) {
		return ""
	}
	return u.heads[i]
}

func readHead(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		b.WriteString(line)
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

var contentLengthField = regexp.MustCompile(`(?i)\r\ncontent-length: *([0-9]+)\r\n`)

func contentLength(head string) int {
	m := contentLengthField.FindStringSubmatch(head)
	if m == nil {
		return 0
	}
	n := 0
	for _, c := range m[1] {
		n = n*10 + int(c-'0')
	}
	return n
}

// rawClient is a client connection to the proxy that writes requests as
// they are given and reads the answers with net/http's parser.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawClient{t: t, c: c, br: bufio.NewReader(c)}
}

func (rc *rawClient) do(req, method string) (*http.Response, string) {
	rc.t.Helper()
	if req != "" {
		if _, err := io.WriteString(rc.c, req); err != nil {
			rc.t.Fatal(err)
		}
	}
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		rc.t.Fatalf("reading the answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("reading the body: %v", err)
	}
	return resp, string(body)
}

var uuidV4 = regexp.MustCompile(`\r\nX-Request-Id: [0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\r\n`)

// A plain request goes upstream as the client wrote it, but for the
// hop-by-hop Connection field and meshd's own fields; the answer comes
// back as the upstream wrote it, over kept-alive connections both ways.
func TestRelayPassesBytesOn(t *testing.T) {
	up := newRawUpstream(t, func(n int, head string) string {
		return "HTTP/1.1 200 OK\r\nX-Up: 1\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi"
	})
	_, addr := testProxy(t, map[string][]string{"svc": {up.addr}}, nil)
	c := dialRaw(t, addr)
	for i := 0; i < 3; i++ {
		resp, body := c.do("GET /a/b?c=d HTTP/1.1\r\nHost: svc\r\nx-Custom: v\r\nConnection: keep-alive\r\nX-Meshd-Attempt: 7\r\n\r\n", "GET")
		if resp.StatusCode != 200 || body != "hi" || resp.Header.Get("X-Up") != "1" || resp.Close {
			t.Fatalf("answer %d: %d %q %v close=%v", i, resp.StatusCode, body, resp.Header, resp.Close)
		}
		if _, ok := resp.Header["Date"]; ok {
			t.Errorf("a Date the upstream did not send: %v", resp.Header)
		}
		if _, ok := resp.Header["Connection"]; ok {
			t.Errorf("the upstream's Connection field passed on: %v", resp.Header)
		}
		h := up.head(i)
		for _, want := range []string{"GET /a/b?c=d HTTP/1.1\r\n", "\r\nHost: svc\r\n", "\r\nx-Custom: v\r\n", "\r\nX-Meshd-Attempt: 1\r\n"} {
			if !strings.Contains(h, want) {
				t.Errorf("upstream saw %q, without %q", h, want)
			}
		}
		if strings.Contains(h, "Connection") || strings.Count(h, "X-Meshd-Attempt") != 1 || !uuidV4.MatchString(h) {
			t.Errorf("upstream saw %q", h)
		}
	}
	if n := up.conns.Load(); n != 1 {
		t.Errorf("%d upstream connections for 3 requests in a row, want 1", n)
	}

	// A request ID the client set is kept; an absolute-form target is
	// sent in origin form with its authority as Host.
	resp, _ := c.do("POST http://svc/p HTTP/1.1\r\nHost: other\r\nX-Request-Id: mine\r\nContent-Length: 3\r\n\r\nabc", "POST")
	h := up.head(3)
	if resp.StatusCode != 200 || !strings.HasPrefix(h, "POST /p HTTP/1.1\r\nHost: svc\r\n") || strings.Contains(h, "other") ||
		strings.Count(h, "X-Request-Id") != 1 || !strings.Contains(h, "X-Request-Id: mine\r\n") || !strings.HasSuffix(h, "\r\n\r\nabc") {
		t.Errorf("answer %d; upstream saw %q", resp.StatusCode, h)
	}
}

// Answers of every framing reach the client whole and correctly framed.
func TestRelayAnswerFramings(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	for _, tc := range []struct {
		name, method, answer string
		code                 int
		body                 string
		check                func(*http.Response) bool
	}{
		{"short", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 200, "abc", nil},
		{"empty", "GET", "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n", 204, "", func(r *http.Response) bool { return r.Header.Get("X-A") == "b" }},
		{"HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 200, "", func(r *http.Response) bool { return r.ContentLength == 10 }},
		{"long", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 102400\r\n\r\n" + big, 200, big, nil},
		{"chunked with trailers", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: z\r\n\r\n",
			200, "abcde", func(r *http.Response) bool { return r.Trailer.Get("X-T") == "z" }},
		{"until the connection closes", "GET", "HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nuntil the end<close>", 200, "until the end", nil},
		{"interim answer first", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nk", 201, "k", nil},
		{"HTTP/1.0 upstream", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok<close>", 200, "ok", nil},
		{"hop-by-hop fields named by Connection", "GET", "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\nContent-Length: 1\r\n\r\nk", 200, "k",
			func(r *http.Response) bool { return r.Header.Get("X-Hop") == "" && r.Header.Get("X-Keep") == "2" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newRawUpstream(t, func(int, string) string { return tc.answer })
			_, addr := testProxy(t, map[string][]string{"svc": {up.addr}}, nil)
			c := dialRaw(t, addr)
			for i := 0; i < 2; i++ { // and the client's connection stays usable
				resp, body := c.do(tc.method+" / HTTP/1.1\r\nHost: svc\r\n\r\n", tc.method)
				if resp.StatusCode != tc.code || body != tc.body || (tc.check != nil && !tc.check(resp)) {
					t.Fatalf("request %d: %d %.40q %v trailer %v", i, resp.StatusCode, body, resp.Header, resp.Trailer)
				}
				if resp.Close {
					t.Fatalf("request %d: the client's connection closes", i)
				}
			}
		})
	}
}

// Failed attempts are retried as the policy says, and answered by meshd
// when they cannot be; an answer cut short is never passed on as whole.
func TestRelayRetriesAndLocalReplies(t *testing.T) {
	for _, tc := range []struct {
		name     string
		method   string
		answers  []string
		mod      func(*config.Config)
		code     int
		reason   string
		attempts int
	}{
		{"503 then 200", "GET", []string{"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"}, nil, 200, "", 2},
		{"503 without retries", "GET", []string{"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown"},
			func(c *config.Config) { c.Defaults.RetryMax = 0 }, 503, "", 1},
		{"cut body", "POST", []string{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc<close>"}, nil, 502, "reset", 1},
		{"cut body, retried", "GET", []string{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc<close>", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"}, nil, 200, "", 2},
		{"cut long body", "POST", []string{"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\nabc<close>"}, nil, 502, "reset", 1},
		{"malformed answer", "POST", []string{"HTTP/1.1 200 OK\r\nBad Field: x\r\nContent-Length: 0\r\n\r\n"}, nil, 502, "reset", 1},
		{"unasked upgrade", "POST", []string{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"}, nil, 502, "reset", 1},
		{"timeout", "GET", []string{""}, func(c *config.Config) { c.Defaults.RequestTimeout = 300 * time.Millisecond }, 504, "timeout", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newRawUpstream(t, func(n int, _ string) string {
				if n > len(tc.answers) {
					return "HTTP/1.1 500 Too Many Attempts\r\nContent-Length: 0\r\n\r\n"
				}
				if tc.answers[n-1] == "" {
					time.Sleep(2 * time.Second)
				}
				return tc.answers[n-1]
			})
			_, addr := testProxy(t, map[string][]string{"svc": {up.addr}}, tc.mod)
			c := dialRaw(t, addr)
			resp, body := c.do(tc.method+" / HTTP/1.1\r\nHost: svc\r\n\r\n", tc.method)
			if resp.StatusCode != tc.code || resp.Header.Get(HeaderError) != tc.reason {
				t.Fatalf("%d %q %q", resp.StatusCode, resp.Header.Get(HeaderError), body)
			}
			if tc.code == 200 && body != "ok" {
				t.Fatalf("body %q", body)
			}
			if h := up.head(tc.attempts - 1); !strings.Contains(h, "X-Meshd-Attempt: "+string(rune('0'+tc.attempts))+"\r\n") {
				t.Errorf("attempt %d's head: %q", tc.attempts, h)
			}
			if up.head(tc.attempts) != "" {
				t.Errorf("more than %d attempts", tc.attempts)
			}
		})
	}
}

// An upstream that closed a kept-alive connection while it was idle costs
// the request nothing: it goes on a new connection.
func TestRelayStaleConnection(t *testing.T) {
	up := newRawUpstream(t, func(int, string) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok<close>" // without saying so
	})
	_, addr := testProxy(t, map[string][]string{"svc": {up.addr}}, nil)
	c := dialRaw(t, addr)
	for i := 0; i < 3; i++ {
		for _, method := range []string{"GET", "POST"} {
			req := method + " / HTTP/1.1\r\nHost: svc\r\nContent-Length: 1\r\n\r\nx"
			if resp, body := c.do(req, method); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("%s %d: %d %q %s", method, i, resp.StatusCode, body, resp.Header.Get(HeaderError))
			}
			time.Sleep(10 * time.Millisecond) // the close reaches meshd
		}
	}
}

// A client asking to close gets its answer and the connection's end; a
// dead endpoint is answered by meshd.
func TestRelayClientCloseAndConnectFailure(t *testing.T) {
	up := newRawUpstream(t, func(int, string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" })
	_, addr := testProxy(t, map[string][]string{"svc": {up.addr}, "dead": {deadAddr(t)}}, nil)
	c := dialRaw(t, addr)
	resp, _ := c.do("GET / HTTP/1.1\r\nHost: dead\r\n\r\n", "GET")
	if resp.StatusCode != 502 || resp.Header.Get(HeaderError) != "connect-failure" {
		t.Fatalf("dead endpoint: %d %q", resp.StatusCode, resp.Header.Get(HeaderError))
	}
	resp, body := c.do("GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n", "GET")
	if resp.StatusCode != 200 || body != "ok" || !resp.Close {
		t.Fatalf("%d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	if n, err := c.br.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("the connection stays open: %d %v", n, err)
	}
}

// readRawHead writes req and reads the head of its answer as it came.
func (rc *rawClient) head(req string) string {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, req); err != nil {
		rc.t.Fatal(err)
	}
	h, err := readHead(rc.br)
	if err != nil {
		rc.t.Fatal(err)
	}
	return h
}

// An answer without a body that is not short (here, for its Keep-Alive
// field) keeps the Content-Length it came with, as on the general path (a
// TE field sends a request there): the length a 304 refers to, none on a
// 204.
func TestRelayNoBodyAnswersKeepTheirLength(t *testing.T) {
	for _, tc := range []struct{ answer, want string }{
		{"HTTP/1.1 304 Not Modified\r\nKeep-Alive: timeout=5\r\nETag: \"x\"\r\nContent-Length: 1234\r\n\r\n", "1234"},
		{"HTTP/1.1 304 Not Modified\r\nKeep-Alive: timeout=5\r\nETag: \"x\"\r\n\r\n", ""},
		{"HTTP/1.1 204 No Content\r\nKeep-Alive: timeout=5\r\n\r\n", ""},
	} {
		up := newRawUpstream(t, func(int, string) string { return tc.answer })
		_, addr := testProxy(t, map[string][]string{"svc": {up.addr}}, nil)
		c := dialRaw(t, addr)
		relay := c.head("GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
		general := c.head("GET / HTTP/1.1\r\nHost: svc\r\nTE: trailers\r\n\r\n")
		for _, h := range []string{relay, general} {
			m := contentLengthField.FindStringSubmatch(h)
			got := ""
			if m != nil {
				got = m[1]
			}
			if got != tc.want || strings.Contains(h, "Keep-Alive") {
				t.Errorf("upstream %q\nrelay %q\ngeneral %q", tc.answer, relay, general)
				break
			}
		}
	}
}

// A body-less POST goes upstream with Content-Length: 0, as the general
// path sends it.
func TestRelayEmptyPostHasLength(t *testing.T) {
	up := newRawUpstream(t, func(int, string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" })
	_, addr := testProxy(t, map[string][]string{"svc": {up.addr}}, nil)
	c := dialRaw(t, addr)
	c.do("POST / HTTP/1.1\r\nHost: svc\r\n\r\n", "POST")
	if h := up.head(0); strings.Count(h, "Content-Length: 0\r\n") != 1 {
		t.Fatalf("upstream saw %q", h)
	}
}

// A relayed request's deadline left on an idle upstream connection does
// not make the pool take the connection for closed.
func TestRelayIdleConnectionOutlivesTheRequestTimeout(t *testing.T) {
	up := newRawUpstream(t, func(int, string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" })
	_, addr := testProxy(t, map[string][]string{"svc": {up.addr}}, func(c *config.Config) {
		c.Defaults.RequestTimeout = 200 * time.Millisecond
	})
	c := dialRaw(t, addr)
	c.do("GET / HTTP/1.1\r\nHost: svc\r\n\r\n", "GET")
	time.Sleep(1500 * time.Millisecond) // past the deadline and the pool's first look at the connection
	c.do("GET / HTTP/1.1\r\nHost: svc\r\n\r\n", "GET")
	if n := up.conns.Load(); n != 1 {
		t.Fatalf("%d upstream connections, want 1", n)
	}
}

// Relayed and general-path requests share upstream connections under
// load, with answers of every kind: some without a body that are not
// short, some closing their connection. Every answer is whole (and the
// race detector watches the pool).
func TestRelayMixedLoad(t *testing.T) {
	up := newRawUpstream(t, func(n int, head string) string {
		switch {
		case strings.HasPrefix(head, "HEAD"):
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" // no body: not short
		case n%7 == 0:
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok<close>"
		case n%5 == 0:
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	_, addr := testProxy(t, map[string][]string{"svc": {up.addr}}, func(c *config.Config) { c.MaxConnsPerEndpoint = 4 })
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialRaw(t, addr)
			for j := range 100 {
				method, extra := "GET", ""
				if (i+j)%3 == 0 {
					method = "HEAD"
				}
				if i%2 == 0 {
					extra = "TE: trailers\r\n"
				}
				resp, err := c.try(method+" / HTTP/1.1\r\nHost: svc\r\n"+extra+"\r\n", method)
				if err != nil || resp.code != 200 || method == "GET" && resp.body != "ok" {
					t.Errorf("%s %d/%d: %v %+v", method, i, j, err, resp)
					return
				}
			}
		}()
	}
	wg.Wait()
}

type rawAnswer struct {
	code int
	body string
}

// try is do for another goroutine than the test's: errors are returned.
func (rc *rawClient) try(req, method string) (rawAnswer, error) {
	if _, err := io.WriteString(rc.c, req); err != nil {
		return rawAnswer{}, err
	}
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		return rawAnswer{}, err
	}
	body, err := io.ReadAll(resp.Body)
	return rawAnswer{resp.StatusCode, string(body)}, err
}

// A client connection that relayed requests is still closed once idle for
// the idle timeout (give or take the sixteenth it may run over), and not
// before.
func TestRelayIdleTimeout(t *testing.T) {
	up := newRawUpstream(t, func(int, string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" })
	_, addr := testProxy(t, map[string][]string{"svc": {up.addr}}, func(c *config.Config) { c.IdleTimeout = 400 * time.Millisecond })
	c := dialRaw(t, addr)
	for range 5 {
		c.do("GET / HTTP/1.1\r\nHost: svc\r\n\r\n", "GET")
		time.Sleep(150 * time.Millisecond) // each wait shorter than the timeout
	}
	start := time.Now()
	if n, err := c.br.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Fatalf("closed after %v idle, want about 400ms", d)
	}
}

// Pipelined requests, relayed or not, are answered in order.
func TestRelayPipelined(t *testing.T) {
	up := newRawUpstream(t, func(n int, head string) string {
		path := strings.Fields(head)[1]
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(path)) + "\r\n\r\n" + path
	})
	_, addr := testProxy(t, map[string][]string{"svc": {up.addr}}, nil)
	c := dialRaw(t, addr)
	var reqs strings.Builder
	for i := range 6 {
		reqs.WriteString("GET /" + strconv.Itoa(i) + " HTTP/1.1\r\nHost: svc\r\n")
		if i%3 == 1 {
			reqs.WriteString("TE: trailers\r\n") // the general path
		}
		reqs.WriteString("\r\n")
	}
	if _, err := io.WriteString(c.c, reqs.String()); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		resp, body := c.do("", "GET")
		if resp.StatusCode != 200 || body != "/"+strconv.Itoa(i) {
			t.Fatalf("answer %d: %d %q", i, resp.StatusCode, body)
		}
	}
}
