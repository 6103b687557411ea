package main

import (
	"math"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 98765 123456 789 18446744073709551615"
	comm, ticks, start, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if comm != "a (b) c" || ticks != 325 || start != 98765 {
		t.Errorf("got %q %d %d, want \"a (b) c\" 325 98765", comm, ticks, start)
	}
	if _, _, _, err := parseStat("garbage"); err == nil {
		t.Error("no error for a malformed line")
	}
}

func TestParseStatusKiB(t *testing.T) {
	status := "Name:\tmeshd\nVmHWM:\t   20480 kB\nVmRSS:\t   12288 kB\n"
	if v, err := parseStatusKiB(status, "VmRSS"); err != nil || v != 12288 {
		t.Errorf("VmRSS = %v, %v", v, err)
	}
	if _, err := parseStatusKiB(status, "VmSwap"); err == nil {
		t.Error("no error for a missing key")
	}
}

func TestParseFortio(t *testing.T) {
	js := `{"ActualQPS": 999.5, "ActualDuration": 10000000000, "NumThreads": 16, "SocketCount": 16,
	  "RetCodes": {"200": 9990, "503": 4, "-1": 1},
	  "DurationHistogram": {"Count": 9995, "Avg": 0.0003,
	    "Percentiles": [{"Percentile": 50, "Value": 0.00025}, {"Percentile": 99.9, "Value": 0.002}]}}`
	r, err := parseFortio([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := r.percentile(50); !ok || math.Abs(v-0.25) > 1e-9 {
		t.Errorf("p50 = %v ms, %v", v, ok)
	}
	if v, ok := r.percentile(99.9); !ok || math.Abs(v-2) > 1e-9 {
		t.Errorf("p99.9 = %v ms, %v", v, ok)
	}
	if _, ok := r.percentile(90); ok {
		t.Error("p90 found though absent")
	}
	if r.errors() != 5 {
		t.Errorf("errors = %d, want 5", r.errors())
	}
	if _, err := parseFortio([]byte(`{"DurationHistogram": {"Count": 0}}`)); err == nil {
		t.Error("no error for a run without requests")
	}
}

func TestCPUListHas(t *testing.T) {
	for _, c := range []struct {
		list string
		cpu  int
		want bool
	}{
		{"0-1", 1, true}, {"0", 1, false}, {"0,2-3", 2, true}, {"1,3", 0, false},
	} {
		if got := cpuListHas(c.list, c.cpu); got != c.want {
			t.Errorf("cpuListHas(%q, %d) = %v", c.list, c.cpu, got)
		}
	}
}

func TestSummarizeAndJudge(t *testing.T) {
	defs := []rowDef{{name: "direct"}, {name: "meshd"}, {name: "meshd-2hop"}, {name: "haproxy"}, {name: "haproxy-tcp"}}
	run := func(f map[string]float64) runResult { return runResult{Figures: f} }
	runs := map[string][]runResult{
		"direct": {run(map[string]float64{figP50: 0.05, figP90: 0.10, figOpaque: 2}),
			run(map[string]float64{figP50: 0.07, figP90: 0.30, figOpaque: 4}),
			run(map[string]float64{figP50: 0.06, figP90: 0.20, figOpaque: 3})},
		"meshd": {run(map[string]float64{figP50: 0.14, figP90: 0.25, figOpaque: 2.8,
			figReqPerCPU: 90000, figCPUPer1000: 50, figRSSIdle: 10, figRSS1000: 30})},
		"meshd-2hop": {run(map[string]float64{figP50: 0.3, figP90: 0.5})},
		"haproxy": {run(map[string]float64{figP50: 0.1, figP90: 0.3,
			figReqPerCPU: 100000, figCPUPer1000: 40})},
		"haproxy-tcp": {run(map[string]float64{figP50: 0.09, figP90: 0.2})},
	}
	rows := summarize(defs, runs)
	m := rowByName(rows, "meshd")
	if got := m.AddedMs[figP50]; math.Abs(got-0.08) > 1e-9 {
		t.Errorf("added p50 = %v, want 0.08", got)
	}
	if got := m.RatioToDirect[figOpaque]; math.Abs(got-0.9333333) > 1e-6 {
		t.Errorf("opaque ratio = %v", got)
	}
	want := []bool{false, false, true, true, false, true, false, true}
	ts := judge(rows)
	if len(ts) != len(want) {
		t.Fatalf("%d targets, want %d", len(ts), len(want))
	}
	for i, tg := range ts {
		if tg.Met == nil || *tg.Met != want[i] {
			t.Errorf("%s: met = %v, want %v", tg.Figure, tg.Met, want[i])
		}
	}
	// The p50 target's reference is the floor: the hop with no HTTP work.
	if ref := ts[2].Ref; !strings.Contains(ts[2].Figure, "p50") || !strings.Contains(ref, "mode tcp") || !strings.Contains(ref, "+0.030 ms") {
		t.Errorf("p50 target %q: reference %q, want the haproxy-tcp row's +0.030 ms", ts[2].Figure, ref)
	}
}

// TestMarkdownMachineIdle checks that the results say how the machine's
// idle CPUs wait, and what a halt-polling setting of 0 means.
func TestMarkdownMachineIdle(t *testing.T) {
	for _, c := range []struct {
		m    machine
		want []string
		not  string
	}{
		{machine{IdleDriver: "haltpoll", HaltPollNs: "0"}, []string{"CPU idle driver: haltpoll, guest halt polling 0 ns (an idle CPU halts at once"}, ""},
		{machine{IdleDriver: "haltpoll", HaltPollNs: "200000"}, []string{"guest halt polling 200000 ns. "}, "halts at once"},
		{machine{IdleDriver: "intel_idle"}, []string{"CPU idle driver: intel_idle. "}, "halt polling"},
		{machine{}, nil, "CPU idle driver"},
	} {
		md := markdown(&results{Machine: c.m})
		for _, w := range c.want {
			if !strings.Contains(md, w) {
				t.Errorf("%+v: results lack %q:\n%s", c.m, w, md)
			}
		}
		if c.not != "" && strings.Contains(md, c.not) {
			t.Errorf("%+v: results say %q:\n%s", c.m, c.not, md)
		}
	}
}
