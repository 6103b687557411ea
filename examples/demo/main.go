// Command demo shows what meshd does for a caller, on one machine, with no
// root, no Consul and no Docker. It starts three instances of a small
// "payments" service on loopback (one healthy, one failing a share of its
// requests, one slow), then runs the same load twice: first straight to
// the instances (round robin, as a client with a DNS list would), then
// through meshd in explicit mode (HTTP_PROXY), and prints both side by
// side. Everything it starts is stopped at the end, also on Ctrl-C.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	meshd := flag.String("meshd", "bin/meshd", "path of the meshd binary")
	phase := flag.Duration("duration", 10*time.Second, "how long each of the two load phases runs")
	workers := flag.Int("workers", 8, "concurrent clients")
	consul := flag.String("consul", "", "path of a Consul agent binary: discover the instances through it instead of static endpoints")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *meshd, *consul, *phase, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo:", err)
		os.Exit(1)
	}
}

// behaviour of one instance.
type behaviour struct {
	name     string
	failRate float64       // share of requests answered 503
	delay    time.Duration // added to every answer
}

func run(ctx context.Context, meshdBin, consulBin string, phase time.Duration, workers int) error {
	instances := []behaviour{
		{name: "payments-1"},
		{name: "payments-2", failRate: 0.3},
		{name: "payments-3", delay: 400 * time.Millisecond},
	}
	var addrs []string
	for _, b := range instances {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: serve(b), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	fmt.Println("meshd demo: three instances of \"payments\" on loopback")
	fmt.Printf("  %s  %s  healthy\n", instances[0].name, addrs[0])
	fmt.Printf("  %s  %s  fails 30%% of requests with 503\n", instances[1].name, addrs[1])
	fmt.Printf("  %s  %s  answers after 400 ms\n\n", instances[2].name, addrs[2])

	discovery := "MESHD_STATIC_ENDPOINTS=payments=" + strings.Join(addrs, ",")
	if consulBin != "" {
		agent, err := startConsul(ctx, consulBin)
		if err != nil {
			return err
		}
		defer agent.stop()
		for i, a := range addrs {
			if err := agent.register(instances[i].name, a); err != nil {
				return err
			}
		}
		fmt.Printf("Consul dev agent (pid %d) on %s: the three instances registered as \"payments\"\n\n", agent.cmd.Process.Pid, agent.addr)
		discovery = "CONSUL_HTTP_ADDR=" + agent.addr
	}
	m, err := startMeshd(meshdBin, discovery)
	if err != nil {
		return err
	}
	defer m.stop()
	if err := m.waitReady(ctx); err != nil {
		return err
	}
	fmt.Printf("meshd (pid %d) proxies on %s, admin on %s\n", m.cmd.Process.Pid, m.outbound, m.admin)
	fmt.Println("  MESHD_PER_TRY_TIMEOUT=150ms, everything else at its default")
	fmt.Printf("\n%d clients, %v per phase\n", workers, phase)

	var rr atomic.Uint64
	directClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: workers}}
	direct, err := load(ctx, "direct", phase, workers, func(ctx context.Context) (int, error) {
		i := rr.Add(1) % uint64(len(addrs))
		return get(ctx, directClient, "http://"+addrs[i]+"/charge")
	})
	if err != nil {
		return err
	}
	proxyClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: m.outbound}), MaxIdleConnsPerHost: workers}}
	before, _ := m.figures()
	through, err := load(ctx, "meshd", phase, workers, func(ctx context.Context) (int, error) {
		return get(ctx, proxyClient, "http://payments/charge")
	})
	if err != nil {
		return err
	}
	after, err := m.figures()
	if err != nil {
		return err
	}

	fmt.Printf("\n%-28s %14s %14s\n", "", "direct", "through meshd")
	fmt.Printf("%-28s %14d %14d\n", "requests", direct.requests, through.requests)
	fmt.Printf("%-28s %14s %14s\n", "errors seen by the client", pct(direct), pct(through))
	fmt.Printf("%-28s %14s %14s\n", "p50", ms(direct.quantile(0.5)), ms(through.quantile(0.5)))
	fmt.Printf("%-28s %14s %14s\n", "p99", ms(direct.quantile(0.99)), ms(through.quantile(0.99)))
	fmt.Printf("%-28s %14s %14.0f\n", "retries", "-", after.retries-before.retries)
	fmt.Printf("%-28s %14s %14.0f\n", "endpoint ejections", "-", after.ejections-before.ejections)
	fmt.Printf("%-28s %14s %14d\n", "breaker state changes", "-", m.count("breaker state changed"))
	fmt.Println("\nThrough meshd, failed attempts are retried on another instance (within a")
	fmt.Println("retry budget), slow attempts are cut by the per-try timeout and retried,")
	fmt.Println("and instances that keep failing are ejected for a while.")
	fmt.Println("\nmeshd status:")
	out, _ := exec.Command(meshdBin, "status", "--admin-addr", m.admin).CombinedOutput()
	fmt.Print(indent(string(out)))
	return nil
}

// serve is one instance of the example service.
func serve(b behaviour) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.delay > 0 {
			select {
			case <-time.After(b.delay):
			case <-r.Context().Done():
				return
			}
		}
		if rand.Float64() < b.failRate {
			http.Error(w, b.name+": temporarily unavailable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, b.name+": charged")
	})
}

func get(ctx context.Context, c *http.Client, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// result is one phase's figures.
type result struct {
	requests, errors int
	latencies        []time.Duration
}

func (r *result) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func pct(r *result) string {
	if r.requests == 0 {
		return "-"
	}
	return fmt.Sprintf("%d (%.1f%%)", r.errors, 100*float64(r.errors)/float64(r.requests))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// load runs workers calling call until d has passed, with a progress line.
func load(ctx context.Context, name string, d time.Duration, workers int, call func(context.Context) (int, error)) (*result, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	res := &result{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				start := time.Now()
				code, err := call(ctx)
				if ctx.Err() != nil {
					return // cut by the end of the phase: not counted
				}
				mu.Lock()
				res.requests++
				res.latencies = append(res.latencies, time.Since(start))
				if err != nil || code != http.StatusOK {
					res.errors++
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			mu.Lock()
			fmt.Printf("\r  %-7s %5.1fs  %6d requests  %5d errors\n", name, time.Since(start).Seconds(), res.requests, res.errors)
			mu.Unlock()
			if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return nil, err
			}
			return res, nil
		case <-tick.C:
			mu.Lock()
			fmt.Printf("\r  %-7s %5.1fs  %6d requests  %5d errors", name, time.Since(start).Seconds(), res.requests, res.errors)
			mu.Unlock()
		}
	}
}

// meshd is the sidecar under demonstration.
type meshd struct {
	cmd                     *exec.Cmd
	outbound, admin, health string
	exited                  chan error
	mu                      sync.Mutex
	log                     []string
}

func startMeshd(bin, discovery string) (*meshd, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	m := &meshd{outbound: ports[0], admin: ports[2], health: ports[3], exited: make(chan error, 1)}
	m.cmd = exec.Command(bin, "run")
	m.cmd.Env = append(os.Environ(),
		"MESHD_OUTBOUND_ADDR="+ports[0], "MESHD_INBOUND_ADDR="+ports[1],
		"MESHD_ADMIN_ADDR="+ports[2], "MESHD_HEALTH_ADDR="+ports[3],
		discovery,
		"MESHD_PER_TRY_TIMEOUT=150ms",
	)
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start meshd (run `make build` first?): %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			m.mu.Lock()
			m.log = append(m.log, sc.Text())
			m.mu.Unlock()
		}
		m.exited <- m.cmd.Wait()
	}()
	return m, nil
}

func (m *meshd) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + m.health + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-m.exited:
			return fmt.Errorf("meshd exited before it was ready: %v\n%s", err, strings.Join(m.log, "\n"))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("meshd not ready after 10 s")
}

// stop drains meshd with SIGTERM, and kills it if it does not exit.
func (m *meshd) stop() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
}

// count returns how many log lines carry msg.
func (m *meshd) count(msg string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, l := range m.log {
		if strings.Contains(l, `"msg":"`+msg+`"`) {
			n++
		}
	}
	return n
}

type figures struct{ retries, ejections float64 }

// figures reads the retry and ejection counters from /metrics.
func (m *meshd) figures() (figures, error) {
	resp, err := http.Get("http://" + m.admin + "/metrics")
	if err != nil {
		return figures{}, err
	}
	defer resp.Body.Close()
	var f figures
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(rest, 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "meshd_retries_total"):
			f.retries += v
		case strings.HasPrefix(name, "meshd_endpoint_ejections_total"):
			f.ejections += v
		}
	}
	return f, sc.Err()
}

// consulAgent is a dev-mode Consul agent on loopback.
type consulAgent struct {
	cmd    *exec.Cmd
	addr   string
	exited chan error
}

func startConsul(ctx context.Context, bin string) (*consulAgent, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	port := func(i int) string { _, p, _ := net.SplitHostPort(ports[i]); return p }
	a := &consulAgent{addr: ports[0], exited: make(chan error, 1)}
	a.cmd = exec.Command(bin, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", port(0), "-serf-lan-port", port(1), "-serf-wan-port", port(2), "-server-port", port(3),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1", "-log-level", "error")
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start consul (run `make consul` first?): %w", err)
	}
	go func() { a.exited <- a.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + a.addr + "/v1/status/leader"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if len(b) > 4 {
				return a, nil
			}
		}
		select {
		case <-ctx.Done():
			a.stop()
			return nil, ctx.Err()
		case err := <-a.exited:
			return nil, fmt.Errorf("consul exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	a.stop()
	return nil, errors.New("consul has no leader after 30 s")
}

// register adds one instance of payments.
func (a *consulAgent) register(id, addr string) error {
	host, port, _ := net.SplitHostPort(addr)
	body := fmt.Sprintf(`{"ID":%q,"Name":"payments","Address":%q,"Port":%s}`, id, host, port)
	req, _ := http.NewRequest(http.MethodPut, "http://"+a.addr+"/v1/agent/service/register", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("register %s: %s", id, resp.Status)
	}
	return nil
}

func (a *consulAgent) stop() {
	_ = a.cmd.Process.Kill()
	<-a.exited
}

func freePorts(n int) ([]string, error) {
	var out []string
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		out = append(out, ln.Addr().String())
		defer ln.Close()
	}
	return out, nil
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}
