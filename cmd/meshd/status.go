package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// statusDocs are what `meshd status` reads from the admin API.
type statusDocs struct {
	Breakers  breakersDoc
	Endpoints endpointsDoc
	Metrics   map[string]*dto.MetricFamily
}

type breakersDoc struct {
	Upstreams map[string]struct {
		State     string `json:"state"`
		Since     string `json:"since"`
		Reason    string `json:"reason"`
		Endpoints map[string]struct {
			State     string `json:"state"`
			Ejections int    `json:"ejections"`
		} `json:"endpoints"`
	} `json:"upstreams"`
}

type endpointsDoc struct {
	Upstreams map[string]struct {
		Source    string `json:"source"`
		Endpoints []struct {
			Address string `json:"address"`
			Healthy bool   `json:"healthy"`
			Ejected bool   `json:"ejected"`
		} `json:"endpoints"`
	} `json:"upstreams"`
}

// cmdStatus reads the admin API and prints a table of upstreams; --json
// prints the raw documents. The flags are the common settings
// (--admin-addr among them) plus --json.
func cmdStatus(e env) int {
	jsonOut := false
	var args []string
	for _, a := range e.args {
		if a == "--json" || a == "-json" {
			jsonOut = true
			continue
		}
		args = append(args, a)
	}
	e.args = args
	cfg, _, code, ok := loadConfig(e, 0)
	if !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	raw := map[string][]byte{}
	for _, path := range []string{"/breakers", "/endpoints", "/metrics"} {
		body, err := fetch(ctx, "http://"+cfg.AdminAddr+path)
		if err != nil {
			fmt.Fprintf(e.stderr, "meshd status: admin API not reachable at %s: %v\n", cfg.AdminAddr, err)
			return exitFailure
		}
		raw[path] = body
	}
	if jsonOut {
		out, _ := json.MarshalIndent(map[string]json.RawMessage{
			"breakers": raw["/breakers"], "endpoints": raw["/endpoints"],
		}, "", "  ")
		fmt.Fprintf(e.stdout, "%s\n", out)
		return exitOK
	}
	docs, err := parseStatus(raw["/breakers"], raw["/endpoints"], raw["/metrics"])
	if err != nil {
		fmt.Fprintf(e.stderr, "meshd status: %v\n", err)
		return exitFailure
	}
	renderStatus(e.stdout, docs)
	return exitOK
}

func parseStatus(breakers, endpoints, metrics []byte) (*statusDocs, error) {
	d := &statusDocs{}
	if err := json.Unmarshal(breakers, &d.Breakers); err != nil {
		return nil, fmt.Errorf("/breakers: %w", err)
	}
	if err := json.Unmarshal(endpoints, &d.Endpoints); err != nil {
		return nil, fmt.Errorf("/endpoints: %w", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := parser.TextToMetricFamilies(bytes.NewReader(metrics))
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	d.Metrics = mf
	return d, nil
}

// renderStatus prints one aligned row per upstream: breaker state,
// endpoints healthy/ejected/total, requests, error rate (5xx and local
// replies) and p99, the last three from the outbound metrics.
func renderStatus(w io.Writer, d *statusDocs) {
	names := map[string]bool{}
	for n := range d.Breakers.Upstreams {
		names[n] = true
	}
	for n := range d.Endpoints.Upstreams {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tSOURCE\tBREAKER\tENDPOINTS (healthy/ejected/total)\tREQUESTS\tERRORS\tP99\tLAST TRIP")
	for _, n := range sorted {
		b, hasB := d.Breakers.Upstreams[n]
		ep := d.Endpoints.Upstreams[n]
		state := "closed"
		if hasB {
			state = b.State
		}
		var healthy, ejected int
		for _, e := range ep.Endpoints {
			switch {
			case e.Ejected:
				ejected++
			case e.Healthy:
				healthy++
			}
		}
		source := ep.Source
		if source == "" {
			source = "-"
		}
		reqs, errs, p99 := upstreamFigures(d.Metrics, n)
		reqCol, errCol, p99Col := "-", "-", "-"
		if reqs > 0 {
			reqCol = fmt.Sprintf("%.0f", reqs)
			errCol = fmt.Sprintf("%.1f%%", 100*errs/reqs)
		}
		if !math.IsNaN(p99) {
			p99Col = formatSeconds(p99)
		}
		trip := "-"
		if hasB && b.Reason != "" {
			trip = b.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d/%d\t%s\t%s\t%s\t%s\n", n, source, state, healthy, ejected, len(ep.Endpoints), reqCol, errCol, p99Col, trip)
	}
	_ = tw.Flush()
	if len(sorted) == 0 {
		fmt.Fprintln(w, "(no upstream has been used yet)")
	}
}

// upstreamFigures sums the outbound requests of an upstream, the failed
// ones (5xx, local replies included), and estimates p99 from the
// histogram the way PromQL's histogram_quantile does.
func upstreamFigures(mf map[string]*dto.MetricFamily, upstream string) (reqs, errs, p99 float64) {
	match := func(m *dto.Metric) bool {
		var dir, up string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "direction":
				dir = l.GetValue()
			case "upstream":
				up = l.GetValue()
			}
		}
		return dir == "outbound" && up == upstream
	}
	if f := mf["meshd_requests_total"]; f != nil {
		for _, m := range f.GetMetric() {
			if !match(m) {
				continue
			}
			v := m.GetCounter().GetValue()
			reqs += v
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && strings.HasPrefix(l.GetValue(), "5") {
					errs += v
				}
			}
		}
	}
	p99 = math.NaN()
	if f := mf["meshd_request_duration_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			if match(m) {
				p99 = quantile(0.99, m.GetHistogram())
			}
		}
	}
	return reqs, errs, p99
}

// quantile interpolates linearly within the bucket that holds q, as
// Prometheus does; NaN without observations.
func quantile(q float64, h *dto.Histogram) float64 {
	total := float64(h.GetSampleCount())
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, b := range h.GetBucket() {
		count := float64(b.GetCumulativeCount())
		if count >= rank {
			if math.IsInf(b.GetUpperBound(), 1) {
				return prevBound
			}
			if count == prevCount {
				return b.GetUpperBound()
			}
			return prevBound + (b.GetUpperBound()-prevBound)*(rank-prevCount)/(count-prevCount)
		}
		prevBound, prevCount = b.GetUpperBound(), count
	}
	return prevBound
}

func formatSeconds(s float64) string {
	switch {
	case s < 0.001:
		return fmt.Sprintf("%.0fµs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.1fms", s*1e3)
	default:
		return fmt.Sprintf("%.2fs", s)
	}
}

// adminClient never goes through an HTTP proxy from the environment.
var adminClient = &http.Client{Transport: &http.Transport{Proxy: nil}}

func fetch(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}
