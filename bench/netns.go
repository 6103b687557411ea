package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The two-hop row is a client sidecar calling a server sidecar, and the
// server sidecar takes the call on its inbound listener, which serves only
// connections iptables redirected to it (it reads their original
// destination). So, when it is root and has ip and iptables, the harness
// runs itself again inside a network namespace of its own: every row runs
// there, on that namespace's loopback (the same kernel path as the host's),
// and the two-hop row adds a REDIRECT rule that sends the client sidecar's
// connections for 127.0.0.2 to the server sidecar's inbound listener, as a
// pod's PREROUTING rule does (on one loopback, locally sent packets meet
// nat OUTPUT, not PREROUTING). The namespace has only its loopback: no
// link, no route out. It is deleted when the run ends.
//
// Without root, ip or iptables, everything runs as before on the host's
// loopback, and the two-hop row's server sidecar takes the call on its
// outbound listener instead (routed by Host, as the client sidecar does);
// the results say which.

// inboundVIP is the address the client sidecar calls in the namespace: the
// server pod's address, in effect. Every port of it is redirected.
const inboundVIP = "127.0.0.2"

// netnsPlan decides whether the run goes into a namespace, and why not.
func netnsPlan() (ok bool, why string) {
	if os.Geteuid() != 0 {
		return false, "not root"
	}
	for _, bin := range []string{"ip", "iptables"} {
		if findBin(bin) == "" {
			return false, bin + " not found"
		}
	}
	return true, ""
}

// runInNetns creates a namespace, runs the harness in it with args (and
// -netns naming it), and deletes it. It returns the child's exit code.
func runInNetns(args []string) (int, error) {
	name := fmt.Sprintf("meshdbench%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	defer func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: deleting namespace %s: %v: %s\n", name, err, out)
		}
	}()
	if out, err := exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("loopback up in %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", name, self, "-netns", name}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// A Ctrl-C reaches the child from the terminal; a SIGTERM to the
	// harness is passed on. Either way the namespace goes after the child.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	go func() {
		for s := range sigs {
			if s == syscall.SIGTERM {
				_ = cmd.Process.Signal(s)
			}
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}

// checkInNetns makes sure the harness runs inside the namespace name,
// before it changes any iptables rule.
func checkInNetns(name string) error {
	var own, want syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &own); err != nil {
		return err
	}
	if err := syscall.Stat("/run/netns/"+name, &want); err != nil {
		return fmt.Errorf("-netns %s: %w", name, err)
	}
	if own.Ino != want.Ino || own.Dev != want.Dev {
		return fmt.Errorf("-netns %s: the harness does not run inside that namespace", name)
	}
	return nil
}

// redirectInbound makes every TCP connection to inboundVIP go to a port
// of loopback, e.inboundAddr, in the harness's own namespace. It is set
// before the first row, so that every row runs with the same netfilter
// hooks (connection tracking) in the kernel's path.
func (e *benchEnv) redirectInbound(ctx context.Context) error {
	if e.netns == "" {
		return errors.New("no namespace of the harness's own: no iptables rule")
	}
	if err := checkInNetns(e.netns); err != nil {
		return err
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	port := ports[0]
	e.inboundAddr = loopback(port)
	for _, args := range [][]string{
		{"-w", "-t", "nat", "-F", "OUTPUT"},
		{"-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", inboundVIP + "/32", "-j", "REDIRECT", "--to-ports", strconv.Itoa(port)},
	} {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(cctx, "iptables", args...).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// installFirst installs, when root and allowed, what the rows and the
// namespace need: HAProxy and nginx for their rows, iptables for the
// redirect. It returns notes for the results.
func installFirst(o options) []string {
	want := map[string]bool{}
	for _, r := range o.rows {
		for _, d := range allRows {
			if d.name == strings.TrimSpace(r) && d.peer != "" {
				want[d.peer] = true
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var notes []string
	if want["haproxy"] || want["nginx"] {
		notes = ensurePeers(ctx, &benchEnv{}, want, o.install)
	}
	if findBin("iptables") == "" && o.install && os.Geteuid() == 0 && findBin("apt-get") != "" {
		if err := aptInstall(ctx, []string{"iptables"}); err != nil {
			notes = append(notes, "apt-get install iptables failed: "+err.Error())
		} else {
			notes = append(notes, "installed with apt-get: iptables")
		}
	}
	return notes
}
