//go:build linux

// Package netnstest builds throwaway network topologies for end-to-end
// tests: named network namespaces ("pods") joined by veth pairs to a bridge
// that lives in a namespace of its own. Nothing is attached to the host's
// interfaces, no NAT is installed and no default route leads out, so test
// traffic can only reach loopback or the addresses of the topology itself.
// Everything a test creates is removed in t.Cleanup.
//
// Tests that need root or system tools call Require first: it skips with a
// reason for an unprivileged user, and fails instead when MESHD_E2E=require
// (set by CI), so a missing tool can never turn a CI run green.
package netnstest

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// EnvMode is the environment variable that decides what a test does when
// its environment is missing: "require" makes it fail, anything else skips.
const EnvMode = "MESHD_E2E"

// Require skips t, or fails it under MESHD_E2E=require, unless the process
// runs as root and every named binary is in PATH.
func Require(t testing.TB, binaries ...string) {
	t.Helper()
	var reason string
	if os.Geteuid() != 0 {
		reason = "needs root to create network namespaces and iptables rules"
	} else {
		for _, b := range binaries {
			if _, err := exec.LookPath(b); err != nil {
				reason = fmt.Sprintf("needs %q in PATH (%v)", b, err)
				break
			}
		}
	}
	if reason == "" {
		return
	}
	if os.Getenv(EnvMode) == "require" {
		t.Fatalf("%s=require: %s", EnvMode, reason)
	}
	t.Skipf("skipped: %s (set %s=require to make this a failure)", reason, EnvMode)
}

var seq atomic.Int64

// uniqueName returns a namespace or link name that no other test process
// uses: m<kind><pid>x<seq>, short enough for an interface name (15 bytes).
func uniqueName(kind string) string {
	return fmt.Sprintf("m%s%dx%d", kind, os.Getpid()%100000, seq.Add(1))
}

// NS is a named network namespace created for one test.
type NS struct {
	Name string
}

// NewNS creates a network namespace with its loopback interface up and
// registers its deletion with t.Cleanup.
func NewNS(t testing.TB) *NS {
	t.Helper()
	ns := &NS{Name: uniqueName("n")}
	run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("deleting namespace %s: %v: %s", ns.Name, err, out)
		}
	})
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Command returns a command that runs name inside the namespace
// (through "ip netns exec").
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs a command inside the namespace, fails t when it fails, and
// returns its standard output.
func (ns *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Output runs a command inside the namespace and returns its standard
// output and an error that carries its standard error.
func (ns *NS) Output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return output(ns.Command(ctx, name, args...))
}

// Do runs f on an OS thread that has entered the namespace, so sockets f
// creates (listeners, dialled connections) belong to the namespace; they
// keep working from any goroutine afterwards. The thread returns to its
// original namespace when f ends, or is discarded if it cannot.
func (ns *NS) Do(f func() error) error {
	target, err := unix.Open(filepath.Join("/run/netns", ns.Name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns.Name, err)
	}
	defer unix.Close(target)

	errc := make(chan error, 1)
	go func() {
		// A thread whose namespace changed is never handed back to the
		// scheduler: UnlockOSThread is only called once it is restored.
		runtime.LockOSThread()
		orig, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open current namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave namespace %s: %w (and %v)", ns.Name, err, ferr)
			return // the thread dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Subnet is the private IPv4 subnet of every Topology. It exists only inside
// the namespaces of a topology, each topology having its own bridge, so
// concurrent tests never see each other's addresses.
var Subnet = netip.MustParsePrefix("10.77.0.0/24")

// Subnet6 is the IPv6 counterpart of Subnet (a unique local prefix).
var Subnet6 = netip.MustParsePrefix("fd77::/64")

// Topology is a bridge namespace and the pods attached to it.
type Topology struct {
	Bridge *NS
	mu     sync.Mutex
	pods   int
}

// Pod is a namespace attached to a Topology's bridge through a veth pair,
// with one IPv4 and one IPv6 address on its eth0.
type Pod struct {
	*NS
	Addr  netip.Addr
	Addr6 netip.Addr
}

// NewTopology creates the bridge namespace. Pods are added with AddPod.
func NewTopology(t testing.TB) *Topology {
	t.Helper()
	br := NewNS(t)
	br.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	br.Run(t, "ip", "link", "set", "br0", "up")
	return &Topology{Bridge: br}
}

// AddPod creates a pod namespace, links it to the bridge and gives it the
// next addresses of Subnet and Subnet6.
func (tp *Topology) AddPod(t testing.TB) *Pod {
	t.Helper()
	tp.mu.Lock()
	tp.pods++
	n := tp.pods
	tp.mu.Unlock()
	if n > 250 {
		t.Fatalf("netnstest: too many pods in one topology")
	}
	ns := NewNS(t)
	pod := &Pod{
		NS:    ns,
		Addr:  netip.AddrFrom4([4]byte{10, 77, 0, byte(n + 1)}),
		Addr6: netip.MustParseAddr(fmt.Sprintf("fd77::%x", n+1)),
	}
	host := uniqueName("v")
	// Create the pair inside the bridge namespace, then move one end into
	// the pod: the host's own namespace never holds either end.
	tp.Bridge.Run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
	tp.Bridge.Run(t, "ip", "link", "set", host, "master", "br0")
	tp.Bridge.Run(t, "ip", "link", "set", host, "up")
	ns.Run(t, "ip", "addr", "add", pod.Addr.String()+"/24", "dev", "eth0")
	ns.Run(t, "ip", "-6", "addr", "add", pod.Addr6.String()+"/64", "dev", "eth0", "nodad")
	ns.Run(t, "ip", "link", "set", "eth0", "up")
	return pod
}

// Process is a program started in a namespace by Start.
type Process struct {
	Cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// Start runs a program inside the namespace as uid and gid (as root when
// uid is 0), with env added to the environment. It is killed by PID in
// t.Cleanup if still running.
func (ns *NS) Start(t testing.TB, uid int, env []string, name string, args ...string) *Process {
	t.Helper()
	argv := []string{"netns", "exec", ns.Name}
	if uid != 0 {
		argv = append(argv, "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "--")
	}
	argv = append(argv, name)
	argv = append(argv, args...)
	cmd := exec.Command("ip", argv...)
	cmd.Env = append(os.Environ(), env...)
	p := &Process{Cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.stderr
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s in %s: %v", name, ns.Name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s in %s:\n%s", name, ns.Name, p.Output())
		}
	})
	return p
}

// Output returns what the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.stderr.String() }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits at most d for the process to exit and returns its exit code
// (-1 and an error if it did not exit in time or was killed by a signal).
func (p *Process) Wait(d time.Duration) (int, error) {
	select {
	case <-p.done:
	case <-time.After(d):
		return -1, fmt.Errorf("still running after %v", d)
	}
	if p.Cmd.ProcessState == nil {
		return -1, p.err
	}
	return p.Cmd.ProcessState.ExitCode(), nil
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// BuildMeshd builds the meshd binary into a directory of the test's own
// (readable by the proxy uid) and returns its path.
func BuildMeshd(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	// t.TempDir's directories are private to root; the proxy uid must be
	// able to execute the binary.
	for d := dir; d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("chmod %s: %v", d, err)
		}
	}
	bin := filepath.Join(dir, "meshd")
	root := moduleRoot(t)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/meshd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/meshd: %v\n%s", err, out)
	}
	return bin
}

func moduleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("not inside the meshd module")
	}
	return filepath.Dir(gomod)
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := output(exec.CommandContext(ctx, name, args...))
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func output(cmd *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
