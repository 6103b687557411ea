// Command bench is meshd's performance harness: it runs fortio's load
// against fortio's echo server straight, through meshd (one and two hops),
// and through HAProxy and nginx, all on loopback, with the proxies pinned to
// one core and the load generator and upstreams to the other, and writes a
// markdown table and a JSON file under bench/results/<date>/.
//
//	go run ./bench            # what `make bench` runs
//	go run ./bench -quick     # a few seconds per row, to check the harness
//
// It imports only the standard library. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	duration    time.Duration
	warmup      time.Duration
	reps        int
	qps         float64
	latConns    int
	maxConns    int
	size        int
	streamBytes int64
	rows        []string
	meshdBin    string
	fortioBin   string
	out         string
	install     bool
	pprof       bool
	pprofTime   time.Duration
	quick       bool
	maxTotal    time.Duration
	quietWait   time.Duration
	meshdEnv    []string
	netns       string   // the namespace the harness runs in (netns.go)
	notes       []string // notes of the harness that started this one
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "sink":
			os.Exit(sinkMain(os.Args[2:]))
		case "stream":
			os.Exit(streamMain(os.Args[2:]))
		}
	}
	os.Exit(benchMain(os.Args[1:]))
}

func benchMain(args []string) int {
	var o options
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each load run (one fixed-rate and one maximum-rate run per row and repetition)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "fixed-rate warm-up before the measured runs of each row")
	fs.IntVar(&o.reps, "reps", 3, "repetitions; each figure is the median over them")
	fs.Float64Var(&o.qps, "qps", 1000, "rate of the latency run")
	fs.IntVar(&o.latConns, "latency-conns", 16, "connections of the latency run")
	fs.IntVar(&o.maxConns, "max-conns", 64, "connections of the maximum-rate run")
	fs.IntVar(&o.size, "size", 1024, "response body bytes (fortio echo ?size=)")
	fs.Int64Var(&o.streamBytes, "stream-bytes", 1<<30, "length of the opaque TCP stream (0 = no opaque figure)")
	rows := fs.String("rows", "direct,meshd,meshd-2hop,haproxy,haproxy-tcp,nginx", "rows to run, in order (direct is needed for the ratios)")
	fs.StringVar(&o.meshdBin, "meshd", "bin/meshd", "meshd binary (make build)")
	fs.StringVar(&o.fortioBin, "fortio", "bin/fortio", "fortio binary (built by make bench from tools/fortio)")
	fs.StringVar(&o.out, "out", "", "results directory (default bench/results/<today>)")
	fs.BoolVar(&o.install, "install", true, "when root, apt-get install haproxy and nginx if they are missing")
	fs.BoolVar(&o.pprof, "pprof", true, "after the repetitions, take a CPU profile of meshd during a maximum-rate run")
	fs.DurationVar(&o.pprofTime, "pprof-seconds", 10*time.Second, "length of the CPU profile")
	fs.BoolVar(&o.quick, "quick", false, "check the harness: 1 s runs, 1 repetition, a 128 MiB stream, a 2 s profile (explicit flags win)")
	fs.DurationVar(&o.maxTotal, "max-total", 40*time.Minute, "stop everything after this long, whatever happens")
	fs.DurationVar(&o.quietWait, "quiet-wait", time.Minute, "before starting, wait at most this long for other processes to leave the machine quiet (0 = don't)")
	meshdEnv := fs.String("meshd-env", "", "extra KEY=VALUE settings for meshd, comma-separated (recorded in the results)")
	useNetns := fs.Bool("netns-own", true, "when root, run in a network namespace of the harness's own, so that the two-hop row goes through the server meshd's inbound listener (iptables)")
	fs.StringVar(&o.netns, "netns", "", "the namespace the harness was started in by itself (internal)")
	fs.Func("note", "a note for the results (internal, repeatable)", func(v string) error { o.notes = append(o.notes, v); return nil })
	_ = fs.Parse(args)
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["duration"] {
			o.duration = time.Second
		}
		if !set["warmup"] {
			o.warmup = 300 * time.Millisecond
		}
		if !set["reps"] {
			o.reps = 1
		}
		if !set["stream-bytes"] {
			o.streamBytes = 128 << 20
		}
		if !set["quiet-wait"] {
			o.quietWait = 0
		}
		if !set["pprof-seconds"] {
			o.pprofTime = 2 * time.Second
		}
	}
	o.rows = strings.Split(*rows, ",")
	if *meshdEnv != "" {
		for _, kv := range strings.Split(*meshdEnv, ",") {
			if !strings.HasPrefix(kv, "MESHD_") || !strings.Contains(kv, "=") {
				fmt.Fprintf(os.Stderr, "bench: -meshd-env: %q is not MESHD_KEY=VALUE\n", kv)
				return 2
			}
			o.meshdEnv = append(o.meshdEnv, kv)
		}
	}
	if o.reps < 1 || o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "bench: -reps must be ≥ 1 and -duration > 0")
		return 2
	}
	if o.netns == "" && *useNetns {
		// Everything the run needs from the network is installed first:
		// the namespace has none.
		notes := installFirst(o)
		ok, why := netnsPlan()
		if !ok {
			o.notes = append(o.notes, "the two-hop row goes through the server meshd's outbound listener, not its inbound one: "+why)
		} else {
			child := append(append([]string(nil), args...), "-install=false")
			for _, n := range notes {
				child = append(child, "-note", n)
			}
			code, err := runInNetns(child)
			if err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				return 1
			}
			return code
		}
	}
	if o.netns != "" {
		if err := checkInNetns(o.netns); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
	}
	if err := run(o, strings.Join(append([]string{"bench"}, args...), " ")); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

func run(o options, command string) (err error) {
	var defs []rowDef
	want := map[string]bool{}
	for _, name := range o.rows {
		found := false
		for _, d := range allRows {
			if d.name == strings.TrimSpace(name) {
				defs = append(defs, d)
				want[d.name] = true
				if d.peer != "" {
					want[d.peer] = true
				}
				found = true
			}
		}
		if !found {
			return fmt.Errorf("unknown row %q", name)
		}
	}
	for _, bin := range []string{o.meshdBin, o.fortioBin} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s missing: `make bench` builds it (%w)", bin, err)
		}
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return errors.New("taskset is needed (util-linux)")
	}
	if err := checkCores(); err != nil {
		return err
	}

	// Ctrl-C or SIGTERM cancels everything; a second one kills the harness
	// at once (its children die with it: parent-death signal).
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	go func() { <-ctx.Done(); stopSignals() }()
	ctx, cancel := context.WithTimeout(ctx, o.maxTotal)
	defer cancel()

	ps := &procs{}
	defer ps.stopAll()
	tmp, err := os.MkdirTemp("", "meshd-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			os.RemoveAll(tmp)
		} else {
			fmt.Fprintln(os.Stderr, "bench: logs and configs kept in", tmp)
		}
	}()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	e := &benchEnv{opts: o, ps: ps, tmp: tmp, baseEnv: cleanEnv(), self: self, netns: o.netns}
	if e.meshdBin, err = filepath.Abs(o.meshdBin); err != nil {
		return err
	}
	if e.fortioBin, err = filepath.Abs(o.fortioBin); err != nil {
		return err
	}

	res := &results{Started: time.Now(), Command: command, Machine: readMachine(), Versions: map[string]string{}}
	res.Date = res.Started.Format("2006-01-02")
	if o.out == "" {
		o.out = filepath.Join("bench", "results", res.Date)
	}
	res.Notes = append(res.Notes, o.notes...)
	if e.netns != "" {
		if err := e.redirectInbound(ctx); err != nil {
			return err
		}
		res.Notes = append(res.Notes, "every row ran inside a network namespace of the harness's own ("+e.netns+
			", loopback only), so that the two-hop row's server meshd takes its connections through an iptables redirect")
	}
	if want["haproxy"] || want["nginx"] {
		for _, n := range ensurePeers(ctx, e, want, o.install) {
			if !slices.Contains(res.Notes, n) {
				res.Notes = append(res.Notes, n)
			}
		}
	}
	for i, d := range defs {
		if d.name == "meshd-2hop" && e.netns == "" {
			defs[i].desc = twoHopOutboundDesc
		}
	}
	var kept []rowDef
	for _, d := range defs {
		if (d.peer == "haproxy" && e.haproxyBin == "") || (d.peer == "nginx" && e.nginxBin == "") {
			res.Notes = append(res.Notes, d.name+" row skipped: not installed")
			continue
		}
		kept = append(kept, d)
	}
	defs = kept
	res.Versions["meshd"] = versionOf(e.meshdBin, "version")
	res.Versions["fortio"] = versionOf(e.fortioBin, "version")
	res.Versions["haproxy"] = versionOf(e.haproxyBin, "-v")
	res.Versions["nginx"] = versionOf(e.nginxBin, "-v")
	res.Settings = settings{
		RunSeconds: o.duration.Seconds(), WarmupSeconds: o.warmup.Seconds(), Repetitions: o.reps,
		QPS: o.qps, LatencyConns: o.latConns, MaxConns: o.maxConns, ResponseBytes: o.size,
		StreamBytes: o.streamBytes, Quick: o.quick, ProxyCore: proxyCore, LoadCore: loadCore,
		FortioArgs:      "load -r 0.00001 -p 50,90,99,99.9 -H 'Host: echo' (-uniform at a fixed rate)",
		MeshdExtraEnv:   strings.Join(o.meshdEnv, ","),
		HistogramFloorS: 0.00001,
	}

	// The upstreams, on the load core: fortio's echo server and the sink.
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	e.echoAddr, e.sinkAddr = loopback(ports[0]), loopback(ports[1])
	echo, err := ps.start("echo-server", loadCore, e.baseEnv, tmp, filepath.Join(tmp, "echo-server.log"),
		e.fortioBin, "server", "-http-port", e.echoAddr, "-grpc-port", "disabled", "-redirect-port", "disabled",
		"-tcp-port", "disabled", "-udp-port", "disabled", "-ui-path", "", "-data-dir", tmp, "-loglevel", "Warning")
	if err != nil {
		return err
	}
	if err := waitTCP(ctx, echo, e.echoAddr, 10*time.Second); err != nil {
		return err
	}
	sink, err := ps.start("sink", loadCore, e.baseEnv, tmp, filepath.Join(tmp, "sink.log"),
		self, "sink", "-addr", e.sinkAddr, "-max-life", (o.maxTotal + time.Minute).String())
	if err != nil {
		return err
	}
	if err := waitTCP(ctx, sink, e.sinkAddr, 10*time.Second); err != nil {
		return err
	}

	if note := waitQuiet(ctx, ps, o.quietWait); note != "" {
		res.Notes = append(res.Notes, note)
	}
	res.OtherLoad.LoadAvgStart = loadavg()
	sctx, stopSampler := context.WithCancel(ctx)
	defer stopSampler()
	smp := &sampler{}
	go smp.run(sctx, ps.allPIDs)
	whole := ps.meter()
	runs := map[string][]runResult{}
	for rep := 1; rep <= o.reps; rep++ {
		for _, d := range defs {
			if ctx.Err() != nil {
				return fmt.Errorf("stopped: %w", context.Cause(ctx))
			}
			t0 := time.Now()
			r := e.measureRow(ctx, d, rep)
			runs[d.name] = append(runs[d.name], r)
			fmt.Fprintf(os.Stderr, "rep %d/%d %-10s %4.1fs  %s\n", rep, o.reps, d.name, time.Since(t0).Seconds(), r.line())
			if echo.exited() || sink.exited() {
				return fmt.Errorf("the echo server or the sink exited:\n%s\n%s", echo.tail(), sink.tail())
			}
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	if o.pprof && want["meshd"] {
		top, err := e.profileMeshd(ctx, o.out)
		if err != nil {
			res.Notes = append(res.Notes, "CPU profile: "+err.Error())
		}
		res.PprofTop = top
	}
	stopSampler()
	res.OtherLoad.OtherCPUSec, res.OtherLoad.OtherShareOfCore = whole.cores()
	res.OtherLoad.WallSeconds = time.Since(whole.at).Seconds()
	res.OtherLoad.LoadAvgEnd = loadavg()
	res.OtherLoad.TopOther = smp.top(8, 0.5)
	res.Finished = time.Now()
	res.Rows = summarize(defs, runs)
	res.Targets = judge(res.Rows)
	md, err := writeResults(o.out, res)
	if err != nil {
		return err
	}
	fmt.Print(md)
	fmt.Fprintf(os.Stderr, "bench: wrote %s and %s (%.0f s)\n", filepath.Join(o.out, "results.md"),
		filepath.Join(o.out, "results.json"), res.Finished.Sub(res.Started).Seconds())
	return nil
}

// checkCores makes sure cores 0 and 1 are both ours to pin to.
func checkCores() error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			list := strings.TrimSpace(rest)
			if !cpuListHas(list, proxyCore) || !cpuListHas(list, loadCore) {
				return fmt.Errorf("cores %d and %d are needed; this process may use %s", proxyCore, loadCore, list)
			}
			return nil
		}
	}
	return nil
}

func cpuListHas(list string, cpu int) bool {
	for _, part := range strings.Split(list, ",") {
		lo, hi, found := strings.Cut(part, "-")
		var a, z int
		if _, err := fmt.Sscan(lo, &a); err != nil {
			continue
		}
		z = a
		if found {
			if _, err := fmt.Sscan(hi, &z); err != nil {
				continue
			}
		}
		if a <= cpu && cpu <= z {
			return true
		}
	}
	return false
}

// profileMeshd runs one meshd at the maximum rate, takes a CPU profile from
// its admin listener, saves it in dir as meshd-cpu.pprof, and returns
// `go tool pprof -top -cum` of it (15 lines).
func (e *benchEnv) profileMeshd(ctx context.Context, dir string) (string, error) {
	m, err := e.startMeshd(ctx, "meshd-pprof", "echo="+e.echoAddr+";sink="+e.sinkAddr)
	if err != nil {
		return "", err
	}
	defer m.p.stop()
	url := e.echoURL(m.outbound)
	loadDone := make(chan error, 1)
	go func() {
		_, err := e.fortioLoad(ctx, url, 0, e.opts.maxConns, e.opts.pprofTime+2*time.Second)
		loadDone <- err
	}()
	time.Sleep(time.Second)
	secs := int(e.opts.pprofTime.Seconds())
	client := &http.Client{Timeout: e.opts.pprofTime + 15*time.Second}
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", m.admin, secs), nil)
	resp, err := client.Do(req)
	var body []byte
	if err == nil {
		body, err = readAllLimit(resp, 64<<20)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("profile: %s: %s", resp.Status, firstLine(string(body)))
		}
	}
	if lerr := <-loadDone; err == nil && lerr != nil {
		err = lerr
	}
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "meshd-cpu.pprof")
	if err := os.WriteFile(path, body, 0o644); err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("profile saved in %s; no go command to read it", path)
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(pctx, goBin, "tool", "pprof", "-top", "-cum", "-nodecount=15", path)
	cmd.SysProcAttr = childAttr()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w: %s", err, lastLines(stderr.String(), 3))
	}
	top := strings.TrimSpace(string(out))
	if err := os.WriteFile(filepath.Join(dir, "pprof-top.txt"), []byte(top+"\n"), 0o644); err != nil {
		return "", err
	}
	return top, nil
}

func readAllLimit(resp *http.Response, limit int64) ([]byte, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errors.New("response too large")
	}
	return b, nil
}
