package iptables

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output (also REFRESH_GOLDEN=1)")

// defaultOptions are the contract's defaults.
func defaultOptions() Options {
	return Options{
		ProxyUID:            1337,
		OutboundPort:        15001,
		InboundPort:         15006,
		ExcludeInboundPorts: []uint16{15000, 15001, 15006, 15021},
	}
}

func withOptions(f func(*Options)) Options {
	o := defaultOptions()
	f(&o)
	return o
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

// goldenCases are the Build inputs pinned by testdata/<name>.golden; the
// namespace tests feed the same inputs to a real iptables-restore.
var goldenCases = []struct {
	name string
	opts Options
}{
	{"default", defaultOptions()},
	{"inbound_ports", withOptions(func(o *Options) {
		o.InboundPorts = []uint16{9090, 8080, 15006, 8080} // 15006 is excluded, 8080 twice
	})},
	{"exclude_outbound", withOptions(func(o *Options) {
		o.ExcludeOutboundPorts = []uint16{6379, 5432}
		o.ExcludeOutboundCIDRs = mustPrefixes("169.254.169.254/32", "10.1.2.3/8", "fd00::/8", "::ffff:192.168.0.0/112")
	})},
	{"ipv6", withOptions(func(o *Options) {
		o.IPv6 = true
		o.ExcludeOutboundPorts = []uint16{5432}
		o.ExcludeOutboundCIDRs = mustPrefixes("10.0.0.0/8", "fd00::/8", "2001:db8::1/128")
	})},
}

// goldenText is what a golden file holds: both restore texts, each under
// a comment line (iptables-restore skips comments).
func goldenText(o Options) string {
	v4, v6 := Build(o)
	s := "# IPv4: iptables-restore --noflush\n" + v4
	if v6 != "" {
		s += "# IPv6: ip6tables-restore --noflush\n" + v6
	}
	return s
}

func TestBuildGolden(t *testing.T) {
	refresh := *update || os.Getenv("REFRESH_GOLDEN") == "1"
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.opts.Validate(); err != nil {
				t.Fatalf("golden options are invalid: %v", err)
			}
			got := goldenText(tc.opts)
			path := filepath.Join("testdata", tc.name+".golden")
			if refresh {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./iptables -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Build output differs from %s (- want, + got; refresh with -update or REFRESH_GOLDEN=1):\n%s",
					path, lineDiff(string(want), got))
			}
		})
	}
}

// lineDiff returns a line diff of a and b: unchanged lines prefixed with
// two spaces, removed ones with "- ", added ones with "+ ".
func lineDiff(a, b string) string {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	// lcs[i][j] is the length of the longest common subsequence of
	// x[i:] and y[j:].
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			fmt.Fprintf(&out, "  %s\n", x[i])
			i, j = i+1, j+1
		case j < len(y) && (i == len(x) || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(&out, "+ %s\n", y[j])
			j++
		default:
			fmt.Fprintf(&out, "- %s\n", x[i])
			i++
		}
	}
	return out.String()
}

func TestLineDiff(t *testing.T) {
	got := lineDiff("a\nb\nc", "a\nx\nc")
	want := "  a\n+ x\n- b\n  c\n"
	if got != want {
		t.Errorf("lineDiff = %q, want %q", got, want)
	}
}

func TestBuildIPv6Off(t *testing.T) {
	o := withOptions(func(o *Options) { o.ExcludeOutboundCIDRs = mustPrefixes("fd00::/8") })
	v4, v6 := Build(o)
	if v6 != "" {
		t.Errorf("v6 = %q, want empty with IPv6 off", v6)
	}
	if strings.Contains(v4, "fd00") || strings.Contains(v4, "::1") {
		t.Errorf("v4 text has IPv6 addresses:\n%s", v4)
	}
}

// TestBuildOrderIndependent checks that Build depends only on the sets of
// ports and CIDRs, not their order or repetitions.
func TestBuildOrderIndependent(t *testing.T) {
	a := withOptions(func(o *Options) {
		o.IPv6 = true
		o.InboundPorts = []uint16{80, 443, 80}
		o.ExcludeOutboundPorts = []uint16{3306, 22}
		o.ExcludeOutboundCIDRs = mustPrefixes("10.0.0.0/8", "fd00::/8", "192.168.0.0/16")
	})
	b := withOptions(func(o *Options) {
		o.IPv6 = true
		o.InboundPorts = []uint16{443, 80}
		o.ExcludeOutboundPorts = []uint16{22, 3306, 22}
		o.ExcludeOutboundCIDRs = mustPrefixes("192.168.0.0/16", "fd00::/8", "10.0.0.0/8", "10.0.0.0/8")
		o.ExcludeInboundPorts = []uint16{15021, 15006, 15001, 15000}
	})
	a4, a6 := Build(a)
	b4, b6 := Build(b)
	if a4 != b4 || a6 != b6 {
		t.Errorf("Build depends on order:\n%s", lineDiff(a4+a6, b4+b6))
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name      string
		opts      Options
		wantField string // "" = valid
	}{
		{"default", defaultOptions(), ""},
		{"uid 0", withOptions(func(o *Options) { o.ProxyUID = 0 }), ""},
		{"everything set", withOptions(func(o *Options) {
			o.IPv6 = true
			o.InboundPorts = []uint16{80}
			o.ExcludeOutboundPorts = []uint16{22}
			o.ExcludeOutboundCIDRs = mustPrefixes("10.0.0.0/8", "fd00::/8")
		}), ""},
		{"zero value", Options{}, "OutboundPort"},
		{"negative uid", withOptions(func(o *Options) { o.ProxyUID = -1 }), "ProxyUID"},
		{"uid too large", withOptions(func(o *Options) { o.ProxyUID = 1 << 32 }), "ProxyUID"},
		{"no outbound port", withOptions(func(o *Options) { o.OutboundPort = 0 }), "OutboundPort"},
		{"no inbound port", withOptions(func(o *Options) { o.InboundPort = 0 }), "InboundPort"},
		{"same ports", withOptions(func(o *Options) { o.InboundPort = o.OutboundPort }), "InboundPort"},
		{"inbound port 0", withOptions(func(o *Options) { o.InboundPorts = []uint16{80, 0} }), "InboundPorts"},
		{"exclude inbound 0", withOptions(func(o *Options) { o.ExcludeInboundPorts = []uint16{0} }), "ExcludeInboundPorts"},
		{"exclude outbound 0", withOptions(func(o *Options) { o.ExcludeOutboundPorts = []uint16{0} }), "ExcludeOutboundPorts"},
		{"invalid cidr", withOptions(func(o *Options) { o.ExcludeOutboundCIDRs = []netip.Prefix{{}} }), "ExcludeOutboundCIDRs[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			switch {
			case tc.wantField == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.wantField != "" && err == nil:
				t.Errorf("Validate() = nil, want an error naming %s", tc.wantField)
			case tc.wantField != "" && !strings.Contains(err.Error(), tc.wantField):
				t.Errorf("Validate() = %q, want it to name %s", err, tc.wantField)
			}
		})
	}
}

// checkRestoreText checks that text is well-formed restore input for the
// nat table of family f, as Build writes it.
func checkRestoreText(t *testing.T, text string, f Family) {
	t.Helper()
	if !strings.HasSuffix(text, "COMMIT\n") {
		t.Fatalf("%s text does not end with COMMIT:\n%s", f, text)
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if lines[0] != "*nat" {
		t.Fatalf("%s text does not start with *nat:\n%s", f, text)
	}
	var declared []string
	for _, line := range lines[1 : len(lines)-1] {
		if name, ok := strings.CutPrefix(line, ":"); ok {
			name, rest, _ := strings.Cut(name, " ")
			if !isOwnChain(name) || rest != "- [0:0]" {
				t.Fatalf("bad declaration %q", line)
			}
			declared = append(declared, name)
			continue
		}
		args, err := splitArgs(line)
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if len(args) < 4 || args[0] != "-A" {
			t.Fatalf("line %q is not a rule", line)
		}
		chain := args[1]
		if !slices.Contains(declared, chain) && chain != "PREROUTING" && chain != "OUTPUT" {
			t.Fatalf("line %q appends to undeclared chain %s", line, chain)
		}
		var hasComment, hasTarget bool
		for i := 2; i < len(args); i++ {
			var val string
			if i+1 < len(args) {
				val = args[i+1]
			}
			switch args[i] {
			case "-d":
				p, err := netip.ParsePrefix(val)
				if err != nil || p != p.Masked() || p.Addr().Is4() != (f == IPv4) {
					t.Fatalf("line %q: -d %q is not a canonical %s prefix", line, val, f)
				}
			case "--dport", "--to-ports", "--uid-owner":
				bits := 16
				if args[i] == "--uid-owner" {
					bits = 32
				}
				if _, err := strconv.ParseUint(val, 10, bits); err != nil {
					t.Fatalf("line %q: %s %q: %v", line, args[i], val, err)
				}
			case "--comment":
				hasComment = strings.HasPrefix(val, "meshd/")
			case "-j":
				hasTarget = val == "RETURN" || val == "REDIRECT" || isOwnChain(val)
			default:
				continue
			}
			i++
		}
		if !hasComment || !hasTarget {
			t.Fatalf("line %q lacks a meshd/ comment or a known target", line)
		}
	}
	if !slices.Equal(declared, ownChains) {
		t.Fatalf("declared chains %v, want %v", declared, ownChains)
	}
	st, err := parseSave(text)
	if err != nil {
		t.Fatalf("parseSave(Build text): %v", err)
	}
	if len(st.rules) != len(lines)-2-len(ownChains) {
		t.Fatalf("parseSave found %d rules in:\n%s", len(st.rules), text)
	}
}

func TestBuildWellFormed(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			v4, v6 := Build(tc.opts)
			checkRestoreText(t, v4, IPv4)
			if tc.opts.IPv6 {
				checkRestoreText(t, v6, IPv6)
			}
		})
	}
}

// portsFrom reads b as big-endian uint16s.
func portsFrom(b []byte) []uint16 {
	var ps []uint16
	for i := 0; i+1 < len(b); i += 2 {
		ps = append(ps, uint16(b[i])<<8|uint16(b[i+1]))
	}
	return ps
}

func FuzzBuild(f *testing.F) {
	f.Add(1337, uint16(15001), uint16(15006), []byte{}, []byte{0x3a, 0x98, 0x3a, 0x99}, []byte{0x19, 0x28},
		"10.0.0.0/8,fd00::/8", true)
	f.Add(0, uint16(1), uint16(2), []byte{0x00, 0x50, 0x01, 0xbb}, []byte{}, []byte{},
		"::ffff:10.0.0.0/104,0.0.0.0/0,::/0,192.168.1.1/24", false)
	f.Add(-5, uint16(0), uint16(0), []byte{0, 0, 0xff, 0xff, 0xff}, []byte{0, 0}, []byte{0xff},
		"bogus,,1.2.3.4/33,fe80::1/64", true)
	f.Fuzz(checkBuild)
}

// checkBuild is the body of FuzzBuild: Build never panics and, for
// representable options, writes well-formed restore text.
func checkBuild(t *testing.T, uid int, out, in uint16, inPorts, exIn, exOut []byte, cidrs string, ipv6 bool) {
	o := Options{
		ProxyUID:             uid,
		OutboundPort:         out,
		InboundPort:          in,
		InboundPorts:         portsFrom(inPorts),
		ExcludeInboundPorts:  portsFrom(exIn),
		ExcludeOutboundPorts: portsFrom(exOut),
		IPv6:                 ipv6,
	}
	for _, s := range strings.Split(cidrs, ",") {
		// Invalid prefixes are kept as zero values: Build must skip them.
		p, _ := netip.ParsePrefix(s)
		o.ExcludeOutboundCIDRs = append(o.ExcludeOutboundCIDRs, p)
	}
	v4, v6 := Build(o)
	if o.Validate() != nil {
		// Build does not validate; it only has to stay well formed
		// where its input is representable.
		if uid < 0 || int64(uid) > maxUID || out == 0 || in == 0 {
			return
		}
	}
	checkRestoreText(t, v4, IPv4)
	if ipv6 {
		checkRestoreText(t, v6, IPv6)
	} else if v6 != "" {
		t.Fatalf("v6 text with IPv6 off: %q", v6)
	}
}
