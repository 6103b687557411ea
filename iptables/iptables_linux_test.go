package iptables

import (
	"context"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/netnstest"
)

// variant is one iptables implementation installed on the machine, with
// the plain command the tests use to add unrelated rules.
type variant struct {
	backend    Backend
	cmd, cmd6  string // e.g. iptables-legacy, ip6tables-legacy
	kernelName string // what "<cmd> --version" says: "legacy" or "nf_tables"
}

// installedVariants returns legacy and nft when their binaries are in PATH,
// and fails the test when neither is.
func installedVariants(t *testing.T) []variant {
	t.Helper()
	var vs []variant
	for _, v := range []variant{
		{backendNamed("legacy"), "iptables-legacy", "ip6tables-legacy", "legacy"},
		{backendNamed("nft"), "iptables-nft", "ip6tables-nft", "nf_tables"},
	} {
		b := v.backend
		ok := true
		for _, bin := range []string{v.cmd, v.cmd6, b.Save, b.Restore, b.Save6, b.Restore6} {
			if _, err := exec.LookPath(bin); err != nil {
				t.Logf("%s variant not tested: %v", b.Name, err)
				ok = false
				break
			}
		}
		if ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		t.Fatal("neither iptables-legacy nor iptables-nft is installed")
	}
	return vs
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// normalized returns save output without comment lines and counters, so
// that two saves of the same rules compare equal.
func normalized(save string) string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, counters.ReplaceAllString(l, ""))
	}
	return strings.Join(out, "\n") + "\n"
}

// natSave returns the normalized nat table of family f in ns.
func natSave(t *testing.T, ns *netnstest.NS, b Backend, f Family) string {
	t.Helper()
	out, err := ns.Output(b.saveBin(f), "-t", "nat")
	if err != nil {
		t.Fatalf("%s -t nat: %v", b.saveBin(f), err)
	}
	return normalized(out)
}

// TestApplyCleanNamespace applies, re-applies and cleans meshd's rules in
// a fresh namespace, once per installed iptables variant and with IPv6 off
// and on, and checks that apply is idempotent and clean leaves exactly
// what was there before.
func TestApplyCleanNamespace(t *testing.T) {
	netnstest.Require(t, "ip", "iptables", "iptables-save", "iptables-restore")
	for _, v := range installedVariants(t) {
		for _, ipv6 := range []bool{false, true} {
			name := v.backend.Name + "/ipv4"
			if ipv6 {
				name = v.backend.Name + "/ipv6"
			}
			t.Run(name, func(t *testing.T) {
				ctx := testContext(t)
				ns := netnstest.NewNS(t)
				b := v.backend
				r := NewExecRunner(b)
				o := withOptions(func(o *Options) {
					o.IPv6 = ipv6
					o.ExcludeOutboundPorts = []uint16{5432}
					o.ExcludeOutboundCIDRs = mustPrefixes("10.0.0.0/8", "fd00::/8")
				})
				if ipv6 {
					if err := ns.Do(func() error {
						if !HostHasIPv6() {
							t.Error("HostHasIPv6() = false in a namespace with ::1")
						}
						return nil
					}); err != nil {
						t.Fatal(err)
					}
				}

				// Rules of someone else, which must survive everything.
				ns.Run(t, v.cmd, "-w", "-t", "nat", "-A", "OUTPUT", "-d", "10.99.0.0/16", "-p", "udp", "-j", "RETURN")
				ns.Run(t, v.cmd6, "-w", "-t", "nat", "-A", "OUTPUT", "-d", "fd99::/64", "-p", "udp", "-j", "RETURN")
				before := map[Family]string{IPv4: natSave(t, ns, b, IPv4), IPv6: natSave(t, ns, b, IPv6)}

				apply := func() {
					t.Helper()
					if err := ns.Do(func() error { return Apply(ctx, o, r) }); err != nil {
						t.Fatalf("Apply: %v", err)
					}
				}
				apply()
				after := map[Family]string{IPv4: natSave(t, ns, b, IPv4), IPv6: natSave(t, ns, b, IPv6)}
				b4, b6 := Build(o)
				checkInstalled(t, after[IPv4], b4, before[IPv4])
				if ipv6 {
					checkInstalled(t, after[IPv6], b6, before[IPv6])
				} else if after[IPv6] != before[IPv6] {
					t.Errorf("Apply with IPv6 off changed ip6tables (- before, + after):\n%s", lineDiff(before[IPv6], after[IPv6]))
				}

				apply()
				for _, f := range []Family{IPv4, IPv6} {
					if again := natSave(t, ns, b, f); again != after[f] {
						t.Errorf("second Apply changed %s (- first, + second):\n%s", f, lineDiff(after[f], again))
					}
				}

				for i := range 2 { // the second Clean has nothing to do
					if err := ns.Do(func() error { return Clean(ctx, r, ipv6) }); err != nil {
						t.Fatalf("Clean #%d: %v", i+1, err)
					}
					for _, f := range []Family{IPv4, IPv6} {
						if got := natSave(t, ns, b, f); got != before[f] {
							t.Errorf("after Clean #%d, %s differs from before Apply (- before, + after):\n%s", i+1, f, lineDiff(before[f], got))
						}
					}
				}
			})
		}
	}
}

// checkInstalled checks that save (the nat table after Apply) holds every
// rule of the built text exactly once, in the canonical form Build wrote,
// and every line that was there before.
func checkInstalled(t *testing.T, save, built, before string) {
	t.Helper()
	lines := strings.Split(save, "\n")
	count := func(line string) int {
		n := 0
		for _, l := range lines {
			if l == line {
				n++
			}
		}
		return n
	}
	for _, l := range strings.Split(built, "\n") {
		if strings.HasPrefix(l, "-A ") && count(l) != 1 {
			t.Errorf("rule %q appears %d times after Apply, want once; save:\n%s", l, count(l), save)
		}
	}
	for _, l := range strings.Split(before, "\n") {
		if l != "" && count(l) == 0 {
			t.Errorf("line %q from before Apply is gone; save:\n%s", l, save)
		}
	}
}

// TestBuildAcceptedByRestore feeds every golden case to a real
// "iptables-restore --test" (and ip6tables-restore) of every variant.
func TestBuildAcceptedByRestore(t *testing.T) {
	netnstest.Require(t, "ip", "iptables", "iptables-save", "iptables-restore")
	variants := installedVariants(t)
	ns := netnstest.NewNS(t)
	for _, v := range variants {
		for _, tc := range goldenCases {
			t.Run(v.backend.Name+"/"+tc.name, func(t *testing.T) {
				v4, v6 := Build(tc.opts)
				texts := map[Family]string{IPv4: v4, IPv6: v6}
				for f, text := range texts {
					if text == "" {
						continue
					}
					cmd := ns.Command(testContext(t), v.backend.restoreBin(f), "--test")
					cmd.Stdin = strings.NewReader(text)
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Errorf("%s --test rejected the %s text: %v\n%s\ntext:\n%s", v.backend.restoreBin(f), f, err, out, text)
					}
				}
			})
		}
	}
	// --test changes nothing.
	for _, v := range variants {
		if save := natSave(t, ns, v.backend, IPv4); strings.Contains(save, "MESHD") {
			t.Errorf("%s --test left rules behind:\n%s", v.backend.Restore, save)
		}
	}
}

// TestDetectBackendNamespace checks that DetectBackend follows the rules
// already in a namespace: legacy when only legacy has rules, nft when only
// nft has, plain iptables when there are none.
func TestDetectBackendNamespace(t *testing.T) {
	netnstest.Require(t, "ip", "iptables", "iptables-save", "iptables-restore")
	variants := installedVariants(t)
	if len(variants) < 2 {
		t.Skip("needs both iptables-legacy and iptables-nft")
	}
	plainKind := commandKind(t, "iptables")

	detect := func(t *testing.T, ns *netnstest.NS) Backend {
		t.Helper()
		var b Backend
		if err := ns.Do(func() (err error) {
			b, err = DetectBackend(testContext(t))
			return err
		}); err != nil {
			t.Fatalf("DetectBackend: %v", err)
		}
		return b
	}

	t.Run("no rules", func(t *testing.T) {
		if b := detect(t, netnstest.NewNS(t)); b.Name != "iptables" {
			t.Errorf("DetectBackend = %+v, want plain iptables", b)
		}
	})
	for _, v := range variants {
		t.Run("only "+v.backend.Name, func(t *testing.T) {
			ns := netnstest.NewNS(t)
			ns.Run(t, v.cmd, "-w", "-t", "nat", "-A", "OUTPUT", "-d", "10.98.0.0/16", "-p", "udp", "-j", "RETURN")
			b := detect(t, ns)
			// Plain iptables is checked first; it is the right answer
			// when it is the variant that holds the rules.
			if b.Name != v.backend.Name && (b.Name != "iptables" || plainKind != v.kernelName) {
				t.Errorf("DetectBackend = %q (plain iptables is %s), want %q", b.Name, plainKind, v.backend.Name)
			}
			// Whatever it picked must see the rule.
			var save string
			if err := ns.Do(func() (err error) {
				save, err = NewExecRunner(b).Save(testContext(t), IPv4)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(save, "10.98.0.0/16") {
				t.Errorf("backend %q does not see the rule:\n%s", b.Name, save)
			}
		})
	}
}

// commandKind returns "legacy" or "nf_tables": what "<bin> --version" says.
func commandKind(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.CommandContext(testContext(t), bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	for _, kind := range []string{"nf_tables", "legacy"} {
		if strings.Contains(string(out), kind) {
			return kind
		}
	}
	return strings.TrimSpace(string(out))
}

// TestHostHasIPv6 checks the answer inside namespaces with and without
// IPv6 addresses.
func TestHostHasIPv6(t *testing.T) {
	netnstest.Require(t, "ip", "sysctl")
	ns := netnstest.NewNS(t)
	check := func(want bool) {
		t.Helper()
		if err := ns.Do(func() error {
			if got := HostHasIPv6(); got != want {
				t.Errorf("HostHasIPv6() = %v, want %v", got, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	check(true) // lo is up and has ::1
	ns.Run(t, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
	ns.Run(t, "sysctl", "-q", "-w", "net.ipv6.conf.lo.disable_ipv6=1")
	check(false)
}

// TestRedirectNamespace checks that the installed rules do redirect: in a
// namespace with nothing listening on 127.0.0.2:80, a connection to it
// reaches a listener on the outbound port once the rules are applied, while
// an excluded port and 127.0.0.1 itself are left alone. All traffic stays
// on the namespace's loopback.
func TestRedirectNamespace(t *testing.T) {
	netnstest.Require(t, "ip", "iptables", "iptables-save", "iptables-restore")
	for _, v := range installedVariants(t) {
		t.Run(v.backend.Name, func(t *testing.T) {
			ctx := testContext(t)
			ns := netnstest.NewNS(t)
			o := withOptions(func(o *Options) { o.ExcludeOutboundPorts = []uint16{5432} })

			var ln net.Listener
			if err := ns.Do(func() (err error) {
				ln, err = net.Listen("tcp4", "127.0.0.1:15001")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })

			// dial connects inside the namespace and reports whether the
			// connection reached ln.
			dial := func(addr string) bool {
				t.Helper()
				var c net.Conn
				err := ns.Do(func() (err error) {
					d := net.Dialer{Timeout: 5 * time.Second}
					c, err = d.DialContext(ctx, "tcp4", addr)
					return err
				})
				if err != nil {
					return false
				}
				defer c.Close()
				// Nothing else listens in the namespace: a connection that
				// was established went to ln.
				s, err := ln.Accept()
				if err != nil {
					t.Fatalf("accept: %v", err)
				}
				s.Close()
				return c.RemoteAddr().String() == addr && s.LocalAddr().String() == "127.0.0.1:15001"
			}

			if dial("127.0.0.2:80") {
				t.Fatal("127.0.0.2:80 reached the listener before Apply")
			}
			if err := ns.Do(func() error { return Apply(ctx, o, NewExecRunner(v.backend)) }); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if !dial("127.0.0.2:80") {
				t.Error("127.0.0.2:80 was not redirected to the outbound port")
			}
			if dial("127.0.0.2:5432") {
				t.Error("excluded port 5432 was redirected")
			}
			if dial("127.0.0.1:80") {
				t.Error("127.0.0.1 was redirected")
			}
			if err := ns.Do(func() error { return Clean(ctx, NewExecRunner(v.backend), false) }); err != nil {
				t.Fatalf("Clean: %v", err)
			}
			if dial("127.0.0.2:80") {
				t.Error("127.0.0.2:80 still redirected after Clean")
			}
		})
	}
}
