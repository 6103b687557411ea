package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

var meshdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshd-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	meshdBin = filepath.Join(dir, "meshd")
	out, err := exec.Command("go", "build", "-o", meshdBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// meshd runs the binary with only env as its environment.
func meshd(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(meshdBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

func TestExitCodes(t *testing.T) {
	cases := []struct {
		name      string
		env       []string
		args      []string
		code      int
		stderrHas string
	}{
		{"bad duration", []string{"MESHD_CONNECT_TIMEOUT=abc"}, []string{"run"}, 2, `MESHD_CONNECT_TIMEOUT="abc": expected a duration`},
		{"bad port flag", nil, []string{"run", "--admin-addr=127.0.0.1:99999"}, 2, `--admin-addr (MESHD_ADMIN_ADDR)="127.0.0.1:99999"`},
		{"bad token", []string{"MESHD_RETRY_ON=5xx,sometimes"}, []string{"run"}, 2, `unknown token "sometimes"`},
		{"bad override", []string{"MESHD_UPSTREAM_PAYMENTS_TIMEOUT=1s"}, []string{"run"}, 2, "MESHD_UPSTREAM_PAYMENTS_TIMEOUT"},
		{"unknown flag", nil, []string{"run", "--frobnicate"}, 2, "flag provided but not defined"},
		{"stray argument", nil, []string{"run", "now"}, 2, `unexpected argument "now"`},
		{"unknown command", nil, []string{"jump"}, 2, `unknown command "jump"`},
		{"no command", nil, nil, 2, "Usage:"},
		{"iptables without action", nil, []string{"iptables"}, 2, "apply|clean|print"},
		{"iptables bad action", nil, []string{"iptables", "flush"}, 2, `unknown iptables action "flush"`},
		{"iptables bad value", []string{"MESHD_EXCLUDE_OUTBOUND_CIDRS=10.0.0.0/99"}, []string{"iptables", "print"}, 2, "MESHD_EXCLUDE_OUTBOUND_CIDRS"},
		{"config without docs", nil, []string{"config"}, 2, "meshd config docs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := meshd(t, tc.env, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.stderrHas) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr, tc.code, tc.stderrHas)
			}
			if tc.code == 2 && strings.HasPrefix(tc.stderrHas, "MESHD") && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("a bad setting must print one line, got %q", stderr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, _, code := meshd(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "meshd ") || !strings.Contains(out, "commit: ") || !strings.Contains(out, runtime.Version()) {
		t.Fatalf("version: exit %d, %q", code, out)
	}
}

func TestIptablesPrintNeedsNoRoot(t *testing.T) {
	out, stderr, code := meshd(t, []string{"MESHD_IPV6=false", "MESHD_INBOUND_PORTS=8080", "MESHD_PROXY_UID=2000"}, "iptables", "print")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"*nat", "--uid-owner 2000", "--dport 8080", "--to-ports 15001", "--to-ports 15006", "COMMIT"} {
		if !strings.Contains(out, want) {
			t.Errorf("print output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ip6tables") {
		t.Errorf("MESHD_IPV6=false printed IPv6 rules")
	}
	out, _, _ = meshd(t, []string{"MESHD_IPV6=true"}, "iptables", "print")
	if !strings.Contains(out, "::1/128") {
		t.Errorf("MESHD_IPV6=true printed no IPv6 rules:\n%s", out)
	}
}

func TestIptablesApplyNeedsRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("skipped: checks the non-root error, and this runs as root")
	}
	_, stderr, code := meshd(t, nil, "iptables", "apply")
	if code != 1 || !strings.Contains(stderr, "root") {
		t.Fatalf("exit %d, %s", code, stderr)
	}
}

func TestConfigDocsMatchesCommittedPage(t *testing.T) {
	out, _, code := meshd(t, nil, "config", "docs")
	page, err := os.ReadFile("../../docs/configuration.md")
	if err != nil || code != 0 || out != string(page) {
		t.Fatalf("meshd config docs differs from docs/configuration.md (exit %d, %v)", code, err)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRunStartsAndDrainsOnSIGTERM runs the sidecar on free loopback ports:
// it logs its effective config as JSON, binds every listener, answers the
// probes, and on SIGTERM turns /ready to 503 and exits 0.
func TestRunStartsAndDrainsOnSIGTERM(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			admin, health := freePort(t), freePort(t)
			cmd := exec.Command(meshdBin, "run", "--health-addr", health)
			cmd.Env = []string{
				"MESHD_OUTBOUND_ADDR=" + freePort(t), "MESHD_INBOUND_ADDR=" + freePort(t),
				"MESHD_ADMIN_ADDR=" + admin, "MESHD_DRAIN_TIMEOUT=3s", "CONSUL_HTTP_TOKEN=s3cr3t",
				"MESHD_CONECT_TIMEOUT=1s",
			}
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			var logs []map[string]any
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					var line map[string]any
					if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
						t.Errorf("log line is not JSON: %q", sc.Text())
						continue
					}
					logs = append(logs, line)
				}
				done <- cmd.Wait()
			}()
			t.Cleanup(func() { _ = cmd.Process.Kill() })

			waitStatus(t, "http://"+health+"/ready", 200)
			waitStatus(t, "http://"+health+"/healthz", 200)
			waitStatus(t, "http://"+admin+"/ready", 200)
			resp, err := http.Get("http://" + admin + "/config")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), `"MESHD_DRAIN_TIMEOUT": "3s"`) || strings.Contains(string(body), "s3cr3t") {
				t.Fatalf("/config: %s", body)
			}

			start := time.Now()
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			waitStatus(t, "http://"+health+"/ready", 503)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("meshd exited with %v, want 0", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("meshd did not exit after %v", sig)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("drain took %v with nothing to drain", d)
			}
			var sawStart, sawUnknown, sawStop bool
			for _, l := range logs {
				switch l["msg"] {
				case "starting":
					cfg, _ := l["config"].(map[string]any)
					settings, _ := cfg["settings"].(map[string]any)
					sawStart = settings["MESHD_ADMIN_ADDR"] == admin && settings["CONSUL_HTTP_TOKEN"] == "<redacted>"
				case "unknown variable ignored":
					sawUnknown = l["variable"] == "MESHD_CONECT_TIMEOUT" && l["level"] == "warn"
				case "stopped":
					sawStop = true
				}
			}
			if !sawStart || !sawUnknown || !sawStop {
				t.Fatalf("logs: start=%v unknown=%v stop=%v\n%v", sawStart, sawUnknown, sawStop, logs)
			}
		})
	}
}

func TestRunFailsOnBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, stderr, code := meshd(t, []string{"MESHD_ADMIN_ADDR=" + ln.Addr().String(),
		"MESHD_OUTBOUND_ADDR=" + freePort(t), "MESHD_INBOUND_ADDR=" + freePort(t), "MESHD_HEALTH_ADDR=" + freePort(t)}, "run")
	if code != 1 || !strings.Contains(stderr, "admin listener") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	client := &http.Client{Timeout: time.Second}
	last := ""
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: want %d, last %s", url, want, last)
}
