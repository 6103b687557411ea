package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type settings struct {
	RunSeconds      float64 `json:"run_seconds"`
	WarmupSeconds   float64 `json:"warmup_seconds"`
	Repetitions     int     `json:"repetitions"`
	QPS             float64 `json:"latency_qps"`
	LatencyConns    int     `json:"latency_connections"`
	MaxConns        int     `json:"max_connections"`
	ResponseBytes   int     `json:"response_body_bytes"`
	StreamBytes     int64   `json:"stream_bytes"`
	Quick           bool    `json:"quick"`
	ProxyCore       int     `json:"proxy_core"`
	LoadCore        int     `json:"load_core"`
	FortioArgs      string  `json:"fortio_args"`
	MeshdExtraEnv   string  `json:"meshd_extra_env,omitempty"`
	HistogramFloorS float64 `json:"fortio_histogram_resolution_s"`
}

type machine struct {
	CPUModel   string `json:"cpu_model"`
	CPUMHz     string `json:"cpu_mhz"`
	CPUs       int    `json:"cpus"`
	Hypervisor bool   `json:"hypervisor_flag"`
	MemTotal   string `json:"mem_total"`
	Kernel     string `json:"kernel"`
	GoHarness  string `json:"go"`
	// IdleDriver is the kernel's cpuidle driver, and HaltPollNs the
	// haltpoll driver's guest_halt_poll_ns when it has one: how long an
	// idle virtual CPU polls before it halts. Every cross-core wake-up of
	// a halted one is a trip through the hypervisor, which sets the floor
	// of the latency any proxy adds (docs/performance.md).
	IdleDriver string `json:"cpuidle_driver,omitempty"`
	HaltPollNs string `json:"guest_halt_poll_ns,omitempty"`
}

type rowResult struct {
	Name          string             `json:"name"`
	Description   string             `json:"description"`
	Runs          []runResult        `json:"runs"`
	Median        map[string]float64 `json:"median"`
	Min           map[string]float64 `json:"min"`
	Max           map[string]float64 `json:"max"`
	RatioToDirect map[string]float64 `json:"ratio_to_direct,omitempty"`
	AddedMs       map[string]float64 `json:"added_ms_over_direct,omitempty"`
}

type target struct {
	Figure string `json:"figure"`
	Target string `json:"target"`
	Meshd  string `json:"meshd"`
	Ref    string `json:"reference,omitempty"`
	Met    *bool  `json:"met"` // null: could not be judged
}

type otherLoad struct {
	WallSeconds      float64  `json:"wall_seconds"`
	OtherCPUSec      float64  `json:"other_processes_cpu_s"`
	OtherShareOfCore float64  `json:"other_processes_cores"`
	LoadAvgStart     string   `json:"loadavg_start"`
	LoadAvgEnd       string   `json:"loadavg_end"`
	TopOther         []string `json:"top_other_processes"`
}

type results struct {
	Date      string            `json:"date"`
	Started   time.Time         `json:"started"`
	Finished  time.Time         `json:"finished"`
	Command   string            `json:"command"`
	Settings  settings          `json:"settings"`
	Machine   machine           `json:"machine"`
	Versions  map[string]string `json:"versions"`
	OtherLoad otherLoad         `json:"other_load"`
	Notes     []string          `json:"notes,omitempty"`
	Rows      []rowResult       `json:"rows"`
	Targets   []target          `json:"targets"`
	PprofTop  string            `json:"pprof_top_cum,omitempty"`
}

// ---- machine and versions ----

func readMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), GoHarness: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			switch k {
			case "model name":
				if m.CPUModel == "" {
					m.CPUModel = v
				}
			case "cpu MHz":
				if m.CPUMHz == "" {
					m.CPUMHz = v
				}
			case "flags":
				if strings.Contains(" "+v+" ", " hypervisor ") {
					m.Hypervisor = true
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if kib, err := strconv.ParseFloat(strings.Fields(rest)[0], 64); err == nil {
					m.MemTotal = fmt.Sprintf("%.1f GiB", kib/(1<<20))
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/sys/devices/system/cpu/cpuidle/current_driver"); err == nil {
		m.IdleDriver = strings.TrimSpace(string(b))
	}
	if m.IdleDriver == "haltpoll" {
		// The parameter is there whenever the governor is built in; it
		// matters only under the haltpoll driver.
		if b, err := os.ReadFile("/sys/module/haltpoll/parameters/guest_halt_poll_ns"); err == nil {
			m.HaltPollNs = strings.TrimSpace(string(b))
		}
	}
	return m
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func versionOf(argv ...string) string {
	if argv[0] == "" {
		return ""
	}
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "?"
	}
	return firstLine(string(out))
}

// ---- what else ran ----

// machineIdle is the machine's idle+iowait time summed over its CPUs, in
// seconds, and the number of CPUs. Busy time is taken as wall time × CPUs
// minus this: on a tickless kernel the idle figures are exact, while the
// busy ones are sampled at each tick and miss the short bursts of a proxy
// serving 1000 small requests a second.
func machineIdle() (float64, int) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	var idle float64
	cpus := 0
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 5 && f[0] == "cpu" {
			for _, x := range f[4:6] { // idle iowait
				v, _ := strconv.ParseFloat(x, 64)
				idle += v / clkTck
			}
		} else if len(f) > 0 && strings.HasPrefix(f[0], "cpu") {
			cpus++
		}
	}
	return idle, cpus
}

// ourCPU is the CPU time of the harness and everything it started: itself,
// its waited-for children, and the children still running.
func (ps *procs) ourCPU() float64 {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	sum := tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
	ps.mu.Lock()
	list := append([]*proc(nil), ps.list...)
	ps.mu.Unlock()
	for _, p := range list {
		if !p.exited() {
			if s, err := cpuSeconds(p.pid); err == nil {
				sum += s
			}
		}
	}
	return sum
}

// otherMeter measures the CPU the machine spends outside the harness.
type otherMeter struct {
	ps         *procs
	at         time.Time
	idle, ours float64
}

func (ps *procs) meter() otherMeter {
	idle, _ := machineIdle()
	return otherMeter{ps: ps, at: time.Now(), idle: idle, ours: ps.ourCPU()}
}

// cores is the other processes' CPU since m, in CPU-seconds and in cores
// (1 = one core busy all along).
func (m otherMeter) cores() (float64, float64) {
	wall := time.Since(m.at).Seconds()
	idle, cpus := machineIdle()
	busy := wall*float64(cpus) - (idle - m.idle)
	other := max(0, busy-(m.ps.ourCPU()-m.ours))
	if wall <= 0 {
		return other, 0
	}
	return other, other / wall
}

// sampler adds up, by command name, the CPU of processes that are not the
// harness's, reading /proc once a second: long-lived processes are counted
// whole, ones that live less than a second mostly not (they still count in
// the machine-wide total).
type sampler struct {
	mu    sync.Mutex
	last  map[int]procTicks
	byCmd map[string]float64
}

func (s *sampler) run(ctx context.Context, ours func() []int) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	s.sample(ours(), true)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sample(ours(), false)
		}
	}
}

func (s *sampler) sample(ours []int, first bool) {
	ex := map[int]bool{os.Getpid(): true, os.Getppid(): true}
	for _, p := range ours {
		ex[p] = true
	}
	now := map[int]procTicks{}
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/stat")
		if err != nil {
			continue
		}
		if comm, t, st, err := parseStat(string(b)); err == nil {
			now[pid] = procTicks{comm, t, st}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byCmd == nil {
		s.byCmd = map[string]float64{}
	}
	if !first {
		for pid, pb := range now {
			if ex[pid] {
				continue
			}
			d := pb.ticks
			if pa, ok := s.last[pid]; ok && pa.start == pb.start {
				d -= pa.ticks
			}
			if d > 0 {
				s.byCmd[pb.comm] += float64(d) / clkTck
			}
		}
	}
	s.last = now
}

func (s *sampler) top(n int, floor float64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	type use struct {
		name string
		sec  float64
	}
	var uses []use
	for k, v := range s.byCmd {
		if v >= floor {
			uses = append(uses, use{k, v})
		}
	}
	sort.Slice(uses, func(i, j int) bool { return uses[i].sec > uses[j].sec })
	var out []string
	for i, u := range uses {
		if i == n {
			break
		}
		out = append(out, fmt.Sprintf("%s %.1f CPU-s", u.name, u.sec))
	}
	return out
}

type procTicks struct {
	comm  string
	ticks uint64
	start uint64
}

func loadavg() string {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			return strings.Join(f[:3], " ")
		}
	}
	return ""
}

// waitQuiet waits, at most for limit, until the other processes use less
// than a tenth of a core over two seconds, and says what it saw.
func waitQuiet(ctx context.Context, ps *procs, limit time.Duration) string {
	if limit <= 0 {
		return ""
	}
	deadline := time.Now().Add(limit)
	var last float64
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m := ps.meter()
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
		_, last = m.cores()
		if last < 0.1 {
			return ""
		}
		fmt.Fprintf(os.Stderr, "bench: other processes use %.2f cores; waiting for a quieter machine (at most %s)\n", last, limit)
	}
	return fmt.Sprintf("the machine did not become quiet within %s (other processes used %.2f cores just before the start)", limit, last)
}

// ---- summaries ----

func summarize(defs []rowDef, runs map[string][]runResult) []rowResult {
	var out []rowResult
	for _, d := range defs {
		rr := rowResult{Name: d.name, Description: d.desc, Runs: runs[d.name],
			Median: map[string]float64{}, Min: map[string]float64{}, Max: map[string]float64{}}
		vals := map[string][]float64{}
		for _, r := range rr.Runs {
			for k, v := range r.Figures {
				vals[k] = append(vals[k], v)
			}
		}
		for k, v := range vals {
			rr.Median[k] = median(v)
			rr.Min[k], rr.Max[k] = v[0], v[0]
			for _, x := range v {
				rr.Min[k] = math.Min(rr.Min[k], x)
				rr.Max[k] = math.Max(rr.Max[k], x)
			}
		}
		out = append(out, rr)
	}
	var direct *rowResult
	for i := range out {
		if out[i].Name == "direct" {
			direct = &out[i]
		}
	}
	if direct == nil {
		return out
	}
	for i := range out {
		r := &out[i]
		r.RatioToDirect, r.AddedMs = map[string]float64{}, map[string]float64{}
		for _, k := range []string{figP50, figP90, figP99, figP999, figMaxRPS, figOpaque} {
			v, ok1 := r.Median[k]
			d, ok2 := direct.Median[k]
			if ok1 && ok2 && d > 0 {
				r.RatioToDirect[k] = v / d
			}
		}
		for _, k := range []string{figP50, figP90, figP99, figP999} {
			v, ok1 := r.Median[k]
			d, ok2 := direct.Median[k]
			if ok1 && ok2 {
				r.AddedMs[k] = v - d
			}
		}
	}
	return out
}

func rowByName(rows []rowResult, name string) *rowResult {
	for i := range rows {
		if rows[i].Name == name && len(rows[i].Median) > 0 {
			return &rows[i]
		}
	}
	return nil
}

func boolp(b bool) *bool { return &b }

// judge compares meshd's figures with the targets of docs/performance.md.
func judge(rows []rowResult) []target {
	m, m2, h := rowByName(rows, "meshd"), rowByName(rows, "meshd-2hop"), rowByName(rows, "haproxy")
	floor := rowByName(rows, "haproxy-tcp")
	get := func(r *rowResult, k string) (float64, bool) {
		if r == nil {
			return 0, false
		}
		v, ok := r.Median[k]
		return v, ok
	}
	added := func(r *rowResult, k string) (float64, bool) {
		if r == nil || r.AddedMs == nil {
			return 0, false
		}
		v, ok := r.AddedMs[k]
		return v, ok
	}
	var out []target

	t := target{Figure: "requests per proxy CPU-second, HTTP/1.1 keep-alive", Target: "≥ 1.0× HAProxy's"}
	if mv, ok := get(m, figReqPerCPU); ok {
		t.Meshd = fmt.Sprintf("%.0f", mv)
		if hv, ok := get(h, figReqPerCPU); ok {
			t.Ref = fmt.Sprintf("HAProxy %.0f", hv)
			t.Meshd += fmt.Sprintf(" (%.2f×)", mv/hv)
			t.Met = boolp(mv >= hv)
		}
	}
	out = append(out, t)

	t = target{Figure: "CPU ms per 1000 requests at 1000 rps", Target: "≤ HAProxy's, and ≤ 100"}
	if mv, ok := get(m, figCPUPer1000); ok {
		t.Meshd = fmt.Sprintf("%.1f", mv)
		if hv, ok := get(h, figCPUPer1000); ok {
			t.Ref = fmt.Sprintf("HAProxy %.1f", hv)
			t.Met = boolp(mv <= hv && mv <= 100)
		} else if mv > 100 {
			t.Met = boolp(false)
		}
	}
	out = append(out, t)

	t = target{Figure: "added latency at 1000 rps, one hop: p50", Target: "≤ +0.10 ms"}
	if v, ok := added(m, figP50); ok {
		t.Meshd = fmt.Sprintf("%+.3f ms", v)
		t.Met = boolp(v <= 0.10)
		if fv, ok := added(floor, figP50); ok {
			t.Ref = fmt.Sprintf("HAProxy mode tcp (no HTTP work) %+.3f ms", fv)
		}
	}
	out = append(out, t)

	t = target{Figure: "added latency at 1000 rps, one hop: p90", Target: "≤ HAProxy's added p90"}
	if v, ok := added(m, figP90); ok {
		t.Meshd = fmt.Sprintf("%+.3f ms", v)
		if hv, ok := added(h, figP90); ok {
			t.Ref = fmt.Sprintf("HAProxy %+.3f ms", hv)
			t.Met = boolp(v <= hv)
		}
	}
	out = append(out, t)

	t = target{Figure: "added latency, two hops: p90", Target: "≤ +0.25 ms over direct"}
	if v, ok := added(m2, figP90); ok {
		t.Meshd = fmt.Sprintf("%+.3f ms", v)
		t.Met = boolp(v <= 0.25)
	}
	out = append(out, t)

	t = target{Figure: "RSS idle", Target: "≤ 15 MiB"}
	if v, ok := get(m, figRSSIdle); ok {
		t.Meshd = fmt.Sprintf("%.1f MiB", v)
		t.Met = boolp(v <= 15)
	}
	out = append(out, t)

	t = target{Figure: "RSS at 1000 rps (peak during the fixed-rate run)", Target: "≤ 25 MiB"}
	if v, ok := get(m, figRSS1000); ok {
		t.Meshd = fmt.Sprintf("%.1f MiB", v)
		t.Met = boolp(v <= 25)
	}
	out = append(out, t)

	t = target{Figure: "opaque TCP throughput, one hop", Target: "≥ 0.9× direct"}
	if m != nil {
		if r, ok := m.RatioToDirect[figOpaque]; ok {
			t.Meshd = fmt.Sprintf("%.2f GiB/s (%.2f×)", m.Median[figOpaque], r)
			t.Met = boolp(r >= 0.9)
		}
	}
	out = append(out, t)
	return out
}

// ---- output ----

func fmtMs(v float64) string { return fmt.Sprintf("%.3f", v) }

func cell(r rowResult, k string, f func(float64) string) string {
	v, ok := r.Median[k]
	if !ok {
		return "–"
	}
	return f(v)
}

func cellRatio(r rowResult, k string, f func(float64) string) string {
	s := cell(r, k, f)
	if x, ok := r.RatioToDirect[k]; ok && r.Name != "direct" {
		s += fmt.Sprintf(" (%.2f×)", x)
	}
	return s
}

func markdown(res *results) string {
	var b strings.Builder
	s := res.Settings
	fmt.Fprintf(&b, "# meshd benchmark, %s\n\n", res.Date)
	if s.Quick {
		b.WriteString("**Quick mode: runs of a few seconds, to check the harness. These figures mean nothing.**\n\n")
	}
	m := res.Machine
	fmt.Fprintf(&b, "Machine: %s, %d CPUs (%s MHz%s), %s RAM, Linux %s. ", m.CPUModel, m.CPUs, m.CPUMHz,
		map[bool]string{true: ", virtual machine", false: ""}[m.Hypervisor], m.MemTotal, m.Kernel)
	if m.IdleDriver != "" {
		fmt.Fprintf(&b, "CPU idle driver: %s", m.IdleDriver)
		if m.HaltPollNs != "" {
			fmt.Fprintf(&b, ", guest halt polling %s ns", m.HaltPollNs)
			if m.HaltPollNs == "0" {
				b.WriteString(" (an idle CPU halts at once: waking it goes through the hypervisor)")
			}
		}
		b.WriteString(". ")
	}
	fmt.Fprintf(&b, "Proxies on core %d, load generator and upstreams on core %d (taskset).\n\n", s.ProxyCore, s.LoadCore)
	fmt.Fprintf(&b, "Each figure is the median of %d runs, rows interleaved per repetition; %.0f s per load run after a %.1f s warm-up; "+
		"latency at %.0f req/s over %d connections, maximum rate over %d connections, %d-byte response bodies (fortio's echo server); "+
		"opaque TCP: one %d MiB stream.\n\n",
		s.Repetitions, s.RunSeconds, s.WarmupSeconds, s.QPS, s.LatencyConns, s.MaxConns, s.ResponseBytes, s.StreamBytes>>20)
	var vs []string
	for _, k := range []string{"meshd", "fortio", "haproxy", "nginx"} {
		if v := res.Versions[k]; v != "" {
			vs = append(vs, k+": "+v)
		}
	}
	fmt.Fprintf(&b, "Versions: %s.\n\n", strings.Join(vs, "; "))
	o := res.OtherLoad
	fmt.Fprintf(&b, "Other load during the run: %.1f CPU-s used by processes other than the harness's over %.0f s (%.2f cores on average); load average %s at start, %s at end",
		o.OtherCPUSec, o.WallSeconds, o.OtherShareOfCore, o.LoadAvgStart, o.LoadAvgEnd)
	if len(o.TopOther) > 0 {
		fmt.Fprintf(&b, "; busiest other processes: %s", strings.Join(o.TopOther, ", "))
	}
	b.WriteString(". Per row and repetition, in results.json: `other_cores`.\n\n")

	fmt.Fprintf(&b, "## Latency at %.0f req/s, %d connections (ms; × direct)\n\n", s.QPS, s.LatencyConns)
	b.WriteString("| row | p50 | p90 | p99 | p99.9 | added p50 | added p90 | achieved req/s | errors |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range res.Rows {
		addP50, addP90 := "–", "–"
		if v, ok := r.AddedMs[figP50]; ok && r.Name != "direct" {
			addP50 = fmt.Sprintf("%+.3f", v)
		}
		if v, ok := r.AddedMs[figP90]; ok && r.Name != "direct" {
			addP90 = fmt.Sprintf("%+.3f", v)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Name,
			cellRatio(r, figP50, fmtMs), cellRatio(r, figP90, fmtMs), cellRatio(r, figP99, fmtMs), cellRatio(r, figP999, fmtMs),
			addP50, addP90, cell(r, figLatQPS, func(v float64) string { return fmt.Sprintf("%.0f", v) }),
			errorsCell(r, figLatErrors))
	}
	fmt.Fprintf(&b, "\n## Throughput, CPU and memory\n\n")
	b.WriteString("| row | max req/s (× direct) | req per proxy CPU-s | proxy CPU at max (cores) | CPU ms per 1000 req at " +
		fmt.Sprintf("%.0f", s.QPS) + " req/s | RSS idle MiB | RSS at " + fmt.Sprintf("%.0f", s.QPS) + " req/s MiB | RSS peak MiB | opaque GiB/s (× direct) | opaque proxy CPU-s per GiB | errors at max |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	f0 := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	f1 := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	f2 := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	for _, r := range res.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Name,
			cellRatio(r, figMaxRPS, f0), cell(r, figReqPerCPU, f0), cell(r, figMaxCPU, f2), cell(r, figCPUPer1000, f1),
			cell(r, figRSSIdle, f1), cell(r, figRSS1000, f1), cell(r, figRSSPeak, f1),
			cellRatio(r, figOpaque, f2), cell(r, figOpaqueCPU, f2), errorsCell(r, figMaxErrors))
	}
	b.WriteString("\nmeshd-2hop: CPU is the sum of both meshd processes, RSS the larger of the two. Spread (min and max of the runs) is in results.json.\n")

	b.WriteString("\n## Targets (meshd, one hop unless said)\n\n| figure | target | meshd | reference | met |\n|---|---|---|---|---|\n")
	for _, t := range res.Targets {
		met := "n/a"
		if t.Met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*t.Met]
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", t.Figure, t.Target, orDash(t.Meshd), orDash(t.Ref), met)
	}
	b.WriteString("\n## Rows\n\n")
	for _, r := range res.Rows {
		fmt.Fprintf(&b, "- **%s**: %s\n", r.Name, r.Description)
	}
	var errs []string
	for _, r := range res.Rows {
		for _, run := range r.Runs {
			for _, e := range run.Errors {
				errs = append(errs, fmt.Sprintf("%s, rep %d: %s", r.Name, run.Rep, firstLine(e)))
			}
		}
	}
	if len(res.Notes) > 0 || len(errs) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range append(append([]string(nil), res.Notes...), errs...) {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	if res.PprofTop != "" {
		b.WriteString("\n## meshd CPU profile during a maximum-rate run (top 15, cumulative)\n\n```\n" + res.PprofTop + "\n```\n")
	}
	return b.String()
}

func errorsCell(r rowResult, k string) string {
	var sum float64
	seen := false
	for _, run := range r.Runs {
		if v, ok := run.Figures[k]; ok {
			sum += v
			seen = true
		}
	}
	if !seen {
		return "–"
	}
	return fmt.Sprintf("%.0f", sum)
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func writeResults(dir string, res *results) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	j, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(j, '\n'), 0o644); err != nil {
		return "", err
	}
	md := markdown(res)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return "", err
	}
	return md, nil
}
