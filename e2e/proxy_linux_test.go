//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/netnstest"
)

// requireNetns skips (or, under MESHD_E2E=require, fails) a test that
// cannot build namespaces and iptables rules here. Every pod has an IPv6
// address, so "iptables apply" (MESHD_IPV6=auto) uses ip6tables too.
func requireNetns(t *testing.T) {
	t.Helper()
	netnstest.Require(t, "ip", "setpriv", "iptables", "iptables-restore", "iptables-save", "ip6tables-restore")
}

// startMeshd installs meshd's rules in pod and runs meshd there as the
// proxy uid with env, then waits until /ready answers 200 from inside the
// pod. netnstest prints meshd's output when the test fails.
func startMeshd(t *testing.T, pod *netnstest.Pod, env ...string) *netnstest.Process {
	t.Helper()
	bin := meshdBinary(t)
	pod.Run(t, bin, "iptables", "apply")
	// Access logs make meshd's output, printed when a test fails, show
	// every request and connection it handled.
	p := pod.Start(t, 1337, append([]string{"MESHD_ACCESS_LOG=true"}, env...), bin, "run")
	c := podClient(t, pod)
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for {
		if p.Exited() {
			code, _ := p.Wait(0)
			t.Fatalf("meshd in %s exited (code %d) before it was ready:\n%s", pod.Name, code, p.Output())
		}
		resp, err := c.Get("http://127.0.0.1:15021/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshd in %s not ready after 15s (last: %s):\n%s", pod.Name, last, p.Output())
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by the deadline above
	}
}

// podDial connects to addr from inside pod: with meshd's rules applied
// there, the connection is the app's, and redirected.
func podDial(ctx context.Context, pod *netnstest.Pod, addr string) (*net.TCPConn, error) {
	var c net.Conn
	err := pod.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func mustDial(t *testing.T, pod *netnstest.Pod, addr string) *net.TCPConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := podDial(ctx, pod, addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, pod.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// podClient is an HTTP client whose connections are made inside pod.
func podClient(t *testing.T, pod *netnstest.Pod) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return podDial(ctx, pod, addr)
		},
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// do sends one request with the given Host and returns the response with
// its body read.
func do(c *http.Client, method, url, host string, body io.Reader) (*http.Response, string, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return nil, "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// listen opens a TCP listener on addr inside pod, closed in t.Cleanup.
func listen(t *testing.T, pod *netnstest.Pod, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := pod.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, pod.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveHTTP serves h on addr inside pod until the test ends.
func serveHTTP(t *testing.T, pod *netnstest.Pod, addr string, h http.Handler) {
	t.Helper()
	ln := listen(t, pod, addr)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// serveTCP runs handle for every connection accepted on addr inside pod;
// at the end of the test the listener and open connections are closed
// and the handlers waited for.
func serveTCP(t *testing.T, pod *netnstest.Pod, addr string, handle func(*net.TCPConn)) {
	t.Helper()
	serveListener(t, listen(t, pod, addr), handle)
}

// serveListener runs handle for every connection accepted on ln; at the
// end of the test ln and the open connections are closed and the handlers
// waited for.
func serveListener(t *testing.T, ln net.Listener, handle func(*net.TCPConn)) {
	t.Helper()
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// echo writes back what it reads, and half-closes once the client has.
func echo(c *net.TCPConn) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(c, c); err == nil {
		_ = c.CloseWrite()
	}
}

// seen is one request an upstream received.
type seen struct {
	remote string
	host   string
	header http.Header
}

// recorder is an HTTP upstream that answers with its name and remembers
// every request.
type recorder struct {
	name string
	mu   sync.Mutex
	reqs []seen
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.reqs = append(r.reqs, seen{remote: req.RemoteAddr, host: req.Host, header: req.Header.Clone()})
	r.mu.Unlock()
	_, _ = io.Copy(io.Discard, req.Body)
	fmt.Fprint(w, r.name)
}

func (r *recorder) requests() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.reqs...)
}

// family picks a pod's IPv4 or IPv6 address.
type family struct {
	name     string
	addr     func(*netnstest.Pod) netip.Addr
	loopback netip.Addr
}

var families = []family{
	{"ipv4", func(p *netnstest.Pod) netip.Addr { return p.Addr }, netip.AddrFrom4([4]byte{127, 0, 0, 1})},
	{"ipv6", func(p *netnstest.Pod) netip.Addr { return p.Addr6 }, netip.IPv6Loopback()},
}

func hostPort(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }

// TestTransparentHTTPByServiceName: the app in pod A calls an address
// where nothing listens, with Host "payments"; meshd routes the request by
// name to the three instances in pod B, and passes a name it does not know
// through to the address the app dialled.
func TestTransparentHTTPByServiceName(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			t.Parallel()
			tp := netnstest.NewTopology(t)
			a, b := tp.AddPod(t), tp.AddPod(t)
			bAddr := fam.addr(b)

			insts := make([]*recorder, 3)
			eps := make([]string, 3)
			for i := range insts {
				insts[i] = &recorder{name: fmt.Sprintf("instance-%d", i+1)}
				eps[i] = hostPort(bAddr, uint16(8081+i))
				serveHTTP(t, b, eps[i], insts[i])
			}
			startMeshd(t, a, "MESHD_STATIC_ENDPOINTS=payments="+strings.Join(eps, ","), "MESHD_DETECT_TIMEOUT=300ms")
			c := podClient(t, a)

			url := "http://" + hostPort(bAddr, 80) + "/"
			const n = 60
			for i := range n {
				resp, body, err := do(c, http.MethodGet, url, "payments", nil)
				if err != nil {
					t.Fatalf("request %d: GET %s (Host payments) from A: %v", i, url, err)
				}
				if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "instance-") {
					t.Fatalf("request %d: %s %q (x-meshd-error %q); want 200 from an instance",
						i, resp.Status, body, resp.Header.Get("X-Meshd-Error"))
				}
			}
			total := 0
			ids := map[string]bool{}
			for _, in := range insts {
				reqs := in.requests()
				total += len(reqs)
				if len(reqs) == 0 {
					t.Errorf("%s got no request out of %d", in.name, n)
				}
				for _, r := range reqs {
					id := r.header.Get("X-Request-Id")
					if id == "" {
						t.Errorf("%s: request without X-Request-Id: %v", in.name, r.header)
					} else if ids[id] {
						t.Errorf("%s: X-Request-Id %s seen twice", in.name, id)
					}
					ids[id] = true
					if got := r.header.Get("X-Meshd-Attempt"); got != "1" {
						t.Errorf("%s: X-Meshd-Attempt = %q, want 1", in.name, got)
					}
				}
				t.Logf("%s: %d requests", in.name, len(reqs))
			}
			if total != n {
				t.Errorf("instances got %d requests, want %d", total, n)
			}

			t.Run("passthrough", func(t *testing.T) {
				before := len(insts[0].requests())
				url := "http://" + eps[0] + "/"
				resp, body, err := do(c, http.MethodGet, url, "other.example", nil)
				if err != nil {
					t.Fatalf("GET %s (Host other.example): %v", url, err)
				}
				if resp.StatusCode != http.StatusOK || body != "instance-1" {
					t.Fatalf("got %s %q (x-meshd-error %q); want 200 instance-1", resp.Status, body, resp.Header.Get("X-Meshd-Error"))
				}
				reqs := insts[0].requests()
				if len(reqs) != before+1 || reqs[len(reqs)-1].host != "other.example" {
					t.Fatalf("instance-1 did not get the passthrough request with Host other.example")
				}
			})
		})
	}
}

// TestOpaqueTCP: non-HTTP traffic from the app in pod A goes through
// meshd byte for byte, with half-close both ways, and server-first
// protocols are not hung by protocol detection.
func TestOpaqueTCP(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	const detect = 2 * time.Second
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)

	serveTCP(t, b, ":9000", echo)
	// Server half-closes first, then reads what the client still sends.
	lateRead := make(chan string, 1)
	serveTCP(t, b, ":9001", func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, "hello"); err != nil {
			lateRead <- "write: " + err.Error()
			return
		}
		if err := c.CloseWrite(); err != nil {
			lateRead <- "close write: " + err.Error()
			return
		}
		got, err := io.ReadAll(c)
		if err != nil {
			lateRead <- fmt.Sprintf("read %q, then %v", got, err)
			return
		}
		lateRead <- string(got)
	})
	banner := func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, "220 server speaks first\r\n"); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
	}
	serveTCP(t, b, ":9002", banner)
	serveTCP(t, b, ":3306", banner)

	startMeshd(t, a, "MESHD_DETECT_TIMEOUT="+detect.String())

	for _, fam := range families {
		t.Run("echo-1MiB-"+fam.name, func(t *testing.T) {
			t.Parallel()
			echoRoundTrip(t, mustDial(t, a, hostPort(fam.addr(b), 9000)), 1<<20)
		})
	}

	t.Run("server-half-closes-first", func(t *testing.T) {
		t.Parallel()
		c := mustDial(t, a, hostPort(b.Addr, 9001))
		_ = c.SetDeadline(time.Now().Add(detect + 10*time.Second))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "hello" {
			t.Fatalf("read %q, %v; want \"hello\" then EOF", got, err)
		}
		if _, err := io.WriteString(c, "late"); err != nil {
			t.Fatalf("write after the server's EOF: %v", err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatalf("close write: %v", err)
		}
		select {
		case s := <-lateRead:
			if s != "late" {
				t.Fatalf("server read %q after its half-close, want \"late\"", s)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("server never saw the client's EOF")
		}
	})

	bannerCases := []struct {
		name string
		port uint16
		max  time.Duration
	}{
		{"server-first-detect-timeout", 9002, detect + 5*time.Second},
		{"server-first-opaque-port-3306", 3306, time.Second},
	}
	for _, tc := range bannerCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			c := mustDial(t, a, hostPort(b.Addr, tc.port))
			_ = c.SetReadDeadline(start.Add(tc.max))
			line, err := bufio.NewReader(c).ReadString('\n')
			took := time.Since(start)
			if err != nil || line != "220 server speaks first\r\n" {
				t.Fatalf("port %d: read %q, %v after %v; want the banner within %v", tc.port, line, err, took, tc.max)
			}
			t.Logf("port %d: banner after %v (detect timeout %v)", tc.port, took.Round(time.Millisecond), detect)
		})
	}
}

// echoRoundTrip writes size random bytes on c while it reads, half-closes,
// and checks that exactly those bytes come back before EOF.
func echoRoundTrip(t *testing.T, c *net.TCPConn, size int) {
	t.Helper()
	payload := make([]byte, size)
	rand.Read(payload)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err := <-werr; err != nil {
		t.Fatalf("echo to %s: write: %v", c.RemoteAddr(), err)
	}
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo to %s: got %d of %d bytes back, first difference at byte %d, read error %v",
			c.RemoteAddr(), len(got), len(payload), firstDiff(got, payload), err)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestInbound: pod B runs meshd, pod A does not. Calls from A reach B's
// app through B's inbound listener, delivered to the original destination
// (or to localhost with MESHD_INBOUND_TARGET=localhost); meshd's own ports
// are not an open proxy.
func TestInbound(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	cases := []struct {
		target string // MESHD_INBOUND_TARGET; "" = the default
		// Which app is reached: the one bound to the pod's address (port
		// 8080) or the one bound to loopback (port 8081).
		podAppReached, loopbackAppReached bool
		// wantRemote is where the reached app sees the request come from.
		wantRemote func(b *netnstest.Pod, fam family) netip.Addr
	}{
		{"", true, false, func(b *netnstest.Pod, fam family) netip.Addr { return fam.addr(b) }},
		{"localhost", false, true, func(_ *netnstest.Pod, fam family) netip.Addr { return fam.loopback }},
	}
	for _, tc := range cases {
		name := "target-" + tc.target
		if tc.target == "" {
			name = "target-default"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tp := netnstest.NewTopology(t)
			a, b := tp.AddPod(t), tp.AddPod(t)
			type app struct {
				rec     *recorder
				addr    netip.AddrPort // where it listens in B
				port    uint16         // where A calls it, on B's address
				reached bool
			}
			apps := map[string][]app{}
			for _, fam := range families {
				podApp := app{&recorder{name: "pod-app"}, netip.AddrPortFrom(fam.addr(b), 8080), 8080, tc.podAppReached}
				loopApp := app{&recorder{name: "loopback-app"}, netip.AddrPortFrom(fam.loopback, 8081), 8081, tc.loopbackAppReached}
				for _, ap := range []app{podApp, loopApp} {
					serveHTTP(t, b, ap.addr.String(), ap.rec)
				}
				apps[fam.name] = []app{podApp, loopApp}
			}
			serveTCP(t, b, ":9000", echo)
			env := []string{"MESHD_DETECT_TIMEOUT=300ms"}
			if tc.target != "" {
				env = append(env, "MESHD_INBOUND_TARGET="+tc.target)
			}
			startMeshd(t, b, env...)
			c := podClient(t, a)

			for _, fam := range families {
				bAddr := fam.addr(b)
				for _, ap := range apps[fam.name] {
					t.Run(fmt.Sprintf("http-%s-%s-%d", fam.name, ap.rec.name, ap.port), func(t *testing.T) {
						url := "http://" + hostPort(bAddr, ap.port) + "/"
						resp, body, err := do(c, http.MethodGet, url, "", nil)
						reqs := ap.rec.requests()
						if !ap.reached {
							if err == nil && resp.StatusCode != http.StatusBadGateway {
								t.Errorf("GET %s from A: %s %q; want 502 or a closed connection", url, resp.Status, body)
							}
							if len(reqs) != 0 {
								t.Errorf("the app on %s (not to be reached) saw %d requests, from %s", ap.addr, len(reqs), reqs[0].remote)
							}
							if err != nil {
								t.Logf("GET %s: %v", url, err)
							} else {
								t.Logf("GET %s: %s, x-meshd-error %q", url, resp.Status, resp.Header.Get("X-Meshd-Error"))
							}
							return
						}
						if err != nil {
							t.Fatalf("GET %s from A: %v", url, err)
						}
						if resp.StatusCode != http.StatusOK || body != ap.rec.name {
							t.Fatalf("GET %s from A: %s %q (x-meshd-error %q); want 200 %q",
								url, resp.Status, body, resp.Header.Get("X-Meshd-Error"), ap.rec.name)
						}
						if len(reqs) != 1 {
							t.Fatalf("the app on %s saw %d requests, want 1", ap.addr, len(reqs))
						}
						remote, err := netip.ParseAddrPort(reqs[0].remote)
						if want := tc.wantRemote(b, fam); err != nil || remote.Addr() != want {
							t.Errorf("the app on %s saw the request from %s, want from %s (meshd, inside the pod)", ap.addr, reqs[0].remote, want)
						}
						if reqs[0].header.Get("X-Request-Id") == "" {
							t.Errorf("the app on %s: no X-Request-Id added by the inbound meshd: %v", ap.addr, reqs[0].header)
						}
					})
				}

				t.Run("own-ports-closed-"+fam.name, func(t *testing.T) {
					for _, port := range []uint16{15000, 15001, 15006} {
						addr := hostPort(bAddr, port)
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						conn, err := podDial(ctx, a, addr)
						cancel()
						if err != nil {
							t.Logf("%s: %v", addr, err)
							continue
						}
						_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
						target := hostPort(bAddr, 8080)
						_, _ = fmt.Fprintf(conn, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
						got, err := io.ReadAll(conn)
						conn.Close()
						if len(got) > 0 {
							t.Errorf("%s answered a request from A: %q", addr, got)
						} else {
							t.Logf("%s: accepted, then closed without an answer (%v)", addr, err)
						}
					}
				})

				t.Run("opaque-echo-"+fam.name, func(t *testing.T) {
					echoRoundTrip(t, mustDial(t, a, hostPort(bAddr, 9000)), 256<<10)
				})
			}
		})
	}
}

// TestErrorAnswersTransparent: meshd's own answers reach an app whose
// calls are redirected, and a good request still works after each.
func TestErrorAnswersTransparent(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)
	good := &recorder{name: "payments"}
	serveHTTP(t, b, hostPort(b.Addr, 8081), good)
	// An upstream that answers garbage: a status code with letter Os.
	serveTCP(t, b, hostPort(b.Addr, 8090), func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		_, _ = io.WriteString(c, "HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok")
	})
	// Port 8091 of B: nothing listens there.
	static := fmt.Sprintf("payments=%s;broken=%s;dead=%s;empty=",
		hostPort(b.Addr, 8081), hostPort(b.Addr, 8090), hostPort(b.Addr, 8091))
	startMeshd(t, a, "MESHD_STATIC_ENDPOINTS="+static, "MESHD_DETECT_TIMEOUT=300ms")
	c := podClient(t, a)
	url := "http://" + hostPort(b.Addr, 80) + "/"

	goodRequest := func(t *testing.T, after string) {
		t.Helper()
		resp, body, err := do(c, http.MethodGet, url, "payments", nil)
		if err != nil {
			t.Fatalf("good request after %s: %v", after, err)
		}
		if resp.StatusCode != http.StatusOK || body != "payments" {
			t.Fatalf("good request after %s: %s %q (x-meshd-error %q)", after, resp.Status, body, resp.Header.Get("X-Meshd-Error"))
		}
	}

	cases := []struct {
		host       string
		wantStatus int
		wantError  string
	}{
		{"broken", http.StatusBadGateway, "reset"},
		{"dead", http.StatusBadGateway, "connect-failure"},
		{"empty", http.StatusServiceUnavailable, "no-healthy-upstream"},
	}
	for _, tc := range cases {
		t.Run(tc.host, func(t *testing.T) {
			resp, body, err := do(c, http.MethodGet, url, tc.host, nil)
			if err != nil {
				t.Fatalf("GET Host %s: %v", tc.host, err)
			}
			if resp.StatusCode != tc.wantStatus || resp.Header.Get("X-Meshd-Error") != tc.wantError {
				t.Errorf("Host %s: %s, x-meshd-error %q (%q); want %d %q",
					tc.host, resp.Status, resp.Header.Get("X-Meshd-Error"), body, tc.wantStatus, tc.wantError)
			}
			goodRequest(t, tc.host)
		})
	}

	t.Run("malformed-request", func(t *testing.T) {
		conn := mustDial(t, a, hostPort(b.Addr, 80))
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: payments\r\nBad Header\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer to a malformed request: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("malformed request: %s, want 400", resp.Status)
		}
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Errorf("after the 400 the connection should be closed: read %q, %v", rest, err)
		}
		goodRequest(t, "a malformed request")
	})
}
