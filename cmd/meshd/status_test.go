package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestStatusRendering renders fixed admin documents and compares the table
// with testdata/status.golden (refresh with -update or REFRESH_GOLDEN=1).
func TestStatusRendering(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	docs, err := parseStatus(read("status-breakers.json"), read("status-endpoints.json"), read("status-metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	renderStatus(&out, docs)
	if *update || os.Getenv("REFRESH_GOLDEN") == "1" {
		if err := os.WriteFile("testdata/status.golden", out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := read("status.golden")
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("status table differs from testdata/status.golden:\n--- got\n%s--- want\n%s", out.String(), want)
	}
	// The figures themselves, independent of layout.
	for _, s := range []string{"payments  consul  open", "1/1/2", "80.0%", "5 consecutive failures", "ledger", "0.0%", "search", "0/0/0"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q", s)
		}
	}
}

func TestStatusUnreachable(t *testing.T) {
	_, stderr, code := meshd(t, []string{"MESHD_ADMIN_ADDR=" + deadAdmin(t)}, "status")
	if code != 1 || !strings.Contains(stderr, "admin API not reachable") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func deadAdmin(t *testing.T) string { return freePort(t) }
