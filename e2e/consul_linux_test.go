package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/consultest"
	"github.com/meshd/meshd/internal/netnstest"
)

// loopbackMeshd runs meshd in explicit mode on free loopback ports and
// returns its outbound and health addresses.
type loopbackMeshd struct {
	cmd      *exec.Cmd
	outbound string
	health   string
	admin    string
	out      *strings.Builder
	mu       sync.Mutex
	done     chan struct{}
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startLoopbackMeshd(t *testing.T, env ...string) *loopbackMeshd {
	t.Helper()
	m := &loopbackMeshd{outbound: freeLoopback(t), health: freeLoopback(t), admin: freeLoopback(t), out: &strings.Builder{}, done: make(chan struct{})}
	m.cmd = exec.Command(meshdBinary(t), "run")
	m.cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"MESHD_OUTBOUND_ADDR=" + m.outbound, "MESHD_INBOUND_ADDR=" + freeLoopback(t),
		"MESHD_ADMIN_ADDR=" + m.admin, "MESHD_HEALTH_ADDR=" + m.health,
	}, env...)
	w := writerFunc(func(p []byte) (int, error) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.out.Write(p)
	})
	m.cmd.Stdout, m.cmd.Stderr = w, w
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() {
		select {
		case <-m.done:
		default:
			_ = m.cmd.Process.Kill()
			<-m.done
		}
		if t.Failed() {
			t.Logf("meshd output:\n%s", m.output())
		}
	})
	return m
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (m *loopbackMeshd) output() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.out.String()
}

func (m *loopbackMeshd) ready(t *testing.T, want int, within time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(within)
	last := 0
	for time.Now().Before(deadline) {
		if resp, err := c.Get("http://" + m.health + "/ready"); err == nil {
			resp.Body.Close()
			last = resp.StatusCode
			if last == want {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("/ready: want %d within %v, last %d", want, within, last)
}

func (m *loopbackMeshd) client() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: m.outbound})}}
}

// countingInstance is an upstream that counts its requests.
type countingInstance struct {
	srv  *httptest.Server
	hits atomic.Int64
	port int
}

func newCountingInstance(t *testing.T, name string) *countingInstance {
	t.Helper()
	ci := &countingInstance{}
	ci.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ci.hits.Add(1)
		fmt.Fprint(w, name)
	}))
	t.Cleanup(ci.srv.Close)
	ci.port = ci.srv.Listener.Addr().(*net.TCPAddr).Port
	return ci
}

// TestConsulDiscoveryThroughMeshd runs meshd against a real agent:
// registrations, failing checks and deregistrations change where traffic
// goes within a second; with the agent stopped traffic goes on for 30 s on
// the last endpoints; after a restart, changes flow again.
func TestConsulDiscoveryThroughMeshd(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{})
	ins := []*countingInstance{newCountingInstance(t, "one"), newCountingInstance(t, "two"), newCountingInstance(t, "three")}
	ids := []string{agent.Register("payments", "127.0.0.1", ins[0].port), agent.Register("payments", "127.0.0.1", ins[1].port)}

	m := startLoopbackMeshd(t, "CONSUL_HTTP_ADDR="+agent.Addr)
	m.ready(t, 200, 10*time.Second)
	c := m.client()

	// Traffic runs all along; each phase checks where it lands.
	var failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := c.Get("http://payments/")
			if err != nil {
				failures.Add(1)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				failures.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	waitFor := func(what string, within time.Duration, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < within {
			if cond() {
				return time.Since(start)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("%s: not within %v", what, within)
		return 0
	}
	// quiet reports whether an instance got no request for a while.
	quiet := func(ci *countingInstance) func() bool {
		return func() bool {
			before := ci.hits.Load()
			time.Sleep(100 * time.Millisecond)
			return ci.hits.Load() == before
		}
	}

	waitFor("both registered instances get traffic", 5*time.Second, func() bool { return ins[0].hits.Load() > 0 && ins[1].hits.Load() > 0 })

	ids = append(ids, agent.Register("payments", "127.0.0.1", ins[2].port))
	d := waitFor("a new instance receives traffic", 2*time.Second, func() bool { return ins[2].hits.Load() > 0 })
	t.Logf("new instance received traffic after %v", d)
	if d > time.Second {
		t.Errorf("new instance took %v, want within 1 s", d)
	}

	agent.SetHealth(ids[0], false)
	d = waitFor("a failing instance stops receiving traffic", 2*time.Second+100*time.Millisecond, quiet(ins[0]))
	t.Logf("failing instance left after at most %v", d)
	if d > time.Second+100*time.Millisecond {
		t.Errorf("failing instance kept traffic for %v", d)
	}
	agent.Deregister(ids[1])
	d = waitFor("a deregistered instance stops receiving traffic", 2*time.Second+100*time.Millisecond, quiet(ins[1]))
	if d > time.Second+100*time.Millisecond {
		t.Errorf("deregistered instance kept traffic for %v", d)
	}
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d requests failed while instances came and went", n)
	}

	// Consul goes away: the last endpoints keep serving.
	agent.Stop()
	before := ins[2].hits.Load()
	time.Sleep(30 * time.Second)
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d requests failed during the 30 s Consul outage", n)
	}
	if served := ins[2].hits.Load() - before; served < 100 {
		t.Fatalf("only %d requests served during the outage", served)
	}

	// Back: changes flow again (the dev agent restarts empty).
	agent.Restart()
	agent.Register("payments", "127.0.0.1", ins[0].port)
	waitFor("changes after Consul came back", 20*time.Second, func() bool {
		return quiet(ins[2])() && ins[0].hits.Load() > 0
	})
	if !strings.Contains(m.output(), "consul reachable again") {
		t.Errorf("recovery not logged")
	}
}

// TestRegistersTheLocalApp checks registration at start (with /ready
// waiting for it) and deregistration on SIGTERM, as seen in the catalog.
func TestRegistersTheLocalApp(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{})
	app := newCountingInstance(t, "web")
	host, _ := os.Hostname()

	m := startLoopbackMeshd(t, "CONSUL_HTTP_ADDR="+agent.Addr, "MESHD_CONSUL_REGISTER=true",
		"MESHD_SERVICE_NAME=web", "MESHD_APP_PORT="+strconv.Itoa(app.port), "MESHD_SERVICE_ADDRESS=127.0.0.1")
	m.ready(t, 200, 10*time.Second)
	svcs, _, err := agent.Client().Catalog().Service("web", "", nil)
	if err != nil || len(svcs) != 1 {
		t.Fatalf("catalog: %+v, %v", svcs, err)
	}
	wantID := fmt.Sprintf("web-%s-%d", host, app.port)
	if svcs[0].ServiceID != wantID || svcs[0].ServiceAddress != "127.0.0.1" || svcs[0].ServicePort != app.port {
		t.Fatalf("registered %s at %s:%d, want %s at 127.0.0.1:%d", svcs[0].ServiceID, svcs[0].ServiceAddress, svcs[0].ServicePort, wantID, app.port)
	}
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		t.Fatal("meshd did not exit")
	}
	if code := m.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	svcs, _, err = agent.Client().Catalog().Service("web", "", nil)
	if err != nil || len(svcs) != 0 {
		t.Fatalf("still registered after shutdown: %+v, %v", svcs, err)
	}
}

// TestNotReadyUntilConsulAnswers: with the agent unreachable, /ready stays
// 503; once it answers, 200.
func TestNotReadyUntilConsulAnswers(t *testing.T) {
	consultest.Require(t)
	addr := freeLoopback(t)
	_, port, _ := net.SplitHostPort(addr)
	m := startLoopbackMeshd(t, "CONSUL_HTTP_ADDR="+addr)
	m.ready(t, 503, 5*time.Second)
	time.Sleep(500 * time.Millisecond)
	m.ready(t, 503, time.Second)
	p, _ := strconv.Atoi(port)
	consultest.Start(t, consultest.Options{Ports: [4]int{p}})
	m.ready(t, 200, 15*time.Second)
}

// TestConsulInNamespaces: pod A's app calls payments, whose 3 instances in
// pod B are registered in a Consul agent running in pod C.
func TestConsulInNamespaces(t *testing.T) {
	requireNetns(t)
	consultest.Require(t)
	tp := netnstest.NewTopology(t)
	a, b, c := tp.AddPod(t), tp.AddPod(t), tp.AddPod(t)

	agent := consultest.Start(t, consultest.Options{
		BindAddr: c.Addr.String(),
		Wrap:     []string{"ip", "netns", "exec", c.Name},
		Ports:    [4]int{8500, 8301, 8302, 8300},
	})
	cc := podClient(t, c)
	api := "http://" + agent.Addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, body, err := do(cc, http.MethodGet, api+"/v1/status/leader", "", nil)
		if err == nil && resp.StatusCode == 200 && len(body) > 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consul in pod C has no leader: %v %q\n%s", err, body, agent.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}

	rec := &recorder{}
	for i, port := range []uint16{8081, 8082, 8083} {
		name := fmt.Sprintf("instance-%d", i+1)
		serveHTTP(t, b, hostPort(b.Addr, port), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec.ServeHTTP(w, r)
			fmt.Fprint(w, name)
		}))
		reg := fmt.Sprintf(`{"ID":"payments-%d","Name":"payments","Address":%q,"Port":%d}`, port, b.Addr.String(), port)
		resp, body, err := do(cc, http.MethodPut, api+"/v1/agent/service/register", "", strings.NewReader(reg))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("register: %v %v %s", resp, err, body)
		}
	}

	startMeshd(t, a, "CONSUL_HTTP_ADDR="+agent.Addr)
	ac := podClient(t, a)
	seen := map[string]int{}
	for i := 0; i < 60; i++ {
		resp, body, err := do(ac, http.MethodGet, "http://"+hostPort(b.Addr, 80)+"/", "payments", nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: %v %v %q", i, resp, err, body)
		}
		seen[body]++
	}
	if len(seen) != 3 {
		t.Fatalf("answers per instance %v, want all 3", seen)
	}
}
