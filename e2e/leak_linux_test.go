//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// This file checks that meshd gives back what a connection took once the
// connection is gone: goroutines, file descriptors and heap. It drives a
// loopback explicit-mode meshd (startLoopbackMeshd) with raw connections
// of every kind, so that the test itself holds no pooled connection.

// procFigures is what meshd holds at one moment.
type procFigures struct {
	goroutines int
	fds        int
	heapInuse  int64 // go_memstats_heap_inuse_bytes, right after a forced GC
}

func (f procFigures) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, heap in use %.1f MiB", f.goroutines, f.fds, float64(f.heapInuse)/(1<<20))
}

// adminGet reads one admin document of a loopback meshd, on a connection
// of its own (no keep-alive: the measurement adds no lasting connection).
func adminGet(admin, path string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := c.Get("http://" + admin + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), nil
}

// goroutineTotal parses "goroutine profile: total N", the first line of
// /debug/pprof/goroutine?debug=1.
func goroutineTotal(profile string) (int, error) {
	line, _, _ := strings.Cut(profile, "\n")
	n, ok := strings.CutPrefix(line, "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("unexpected goroutine profile header %q", line)
	}
	return strconv.Atoi(strings.TrimSpace(n))
}

// metricValue returns the value of the first sample of name (with no
// labels, or the exact labelled series when name includes its labels).
func metricValue(metrics, name string) (float64, bool) {
	for _, l := range strings.Split(metrics, "\n") {
		rest, ok := strings.CutPrefix(l, name+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return v, err == nil
	}
	return 0, false
}

// measure reads meshd's goroutines (pprof), open fds (/proc) and heap in
// use (/metrics, after a GC forced through /debug/pprof/heap?gc=1).
func measure(t *testing.T, admin string, pid int) procFigures {
	t.Helper()
	var f procFigures
	prof, err := adminGet(admin, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("goroutine profile: %v", err)
	}
	if f.goroutines, err = goroutineTotal(prof); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("meshd's file descriptors: %v", err)
	}
	f.fds = len(fds)
	if _, err := adminGet(admin, "/debug/pprof/heap?gc=1"); err != nil {
		t.Fatalf("forcing a GC: %v", err)
	}
	m, err := adminGet(admin, "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	v, ok := metricValue(m, "go_memstats_heap_inuse_bytes")
	if !ok {
		t.Fatalf("/metrics has no go_memstats_heap_inuse_bytes")
	}
	f.heapInuse = int64(v)
	return f
}

// leakUpstream is the HTTP upstream of the leak test: "/" answers ok,
// "/big" streams leakBigBody bytes, "/upload" reads the whole body. It
// closes idle connections after a second, so meshd's pool empties once
// the load stops.
func leakUpstream(t *testing.T, status int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			if status != http.StatusOK {
				w.WriteHeader(status)
				return
			}
			if r.URL.Path == "/big" {
				w.Header().Set("Content-Length", strconv.Itoa(leakBigBody))
				for sent := 0; sent < leakBigBody; sent += len(chunk) {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
				return
			}
			_, _ = io.WriteString(w, "ok")
		}),
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

const leakBigBody = 2 << 20

// leakEcho serves TCP echo on loopback (with half-close) until the test
// ends.
func leakEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveListener(t, ln, echo)
	return ln.Addr().String()
}

// The kinds of connection the leak test opens, in turn.
const (
	kindKeepAlive     = iota // 5 GETs on one connection
	kindFailing              // GETs to a refused and to a 503 upstream
	kindConnect              // CONNECT to a mesh service, echo, full close
	kindHalfClose            // CONNECT to an address, CloseWrite, read the echo
	kindAbortUpload          // chunked upload cut in the middle
	kindAbortDownload        // large download cut in the middle
	nKinds
)

var kindNames = [nKinds]string{"keep-alive", "failing-upstream", "connect-echo", "half-close", "abort-upload", "abort-download"}

// readResponse reads one response on br and its whole body.
func readResponse(br *bufio.Reader, method string) (*http.Response, string, error) {
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// leakConn opens one connection of the given kind to meshd's outbound
// listener and runs it to its end.
func leakConn(outbound, echoAddr string, kind, seq int) error {
	c, err := net.DialTimeout("tcp", outbound, 5*time.Second)
	if err != nil {
		return err
	}
	tc := c.(*net.TCPConn)
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(tc)
	switch kind {
	case kindKeepAlive:
		for i := range 5 {
			if _, err := fmt.Fprintf(tc, "GET http://ok/k/%d HTTP/1.1\r\nHost: ok\r\n\r\n", i); err != nil {
				return err
			}
			resp, body, err := readResponse(br, http.MethodGet)
			if err != nil {
				return fmt.Errorf("request %d: %w", i, err)
			}
			if resp.StatusCode != http.StatusOK || body != "ok" || resp.Close {
				return fmt.Errorf("request %d: %s %q (close %v)", i, resp.Status, body, resp.Close)
			}
		}
	case kindFailing:
		for _, host := range []string{"refused", "bad"} {
			if _, err := fmt.Fprintf(tc, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", host, host); err != nil {
				return err
			}
			resp, body, err := readResponse(br, http.MethodGet)
			if err != nil {
				return fmt.Errorf("%s: %w", host, err)
			}
			if resp.StatusCode < 500 {
				return fmt.Errorf("%s: %s %q, want a 5xx", host, resp.Status, body)
			}
			if resp.Close {
				return nil // meshd may close after an error answer
			}
		}
	case kindConnect, kindHalfClose:
		target := "echo:443"
		if kind == kindHalfClose {
			target = echoAddr
		}
		if _, err := fmt.Fprintf(tc, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			return fmt.Errorf("CONNECT %s: %w", target, err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("CONNECT %s: %s", target, resp.Status)
		}
		payload := bytes.Repeat([]byte{byte('a' + seq%26)}, 1024+seq%4096)
		if _, err := tc.Write(payload); err != nil {
			return err
		}
		if kind == kindHalfClose {
			if err := tc.CloseWrite(); err != nil {
				return err
			}
			got, err := io.ReadAll(br)
			if err != nil || !bytes.Equal(got, payload) {
				return fmt.Errorf("half-closed echo: %d of %d bytes back, %v", len(got), len(payload), err)
			}
			return nil
		}
		got := make([]byte, len(payload))
		if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, payload) {
			return fmt.Errorf("echo: %v", err)
		}
	case kindAbortUpload:
		if _, err := io.WriteString(tc, "POST http://ok/upload HTTP/1.1\r\nHost: ok\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
			return err
		}
		chunk := fmt.Sprintf("%x\r\n%s\r\n", 16<<10, strings.Repeat("u", 16<<10))
		for range 8 { // 128 KiB of a body that never ends
			if _, err := io.WriteString(tc, chunk); err != nil {
				return nil // meshd may have given up on it already
			}
		}
		if seq%2 == 0 {
			_ = tc.SetLinger(0) // a reset rather than a FIN, every other time
		}
	case kindAbortDownload:
		if _, err := io.WriteString(tc, "GET http://ok/big HTTP/1.1\r\nHost: ok\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("download: %s", resp.Status)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, 64<<10); err != nil {
			return fmt.Errorf("download: %w", err)
		}
		if seq%2 == 0 {
			_ = tc.SetLinger(0)
		}
	}
	return nil
}

// TestLeakAfterTenThousandConnections: 10,000 connections of every kind
// through meshd (keep-alive HTTP, failing upstreams, CONNECT tunnels,
// half-close, uploads and downloads cut in the middle), 50 at a time.
// Once they are closed, meshd's goroutines, file descriptors and heap come
// back to where they were.
func TestLeakAfterTenThousandConnections(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skipf("skipped: needs /proc to count meshd's file descriptors (%v)", err)
	}
	t.Parallel()
	const (
		total       = 10000
		concurrency = 50
	)
	ok := leakUpstream(t, http.StatusOK)
	bad := leakUpstream(t, http.StatusServiceUnavailable)
	echoAddr := leakEcho(t)
	refused := freeLoopback(t) // nothing listens there
	m := startLoopbackMeshd(t, "MESHD_ACCESS_LOG=false", "MESHD_LOG_LEVEL=warn",
		fmt.Sprintf("MESHD_STATIC_ENDPOINTS=ok=%s;bad=%s;refused=%s;echo=%s", ok, bad, refused, echoAddr))
	m.ready(t, http.StatusOK, 15*time.Second)
	pid := m.cmd.Process.Pid

	// Warm up every path once, so that what is created once per process or
	// per upstream (breakers, pools, buffers) is in the baseline.
	for kind := range nKinds {
		if err := leakConn(m.outbound, echoAddr, kind, kind); err != nil {
			t.Fatalf("warm-up %s: %v", kindNames[kind], err)
		}
	}
	settle := func(within time.Duration, done func(procFigures) bool) (procFigures, time.Duration) {
		start := time.Now()
		for {
			f := measure(t, m.admin, pid)
			if done(f) || time.Since(start) > within {
				return f, time.Since(start)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	// The baseline: once the warm-up's connections are gone (the upstreams
	// close idle ones after 1 s), two readings in a row agree.
	time.Sleep(1500 * time.Millisecond)
	var prev procFigures
	base, _ := settle(5*time.Second, func(f procFigures) bool {
		same := f.goroutines == prev.goroutines && f.fds == prev.fds
		prev = f
		return same
	})
	t.Logf("baseline: %v", base)

	var (
		next     atomic.Int64
		failures [nKinds]atomic.Int64
		counts   [nKinds]atomic.Int64
		firstErr [nKinds]atomic.Value
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(40 * time.Second)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				kind := i % nKinds
				counts[kind].Add(1)
				if err := leakConn(m.outbound, echoAddr, kind, i); err != nil {
					failures[kind].Add(1)
					firstErr[kind].CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	done := 0
	for kind := range nKinds {
		n, f := counts[kind].Load(), failures[kind].Load()
		done += int(n)
		t.Logf("%-16s %5d connections, %d failed %v", kindNames[kind], n, f, firstErr[kind].Load())
		if f > 0 && kind != kindAbortUpload && kind != kindAbortDownload {
			t.Errorf("%s: %d of %d connections failed, first: %v", kindNames[kind], f, n, firstErr[kind].Load())
		}
	}
	t.Logf("%d connections in %v (%d at a time)", done, took.Round(time.Millisecond), concurrency)
	if done < total {
		t.Errorf("only %d of %d connections ran within 40 s", done, total)
	}
	peak := measure(t, m.admin, pid)
	t.Logf("right after the load: %v", peak)

	const mib = 1 << 20
	within := func(f procFigures) bool {
		return f.goroutines <= base.goroutines+10 && f.fds <= base.fds+5 && f.heapInuse <= base.heapInuse+8*mib
	}
	end, after := settle(10*time.Second, within)
	t.Logf("settled after %v: %v (baseline %v; growth %+d goroutines, %+d fds, %+.1f MiB heap)",
		after.Round(time.Millisecond), end, base, end.goroutines-base.goroutines, end.fds-base.fds,
		float64(end.heapInuse-base.heapInuse)/mib)
	if !within(end) {
		prof, _ := adminGet(m.admin, "/debug/pprof/goroutine?debug=1")
		t.Errorf("meshd did not give back what the connections took within 10 s: %v, baseline %v; "+
			"want at most +10 goroutines, +5 fds, +8 MiB heap in use\n%s", end, base, prof)
	}
	select {
	case <-m.done:
		t.Fatalf("meshd exited during the test:\n%s", m.output())
	default:
	}
}
