package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// fortioResult is the part of `fortio load -json` the harness reads.
type fortioResult struct {
	ActualQPS         float64
	ActualDuration    int64 // nanoseconds
	NumThreads        int
	SocketCount       int
	RetCodes          map[string]int64
	DurationHistogram struct {
		Count       int64
		Avg         float64
		Percentiles []struct {
			Percentile float64
			Value      float64 // seconds
		}
	}
}

// percentile returns the value for p in milliseconds.
func (r *fortioResult) percentile(p float64) (float64, bool) {
	for _, x := range r.DurationHistogram.Percentiles {
		if x.Percentile == p {
			return x.Value * 1000, true
		}
	}
	return 0, false
}

// errors counts answers other than 200, socket errors (code -1) included.
func (r *fortioResult) errors() int64 {
	var n int64
	for code, c := range r.RetCodes {
		if code != "200" {
			n += c
		}
	}
	return n
}

func parseFortio(b []byte) (*fortioResult, error) {
	var r fortioResult
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("fortio JSON: %w", err)
	}
	if r.DurationHistogram.Count == 0 {
		return nil, fmt.Errorf("fortio made no request")
	}
	return &r, nil
}

// fortioLoad runs one `fortio load` on the load core: qps 0 is as fast as
// it goes. Fortio's histogram resolution is set to 10 µs (the default 1 ms
// would put every loopback request in one bucket).
func (e *benchEnv) fortioLoad(ctx context.Context, url string, qps float64, conns int, d time.Duration) (*fortioResult, error) {
	path := e.next("fortio.json")
	args := []string{e.fortioBin, "load", "-quiet",
		"-qps", strconv.FormatFloat(qps, 'f', -1, 64),
		"-c", strconv.Itoa(conns),
		"-t", d.String(),
		"-r", "0.00001",
		"-p", "50,90,99,99.9",
		"-timeout", "5s",
		"-H", "Host: echo",
		"-json", path,
	}
	if qps > 0 {
		// Spread the connections' requests evenly instead of 16 at once.
		args = append(args, "-uniform")
	}
	args = append(args, url)
	if _, err := e.ps.runShort(ctx, d+30*time.Second, loadCore, e.baseEnv, e.tmp, args...); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseFortio(b)
}

func (e *benchEnv) stream(ctx context.Context, addr string, hops int) (streamResult, error) {
	out, err := e.ps.runShort(ctx, 3*time.Minute, loadCore, e.baseEnv, e.tmp,
		e.self, "stream", "-addr", addr, "-hops", strconv.Itoa(hops), "-bytes", strconv.FormatInt(e.opts.streamBytes, 10),
		"-timeout", "150s")
	if err != nil {
		return streamResult{}, err
	}
	var r streamResult
	if err := json.Unmarshal(out, &r); err != nil {
		return streamResult{}, fmt.Errorf("stream output %q: %w", out, err)
	}
	return r, nil
}

// Figure keys, in table order.
const (
	figP50        = "p50_ms"
	figP90        = "p90_ms"
	figP99        = "p99_ms"
	figP999       = "p99.9_ms"
	figLatQPS     = "latency_run_qps"
	figLatErrors  = "latency_run_errors"
	figCPUPer1000 = "cpu_ms_per_1000_req"
	figMaxRPS     = "max_rps"
	figMaxErrors  = "max_run_errors"
	figReqPerCPU  = "req_per_proxy_cpu_s"
	figMaxCPU     = "max_run_proxy_cpu_cores"
	figRSSIdle    = "rss_idle_mib"
	figRSS1000    = "rss_at_1000rps_mib"
	figRSSPeak    = "rss_peak_mib"
	figOpaque     = "opaque_gib_s"
	figOpaqueCPU  = "opaque_proxy_cpu_s_per_gib"
)

// runResult is one row in one repetition.
type runResult struct {
	Rep     int                `json:"rep"`
	Figures map[string]float64 `json:"figures"`
	// OtherCores is the CPU other processes used during this run, in cores.
	OtherCores float64  `json:"other_cores"`
	Errors     []string `json:"errors,omitempty"`
}

// measureRow starts the row, takes every figure, and stops it. A figure
// that could not be taken is absent, with the reason in Errors.
func (e *benchEnv) measureRow(ctx context.Context, def rowDef, rep int) runResult {
	meter := e.ps.meter()
	res := e.measureRowOnce(ctx, def, rep)
	_, res.OtherCores = meter.cores()
	return res
}

func (e *benchEnv) measureRowOnce(ctx context.Context, def rowDef, rep int) runResult {
	res := runResult{Rep: rep, Figures: map[string]float64{}}
	fail := func(what string, err error) { res.Errors = append(res.Errors, what+": "+err.Error()) }
	ri, err := def.setup(ctx, e)
	if err != nil {
		fail("start", err)
		return res
	}
	defer ri.stop()
	o := e.opts
	hasProxy := len(ri.proxies) > 0

	// Idle: started and ready, no request yet.
	if hasProxy {
		time.Sleep(200 * time.Millisecond)
		if v, err := maxMiB(ri.proxies, "VmRSS"); err == nil {
			res.Figures[figRSSIdle] = v
		} else {
			fail("rss idle", err)
		}
	}
	if o.warmup > 0 {
		if _, err := e.fortioLoad(ctx, ri.url, o.qps, o.latConns, o.warmup); err != nil {
			fail("warm-up", err)
			return res
		}
	}

	// Fixed rate: latency, CPU per request, memory at that rate.
	c0, cerr := cpuOf(ri.proxies)
	lat, err := e.fortioLoad(ctx, ri.url, o.qps, o.latConns, o.duration)
	if err != nil {
		fail("latency run", err)
		return res
	}
	c1, cerr1 := cpuOf(ri.proxies)
	for _, p := range []struct {
		key string
		p   float64
	}{{figP50, 50}, {figP90, 90}, {figP99, 99}, {figP999, 99.9}} {
		if v, ok := lat.percentile(p.p); ok {
			res.Figures[p.key] = v
		}
	}
	res.Figures[figLatQPS] = lat.ActualQPS
	res.Figures[figLatErrors] = float64(lat.errors())
	// Fortio's warm-up request per connection is made in the measured
	// window too.
	latReqs := float64(lat.DurationHistogram.Count + int64(lat.NumThreads))
	if hasProxy {
		if cerr == nil && cerr1 == nil {
			res.Figures[figCPUPer1000] = (c1 - c0) * 1000 / (latReqs / 1000)
		} else {
			fail("cpu", firstErr(cerr, cerr1))
		}
		if v, err := maxMiB(ri.proxies, "VmHWM"); err == nil {
			res.Figures[figRSS1000] = v
		} else {
			fail("rss at rate", err)
		}
	}

	// As fast as it goes: requests per second and per proxy CPU-second.
	c2, cerr2 := cpuOf(ri.proxies)
	mx, err := e.fortioLoad(ctx, ri.url, 0, o.maxConns, o.duration)
	if err != nil {
		fail("max run", err)
	} else {
		c3, cerr3 := cpuOf(ri.proxies)
		res.Figures[figMaxRPS] = mx.ActualQPS
		res.Figures[figMaxErrors] = float64(mx.errors())
		if hasProxy {
			if cerr2 == nil && cerr3 == nil && c3 > c2 {
				reqs := float64(mx.DurationHistogram.Count + int64(mx.NumThreads))
				res.Figures[figReqPerCPU] = reqs / (c3 - c2)
				res.Figures[figMaxCPU] = (c3 - c2) / (float64(mx.ActualDuration) / 1e9)
			} else {
				fail("cpu", firstErr(cerr2, cerr3))
			}
		}
	}

	// Opaque TCP.
	if ri.streamAddr != "" && o.streamBytes > 0 {
		c4, cerr4 := cpuOf(ri.proxies)
		sr, err := e.stream(ctx, ri.streamAddr, ri.streamHops)
		if err != nil {
			fail("stream", err)
		} else {
			c5, cerr5 := cpuOf(ri.proxies)
			gib := float64(sr.Bytes) / (1 << 30)
			res.Figures[figOpaque] = gib / sr.Seconds
			if hasProxy && cerr4 == nil && cerr5 == nil {
				res.Figures[figOpaqueCPU] = (c5 - c4) / gib
			}
		}
	}
	if hasProxy {
		if v, err := maxMiB(ri.proxies, "VmHWM"); err == nil {
			res.Figures[figRSSPeak] = v
		}
		for _, p := range ri.proxies {
			if p.exited() {
				fail(p.name, fmt.Errorf("exited during the run: %v\n%s", p.err, p.tail()))
			}
		}
	}
	return res
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return fmt.Errorf("no CPU time was used")
}

// median of the values; 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// summary line for the progress log.
func (r runResult) line() string {
	f := r.Figures
	var b strings.Builder
	fmt.Fprintf(&b, "[others %.2f cores] ", r.OtherCores)
	if v, ok := f[figP50]; ok {
		fmt.Fprintf(&b, "p50 %.3f ms p90 %.3f ms", v, f[figP90])
	}
	if v, ok := f[figMaxRPS]; ok {
		fmt.Fprintf(&b, ", max %.0f rps", v)
	}
	if v, ok := f[figReqPerCPU]; ok {
		fmt.Fprintf(&b, ", %.0f req/CPU-s", v)
	}
	if v, ok := f[figCPUPer1000]; ok {
		fmt.Fprintf(&b, ", %.1f CPU-ms/1000", v)
	}
	if v, ok := f[figRSSIdle]; ok {
		fmt.Fprintf(&b, ", RSS %.1f/%.1f/%.1f MiB", v, f[figRSS1000], f[figRSSPeak])
	}
	if v, ok := f[figOpaque]; ok {
		fmt.Fprintf(&b, ", opaque %.2f GiB/s", v)
	}
	if n := f[figLatErrors] + f[figMaxErrors]; n > 0 {
		fmt.Fprintf(&b, ", %.0f HTTP errors", n)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "\n    error: %s", e)
	}
	return b.String()
}
