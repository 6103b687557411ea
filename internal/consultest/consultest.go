// Package consultest runs a real Consul agent for tests: the pinned
// version built by `make consul` into bin/consul, in -dev mode, on loopback
// ports chosen free at run time (or on an address of a test namespace),
// stopped by PID in t.Cleanup.
//
// A test that needs the agent calls Start; when the binary is missing it
// skips with a reason, or fails under MESHD_E2E=require.
package consultest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Binary returns the Consul agent's path: $MESHD_CONSUL_BIN, else bin/consul
// at the module root, else "consul" in PATH; "" when none exists.
func Binary() string {
	if b := os.Getenv("MESHD_CONSUL_BIN"); b != "" {
		if _, err := os.Stat(b); err == nil {
			return b
		}
	}
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			b := filepath.Join(filepath.Dir(gomod), "bin", "consul")
			if _, err := os.Stat(b); err == nil {
				return b
			}
		}
	}
	if b, err := exec.LookPath("consul"); err == nil {
		return b
	}
	return ""
}

// Require skips t, or fails it under MESHD_E2E=require, when the agent
// binary is missing.
func Require(t testing.TB) string {
	t.Helper()
	b := Binary()
	if b != "" {
		return b
	}
	msg := "needs the Consul agent: run `make consul` (builds the pinned agent into bin/consul)"
	if os.Getenv("MESHD_E2E") == "require" {
		t.Fatalf("MESHD_E2E=require: %s", msg)
	}
	t.Skipf("skipped: %s", msg)
	return ""
}

// Agent is a running dev-mode agent.
type Agent struct {
	// Addr is the HTTP API's host:port.
	Addr string

	t    testing.TB
	bin  string
	args []string
	wrap []string // command prefix, such as "ip netns exec NAME"
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  *lockedWriter
	cl   *api.Client
}

// Options choose where the agent listens. The zero value is loopback with
// free ports.
type Options struct {
	// BindAddr is the address every port binds to; default 127.0.0.1.
	BindAddr string
	// Wrap is a command prefix to run the agent with, such as
	// []string{"ip", "netns", "exec", "NAME"} to run it in a namespace.
	Wrap []string
	// Ports are the HTTP, serf LAN, serf WAN and server ports; zero values
	// are chosen free on loopback.
	Ports [4]int
}

// Start runs an agent and waits until it has a leader.
func Start(t testing.TB, o Options) *Agent {
	t.Helper()
	bin := Require(t)
	bind := o.BindAddr
	if bind == "" {
		bind = "127.0.0.1"
	}
	ports := o.Ports
	for i := range ports {
		if ports[i] == 0 {
			ports[i] = freePort(t)
		}
	}
	a := &Agent{
		t:    t,
		bin:  bin,
		wrap: o.Wrap,
		Addr: net.JoinHostPort(bind, strconv.Itoa(ports[0])),
		args: []string{"agent", "-dev", "-bind", bind, "-client", bind, "-advertise", bind,
			"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]),
			"-serf-wan-port", strconv.Itoa(ports[2]), "-server-port", strconv.Itoa(ports[3]),
			"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
			"-log-level", "warn", "-node", fmt.Sprintf("meshd-test-%d", os.Getpid()),
			"-disable-host-node-id",
			// One meshd keeps one blocking query open per watched name; the
			// tests watch more names than the default limit of 200.
			"-hcl", "limits { http_max_conns_per_client = 2000 }"},
	}
	a.start()
	t.Cleanup(a.Stop)
	return a
}

func (a *Agent) start() {
	a.t.Helper()
	argv := append(append([]string{}, a.wrap...), a.bin)
	argv = append(argv, a.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	out := &lockedWriter{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		a.t.Fatalf("start consul: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	a.mu.Lock()
	a.cmd, a.done, a.out = cmd, done, out
	a.mu.Unlock()
	if a.wrap != nil {
		return // the caller waits from inside the namespace
	}
	if err := a.WaitLeader(30 * time.Second); err != nil {
		a.Stop()
		a.t.Fatalf("consul agent: %v\n%s", err, out.String())
	}
}

// WaitLeader polls the agent until it reports a leader.
func (a *Agent) WaitLeader(d time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		resp, err := c.Get("http://" + a.Addr + "/v1/status/leader")
		if err == nil {
			var b [128]byte
			n, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if resp.StatusCode == 200 && n > 2 && string(b[:n]) != `""` {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no leader at %s after %v", a.Addr, d)
}

// Stop kills the agent by PID and waits for it to exit.
func (a *Agent) Stop() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
	default:
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart stops the agent and starts it again on the same ports. A dev
// agent keeps nothing: the catalog starts empty again.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	a.start()
}

// Output returns what the agent printed.
func (a *Agent) Output() string {
	a.mu.Lock()
	out := a.out
	a.mu.Unlock()
	return out.String()
}

// Client returns an API client for the agent (one per Agent, so its
// connections are reused).
func (a *Agent) Client() *api.Client {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cl != nil {
		return a.cl
	}
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		a.t.Fatal(err)
	}
	a.cl = c
	return c
}

// Register registers a service instance with a TTL check that starts
// passing, and returns its ID.
func (a *Agent) Register(name, addr string, port int) string {
	a.t.Helper()
	id := fmt.Sprintf("%s-%s-%d", name, addr, port)
	err := a.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: name, Address: addr, Port: port,
		Check: &api.AgentServiceCheck{CheckID: "check-" + id, TTL: "10m", Status: api.HealthPassing},
	})
	if err != nil {
		a.t.Fatalf("register %s: %v", id, err)
	}
	return id
}

// SetHealth sets an instance's TTL check to passing or critical.
func (a *Agent) SetHealth(id string, passing bool) {
	a.t.Helper()
	status := api.HealthCritical
	if passing {
		status = api.HealthPassing
	}
	if err := a.Client().Agent().UpdateTTL("check-"+id, "set by test", status); err != nil {
		a.t.Fatalf("update check of %s: %v", id, err)
	}
}

// Deregister removes an instance.
func (a *Agent) Deregister(id string) {
	a.t.Helper()
	if err := a.Client().Agent().ServiceDeregister(id); err != nil {
		a.t.Fatalf("deregister %s: %v", id, err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
