package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file holds the value types of the settings and their parsers. Every
// parser returns the expected form of the value as its error text, so that
// the caller can name the variable and the value around it.

type expectation string

func (e expectation) Error() string { return string(e) }

func parseDuration(min time.Duration, zeroOK bool) func(string) (time.Duration, error) {
	return func(s string) (time.Duration, error) {
		want := "a duration such as 250ms, 1s or 5m"
		if zeroOK {
			want += " (0 = none)"
		} else {
			want += ", greater than 0"
		}
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < 0 || (d == 0 && !zeroOK) || (d != 0 && d < min) {
			if min > 0 && err == nil && d > 0 {
				want = fmt.Sprintf("a duration of at least %v", min)
			}
			return 0, expectation(want)
		}
		return d, nil
	}
}

func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	s := d.String()
	// time.Duration prints 5m0s and 1h0m0s; users write 5m and 1h.
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func parseInt(min, max int) func(string) (int, error) {
	return func(s string) (int, error) {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < min || n > max {
			return 0, expectation(fmt.Sprintf("an integer from %d to %d", min, max))
		}
		return n, nil
	}
}

func parseFloat(min, max float64, minExclusive bool) func(string) (float64, error) {
	return func(s string) (float64, error) {
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		bad := err != nil || math.IsNaN(f) || f > max || f < min || (minExclusive && f == min)
		if bad {
			op := "from"
			if minExclusive {
				op = "greater than"
			}
			return 0, expectation(fmt.Sprintf("a number %s %g to %g", op, min, max))
		}
		return f, nil
	}
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func parseBool(s string) (bool, error) {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return false, expectation("true or false")
	}
	return b, nil
}

// Size is a number of bytes, written as an integer with an optional unit
// (B, KiB, MiB, GiB; KB, MB and GB are read as the binary units too).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1},
}

func parseSize(s string) (Size, error) {
	const want = expectation("a size such as 65536, 64KiB or 1MiB")
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, want
	}
	return Size(n * mult), nil
}

// parseSizeRange is parseSize bounded to [min, max].
func parseSizeRange(min, max Size) func(string) (Size, error) {
	return func(s string) (Size, error) {
		v, err := parseSize(s)
		if err != nil || v < min || v > max {
			return 0, expectation(fmt.Sprintf("a size from %s to %s", min, max))
		}
		return v, nil
	}
}

// String writes the size with the largest binary unit that divides it.
func (s Size) String() string {
	for _, u := range sizeUnits[:3] {
		if s != 0 && int64(s)%u.mult == 0 {
			return strconv.FormatInt(int64(s)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// parseAddr reads host:port with a port from 1 to 65535; an empty host
// means every address.
func parseAddr(s string) (string, error) {
	const want = expectation("host:port (such as 127.0.0.1:15000 or :15021) with a port from 1 to 65535")
	s = strings.TrimSpace(s)
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", want
	}
	if _, err := parsePort(port); err != nil {
		return "", want
	}
	if host != "" && !validHost(host) {
		return "", want
	}
	return s, nil
}

// parseLoopbackAddr is parseAddr limited to loopback hosts.
func parseLoopbackAddr(s string) (string, error) {
	const want = expectation("a loopback host:port such as 127.0.0.1:15001 or [::1]:15001")
	a, err := parseAddr(s)
	if err != nil {
		return "", want
	}
	host, _, _ := net.SplitHostPort(a)
	if host == "localhost" {
		return a, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return "", want
	}
	return a, nil
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$`)

func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return len(h) <= 253 && hostnameRE.MatchString(h)
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0, expectation("a port from 1 to 65535")
	}
	return uint16(n), nil
}

// parseOptionalPort is a port, or 0 for none.
func parseOptionalPort(s string) (uint16, error) {
	if strings.TrimSpace(s) == "0" || strings.TrimSpace(s) == "" {
		return 0, nil
	}
	p, err := parsePort(s)
	if err != nil {
		return 0, expectation("a port from 1 to 65535 (0 = none)")
	}
	return p, nil
}

// Ports is a set of TCP ports, kept sorted and without duplicates.
type Ports []uint16

func parsePorts(s string) (Ports, error) {
	const want = expectation("a comma-separated list of ports from 1 to 65535, such as 25,3306")
	var ps Ports
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := parsePort(f)
		if err != nil {
			return nil, want
		}
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return slices.Compact(ps), nil
}

// String writes the ports as a comma-separated list.
func (ps Ports) String() string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(p)))
	}
	return b.String()
}

// Contains reports whether p is in the set.
func (ps Ports) Contains(p uint16) bool {
	_, ok := slices.BinarySearch(ps, p)
	return ok
}

// InboundPorts is the set of ports redirected inbound: every port when All
// is set, else Ports.
type InboundPorts struct {
	All   bool
	Ports Ports
}

func parseInboundPorts(s string) (InboundPorts, error) {
	if strings.TrimSpace(s) == "*" {
		return InboundPorts{All: true}, nil
	}
	ps, err := parsePorts(s)
	if err != nil || len(ps) == 0 {
		return InboundPorts{}, expectation(`"*" (every port) or a comma-separated list of ports from 1 to 65535`)
	}
	return InboundPorts{Ports: ps}, nil
}

// String writes "*" or the port list.
func (ip InboundPorts) String() string {
	if ip.All {
		return "*"
	}
	return ip.Ports.String()
}

// Prefixes is a list of CIDRs; a bare address stands for a single host.
type Prefixes []netip.Prefix

func parsePrefixes(s string) (Prefixes, error) {
	const want = expectation("a comma-separated list of CIDRs such as 10.0.0.0/8,fd00::/8")
	var out Prefixes
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(f, "/") {
			var err error
			if p, err = netip.ParsePrefix(f); err != nil {
				return nil, want
			}
		} else {
			a, err := netip.ParseAddr(f)
			if err != nil || a.Zone() != "" {
				return nil, want
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// String writes the prefixes as a comma-separated list.
func (ps Prefixes) String() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func parseEnum(values ...string) func(string) (string, error) {
	return func(s string) (string, error) {
		s = strings.ToLower(strings.TrimSpace(s))
		if !slices.Contains(values, s) {
			return "", expectation("one of " + strings.Join(values, ", "))
		}
		return s, nil
	}
}

var serviceNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,253}[A-Za-z0-9])?$`)

func parseName(optional bool) func(string) (string, error) {
	return func(s string) (string, error) {
		s = strings.TrimSpace(s)
		if s == "" && optional {
			return "", nil
		}
		if !serviceNameRE.MatchString(s) {
			return "", expectation("a service name of letters, digits, '.', '-' and '_'")
		}
		return s, nil
	}
}

func parseOptionalIP(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", expectation("an IPv4 or IPv6 address, or empty for the first non-loopback address")
	}
	return a.String(), nil
}

func parseString(s string) (string, error) { return strings.TrimSpace(s), nil }

// StaticService is one service of MESHD_STATIC_ENDPOINTS.
type StaticService struct {
	Name      string
	Endpoints []string // host:port
}

// StaticEndpoints is the parsed MESHD_STATIC_ENDPOINTS, in the order given.
type StaticEndpoints []StaticService

// ParseStaticEndpoints reads name=host:port,host:port;name2=host:port.
// Names are unique; each endpoint has a host (address or DNS name) and a
// port from 1 to 65535. "name=" declares a service with no endpoints.
func ParseStaticEndpoints(s string) (StaticEndpoints, error) {
	const want = expectation("name=host:port,host:port;name2=host:port")
	var out StaticEndpoints
	seen := map[string]bool{}
	for _, group := range strings.Split(s, ";") {
		if group = strings.TrimSpace(group); group == "" {
			continue
		}
		name, list, ok := strings.Cut(group, "=")
		name = strings.TrimSpace(name)
		if !ok {
			return nil, want
		}
		if _, err := parseName(false)(name); err != nil {
			return nil, expectation(string(want) + " with service names of letters, digits, '.', '-' and '_'")
		}
		if seen[strings.ToLower(name)] {
			return nil, expectation(string(want) + " with each service named once (" + name + " is repeated)")
		}
		seen[strings.ToLower(name)] = true
		svc := StaticService{Name: name}
		for _, ep := range strings.Split(list, ",") {
			if ep = strings.TrimSpace(ep); ep == "" {
				continue
			}
			host, port, err := net.SplitHostPort(ep)
			if err != nil || host == "" || !validHost(host) {
				return nil, want
			}
			if _, err := parsePort(port); err != nil {
				return nil, want
			}
			svc.Endpoints = append(svc.Endpoints, ep)
		}
		// A service listed with no endpoints is known and has none: its
		// requests are answered 503 instead of passed through.
		out = append(out, svc)
	}
	return out, nil
}

// String writes the list back in its input form.
func (se StaticEndpoints) String() string {
	parts := make([]string, len(se))
	for i, s := range se {
		parts[i] = s.Name + "=" + strings.Join(s.Endpoints, ",")
	}
	return strings.Join(parts, ";")
}
