package proxy

import (
	"net"
	"net/netip"
	"strings"
)

// ServiceName maps an HTTP authority (Host, :authority, or the host of an
// absolute-form URI) to the mesh service it names, or "" when it cannot
// name one (empty, or an IP address). payments, payments:8080,
// payments.service.consul, payments.service.dc1.consul and
// payments.<ns>.svc.cluster.local all name "payments"; any other name is
// returned whole, lower-cased, for discovery to judge.
func ServiceName(authority string) string {
	host := hostOnly(authority)
	if host == "" {
		return ""
	}
	host = strings.TrimSuffix(host, ".")
	if maybeAddr(host) {
		if _, err := netip.ParseAddr(host); err == nil {
			return "" // an address names no service
		}
	}
	if !validName(host) {
		return "" // not a DNS name: nothing discovery could know
	}
	if hasUpper(host) {
		host = strings.ToLower(host)
	}
	if name, ok := strings.CutSuffix(host, ".svc.cluster.local"); ok {
		// <service>.<namespace>.svc.cluster.local
		if i := strings.IndexByte(name, '.'); i > 0 {
			return name[:i]
		}
		return name
	}
	if rest, ok := strings.CutSuffix(host, ".consul"); ok {
		// <service>.service.consul or <service>.service.<dc>.consul
		if name, ok := strings.CutSuffix(rest, ".service"); ok && name != "" {
			return name
		}
		if i := strings.LastIndex(rest, ".service."); i > 0 && !strings.Contains(rest[i+len(".service."):], ".") {
			return rest[:i]
		}
	}
	return host
}

// maybeAddr reports whether host may be an IP address: an IPv6 one has a
// colon, an IPv4 one only digits and dots. It spares a name the parse
// (and its error value).
func maybeAddr(host string) bool {
	if strings.IndexByte(host, ':') >= 0 {
		return true
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// hostOnly strips the port and IPv6 brackets from an authority.
func hostOnly(authority string) string {
	if authority == "" {
		return ""
	}
	if authority[0] == '[' {
		if i := strings.IndexByte(authority, ']'); i > 0 {
			return authority[1:i]
		}
		return ""
	}
	if i := strings.LastIndexByte(authority, ':'); i >= 0 {
		if strings.IndexByte(authority[:i], ':') >= 0 {
			return authority // a bare IPv6 address
		}
		return authority[:i]
	}
	return authority
}

// validName reports whether s is made of DNS name characters (letters,
// digits, '-', '_' and '.'), with no empty label.
func validName(s string) bool {
	if s == "" || len(s) > 253 || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// authorityAddr is the host:port an authority points at, with the given
// default port when it has none.
func authorityAddr(authority, defaultPort string) string {
	if authority == "" {
		return ""
	}
	if _, _, err := net.SplitHostPort(authority); err == nil {
		return authority
	}
	h := strings.TrimSuffix(strings.TrimPrefix(authority, "["), "]")
	return net.JoinHostPort(h, defaultPort)
}
