package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
)

// FuzzServiceName: any authority maps to a service name or to none, never
// panics, and the name carries no port, upper case or brackets.
func FuzzServiceName(f *testing.F) {
	for _, s := range []string{"payments", "payments:8080", "Payments.Service.DC1.Consul.", "p.ns.svc.cluster.local", "[fd00::1]:80", "[", "]:", "::", "a.service.", ".consul", "x.service.consul"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, authority string) {
		name := ServiceName(authority)
		if name == "" {
			return
		}
		if strings.ContainsAny(name, "[]") || hasUpper(name) {
			t.Fatalf("ServiceName(%q) = %q", authority, name)
		}
		if ServiceName(name) != name && !strings.Contains(name, ":") {
			t.Fatalf("ServiceName is not stable on %q: %q -> %q", authority, name, ServiceName(name))
		}
	})
}

// FuzzHTTP1Path feeds arbitrary client bytes through meshd's whole HTTP/1
// path, over a real loopback connection to the outbound listener:
// detection, the HTTP/1 server, routing, the resilience policy, the
// upstream client, to a real upstream. meshd must never panic (a panic in a
// connection's handler is caught and logged, which fails the target), must
// answer or close within its deadline, and everything it sends before a
// tunnel begins must read as HTTP responses. Upstream connections are
// allowed to loopback addresses only, whatever the input names.
func FuzzHTTP1Path(f *testing.F) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Up", "1")
		_, _ = io.WriteString(w, "upstream "+r.URL.Path)
	}))
	f.Cleanup(up.Close)
	core, logs := observer.New(zap.WarnLevel)
	cfg := config.Default()
	cfg.DetectTimeout = 100 * time.Millisecond
	cfg.ReadHeaderTimeout = time.Second
	cfg.Defaults.RetryBackoffBase = time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	p := New(Options{Config: cfg, Resolver: discovery.Chain{discovery.NewStatic(map[string][]string{"svc": {up.Listener.Addr().String()}})},
		Log: zap.New(core), OwnPorts: []uint16{port}})
	p.dialAllowed = func(addr string) bool {
		ap, err := netip.ParseAddrPort(addr)
		return err == nil && ap.Addr().IsLoopback()
	}
	done := make(chan struct{})
	go func() { _ = p.ServeOutbound(ln); close(done) }()
	f.Cleanup(func() { p.Close(); <-done })

	addr := ln.Addr().String()
	for _, s := range []string{
		"GET http://svc/a HTTP/1.1\r\nHost: svc\r\n\r\n",
		"GET /b HTTP/1.1\r\nHost: svc\r\n\r\nGET /c HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n",
		"POST http://svc/p HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"POST http://svc/p HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
		"GET http://svc/ HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"CONNECT svc:80 HTTP/1.1\r\nHost: svc:80\r\n\r\nGET / HTTP/1.1\r\nHost: svc\r\n\r\n",
		"GET http://10.0.0.1/ HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: svc\r\nX: a\r\n b\r\n\r\n",
		"HEAD http://svc/ HTTP/1.0\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(in)
		_ = c.(*net.TCPConn).CloseWrite()
		out, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("meshd neither answered nor closed within 5 s; sent %q, got %q", in, out)
		}
		for _, e := range logs.TakeAll() {
			if strings.Contains(e.Message, "panic") {
				t.Fatalf("meshd panicked on %q: %s %v", in, e.Message, e.ContextMap())
			}
		}
		if len(out) == 0 || bytes.HasPrefix(in, []byte("PRI * HTTP/2.0\r\n")) {
			return // closed without an answer, or HTTP/2 frames
		}
		// The first answer must be a whole HTTP response (later ones may
		// answer HEADs or begin tunnels, which would need the requests to
		// frame).
		method, _, _ := bytes.Cut(in, []byte(" "))
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), &http.Request{Method: string(method)})
		if err != nil {
			t.Fatalf("meshd's answer to %q is not an HTTP response: %v; got %q", in, err, out)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols && !(string(method) == http.MethodConnect && resp.StatusCode == http.StatusOK) {
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatalf("meshd's answer to %q is cut: %v; got %q", in, err, out)
			}
		}
	})
}
