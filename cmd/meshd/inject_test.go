package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

const podYAML = `apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  containers:
    - name: hello
      image: busybox
`

// oneLineErr asserts that stderr is a single line containing want.
func oneLineErr(t *testing.T, stderr, want string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
		t.Errorf("stderr = %q, want one line containing %q", stderr, want)
	}
}

func TestInjectCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pod.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte(podYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("kind: Pod\nmetadata:\n  name: a\n   labels: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := meshd(t, nil, "inject", "-f", good, "--env", "CONSUL_HTTP_ADDR=$(HOST_IP):8500", "--sidecar-mode=classic")
	if code != 0 || errOut != "" {
		t.Fatalf("inject -f pod.yaml: code %d, stderr %q", code, errOut)
	}
	for _, s := range []string{"name: meshd-init", "name: meshd\n", "wait-ready", "value: $(HOST_IP):8500", `meshd.io/injected: "true"`} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}

	// stdin, and idempotence through the command.
	cmd := exec.Command(meshdBin, "inject", "--sidecar-mode=classic", "--env", "CONSUL_HTTP_ADDR=$(HOST_IP):8500")
	cmd.Stdin = strings.NewReader(out)
	var again, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &again, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("inject from stdin: %v: %s", err, stderr.String())
	}
	if again.String() != out {
		t.Errorf("second inject changed the output:\n%s", again.String())
	}
	if !strings.Contains(stderr.String(), "Pod/hello: already injected") {
		t.Errorf("stderr = %q", stderr.String())
	}

	_, errOut, code = meshd(t, nil, "inject", "-f", bad)
	if code != exitFailure {
		t.Errorf("inject -f bad.yaml: code %d, want 1", code)
	}
	oneLineErr(t, errOut, "bad.yaml: document 1, line 4: invalid YAML: mapping values are not allowed")

	_, errOut, code = meshd(t, nil, "inject", "-f", filepath.Join(dir, "missing.yaml"))
	if code != exitFailure {
		t.Errorf("inject -f missing.yaml: code %d, want 1", code)
	}
	oneLineErr(t, errOut, "missing.yaml: no such file or directory")

	for _, args := range [][]string{
		{"inject", "--sidecar-mode", "sidecar", "-f", good},
		{"inject", "--env", "NOVALUE", "-f", good},
		{"inject", "--env", "MESHD_PROXY_UID=0", "-f", good},
		{"inject", "--image-pull-policy", "sometimes", "-f", good},
		{"inject", good},
		{"inject", "--no-such-flag"},
	} {
		if _, _, code := meshd(t, nil, args...); code != exitUsage {
			t.Errorf("meshd %q: code %d, want 2", args, code)
		}
	}
	if out, _, code := meshd(t, nil, "inject", "-h"); code != 0 {
		t.Errorf("inject -h: code %d %s", code, out)
	}
}

func TestWaitReady(t *testing.T) {
	var ready atomic.Bool
	calls := atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			http.NotFound(w, r)
			return
		}
		if calls.Add(1) >= 3 {
			ready.Store(true)
		}
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	// From the environment, with an unspecified host (":port" means
	// loopback).
	if _, errOut, code := meshd(t, []string{"MESHD_HEALTH_ADDR=:" + port}, "wait-ready", "--timeout", "10s"); code != 0 {
		t.Fatalf("wait-ready: code %d, stderr %q", code, errOut)
	}
	if calls.Load() < 3 {
		t.Errorf("ready after %d polls, want 3", calls.Load())
	}

	ready.Store(false)
	calls.Store(-1000)
	_, errOut, code := meshd(t, nil, "wait-ready", "--health-addr", "0.0.0.0:"+port, "--timeout", "500ms")
	if code != exitFailure {
		t.Errorf("wait-ready on a 503: code %d, want 1", code)
	}
	oneLineErr(t, errOut, "not ready after 500ms: status 503")

	if _, _, code := meshd(t, nil, "wait-ready", "--health-addr", "nope"); code != exitUsage {
		t.Errorf("bad --health-addr: code %d, want 2", code)
	}
}
