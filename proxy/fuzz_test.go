package proxy

import (
	"strings"
	"testing"
)

// FuzzServiceName: any authority maps to a service name or to none, never
// panics, and the name carries no port, upper case or brackets.
func FuzzServiceName(f *testing.F) {
	for _, s := range []string{"payments", "payments:8080", "Payments.Service.DC1.Consul.", "p.ns.svc.cluster.local", "[fd00::1]:80", "[", "]:", "::", "a.service.", ".consul", "x.service.consul"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, authority string) {
		name := ServiceName(authority)
		if name == "" {
			return
		}
		if strings.ContainsAny(name, "[]") || hasUpper(name) {
			t.Fatalf("ServiceName(%q) = %q", authority, name)
		}
		if ServiceName(name) != name && !strings.Contains(name, ":") {
			t.Fatalf("ServiceName is not stable on %q: %q -> %q", authority, name, ServiceName(name))
		}
	})
}
