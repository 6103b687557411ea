package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a long-running process the harness started (meshd, a peer proxy,
// the echo server, the sink). Every one is started through taskset on one
// core, in a process group of its own (a Ctrl-C at the terminal reaches the
// harness only, which then stops each child by PID), with SIGKILL as its
// parent-death signal in case the harness itself is killed.
type proc struct {
	name string
	cmd  *exec.Cmd
	pid  int
	logf string
	done chan struct{}
	err  error
}

// procs is the registry of everything started, for the final cleanup.
type procs struct {
	mu   sync.Mutex
	list []*proc
	pids []int // every PID ever started, short-lived ones included
}

func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// start runs argv pinned to core, with env as its whole environment and its
// output in logPath.
func (ps *procs) start(name string, core int, env []string, dir, logPath string, argv ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args := append([]string{"-c", strconv.Itoa(core)}, argv...)
	cmd := exec.Command("taskset", args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, pid: cmd.Process.Pid, logf: logPath, done: make(chan struct{})}
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.pids = append(ps.pids, p.pid)
	ps.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (ps *procs) noteShortLived(pid int) {
	ps.mu.Lock()
	ps.pids = append(ps.pids, pid)
	ps.mu.Unlock()
}

func (ps *procs) allPIDs() []int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]int(nil), ps.pids...)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process by its PID: SIGTERM, then SIGKILL after 3 s.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = syscall.Kill(p.pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(3 * time.Second):
	}
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		fmt.Fprintf(os.Stderr, "bench: %s (pid %d) did not exit after SIGKILL\n", p.name, p.pid)
	}
}

// stopAll stops every process still running, newest first.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	list := append([]*proc(nil), ps.list...)
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		list[i].stop()
	}
}

// tail returns the last lines of a process's log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.logf)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// runShort runs a bounded command pinned to core and returns its stdout.
// It is killed by PID when ctx ends or after timeout.
func (ps *procs) runShort(ctx context.Context, timeout time.Duration, core int, env []string, dir string, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := append([]string{"-c", strconv.Itoa(core)}, argv...)
	cmd := exec.CommandContext(ctx, "taskset", args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.SysProcAttr = childAttr()
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ps.noteShortLived(cmd.Process.Pid)
	err := cmd.Wait()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s: %w", argv[0], ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", argv[0], err, lastLines(stderr.String(), 6))
	}
	return []byte(stdout.String()), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	// Hold every listener until all are chosen, so the n ports differ.
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var out []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// waitTCP waits until addr accepts a connection, p exits, or timeout.
func waitTCP(ctx context.Context, p *proc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail())
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p != nil {
		return fmt.Errorf("%s: %s not accepting after %s\n%s", p.name, addr, timeout, p.tail())
	}
	return fmt.Errorf("%s not accepting after %s", addr, timeout)
}

// waitHTTP200 waits until url answers 200, p exits, or timeout.
func waitHTTP200(ctx context.Context, p *proc, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 500 * time.Millisecond}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail())
		}
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s not 200 after %s\n%s", p.name, url, timeout, p.tail())
}

// ---- /proc readings ----

// clkTck is the kernel's clock ticks per second (USER_HZ) for /proc/PID/stat.
var clkTck = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && v > 0 {
			return float64(v)
		}
	}
	return 100
}()

// parseStat returns comm, utime+stime in ticks, and starttime from one
// /proc/PID/stat line.
func parseStat(line string) (comm string, ticks, start uint64, err error) {
	open, closing := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 0 || closing < open {
		return "", 0, 0, errors.New("malformed stat")
	}
	comm = line[open+1 : closing]
	f := strings.Fields(line[closing+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15, starttime 22.
	if len(f) < 20 {
		return "", 0, 0, errors.New("short stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	sst, err3 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return "", 0, 0, err
	}
	return comm, ut + st, sst, nil
}

// cpuSeconds is utime+stime of pid, in seconds.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	_, t, _, err := parseStat(string(b))
	return float64(t) / clkTck, err
}

// cpuOf sums cpuSeconds over procs.
func cpuOf(ps []*proc) (float64, error) {
	var sum float64
	for _, p := range ps {
		s, err := cpuSeconds(p.pid)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", p.name, err)
		}
		sum += s
	}
	return sum, nil
}

// statusKiB reads one "Key: N kB" line of /proc/PID/status.
func statusKiB(pid int, key string) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseStatusKiB(string(b), key)
}

func parseStatusKiB(status, key string) (float64, error) {
	for _, line := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			v, err := strconv.ParseFloat(f[0], 64)
			return v, err
		}
	}
	return 0, fmt.Errorf("no %s in status", key)
}

// maxMiB is the largest value of key over procs, in MiB: the memory of one
// proxy process (the larger sidecar in the two-hop row).
func maxMiB(ps []*proc, key string) (float64, error) {
	var m float64
	for _, p := range ps {
		v, err := statusKiB(p.pid, key)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", p.name, err)
		}
		m = max(m, v/1024)
	}
	return m, nil
}
