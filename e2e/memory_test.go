package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// streamSize is the size of the body sent each way in TestMemoryStreaming.
const streamSize = 10 << 20

// stream returns the same streamSize pseudo-random bytes for the same seed.
func stream(seed byte) io.Reader {
	var s [32]byte
	s[0] = seed
	return io.LimitReader(rand.NewChaCha8(s), streamSize)
}

func sha(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// lockedBuffer collects a subprocess's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// memory reads VmHWM (peak resident set) and VmRSS of pid, in bytes.
func memory(t *testing.T, pid int) (hwm, rss int64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading meshd's memory: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmHWM" && key != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/status: %s: %v", pid, sc.Text(), err)
		}
		if key == "VmHWM" {
			hwm = kb << 10
		} else {
			rss = kb << 10
		}
	}
	if hwm == 0 || rss == 0 {
		t.Fatalf("/proc/%d/status has no VmHWM or VmRSS", pid)
	}
	return hwm, rss
}

// TestMemoryStreaming sends 10 MiB up and 10 MiB down through meshd in
// explicit mode and checks that meshd streams the bodies rather than
// holding them: its peak resident set grows by less than 20 MiB.
func TestMemoryStreaming(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skipf("skipped: needs /proc to read meshd's memory (%v)", err)
	}
	bin := meshdBinary(t)

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			sum, n, err := sha(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "%s %d %s", sum, n, strings.Join(r.TransferEncoding, ","))
		case "/download":
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = io.Copy(w, stream(2))
		default:
			fmt.Fprint(w, "ok")
		}
	}))
	t.Cleanup(up.Close)

	ports := freePorts(t, 4)
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	cmd := exec.Command(bin, "run")
	cmd.Env = append(os.Environ(),
		"MESHD_OUTBOUND_ADDR="+addr(0),
		"MESHD_INBOUND_ADDR="+addr(1),
		"MESHD_ADMIN_ADDR="+addr(2),
		"MESHD_HEALTH_ADDR="+addr(3),
		"MESHD_STATIC_ENDPOINTS=payments="+up.Listener.Addr().String(),
	)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start meshd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("meshd output:\n%s", out.String())
		}
	})

	direct := &http.Client{Timeout: time.Second, Transport: &http.Transport{}}
	t.Cleanup(direct.CloseIdleConnections)
	deadline := time.Now().Add(15 * time.Second)
	for ready := false; !ready; {
		select {
		case <-exited:
			t.Fatalf("meshd exited before it was ready:\n%s", out.String())
		default:
		}
		if resp, err := direct.Get("http://" + addr(3) + "/ready"); err == nil {
			resp.Body.Close()
			ready = resp.StatusCode == http.StatusOK
		}
		if !ready {
			if time.Now().After(deadline) {
				t.Fatalf("meshd not ready after 15s:\n%s", out.String())
			}
			time.Sleep(20 * time.Millisecond) // poll interval, bounded by the deadline
		}
	}

	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr(0)}), DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: time.Minute}

	// Warm up meshd's HTTP path so that the baseline includes it.
	resp, err := c.Get("http://payments/warmup")
	if err != nil {
		t.Fatalf("warm-up request through meshd: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	pid := cmd.Process.Pid
	hwm0, rss0 := memory(t, pid)

	// Upload: a streamed body of unknown length, so chunked.
	wantUp, _, _ := sha(stream(1))
	pr, pw := io.Pipe()
	go func() {
		buf := make([]byte, 32<<10)
		_, err := io.CopyBuffer(pw, stream(1), buf)
		pw.CloseWithError(err)
	}()
	req, _ := http.NewRequest(http.MethodPost, "http://payments/upload", pr)
	req.ContentLength = -1 // unknown: sent chunked
	resp, err = c.Do(req)
	if err != nil {
		t.Fatalf("upload through meshd: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%s %d chunked", wantUp, streamSize); resp.StatusCode != http.StatusOK || string(body) != want {
		t.Fatalf("upload: %s %q; the upstream should have received a chunked body of sha256 and size %q", resp.Status, body, want)
	}

	// Download.
	wantDown, _, _ := sha(stream(2))
	resp, err = c.Get("http://payments/download")
	if err != nil {
		t.Fatalf("download through meshd: %v", err)
	}
	gotDown, n, err := sha(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || gotDown != wantDown || n != streamSize {
		t.Fatalf("download: %s, %d bytes, sha256 %s, %v; want 200, %d bytes, sha256 %s",
			resp.Status, n, gotDown, err, streamSize, wantDown)
	}

	hwm1, rss1 := memory(t, pid)
	const mib = 1 << 20
	t.Logf("meshd memory: VmHWM %.1f → %.1f MiB (+%.1f), VmRSS %.1f → %.1f MiB, after %d MiB up and %d MiB down",
		float64(hwm0)/mib, float64(hwm1)/mib, float64(hwm1-hwm0)/mib, float64(rss0)/mib, float64(rss1)/mib,
		streamSize/mib, streamSize/mib)
	if grew := hwm1 - hwm0; grew >= 20*mib {
		t.Errorf("meshd's peak RSS grew by %.1f MiB while streaming; want < 20 MiB", float64(grew)/mib)
	}
}
