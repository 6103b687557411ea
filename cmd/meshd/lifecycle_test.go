package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// runningMeshd is `meshd run` on free loopback ports.
type runningMeshd struct {
	cmd                     *exec.Cmd
	outbound, admin, health string
	done                    chan error
	mu                      sync.Mutex
	logs                    []string
	exitedAt                time.Time
}

func startRun(t *testing.T, env ...string) *runningMeshd {
	t.Helper()
	m := &runningMeshd{outbound: freePort(t), admin: freePort(t), health: freePort(t), done: make(chan error, 1)}
	m.cmd = exec.Command(meshdBin, "run")
	m.cmd.Env = append([]string{"MESHD_OUTBOUND_ADDR=" + m.outbound, "MESHD_INBOUND_ADDR=" + freePort(t),
		"MESHD_ADMIN_ADDR=" + m.admin, "MESHD_HEALTH_ADDR=" + m.health}, env...)
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			m.mu.Lock()
			m.logs = append(m.logs, sc.Text())
			m.mu.Unlock()
		}
		err := m.cmd.Wait()
		m.mu.Lock()
		m.exitedAt = time.Now()
		m.mu.Unlock()
		m.done <- err
	}()
	t.Cleanup(func() {
		_ = m.cmd.Process.Kill()
		if t.Failed() {
			m.mu.Lock()
			t.Logf("meshd logs:\n%s", strings.Join(m.logs, "\n"))
			m.mu.Unlock()
		}
	})
	waitStatus(t, "http://"+m.health+"/ready", 200)
	return m
}

func (m *runningMeshd) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: m.outbound})}}
}

// TestDrain: a 2 s request in flight at SIGTERM completes with 200, /ready
// reads 503 meanwhile, a new outbound request during the drain succeeds,
// and meshd exits 0 about 1 s after the last connection ended.
func TestDrain(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(2 * time.Second)
		}
		fmt.Fprint(w, "ok")
	}))
	defer slow.Close()
	m := startRun(t, "MESHD_STATIC_ENDPOINTS=app="+slow.Listener.Addr().String(), "MESHD_DRAIN_TIMEOUT=10s")

	inflight := make(chan error, 1)
	var lastEnd time.Time
	var mu sync.Mutex
	go func() {
		resp, err := m.client().Get("http://app/slow")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" {
				err = fmt.Errorf("in-flight request: %d %q", resp.StatusCode, body)
			}
		}
		mu.Lock()
		lastEnd = time.Now()
		mu.Unlock()
		inflight <- err
	}()
	time.Sleep(300 * time.Millisecond) // let the slow request reach the upstream
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, "http://"+m.health+"/ready", 503)
	// A new outbound call during the drain still goes through.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: m.outbound}), DisableKeepAlives: true}}
	resp, err := c.Get("http://app/fast")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("outbound request during the drain: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := <-inflight; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-m.done:
		if err != nil {
			t.Fatalf("meshd exited with %v", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("meshd did not exit after the drain")
	}
	mu.Lock()
	m.mu.Lock()
	gap := m.exitedAt.Sub(lastEnd)
	m.mu.Unlock()
	mu.Unlock()
	t.Logf("exited %v after the last request ended", gap)
	if gap < 800*time.Millisecond || gap > 2500*time.Millisecond {
		t.Fatalf("exited %v after the last connection ended, want about 1 s", gap)
	}
}

// TestSecondSignalExitsAtOnce: with a request still in flight, a second
// SIGTERM ends the drain.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(20 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	m := startRun(t, "MESHD_STATIC_ENDPOINTS=app="+slow.Listener.Addr().String(), "MESHD_DRAIN_TIMEOUT=30s")
	go func() {
		resp, err := m.client().Get("http://app/")
		if err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	m.cmd.Process.Signal(syscall.SIGTERM)
	waitStatus(t, "http://"+m.health+"/ready", 503)
	start := time.Now()
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		t.Fatal("a second SIGTERM did not end meshd")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("second signal took %v", d)
	}
}

// TestMetricsAfterTraffic scrapes /metrics after real requests: the
// contract's names and labels, the counts, and the exposition lint.
func TestMetricsAfterTraffic(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(503)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer up.Close()
	dead := freePort(t)
	m := startRun(t, "MESHD_STATIC_ENDPOINTS=app="+up.Listener.Addr().String()+";gone="+dead, "MESHD_RETRY_MAX=1",
		"MESHD_EJECT_CONSECUTIVE_FAILURES=0")
	c := m.client()
	for i := 0; i < 5; i++ {
		resp, err := c.Get("http://app/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	for _, u := range []string{"http://app/fail", "http://gone/", "http://" + up.Listener.Addr().String() + "/"} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get("http://" + m.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "meshd_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	for _, want := range []string{
		`meshd_requests_total{code="200",direction="outbound",upstream="app"} 5`,
		`meshd_requests_total{code="503",direction="outbound",upstream="app"} 1`,
		`meshd_requests_total{code="502",direction="outbound",upstream="gone"} 1`,
		`meshd_requests_total{code="200",direction="outbound",upstream="passthrough"} 1`,
		`meshd_request_duration_seconds_count{direction="outbound",upstream="app"} 6`,
		`meshd_retries_total{reason="503",upstream="app"} 1`,
		`meshd_retries_total{reason="connect-failure",upstream="gone"} 1`,
		`meshd_local_replies_total{reason="connect-failure",upstream="gone"} 1`,
		`meshd_breaker_state{upstream="app"} 0`, `meshd_breaker_state{upstream="gone"} 0`,
		`meshd_discovery_errors_total 0`,
		`go_goroutines`, `process_resident_memory_bytes`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grepMeshd(text))
	}

	// /breakers and /endpoints are JSON of the contract's shape.
	var br struct {
		Upstreams map[string]struct {
			State  string `json:"state"`
			Since  string `json:"since"`
			Reason string `json:"reason"`
			Counts struct {
				Requests             int `json:"requests"`
				TotalSuccesses       int `json:"total_successes"`
				TotalFailures        int `json:"total_failures"`
				ConsecutiveSuccesses int `json:"consecutive_successes"`
				ConsecutiveFailures  int `json:"consecutive_failures"`
			} `json:"counts"`
			Endpoints map[string]struct {
				State     string `json:"state"`
				Since     string `json:"since"`
				Ejections int    `json:"ejections"`
			} `json:"endpoints"`
		} `json:"upstreams"`
	}
	getJSON(t, "http://"+m.admin+"/breakers", &br)
	if app := br.Upstreams["app"]; app.State != "closed" || app.Counts.Requests != 6 || app.Counts.TotalFailures != 1 {
		t.Errorf("/breakers app: %+v", app)
	}
	var ep struct {
		Upstreams map[string]struct {
			Source    string `json:"source"`
			Endpoints []struct {
				Address     string `json:"address"`
				Healthy     bool   `json:"healthy"`
				Ejected     bool   `json:"ejected"`
				Outstanding int    `json:"outstanding"`
			} `json:"endpoints"`
		} `json:"upstreams"`
	}
	getJSON(t, "http://"+m.admin+"/endpoints", &ep)
	if app := ep.Upstreams["app"]; app.Source != "static" || len(app.Endpoints) != 1 || app.Endpoints[0].Address != up.Listener.Addr().String() || !app.Endpoints[0].Healthy {
		t.Errorf("/endpoints app: %+v", app)
	}
	if pt := ep.Upstreams[up.Listener.Addr().String()]; pt.Source != "passthrough" {
		t.Errorf("/endpoints passthrough: %+v", ep.Upstreams)
	}

	// meshd status reads the same documents.
	out, stderr, code := meshd(t, []string{"MESHD_ADMIN_ADDR=" + m.admin}, "status")
	if code != 0 || !strings.Contains(out, "UPSTREAM") || !strings.Contains(out, "app") {
		t.Fatalf("meshd status: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("meshd status:\n%s", out)
	out, _, code = meshd(t, []string{"MESHD_ADMIN_ADDR=" + m.admin}, "status", "--json")
	if code != 0 || !json.Valid([]byte(out)) || !strings.Contains(out, `"breakers"`) {
		t.Fatalf("meshd status --json: exit %d\n%s", code, out)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

func grepMeshd(text string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "meshd_") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
