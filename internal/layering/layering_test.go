// Package layering holds the test that keeps meshd's dependencies pointing
// one way: cmd → admin → proxy → {resilience → config, discovery}, with
// config, iptables, discovery and the proxy's leaf packages importing no
// other meshd package.
package layering

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/meshd/meshd"

// rules maps a package (or a prefix ending in "/...") to the meshd packages
// it may import. A package not listed may import any meshd package except
// cmd and internal test helpers.
var rules = map[string][]string{
	"config":           {},
	"metrics":          {},
	"inject":           {},
	"iptables":         {},
	"discovery":        {},
	"proxy/origdst":    {},
	"proxy/sniff":      {},
	"proxy/balance":    {},
	"proxy/opaque":     {},
	"proxy/sockio":     {},
	"proxy/h1":         {},
	"resilience":       {"config"},
	"discovery/static": {"discovery", "config"},
	"discovery/consul": {"discovery"},
	"proxy":            {"config", "discovery", "metrics", "resilience", "proxy/..."},
	"proxy/...":        {"config", "discovery", "metrics", "resilience", "proxy/..."},
	"admin":            {"config", "discovery", "discovery/...", "metrics", "resilience", "proxy", "proxy/..."},
}

func allowed(imp string, allow []string) bool {
	for _, a := range allow {
		if p, ok := strings.CutSuffix(a, "/..."); ok {
			if strings.HasPrefix(imp, p+"/") {
				return true
			}
		} else if imp == a {
			return true
		}
	}
	return false
}

func TestDependenciesPointOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}:{{join .Imports ","}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ":")
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
		rule, limited := rules[rel]
		if !limited {
			for key, r := range rules {
				if p, ok := strings.CutSuffix(key, "/..."); ok && strings.HasPrefix(rel, p+"/") {
					if _, exact := rules[rel]; !exact {
						rule, limited = r, true
					}
				}
			}
		}
		for _, imp := range strings.Split(imports, ",") {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			irel := strings.TrimPrefix(strings.TrimPrefix(imp, module), "/")
			checked++
			switch {
			case strings.HasPrefix(irel, "cmd/"):
				t.Errorf("%s imports %s: nothing may import cmd", rel, irel)
			case strings.HasPrefix(irel, "internal/netnstest") || strings.HasPrefix(irel, "internal/testutil"):
				t.Errorf("%s imports the test helper %s outside a test", rel, irel)
			case limited && !allowed(irel, rule):
				t.Errorf("%s imports %s; it may import only %v", rel, irel, rule)
			}
		}
	}
	if checked == 0 {
		t.Fatalf("no meshd imports found: the check ran on nothing")
	}
}
