// Package iptables builds and installs the nat-table rules that send a pod's
// TCP traffic through meshd: outbound connections are REDIRECTed to meshd's
// outbound port, inbound connections to its inbound port.
//
// The package is split the way Istio's istio-iptables is:
//
//   - Build is pure: it turns Options into iptables-restore text, one text
//     per address family. "meshd iptables print" is Build and nothing else,
//     and the golden tests pin its output.
//   - Runner is the only seam to the OS (iptables-save / iptables-restore).
//     NewExecRunner runs the binaries of a Backend; DetectBackend picks
//     between iptables-legacy and iptables-nft.
//   - Apply and Clean read the current nat table through the Runner and
//     change it with exactly one iptables-restore --noflush call per family,
//     so each family changes atomically. Both are idempotent and touch only
//     meshd's own chains (MESHD_*) and the jumps into them.
//
// Every rule carries a "meshd/<why>" comment, as Linkerd's proxy-init does,
// so that an operator reading iptables-save output can tell why it is there.
//
// The package imports no other meshd package.
package iptables

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Chain names. Every chain whose name starts with chainPrefix belongs to
// meshd: Clean removes all of them.
const (
	chainPrefix     = "MESHD_"
	chainOutput     = "MESHD_OUTPUT"
	chainRedirect   = "MESHD_REDIRECT"
	chainInbound    = "MESHD_INBOUND"
	chainInRedirect = "MESHD_IN_REDIRECT"
)

// ownChains lists meshd's chains in the order they are declared.
var ownChains = []string{chainInbound, chainInRedirect, chainOutput, chainRedirect}

// maxUID is the largest uid "-m owner --uid-owner" accepts ((uid_t)-1 is
// reserved).
const maxUID = 1<<32 - 2

// Options is everything the rules depend on. The zero value is not valid:
// OutboundPort and InboundPort must be set (see Validate).
type Options struct {
	// ProxyUID is the uid meshd runs as. Traffic of this uid is never
	// redirected outbound, which is what keeps meshd's own upstream
	// connections from looping back into it.
	ProxyUID int
	// OutboundPort is the REDIRECT target of outbound TCP.
	OutboundPort uint16
	// InboundPort is the REDIRECT target of inbound TCP.
	InboundPort uint16
	// InboundPorts are the destination ports redirected inbound. Nil or
	// empty means every port ("*").
	InboundPorts []uint16
	// ExcludeInboundPorts are never redirected inbound.
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are destination ports never redirected outbound.
	ExcludeOutboundPorts []uint16
	// ExcludeOutboundCIDRs are destinations never redirected outbound.
	// IPv4 prefixes go into the IPv4 rules and IPv6 prefixes into the IPv6
	// rules; an IPv4-mapped IPv6 prefix (::ffff:a.b.c.d/n, n >= 96) counts
	// as the IPv4 prefix it maps.
	ExcludeOutboundCIDRs []netip.Prefix
	// IPv6 also builds and applies ip6tables rules. When false, Apply and
	// Build never touch or produce IPv6 rules.
	IPv6 bool
}

// Validate reports the first problem with o, naming the field: a zero port,
// an out-of-range uid, equal inbound and outbound ports or an invalid CIDR.
func (o Options) Validate() error {
	if o.ProxyUID < 0 || int64(o.ProxyUID) > maxUID {
		return fmt.Errorf("iptables: ProxyUID %d is out of range, want 0-%d", o.ProxyUID, int64(maxUID))
	}
	if o.OutboundPort == 0 {
		return fmt.Errorf("iptables: OutboundPort is 0, want 1-65535")
	}
	if o.InboundPort == 0 {
		return fmt.Errorf("iptables: InboundPort is 0, want 1-65535")
	}
	if o.OutboundPort == o.InboundPort {
		// Both directions would land on one listener, which could not
		// tell them apart.
		return fmt.Errorf("iptables: OutboundPort and InboundPort are both %d, want different ports", o.OutboundPort)
	}
	for _, f := range []struct {
		name  string
		ports []uint16
	}{
		{"InboundPorts", o.InboundPorts},
		{"ExcludeInboundPorts", o.ExcludeInboundPorts},
		{"ExcludeOutboundPorts", o.ExcludeOutboundPorts},
	} {
		if slices.Contains(f.ports, 0) {
			return fmt.Errorf("iptables: %s contains port 0, want 1-65535", f.name)
		}
	}
	for i, p := range o.ExcludeOutboundCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("iptables: ExcludeOutboundCIDRs[%d] is not a valid CIDR", i)
		}
	}
	return nil
}

// Family is an address family: IPv4 rules go through iptables, IPv6 rules
// through ip6tables.
type Family int

const (
	// IPv4 selects iptables, iptables-save and iptables-restore.
	IPv4 Family = iota
	// IPv6 selects ip6tables, ip6tables-save and ip6tables-restore.
	IPv6
)

// String returns "ipv4" or "ipv6".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return "Family(" + strconv.Itoa(int(f)) + ")"
}

// Build returns the iptables-restore text for the nat table that installs
// meshd's rules: v4 for iptables-restore and, when o.IPv6 is set, v6 for
// ip6tables-restore (v6 is "" otherwise). The text declares the four MESHD_
// chains (with --noflush, declaring an existing chain flushes it), fills
// them and adds the jumps from PREROUTING and OUTPUT.
//
// Build is pure and never fails; it does not validate o (call Validate
// first) but skips invalid CIDRs. Port lists are sorted and deduplicated,
// so the output depends only on the sets of ports and CIDRs.
func Build(o Options) (v4, v6 string) {
	v4 = render(o, IPv4, nil)
	if o.IPv6 {
		v6 = render(o, IPv6, nil)
	}
	return v4, v6
}

// rule is one iptables rule. Its fields are the options meshd uses, and
// String writes them in the order iptables-save prints them back, so that
// a built rule can be compared with a saved one as text.
type rule struct {
	chain    string
	dst      string // -d, a canonical prefix
	tcp      bool   // -p tcp
	dport    uint16 // -m tcp --dport (needs tcp)
	uidOwner int    // -m owner --uid-owner, when hasOwner
	hasOwner bool
	comment  string // -m comment --comment "meshd/<comment>"
	target   string // -j
	toPorts  uint16 // --to-ports, for REDIRECT
}

func (r rule) String() string {
	var b strings.Builder
	b.WriteString("-A ")
	b.WriteString(r.chain)
	if r.dst != "" {
		b.WriteString(" -d ")
		b.WriteString(r.dst)
	}
	if r.tcp {
		b.WriteString(" -p tcp")
		if r.dport != 0 {
			fmt.Fprintf(&b, " -m tcp --dport %d", r.dport)
		}
	}
	if r.hasOwner {
		fmt.Fprintf(&b, " -m owner --uid-owner %d", r.uidOwner)
	}
	// Comments are fixed identifiers without quotes or backslashes, so
	// they need no escaping.
	fmt.Fprintf(&b, " -m comment --comment \"meshd/%s\"", r.comment)
	b.WriteString(" -j ")
	b.WriteString(r.target)
	if r.toPorts != 0 {
		fmt.Fprintf(&b, " --to-ports %d", r.toPorts)
	}
	return b.String()
}

// jumps returns the two rules that send traffic from the built-in chains
// into meshd's.
func jumps() []rule {
	return []rule{
		{chain: "PREROUTING", tcp: true, comment: "inbound", target: chainInbound},
		{chain: "OUTPUT", tcp: true, comment: "outbound", target: chainOutput},
	}
}

// chainRules returns the rules of meshd's own chains for family f.
func chainRules(o Options, f Family) []rule {
	var rs []rule
	add := func(r rule) { rs = append(rs, r) }

	// Inbound: excluded ports first, then either everything or the listed
	// ports.
	excludedIn := uniqPorts(o.ExcludeInboundPorts)
	for _, p := range excludedIn {
		add(rule{chain: chainInbound, tcp: true, dport: p, comment: "skip-inbound-port", target: "RETURN"})
	}
	if len(o.InboundPorts) == 0 {
		add(rule{chain: chainInbound, tcp: true, comment: "redirect-inbound", target: chainInRedirect})
	} else {
		for _, p := range uniqPorts(o.InboundPorts) {
			if _, excluded := slices.BinarySearch(excludedIn, p); excluded {
				continue
			}
			add(rule{chain: chainInbound, tcp: true, dport: p, comment: "redirect-inbound-port", target: chainInRedirect})
		}
	}
	add(rule{chain: chainInRedirect, tcp: true, comment: "to-inbound-port", target: "REDIRECT", toPorts: o.InboundPort})

	// Outbound: meshd's own traffic, loopback and exclusions return; the
	// rest goes to MESHD_REDIRECT.
	loopback := "127.0.0.1/32"
	if f == IPv6 {
		loopback = "::1/128"
	}
	add(rule{chain: chainOutput, hasOwner: true, uidOwner: o.ProxyUID, comment: "skip-proxy-uid", target: "RETURN"})
	add(rule{chain: chainOutput, dst: loopback, comment: "skip-loopback", target: "RETURN"})
	for _, p := range uniqPorts(o.ExcludeOutboundPorts) {
		add(rule{chain: chainOutput, tcp: true, dport: p, comment: "skip-outbound-port", target: "RETURN"})
	}
	for _, p := range prefixesOf(o.ExcludeOutboundCIDRs, f) {
		add(rule{chain: chainOutput, dst: p.String(), comment: "skip-outbound-cidr", target: "RETURN"})
	}
	add(rule{chain: chainOutput, comment: "redirect-outbound", target: chainRedirect})
	add(rule{chain: chainRedirect, tcp: true, comment: "to-outbound-port", target: "REDIRECT", toPorts: o.OutboundPort})
	return rs
}

// render returns the restore text for family f. A jump whose exact line is
// already in saved is left out, so applying twice never duplicates or moves
// a jump; saved == nil means nothing is installed yet.
func render(o Options, f Family, saved *natState) string {
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, c := range ownChains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, r := range chainRules(o, f) {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	for _, r := range jumps() {
		line := r.String()
		if saved != nil && saved.hasRule(line) {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// uniqPorts returns ports sorted, without duplicates.
func uniqPorts(ports []uint16) []uint16 {
	out := slices.Clone(ports)
	slices.Sort(out)
	return slices.Compact(out)
}

// prefixesOf returns the valid prefixes of family f in canonical form
// (masked, IPv4-mapped ones as IPv4), sorted and without duplicates, so
// that each prints exactly as iptables-save prints it.
func prefixesOf(ps []netip.Prefix, f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		p, ok := canonicalPrefix(p)
		if !ok || p.Addr().Is4() != (f == IPv4) {
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	return slices.Compact(out)
}

func canonicalPrefix(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), true
}
