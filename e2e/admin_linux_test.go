package e2e

import (
	"net/http"
	"testing"

	"github.com/meshd/meshd/internal/netnstest"
)

// TestProbePortsFromAnotherPod: kubelet-style probes reach the health port
// from outside the pod; the admin API (loopback only) does not answer there.
func TestProbePortsFromAnotherPod(t *testing.T) {
	requireNetns(t)
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)
	startMeshd(t, a)
	c := podClient(t, b)
	for _, path := range []string{"/ready", "/healthz"} {
		resp, _, err := do(c, http.MethodGet, "http://"+hostPort(a.Addr, 15021)+path, "", nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("health port %s from another pod: %v %v", path, resp, err)
		}
	}
	for _, path := range []string{"/breakers", "/config", "/ready"} {
		if resp, _, err := do(c, http.MethodGet, "http://"+hostPort(a.Addr, 15000)+path, "", nil); err == nil {
			t.Fatalf("admin API answered %s from another pod: %d", path, resp.StatusCode)
		}
	}
	// Only /healthz and /ready are on the health port.
	if resp, _, err := do(c, http.MethodGet, "http://"+hostPort(a.Addr, 15021)+"/config", "", nil); err != nil || resp.StatusCode != 404 {
		t.Fatalf("health port /config: %v %v", resp, err)
	}
	// Inside the pod the admin API answers, and /shutdown needs POST.
	ac := podClient(t, a)
	if resp, _, err := do(ac, http.MethodGet, "http://127.0.0.1:15000/breakers", "", nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin API inside the pod: %v %v", resp, err)
	}
	if resp, _, err := do(ac, http.MethodGet, "http://127.0.0.1:15000/shutdown", "", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /shutdown: %v %v", resp, err)
	}
}
