// Command demo shows meshd on one machine, with no root, no Consul and no
// Docker: it starts three instances of a tiny "payments" service on
// loopback, runs meshd in explicit mode with those instances as static
// endpoints, sends requests through meshd by service name, prints what came
// back, and stops everything it started (also on Ctrl-C).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	meshd := flag.String("meshd", "bin/meshd", "path of the meshd binary")
	requests := flag.Int("requests", 30, "requests to send through meshd")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *meshd, *requests); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, meshdBin string, requests int) error {
	// Three instances of the example service, each on its own loopback port.
	var addrs []string
	for i := 1; i <= 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		name := fmt.Sprintf("payments-%d", i)
		srv := &http.Server{Handler: instance(name), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		addrs = append(addrs, ln.Addr().String())
		fmt.Printf("started %s on %s\n", name, ln.Addr())
	}

	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	outbound, inbound, admin, health := ports[0], ports[1], ports[2], ports[3]
	cmd := exec.Command(meshdBin, "run")
	cmd.Env = append(os.Environ(),
		"MESHD_OUTBOUND_ADDR="+outbound, "MESHD_INBOUND_ADDR="+inbound,
		"MESHD_ADMIN_ADDR="+admin, "MESHD_HEALTH_ADDR="+health,
		"MESHD_STATIC_ENDPOINTS=payments="+strings.Join(addrs, ","),
		"MESHD_LOG_LEVEL=warn",
	)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start meshd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	fmt.Printf("started meshd (pid %d): outbound %s, admin %s\n", cmd.Process.Pid, outbound, admin)
	if err := waitReady(ctx, "http://"+health+"/ready"); err != nil {
		return err
	}

	proxyURL := &url.URL{Scheme: "http", Host: outbound}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	fmt.Printf("\nsending %d requests to http://payments/charge through meshd (HTTP_PROXY=%s)\n\n", requests, proxyURL)
	seen := map[string]int{}
	for i := 1; i <= requests; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://payments/charge", nil)
		resp, err := client.Do(req)
		if err != nil {
			fmt.Printf("  #%02d error: %v\n", i, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		who := strings.TrimSpace(string(body))
		seen[who]++
		if i <= 5 || i == requests {
			fmt.Printf("  #%02d %s from %s  x-request-id=%s x-meshd-attempt=%s\n", i, resp.Status, who,
				resp.Header.Get("X-Seen-Request-Id"), resp.Header.Get("X-Seen-Attempt"))
		} else if i == 6 {
			fmt.Println("  ...")
		}
	}
	fmt.Println("\nanswers per instance (balanced by power of two choices over least outstanding requests):")
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("  %-12s %d\n", n, seen[n])
	}
	fmt.Println("\nstopping meshd with SIGTERM")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			return fmt.Errorf("meshd exited: %w", err)
		}
		fmt.Println("meshd drained and exited with status 0")
	case <-time.After(10 * time.Second):
		return errors.New("meshd did not exit within 10 s")
	}
	return nil
}

// instance is the example service: it answers with its name and echoes
// the headers meshd added.
func instance(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Request-Id", r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Seen-Attempt", r.Header.Get("X-Meshd-Attempt"))
		fmt.Fprintln(w, name)
	})
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

func waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("meshd not ready at %s after 10 s", url)
}
