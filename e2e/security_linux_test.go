//go:build linux

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/netnstest"
)

// The tests of this file check that meshd is no open proxy and no
// smuggling relay: what another pod can reach of it, what a client can
// make it connect to, what the admin API gives away, and how it frames
// requests whose framing is ambiguous (RFC 9112 §5.2, §6.1, §6.3).

// framed is one request an upstream of these tests received, with its
// framing as net/http parsed it.
type framed struct {
	method, path, host string
	contentLength      int64
	transferEncoding   []string
	body               string
	bodyErr            error
	header             http.Header
}

func (f framed) String() string {
	return fmt.Sprintf("%s %s (Host %s, Content-Length %d, Transfer-Encoding %q, body %q, body error %v)",
		f.method, f.path, f.host, f.contentLength, f.transferEncoding, f.body, f.bodyErr)
}

// framingRecorder is an HTTP upstream that answers 200 with its name and
// records every request with its framing.
type framingRecorder struct {
	name string
	mu   sync.Mutex
	reqs []framed
}

func (r *framingRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, err := io.ReadAll(req.Body)
	r.mu.Lock()
	r.reqs = append(r.reqs, framed{req.Method, req.URL.Path, req.Host, req.ContentLength,
		req.TransferEncoding, string(b), err, req.Header.Clone()})
	r.mu.Unlock()
	_, _ = io.WriteString(w, r.name)
}

func (r *framingRecorder) requests() []framed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

// quietRequests waits until the recorder got no new request for one of
// paths for 300 ms (at most 3 s) and returns those requests.
func (r *framingRecorder) quietRequests(paths ...string) []framed {
	pick := func() []framed {
		var out []framed
		for _, f := range r.requests() {
			if slices.Contains(paths, f.path) {
				out = append(out, f)
			}
		}
		return out
	}
	deadline := time.Now().Add(3 * time.Second)
	n := -1
	for time.Now().Before(deadline) {
		cur := len(pick())
		if cur == n {
			break
		}
		n = cur
		time.Sleep(300 * time.Millisecond)
	}
	return pick()
}

// connCounter counts the connections accepted on a listener that must
// never be reached.
type connCounter struct{ n atomic.Int64 }

func (c *connCounter) handle(conn *net.TCPConn) {
	c.n.Add(1)
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.Copy(io.Discard, conn)
}

// exchangeRaw connects from pod to addr, writes payload and reads
// everything until the peer closes or wait passes. closed reports that
// the peer closed (EOF or reset) rather than the wait running out.
func exchangeRaw(pod *netnstest.Pod, addr, payload string, wait time.Duration) (got string, closed bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := podDial(ctx, pod, addr)
	if err != nil {
		return "", true, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, payload); err != nil {
		return "", true, nil
	}
	b, rerr := io.ReadAll(c)
	var ne net.Error
	timedOut := errors.As(rerr, &ne) && ne.Timeout()
	return string(b), !timedOut, nil
}

// responses parses the HTTP/1.1 responses in raw (answers to requests of
// method), as many as are whole.
func responses(raw, method string) []*http.Response {
	br := bufio.NewReader(strings.NewReader(raw))
	var out []*http.Response
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return out
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return out
		}
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, resp)
	}
}

func bodyOf(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return string(b)
}

// TestSecurityNotAnOpenProxy: pod B cannot use pod A's meshd to reach
// anything but A's own app, on any port, with any Host, absolute URI or
// CONNECT; meshd's own ports answer B only where they must (/healthz and
// /ready on 15021); the admin API stays loopback-only and /shutdown needs
// POST.
func TestSecurityNotAnOpenProxy(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)
	app := &framingRecorder{name: "pod-app"}
	for _, fam := range families {
		serveHTTP(t, a, hostPort(fam.addr(a), 8080), app)
	}
	// What B must never get through A's meshd: a connection to B:9999.
	var bait connCounter
	serveTCP(t, b, ":9999", bait.handle)
	meshd := startMeshd(t, a, "MESHD_DETECT_TIMEOUT=300ms")

	noBait := func(t *testing.T, what string) {
		t.Helper()
		time.Sleep(100 * time.Millisecond) // a connection meshd would make is made by now
		if n := bait.n.Load(); n != 0 {
			t.Fatalf("%s: B:9999 got %d connection(s) from A's meshd", what, n)
		}
	}

	for _, fam := range families {
		aAddr, bAddr := fam.addr(a), fam.addr(b)
		baitAddr := hostPort(bAddr, 9999)

		t.Run("outbound-listener-unreachable-"+fam.name, func(t *testing.T) {
			addr := hostPort(aAddr, 15001)
			req := fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", baitAddr, baitAddr)
			got, _, err := exchangeRaw(b, addr, req, 2*time.Second)
			if err == nil && got != "" {
				t.Fatalf("%s answered B: %q", addr, got)
			}
			t.Logf("%s from B: %v", addr, orClosed(err))
			noBait(t, addr)
		})

		t.Run("own-ports-"+fam.name, func(t *testing.T) {
			before := len(app.requests())
			proxyReqs := []struct{ name, req, method string }{
				{"absolute-form", fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", baitAddr, baitAddr), http.MethodGet},
				{"absolute-form-app", fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", hostPort(aAddr, 8080), hostPort(aAddr, 8080)), http.MethodGet},
				{"connect", fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", baitAddr, baitAddr), http.MethodConnect},
			}
			for _, port := range []uint16{15000, 15001, 15006} {
				addr := hostPort(aAddr, port)
				for _, pr := range proxyReqs {
					got, closed, err := exchangeRaw(b, addr, pr.req, 2*time.Second)
					switch {
					case err != nil:
						t.Logf("%s %s: %v", addr, pr.name, err)
					case got != "":
						t.Errorf("%s answered B's %s request: %q", addr, pr.name, got)
					case !closed:
						t.Errorf("%s accepted B's %s request and held it open without an answer", addr, pr.name)
					default:
						t.Logf("%s %s: accepted, then closed without an answer", addr, pr.name)
					}
				}
			}
			// The health port answers /healthz and /ready, and nothing of
			// a proxy: an absolute URI or CONNECT gets meshd's own 404.
			health := hostPort(aAddr, 15021)
			for _, path := range []string{"/healthz", "/ready"} {
				got, _, err := exchangeRaw(b, health, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3*time.Second)
				rs := responses(got, http.MethodGet)
				if err != nil || len(rs) != 1 || rs[0].StatusCode != http.StatusOK {
					t.Errorf("%s%s from B: %q, %v; want 200", health, path, got, err)
				}
			}
			for _, pr := range proxyReqs {
				got, _, err := exchangeRaw(b, health, pr.req, 2*time.Second)
				rs := responses(got, pr.method)
				if err != nil {
					t.Logf("%s %s: %v", health, pr.name, err)
					continue
				}
				if len(rs) == 0 {
					t.Logf("%s %s: no answer (%q)", health, pr.name, got)
					continue
				}
				if rs[0].StatusCode/100 == 2 || bodyOf(rs[0]) == app.name {
					t.Errorf("%s answered B's %s request like a proxy: %s %q", health, pr.name, rs[0].Status, bodyOf(rs[0]))
				} else {
					t.Logf("%s %s: %s", health, pr.name, rs[0].Status)
				}
			}
			for _, req := range []string{"POST /shutdown", "GET /config", "GET /breakers", "GET /metrics", "GET /debug/pprof/"} {
				got, _, err := exchangeRaw(b, health, req+" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 3*time.Second)
				rs := responses(got, http.MethodGet)
				if err != nil || len(rs) != 1 || rs[0].StatusCode/100 != 4 {
					t.Errorf("%s %s from B: %q, %v; want a 4xx", health, req, got, err)
				}
			}
			if got := app.requests()[before:]; len(got) != 0 {
				t.Errorf("A's app was reached through meshd's own ports: %v", got)
			}
			noBait(t, "own ports")
		})

		t.Run("host-and-absolute-uri-"+fam.name, func(t *testing.T) {
			appAddr := hostPort(aAddr, 8080)
			for _, req := range []string{
				fmt.Sprintf("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", baitAddr),
				fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", baitAddr, baitAddr),
				fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n", baitAddr),
			} {
				before := len(app.requests())
				got, _, err := exchangeRaw(b, appAddr, req, 3*time.Second)
				rs := responses(got, http.MethodGet)
				first, _, _ := strings.Cut(req, "\r\n")
				switch {
				case err != nil || len(rs) == 0:
					t.Logf("%q to %s: no answer (%v)", first, appAddr, err)
				case rs[0].StatusCode == http.StatusOK && bodyOf(rs[0]) == app.name:
					if n := len(app.requests()) - before; n != 1 {
						t.Errorf("%q: answered by A's app, which saw %d requests", first, n)
					}
				default:
					t.Errorf("%q to %s: %s %q; want A's app's answer or a failure", first, appAddr, rs[0].Status, bodyOf(rs[0]))
				}
			}
			noBait(t, "Host/absolute URI")
		})

		t.Run("connect-to-app-port-"+fam.name, func(t *testing.T) {
			appAddr := hostPort(aAddr, 8080)
			req := fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nhello bait\r\n", baitAddr, baitAddr)
			got, _, err := exchangeRaw(b, appAddr, req, 2*time.Second)
			if strings.Contains(got, "Connection established") {
				t.Errorf("CONNECT %s through A:8080 opened a tunnel: %q", baitAddr, got)
			}
			t.Logf("CONNECT %s to %s: %q %v", baitAddr, appAddr, firstLine(got), err)
			noBait(t, "CONNECT")
		})
	}

	t.Run("admin-loopback-only", func(t *testing.T) {
		for _, fam := range families {
			addr := hostPort(fam.addr(a), 15000)
			got, _, err := exchangeRaw(b, addr, "GET /config HTTP/1.1\r\nHost: x\r\n\r\n", 2*time.Second)
			if err == nil && got != "" {
				t.Errorf("admin API answered B on %s: %q", addr, got)
			}
		}
		ac := podClient(t, a)
		resp, body, err := do(ac, http.MethodGet, adminURL+"/config", "", nil)
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(body, `"MESHD_ADMIN_ADDR": "127.0.0.1:15000"`) {
			t.Errorf("/config inside A: %v %v, want MESHD_ADMIN_ADDR 127.0.0.1:15000 in\n%s", resp, err, body)
		}
		for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete} {
			resp, _, err := do(ac, method, adminURL+"/shutdown", "", nil)
			if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s /shutdown: %v %v; want 405", method, resp, err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		if meshd.Exited() {
			t.Fatalf("meshd exited after /shutdown without POST")
		}
		if resp, _, err := do(ac, http.MethodGet, adminURL+"/ready", "", nil); err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("/ready after GET /shutdown: %v %v; want 200", resp, err)
		}
	})
}

func orClosed(err error) string {
	if err == nil {
		return "accepted, then closed without an answer"
	}
	return err.Error()
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// TestSecurityConfigRedactsToken: CONSUL_HTTP_TOKEN is sent to Consul but
// shows nowhere else: not in /config (it reads "<redacted>"), in no other
// admin document, in no log line, debug level included.
func TestSecurityConfigRedactsToken(t *testing.T) {
	t.Parallel()
	const token = "s3cr3t-7f1c2b9e-token"
	app := &framingRecorder{name: "payments"}
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: app, ReadHeaderTimeout: 5 * time.Second}
	appDone := make(chan struct{})
	go func() { _ = appSrv.Serve(appLn); close(appDone) }()
	t.Cleanup(func() { appSrv.Close(); <-appDone })
	appPort := appLn.Addr().(*net.TCPAddr).Port

	// A stand-in for the Consul agent: it knows service payments (one
	// instance, the app above), holds blocking queries, and notes whether
	// requests carry the token.
	var sawToken, sawQuery atomic.Bool
	consul := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Consul-Token") == token {
			sawToken.Store(true)
		}
		if idx := r.URL.Query().Get("index"); idx != "" && idx != "0" {
			// A blocking query with nothing new: hold it a while.
			tm := time.NewTimer(5 * time.Second)
			select {
			case <-r.Context().Done():
			case <-tm.C:
			}
			tm.Stop()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Consul-Index", "7")
		switch r.URL.Path {
		case "/v1/status/leader":
			_, _ = io.WriteString(w, `"127.0.0.1:8300"`)
		case "/v1/health/service/payments", "/v1/catalog/service/payments":
			sawQuery.Store(true)
			fmt.Fprintf(w, `[{"Node":{"Node":"n1","Address":"127.0.0.1"},"Service":{"ID":"p1","Service":"payments","Address":"127.0.0.1","Port":%d},"Checks":[]}]`, appPort)
		default:
			_, _ = io.WriteString(w, `[]`)
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = consul.Serve(ln); close(done) }()
	t.Cleanup(func() { consul.Close(); <-done })

	m := startLoopbackMeshd(t, "CONSUL_HTTP_ADDR="+ln.Addr().String(), "CONSUL_HTTP_TOKEN="+token,
		"MESHD_LOG_LEVEL=debug", "MESHD_ACCESS_LOG=true")
	m.ready(t, http.StatusOK, 15*time.Second)
	// A call to payments, so that discovery asks the agent too (a name
	// the agent knows: nothing is looked up in DNS).
	c := m.client()
	resp, err := c.Get("http://payments/")
	if err != nil {
		t.Fatalf("GET http://payments/ through meshd: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.CloseIdleConnections()
	if resp.StatusCode != http.StatusOK || string(body) != app.name {
		t.Errorf("GET http://payments/: %s %q, want 200 from the instance the agent knows", resp.Status, body)
	}
	if !sawToken.Load() || !sawQuery.Load() {
		t.Fatalf("the agent got no health query (%v) or no token (%v): the check below would prove nothing", sawQuery.Load(), sawToken.Load())
	}
	cfg, err := adminGet(m.admin, "/config")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Settings map[string]string `json:"settings"`
	}
	if err := json.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatalf("/config: %v\n%s", err, cfg)
	}
	if got := doc.Settings["CONSUL_HTTP_TOKEN"]; got != "<redacted>" {
		t.Errorf("/config shows CONSUL_HTTP_TOKEN as %q, want <redacted>", got)
	}
	for _, path := range []string{"/config", "/breakers", "/endpoints", "/metrics", "/debug/pprof/cmdline"} {
		body, err := adminGet(m.admin, path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
		}
		if strings.Contains(body, token) {
			t.Errorf("%s shows the token", path)
		}
	}
	out := m.output()
	if strings.Contains(out, token) {
		t.Errorf("meshd's log shows the token:\n%s", out)
	}
	var starting string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, `"msg":"starting"`) {
			starting = l
		}
	}
	if !strings.Contains(starting, `"CONSUL_HTTP_TOKEN":"<redacted>"`) {
		t.Errorf("the startup line does not show the token redacted: %q", starting)
	}
}

// smugglingCase is a request whose framing is ambiguous. smuggled is a
// request hidden in it under one reading of the framing: the upstream
// must never receive it.
type smugglingCase struct {
	name string
	// payload is the request for host; its own path is first, the hidden
	// request's is smuggled.
	payload func(host, first, smuggled string) string
}

func smuggledRequest(host, path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
}

var smugglingCases = []smugglingCase{
	{"content-length-conflict", func(h, first, smuggled string) string {
		s := smuggledRequest(h, smuggled)
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nContent-Length: %d\r\n\r\nhello%s", first, h, 5+len(s), s)
	}},
	{"content-length-and-chunked", func(h, first, smuggled string) string {
		s := smuggledRequest(h, smuggled)
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s", first, h, 5+len(s), s)
	}},
	{"chunked-and-content-length", func(h, first, smuggled string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n", first, h)
	}},
	{"obs-fold", func(h, first, smuggled string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\nhello", first, h)
	}},
	{"obs-fold-transfer-encoding", func(h, first, smuggled string) string {
		s := smuggledRequest(h, smuggled)
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n%s", first, h, 5+len(s), s)
	}},
	{"bare-lf", func(h, first, smuggled string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\nHost: %s\nContent-Length: 5\n\nhello", first, h)
	}},
	{"transfer-encoding-xchunked", func(h, first, smuggled string) string {
		s := smuggledRequest(h, smuggled)
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: xchunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n%s", first, h, 5+len(s), s)
	}},
	{"transfer-encoding-twice", func(h, first, smuggled string) string {
		s := smuggledRequest(h, smuggled)
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s", first, h, s)
	}},
	{"http10-chunked", func(h, first, smuggled string) string {
		// RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
		s := smuggledRequest(h, smuggled)
		return fmt.Sprintf("POST %s HTTP/1.0\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello%s", first, h, s)
	}},
}

// TestSecuritySmuggling sends requests with ambiguous framing through
// meshd, outbound (the app in A to payments in B) and inbound (B to A's
// app). meshd must reject each with 400 and close the connection, and
// forward nothing, neither the request nor what is hidden in it.
func TestSecuritySmuggling(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)
	payments := &framingRecorder{name: "payments"}
	serveHTTP(t, b, hostPort(b.Addr, 8081), payments)
	app := &framingRecorder{name: "pod-app"}
	serveHTTP(t, a, hostPort(a.Addr, 8080), app)
	startMeshd(t, a, "MESHD_STATIC_ENDPOINTS=payments="+hostPort(b.Addr, 8081), "MESHD_DETECT_TIMEOUT=300ms")

	directions := []struct {
		name     string
		from     *netnstest.Pod
		addr     string // what the client dials: redirected to meshd
		host     string
		upstream *framingRecorder
	}{
		{"outbound", a, hostPort(b.Addr, 80), "payments", payments},
		{"inbound", b, hostPort(a.Addr, 8080), hostPort(a.Addr, 8080), app},
	}
	for _, d := range directions {
		for _, tc := range smugglingCases {
			t.Run(d.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				first, smuggled := "/first-"+d.name+"-"+tc.name, "/smuggled-"+d.name+"-"+tc.name
				got, closed, err := exchangeRaw(d.from, d.addr, tc.payload(d.host, first, smuggled), time.Second)
				if err != nil {
					t.Fatalf("dial %s: %v", d.addr, err)
				}
				rs := responses(got, http.MethodPost)
				reqs := d.upstream.quietRequests(first, smuggled)
				var statuses []string
				for _, r := range rs {
					statuses = append(statuses, r.Status)
				}
				t.Logf("client got %q (connection closed: %v); upstream got %d request(s): %v", statuses, closed, len(reqs), reqs)
				for _, r := range reqs {
					if r.path == smuggled {
						t.Errorf("meshd bug: the upstream received the hidden request %v: meshd kept the connection open "+
							"after a request with both Content-Length and Transfer-Encoding and read the rest as a new request "+
							"(RFC 9112 §6.1: the server MUST close the connection after responding to such a request)", r)
					}
				}
				// RFC 9112 §5.2, §2.2, §6.1, §6.3: every ambiguous framing is
				// rejected: 400, nothing upstream, the connection closed.
				if len(rs) != 1 || rs[0].StatusCode != http.StatusBadRequest {
					t.Fatalf("answers %q, want exactly one 400", statuses)
				}
				if len(reqs) != 0 {
					t.Errorf("rejected with %s, yet the upstream got %v", rs[0].Status, reqs)
				}
				if !closed {
					t.Errorf("rejected with %s, but the connection stayed open", rs[0].Status)
				}
			})
		}
	}
}

// TestSecurityClientFramingErrorNotBlamedOnUpstream: a client whose
// chunked body is malformed (a chunk-size line ending in a bare LF, which
// net/http rejects) is at fault, not the upstream. meshd should answer it
// 400, and not count it against the upstream's breakers: five such requests
// must not open the circuit for every other caller.
func TestSecurityClientFramingErrorNotBlamedOnUpstream(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)
	payments := &framingRecorder{name: "payments"}
	serveHTTP(t, b, hostPort(b.Addr, 8081), payments)
	startMeshd(t, a, "MESHD_STATIC_ENDPOINTS=payments="+hostPort(b.Addr, 8081), "MESHD_DETECT_TIMEOUT=300ms")
	addr := hostPort(b.Addr, 80)
	bad := "POST /bad HTTP/1.1\r\nHost: payments\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"
	var answers []string
	for range 6 {
		got, _, err := exchangeRaw(a, addr, bad, 3*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		rs := responses(got, http.MethodPost)
		if len(rs) == 0 {
			answers = append(answers, "none")
			continue
		}
		answers = append(answers, fmt.Sprintf("%d %s", rs[0].StatusCode, rs[0].Header.Get("X-Meshd-Error")))
	}
	t.Logf("answers to 6 malformed chunked bodies: %q", answers)
	c := podClient(t, a)
	resp, body, err := do(c, http.MethodGet, "http://"+addr+"/", "payments", nil)
	if err != nil {
		t.Fatalf("good request after the malformed ones: %v", err)
	}
	u := upstreamBreaker(t, podClient(t, a), "payments")
	if resp.StatusCode != http.StatusOK || u.State != "closed" {
		t.Errorf("meshd bug: malformed client bodies were blamed on the upstream: answers %q; "+
			"then a good request got %s %q (x-meshd-error %q), payments breaker %s (%s)",
			answers, resp.Status, body, resp.Header.Get("X-Meshd-Error"), u.State, u.Reason)
	}
	for i, ans := range answers {
		if !strings.HasPrefix(ans, "400") {
			t.Errorf("malformed chunked body %d answered %q, want 400 (the client's fault)", i+1, ans)
			break
		}
	}
}

// TestSecurityLimits checks what each request limit does to a client that
// hits it, on a loopback explicit-mode meshd (docs/reliability.md).
func TestSecurityLimits(t *testing.T) {
	t.Parallel()
	up := &framingRecorder{name: "ok"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: up, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	m := startLoopbackMeshd(t, "MESHD_STATIC_ENDPOINTS=ok="+ln.Addr().String(),
		"MESHD_MAX_HEADER_BYTES=4KiB", "MESHD_MAX_HEADER_COUNT=20", "MESHD_READ_HEADER_TIMEOUT=500ms",
		"MESHD_IDLE_TIMEOUT=500ms")
	m.ready(t, http.StatusOK, 15*time.Second)

	// raw sends payload on a new connection to meshd's outbound listener
	// at addr and reads until meshd closes or wait passes. A connection
	// reset while being opened counts as closed at once.
	raw := func(t *testing.T, addr, payload string, wait time.Duration) (string, bool, time.Duration) {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if errors.Is(err, syscall.ECONNRESET) {
			return "", true, 0
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		_ = c.SetDeadline(start.Add(wait))
		if payload != "" {
			_, _ = io.WriteString(c, payload)
		}
		b, rerr := io.ReadAll(c)
		var ne net.Error
		return string(b), !(errors.As(rerr, &ne) && ne.Timeout()), time.Since(start)
	}
	status := func(got string) string {
		if rs := responses(got, http.MethodGet); len(rs) > 0 {
			return rs[0].Status
		}
		return fmt.Sprintf("no answer (%q)", got)
	}

	t.Run("header-bytes", func(t *testing.T) {
		req := "GET http://ok/ HTTP/1.1\r\nHost: ok\r\nX-Big: " + strings.Repeat("b", 8<<10) + "\r\n\r\n"
		got, closed, _ := raw(t, m.outbound, req, 3*time.Second)
		if !strings.HasPrefix(got, "HTTP/1.1 431 ") || !closed {
			t.Errorf("8 KiB of headers over a 4 KiB limit: %s (closed %v), want 431 and close", status(got), closed)
		}
	})
	t.Run("header-count", func(t *testing.T) {
		var h strings.Builder
		for i := range 30 {
			fmt.Fprintf(&h, "X-H%d: v\r\n", i)
		}
		got, closed, _ := raw(t, m.outbound, "GET http://ok/ HTTP/1.1\r\nHost: ok\r\n"+h.String()+"\r\n", 3*time.Second)
		if !strings.HasPrefix(got, "HTTP/1.1 431 ") || !closed {
			t.Errorf("31 header fields over a limit of 20: %s (closed %v), want 431 and close", status(got), closed)
		}
	})
	t.Run("read-header-timeout", func(t *testing.T) {
		got, closed, took := raw(t, m.outbound, "GET http://ok/ HTTP/1.1\r\nHost: ok\r\n", 5*time.Second)
		if !closed || took > 3*time.Second {
			t.Errorf("headers never finished: connection closed %v after %v (answer %q), want closed after about 500ms", closed, took, got)
		}
		t.Logf("unfinished headers: closed after %v, answer %q", took.Round(10*time.Millisecond), firstLine(got))
	})
	t.Run("idle-timeout", func(t *testing.T) {
		got, closed, took := raw(t, m.outbound, "GET http://ok/ HTTP/1.1\r\nHost: ok\r\n\r\n", 5*time.Second)
		if !strings.HasPrefix(got, "HTTP/1.1 200 ") || !closed || took > 3*time.Second {
			t.Errorf("keep-alive connection left idle: %s, closed %v after %v; want 200 then closed after about 500ms", status(got), closed, took)
		}
	})
	t.Run("max-connections", func(t *testing.T) {
		// A meshd of its own, whose detection waits long enough for the
		// connections held below to stay open while the sixth comes.
		lm := startLoopbackMeshd(t, "MESHD_STATIC_ENDPOINTS=ok="+ln.Addr().String(),
			"MESHD_MAX_CONNECTIONS=5", "MESHD_DETECT_TIMEOUT=5s")
		lm.ready(t, http.StatusOK, 15*time.Second)
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for range 5 {
			c, err := net.DialTimeout("tcp", lm.outbound, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
		}
		time.Sleep(200 * time.Millisecond) // meshd has accepted the five
		got, closed, took := raw(t, lm.outbound, "GET http://ok/ HTTP/1.1\r\nHost: ok\r\n\r\n", 3*time.Second)
		if got != "" || !closed {
			t.Errorf("a sixth connection over MESHD_MAX_CONNECTIONS=5: answer %q, closed %v after %v; want closed at once", got, closed, took)
		}
	})
}

// TestSecurityEndpointConnectionLimit: with MESHD_MAX_CONNECTIONS_PER_ENDPOINT=2,
// five requests at once to a service with one endpoint open two upstream
// connections, no more; the other three wait for one of them and are
// answered once the upstream frees it.
func TestSecurityEndpointConnectionLimit(t *testing.T) {
	t.Parallel()
	const limit, requests = 2, 5
	var (
		mu            sync.Mutex
		open, maxOpen int
		served        atomic.Int64
	)
	release := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			mu.Lock()
			defer mu.Unlock()
			switch s {
			case http.StateNew:
				open++
				maxOpen = max(maxOpen, open)
			case http.StateClosed, http.StateHijacked:
				open--
			}
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			served.Add(1)
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
			_, _ = io.WriteString(w, "ok")
		})}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	m := startLoopbackMeshd(t, "MESHD_STATIC_ENDPOINTS=held="+ln.Addr().String(),
		"MESHD_MAX_CONNECTIONS_PER_ENDPOINT="+strconv.Itoa(limit), "MESHD_REQUEST_TIMEOUT=10s")
	m.ready(t, http.StatusOK, 15*time.Second)

	type result struct {
		code int
		err  error
	}
	results := make(chan result, requests)
	for range requests {
		go func() {
			c, err := net.DialTimeout("tcp", m.outbound, 5*time.Second)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(8 * time.Second))
			_, _ = io.WriteString(c, "GET http://held/ HTTP/1.1\r\nHost: held\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				results <- result{err: err}
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			results <- result{code: resp.StatusCode}
		}()
	}
	// Every request has reached meshd and the first ones the upstream
	// when the upstream holds as many as the limit allows.
	deadline := time.Now().Add(5 * time.Second)
	for served.Load() < limit && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if n := served.Load(); n != limit {
		t.Errorf("%d requests reached the upstream while it held them, want %d (the connection limit)", n, limit)
	}
	close(release)
	for range requests {
		r := <-results
		if r.err != nil || r.code != http.StatusOK {
			t.Errorf("request: %d %v, want 200 once the upstream freed a connection", r.code, r.err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if maxOpen != limit {
		t.Errorf("the upstream had at most %d connections from meshd open at once, want %d", maxOpen, limit)
	}
	if n := served.Load(); n != requests {
		t.Errorf("the upstream served %d requests, want %d", n, requests)
	}
}
