package proxy

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/internal/fixedhttp"
	"github.com/meshd/meshd/proxy/balance"
	"github.com/meshd/meshd/proxy/h1"
	"github.com/meshd/meshd/resilience"
)

// BenchmarkPerRequestResilience measures what the resilience policy adds
// to one request, with no I/O: the upstream and policy lookup, the
// overload limit, the service breaker, the retry budget, the balancer's
// pick among usable endpoints and the endpoint breaker's bookkeeping.
func BenchmarkPerRequestResilience(b *testing.B) {
	cfg := config.Default()
	static := discovery.NewStatic(map[string][]string{"payments": {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}})
	p := New(Options{Config: cfg, Resolver: discovery.Chain{static}, Log: zap.NewNop()})
	defer p.Close()
	snap, _ := static.Resolve(b.Context(), "payments")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		u := p.upstream("payments")
		eps := u.endpoints(snap)
		if !u.limiter.Acquire() {
			b.Fatal("overloaded")
		}
		done, err := u.breaker.Allow()
		if err != nil {
			b.Fatal(err)
		}
		u.budget.Request()
		ep := balance.Pick(eps, nil, func(e *balance.Endpoint) bool { return !u.ejector.Usable(e.Addr) })
		u.ejector.Begin(ep.Addr)
		ep.Acquire()
		ep.Release()
		u.ejector.Done(ep.Addr, false)
		done(resilience.Success)
		u.limiter.Release()
	}
}

// BenchmarkHTTP1Request is one keep-alive HTTP/1.1 request through meshd's
// whole outbound path over loopback sockets: the HTTP/1 server, routing by
// Host to a static endpoint, the resilience policy, the upstream client,
// and a 1 KiB answer back. The upstream is a minimal fixed responder, so
// that allocs/op is meshd's own. "relay" is a plain request, which the
// relay forwards; "general" one with a TE field, which makes it take the
// general path (http.Request, the exchange, the h1 client). "inbound" is
// the plain request on the inbound path (a redirected connection's, its
// original destination the upstream), which the relay delivers.
func BenchmarkHTTP1Request(b *testing.B) {
	const plain = "GET /echo HTTP/1.1\r\nHost: echo\r\nUser-Agent: bench\r\n\r\n"
	b.Run("relay", func(b *testing.B) { benchmarkHTTP1Request(b, plain, false) })
	b.Run("general", func(b *testing.B) {
		benchmarkHTTP1Request(b, "GET /echo HTTP/1.1\r\nHost: echo\r\nUser-Agent: bench\r\nTE: trailers\r\n\r\n", false)
	})
	b.Run("inbound", func(b *testing.B) { benchmarkHTTP1Request(b, plain, true) })
}

func benchmarkHTTP1Request(b *testing.B, request string, inbound bool) {
	body := strings.Repeat("x", 1024)
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + body)
	up := fixedhttp.Start(b, answer)

	var addr string
	if inbound {
		_, addr = inboundFront(b, up, nil, func(cfg *config.Config) { cfg.AccessLog = false })
	} else {
		cfg := config.Default()
		cfg.AccessLog = false
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		p := New(Options{Config: cfg, Resolver: discovery.Chain{discovery.NewStatic(map[string][]string{"echo": {up}})},
			Log: zap.NewNop(), OwnPorts: []uint16{port}})
		done := make(chan struct{})
		go func() { _ = p.ServeOutbound(ln); close(done) }()
		defer func() { p.Close(); <-done }()
		addr = ln.Addr().String()
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte(request)
	br := bufio.NewReader(c)
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		length := -1
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) <= 2 {
				break
			}
			if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
				length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		if length != len(body) {
			b.Fatalf("answer with Content-Length %d; want %d", length, len(body))
		}
		if _, err := br.Discard(length); err != nil {
			b.Fatal(err)
		}
	}
	roundTrip()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		roundTrip()
	}
}

// BenchmarkServiceName measures the authority parsing every outbound
// request pays: an authority to the service it names, in each form a
// client writes one.
func BenchmarkServiceName(b *testing.B) {
	for _, tc := range []struct{ name, authority, want string }{
		{"bare", "payments", "payments"},
		{"port", "payments:8080", "payments"},
		{"consul-dc", "payments.service.dc1.consul", "payments"},
		{"kubernetes", "Payments.shop.svc.cluster.local", "payments"},
		{"address", "10.0.0.1:8080", ""},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if got := ServiceName(tc.authority); got != tc.want {
				b.Fatalf("ServiceName(%q) = %q; want %q", tc.authority, got, tc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				ServiceName(tc.authority)
			}
		})
	}
}

// BenchmarkRouteLookup measures a request's route: its service's current
// endpoints from discovery (static here: a watched name answers the same
// way) and its upstream with the resilience state.
func BenchmarkRouteLookup(b *testing.B) {
	static := discovery.NewStatic(map[string][]string{"payments": {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}})
	p := New(Options{Config: config.Default(), Resolver: discovery.Chain{static}, Log: zap.NewNop()})
	defer p.Close()
	var rt route
	var lt lazyTimeout
	ctx := b.Context()
	if r, err := p.serviceRouteInto(ctx, "payments", &rt, &lt); err != nil || r.key != "payments" || len(r.eps) != 3 {
		b.Fatalf("route: %v, %+v", err, r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := p.serviceRouteInto(ctx, "payments", &rt, &lt); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayRequestHead measures the relay's header rewriting: a
// request head scanned where it lies and written again for the upstream,
// without its hop-by-hop fields and with X-Request-Id and X-Meshd-Attempt.
func BenchmarkRelayRequestHead(b *testing.B) {
	head := []byte("GET /orders/42?full=1 HTTP/1.1\r\nHost: payments\r\nUser-Agent: bench\r\n" +
		"Accept: application/json\r\nConnection: keep-alive\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n")
	var req h1.RawRequest
	var id [36]byte
	appendRequestID(&id)
	out := make([]byte, 0, 512)
	if !h1.ScanRequest(head, &req) {
		b.Fatal("head not accepted")
	}
	got := string(relayRequestHead(out, &req, 1, true, &id))
	for _, want := range []string{"GET /orders/42?full=1 HTTP/1.1\r\n", "\r\nTraceparent: 00-", "\r\n" + HeaderRequestID + ": " + string(id[:]) + "\r\n",
		"\r\n" + HeaderAttempt + ": 1\r\n\r\n"} {
		if !strings.Contains(got, want) {
			b.Fatalf("head %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "Connection") {
		b.Fatalf("head %q passes the hop-by-hop Connection on", got)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		h1.ScanRequest(head, &req)
		out = relayRequestHead(out[:0], &req, 1, true, &id)
	}
}

// BenchmarkRemoveHopHeaders measures the general path's header rewriting:
// the hop-by-hop fields of a request's header, fixed and named by
// Connection, removed.
func BenchmarkRemoveHopHeaders(b *testing.B) {
	h := http.Header{"Accept": {"*/*"}, "User-Agent": {"bench"}}
	conn, te, extra := []string{"keep-alive, X-Hop"}, []string{"trailers"}, []string{"1"}
	fill := func() { h["Connection"], h["Te"], h["X-Hop"] = conn, te, extra }
	fill()
	removeHopHeaders(h)
	if len(h) != 2 || h.Get("Accept") == "" {
		b.Fatalf("header after removal: %v", h)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		fill()
		removeHopHeaders(h)
	}
}
