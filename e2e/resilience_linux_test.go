package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/netnstest"
)

// The tests of this file drive meshd's resilience policy (contract,
// "Resilience policy") end to end: the app in pod A calls service
// payments, whose instances are HTTP servers in pod B on ports 8081...
// The tests switch the instances' behaviour at run time and read meshd's
// /breakers document (contract, "Admin API") from inside pod A.

// adminURL is meshd's admin API at its default address, reached from
// inside the pod meshd runs in.
const adminURL = "http://127.0.0.1:15000"

// upstreamRequest is one request an instance received.
type upstreamRequest struct {
	method  string
	attempt string // X-Meshd-Attempt
	body    string
}

// fleet tracks how many requests are inside any of its instances at once.
type fleet struct {
	inFlight atomic.Int64
	peak     atomic.Int64
}

// instance is an upstream whose behaviour a test switches while it runs:
// it holds each request for delay (or until the request is cancelled),
// then answers 503 when failing, else 200 with its name.
type instance struct {
	name  string
	fleet *fleet
	fail  atomic.Bool
	delay atomic.Int64 // nanoseconds
	hits  atomic.Int64

	mu   sync.Mutex
	reqs []upstreamRequest
}

func (in *instance) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in.hits.Add(1)
	body, _ := io.ReadAll(r.Body)
	in.mu.Lock()
	in.reqs = append(in.reqs, upstreamRequest{method: r.Method, attempt: r.Header.Get("X-Meshd-Attempt"), body: string(body)})
	in.mu.Unlock()

	n := in.fleet.inFlight.Add(1)
	defer in.fleet.inFlight.Add(-1)
	for {
		p := in.fleet.peak.Load()
		if n <= p || in.fleet.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if d := time.Duration(in.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	if in.fail.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "%s is failing", in.name)
		return
	}
	fmt.Fprint(w, in.name)
}

func (in *instance) requests() []upstreamRequest {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.reqs)
}

// attempts counts the instance's requests by their X-Meshd-Attempt.
func (in *instance) attempts() map[string]int {
	m := map[string]int{}
	for _, r := range in.requests() {
		m[r.attempt]++
	}
	return m
}

// startInstances serves n instances in pod b on ports 8081, 8082, ...
func startInstances(t *testing.T, b *netnstest.Pod, n int) ([]*instance, []string) {
	t.Helper()
	f := &fleet{}
	insts := make([]*instance, n)
	eps := make([]string, n)
	for i := range insts {
		insts[i] = &instance{name: fmt.Sprintf("instance-%d", i+1), fleet: f}
		eps[i] = hostPort(b.Addr, uint16(8081+i))
		serveHTTP(t, b, eps[i], insts[i])
	}
	return insts, eps
}

func totalHits(insts []*instance) int64 {
	var n int64
	for _, in := range insts {
		n += in.hits.Load()
	}
	return n
}

func sum(hits []int64) int64 {
	var n int64
	for _, h := range hits {
		n += h
	}
	return n
}

func hitsOf(insts []*instance) []int64 {
	out := make([]int64, len(insts))
	for i, in := range insts {
		out[i] = in.hits.Load()
	}
	return out
}

// resilienceSetup is pod A running meshd, with n instances of payments in
// pod B, and the app's HTTP clients in A.
type resilienceSetup struct {
	a, b  *netnstest.Pod
	insts []*instance
	eps   []string
	app   *http.Client // the app in A: its calls are redirected to meshd
	admin *http.Client // for meshd's admin API, from inside A
	url   string       // what the app calls: port 80 of B, where nothing listens
}

func newResilienceSetup(t *testing.T, n int, env ...string) *resilienceSetup {
	t.Helper()
	tp := netnstest.NewTopology(t)
	s := &resilienceSetup{a: tp.AddPod(t), b: tp.AddPod(t)}
	s.insts, s.eps = startInstances(t, s.b, n)
	startMeshd(t, s.a, append([]string{
		"MESHD_STATIC_ENDPOINTS=payments=" + strings.Join(s.eps, ","),
		"MESHD_DETECT_TIMEOUT=300ms",
	}, env...)...)
	s.app = podClient(t, s.a)
	s.admin = podClient(t, s.a)
	s.url = "http://" + hostPort(s.b.Addr, 80) + "/"
	return s
}

// answer is what the app got for one request.
type answer struct {
	status     int
	meshdError string // X-Meshd-Error
	body       string
	took       time.Duration
}

func (a answer) String() string {
	return fmt.Sprintf("%d (x-meshd-error %q, %v) %q", a.status, a.meshdError, a.took.Round(time.Millisecond), strings.TrimSpace(a.body))
}

// send makes one request with Host host and the given headers (name,
// value pairs) and reads the whole answer.
func send(c *http.Client, method, url, host, body string, header ...string) (answer, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return answer{}, err
	}
	req.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return answer{took: time.Since(start)}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, meshdError: resp.Header.Get("X-Meshd-Error"), body: string(b), took: time.Since(start)}, err
}

func mustSend(t *testing.T, c *http.Client, method, url, host, body string, header ...string) answer {
	t.Helper()
	a, err := send(c, method, url, host, body, header...)
	if err != nil {
		t.Fatalf("%s %s (Host %s) from A: %v after %v", method, url, host, err, a.took)
	}
	return a
}

// The /breakers document, exactly as the contract spells it.
type breakersDoc struct {
	Upstreams map[string]upstreamBreakers `json:"upstreams"`
}

type upstreamBreakers struct {
	State     string                     `json:"state"`
	Since     time.Time                  `json:"since"`
	Reason    string                     `json:"reason"`
	Counts    breakerCounts              `json:"counts"`
	Endpoints map[string]endpointBreaker `json:"endpoints"`
}

type breakerCounts struct {
	Requests             uint64 `json:"requests"`
	TotalSuccesses       uint64 `json:"total_successes"`
	TotalFailures        uint64 `json:"total_failures"`
	ConsecutiveSuccesses uint64 `json:"consecutive_successes"`
	ConsecutiveFailures  uint64 `json:"consecutive_failures"`
}

type endpointBreaker struct {
	State     string    `json:"state"`
	Since     time.Time `json:"since"`
	Ejections int       `json:"ejections"`
}

// exactKeys checks that the JSON object m has exactly the keys want:
// DisallowUnknownFields catches extra keys, this also missing ones.
func exactKeys(what string, m map[string]json.RawMessage, want ...string) error {
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s has keys %q, want exactly %q", what, got, want)
	}
	return nil
}

// checkBreakersShape checks every object of a /breakers document for
// exactly the contract's keys.
func checkBreakersShape(raw []byte) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return err
	}
	if err := exactKeys("the document", top, "upstreams"); err != nil {
		return err
	}
	var ups map[string]map[string]json.RawMessage
	if err := json.Unmarshal(top["upstreams"], &ups); err != nil {
		return fmt.Errorf("upstreams: %w", err)
	}
	for name, u := range ups {
		if err := exactKeys("upstream "+name, u, "state", "since", "reason", "counts", "endpoints"); err != nil {
			return err
		}
		var counts map[string]json.RawMessage
		if err := json.Unmarshal(u["counts"], &counts); err != nil {
			return fmt.Errorf("upstream %s: counts: %w", name, err)
		}
		if err := exactKeys("counts of "+name, counts, "requests", "total_successes", "total_failures",
			"consecutive_successes", "consecutive_failures"); err != nil {
			return err
		}
		var eps map[string]map[string]json.RawMessage
		if err := json.Unmarshal(u["endpoints"], &eps); err != nil {
			return fmt.Errorf("upstream %s: endpoints: %w", name, err)
		}
		for addr, e := range eps {
			if err := exactKeys("endpoint "+addr+" of "+name, e, "state", "since", "ejections"); err != nil {
				return err
			}
		}
	}
	return nil
}

var breakerStates = []string{"closed", "open", "half-open"}

// breakers reads /breakers from inside pod A and checks it against the
// contract: exact keys, states, RFC 3339 times, ip:port endpoint keys.
func breakers(t *testing.T, admin *http.Client) breakersDoc {
	t.Helper()
	resp, body, err := do(admin, http.MethodGet, adminURL+"/breakers", "", nil)
	if err != nil {
		t.Fatalf("GET /breakers: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /breakers: %s %q", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("GET /breakers: Content-Type %q, want application/json", ct)
	}
	var doc breakersDoc
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("/breakers does not match the contract: %v\n%s", err, body)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.Fatalf("/breakers: data after the document (%v)\n%s", err, body)
	}
	if err := checkBreakersShape([]byte(body)); err != nil {
		t.Fatalf("/breakers does not match the contract: %v\n%s", err, body)
	}
	if doc.Upstreams == nil {
		t.Fatalf("/breakers: \"upstreams\" is null\n%s", body)
	}
	now := time.Now()
	for name, u := range doc.Upstreams {
		if !slices.Contains(breakerStates, u.State) {
			t.Errorf("/breakers: %s: state %q, want one of %q", name, u.State, breakerStates)
		}
		if u.Since.IsZero() || u.Since.After(now.Add(time.Second)) {
			t.Errorf("/breakers: %s: since %v (now %v)", name, u.Since, now)
		}
		if u.Endpoints == nil {
			t.Errorf("/breakers: %s: \"endpoints\" is null, want an object", name)
		}
		for addr, e := range u.Endpoints {
			if _, err := netip.ParseAddrPort(addr); err != nil {
				t.Errorf("/breakers: %s: endpoint key %q is not ip:port", name, addr)
			}
			if !slices.Contains(breakerStates, e.State) {
				t.Errorf("/breakers: %s: endpoint %s: state %q", name, addr, e.State)
			}
			if e.Since.IsZero() || e.Since.After(now.Add(time.Second)) {
				t.Errorf("/breakers: %s: endpoint %s: since %v (now %v)", name, addr, e.Since, now)
			}
			if e.Ejections < 0 {
				t.Errorf("/breakers: %s: endpoint %s: ejections %d", name, addr, e.Ejections)
			}
		}
	}
	if t.Failed() {
		t.Logf("/breakers:\n%s", body)
	}
	return doc
}

// upstreamBreaker returns one upstream's entry of /breakers.
func upstreamBreaker(t *testing.T, admin *http.Client, name string) upstreamBreakers {
	t.Helper()
	doc := breakers(t, admin)
	u, ok := doc.Upstreams[name]
	if !ok {
		t.Fatalf("/breakers has no upstream %q: %+v", name, doc)
	}
	return u
}

// TestResilienceRetryAroundFailingInstance: one of three instances always
// answers 503. Every GET succeeds, retried on another instance (which sees
// X-Meshd-Attempt: 2); after 5 failures in a row (the default
// MESHD_EJECT_CONSECUTIVE_FAILURES) the failing instance is ejected, and
// the service breaker stays closed. Once healthy, it comes back after its
// ejection time (MESHD_EJECT_BASE_TIME × 1).
func TestResilienceRetryAroundFailingInstance(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	const ejectTime = 3 * time.Second
	s := newResilienceSetup(t, 3, "MESHD_EJECT_BASE_TIME="+ejectTime.String())
	bad := s.insts[1]
	bad.fail.Store(true)

	const n = 100
	for i := range n {
		a := mustSend(t, s.app, http.MethodGet, s.url, "payments", "")
		if a.status != http.StatusOK || !strings.HasPrefix(a.body, "instance-") {
			t.Fatalf("request %d: %v; want 200 from a healthy instance (hits so far %v)", i, a, hitsOf(s.insts))
		}
	}

	// Sequential requests: the bad instance gets exactly the 5 attempts
	// that eject it, and each of them is retried once, on another one.
	retried := 0
	for i, in := range s.insts {
		at := in.attempts()
		t.Logf("%s: %d requests, by attempt %v", in.name, in.hits.Load(), at)
		if in == bad {
			continue
		}
		retried += at["2"]
		if len(at) == 0 {
			t.Errorf("healthy instance %d got no request", i+1)
		}
		for k := range at {
			if k != "1" && k != "2" {
				t.Errorf("%s: X-Meshd-Attempt %q, want 1 or 2", in.name, k)
			}
		}
	}
	if got := bad.hits.Load(); got != 5 {
		t.Errorf("the failing instance got %d attempts, want 5 (ejected after 5 failures in a row)", got)
	}
	if retried == 0 {
		t.Errorf("no upstream request carried X-Meshd-Attempt: 2")
	}
	if int64(retried) != bad.hits.Load() {
		t.Errorf("%d retries reached healthy instances, want one per failed attempt (%d)", retried, bad.hits.Load())
	}
	if got := totalHits(s.insts); got != n+bad.hits.Load() {
		t.Errorf("instances got %d requests in all, want %d + %d retries", got, n, bad.hits.Load())
	}

	u := upstreamBreaker(t, s.admin, "payments")
	if u.State != "closed" {
		t.Errorf("payments breaker %q (reason %q), want closed: every request succeeded", u.State, u.Reason)
	}
	if u.Reason != "" {
		t.Errorf("payments breaker never tripped but has reason %q", u.Reason)
	}
	if u.Counts.TotalFailures != 0 || u.Counts.ConsecutiveFailures != 0 {
		t.Errorf("payments breaker counts %+v: no request failed", u.Counts)
	}
	if len(u.Endpoints) != 3 {
		t.Errorf("payments has %d endpoints in /breakers, want 3: %+v", len(u.Endpoints), u.Endpoints)
	}
	for i, addr := range s.eps {
		e, ok := u.Endpoints[addr]
		switch {
		case !ok:
			t.Errorf("endpoint %s missing from /breakers: %+v", addr, u.Endpoints)
		case s.insts[i] == bad && (e.State != "open" || e.Ejections != 1):
			t.Errorf("failing endpoint %s: state %q, %d ejections; want open, 1", addr, e.State, e.Ejections)
		case s.insts[i] != bad && (e.State != "closed" || e.Ejections != 0):
			t.Errorf("healthy endpoint %s: state %q, %d ejections; want closed, 0", addr, e.State, e.Ejections)
		}
	}
	if t.Failed() {
		return
	}

	// Healthy again: after the ejection time a probe closes the endpoint
	// and it takes its share of traffic again.
	badAddr := s.eps[1]
	ejectedAt := u.Endpoints[badAddr].Since
	bad.fail.Store(false)
	if a := mustSend(t, s.app, http.MethodGet, s.url, "payments", ""); a.status != http.StatusOK || a.body == bad.name {
		t.Errorf("request while %s is still ejected: %v", bad.name, a)
	}
	time.Sleep(time.Until(ejectedAt.Add(ejectTime + 50*time.Millisecond)))
	before := bad.hits.Load()
	for i := range 30 {
		if a := mustSend(t, s.app, http.MethodGet, s.url, "payments", ""); a.status != http.StatusOK {
			t.Fatalf("request %d after the ejection time: %v", i, a)
		}
	}
	back := bad.hits.Load() - before
	e := upstreamBreaker(t, s.admin, "payments").Endpoints[badAddr]
	t.Logf("after the ejection time, %s got %d of 30 requests; endpoint %s since %v", bad.name, back, e.State, e.Since.Sub(ejectedAt).Round(time.Millisecond))
	if back == 0 {
		t.Errorf("%s got no request after its ejection ended", bad.name)
	}
	if e.State != "closed" || e.Ejections != 1 || !e.Since.After(ejectedAt) {
		t.Errorf("recovered endpoint %s: state %q since %v, %d ejections; want closed since after %v, 1 ejection",
			badAddr, e.State, e.Since, e.Ejections, ejectedAt)
	}
}

// TestRetryNonIdempotentPost: a POST whose only instance answers 503 is
// sent once; with X-Meshd-Retryable: true (or as a PUT) it is retried
// MESHD_RETRY_MAX times, with the same body each time.
func TestRetryNonIdempotentPost(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	const retryMax = 2
	s := newResilienceSetup(t, 1, "MESHD_RETRY_MAX="+strconv.Itoa(retryMax))
	in := s.insts[0]
	in.fail.Store(true)

	cases := []struct {
		name, method string
		header       []string
		want         int // attempts
	}{
		{"post", http.MethodPost, nil, 1},
		{"post-retryable", http.MethodPost, []string{"X-Meshd-Retryable", "true"}, 1 + retryMax},
		{"put", http.MethodPut, nil, 1 + retryMax},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(in.requests())
			body := "order=" + tc.name
			a := mustSend(t, s.app, tc.method, s.url, "payments", body, tc.header...)
			if a.status != http.StatusServiceUnavailable || a.body != "instance-1 is failing" {
				t.Errorf("%s: %v; want the instance's own 503", tc.method, a)
			}
			reqs := in.requests()[before:]
			if len(reqs) != tc.want {
				t.Fatalf("%s %v: the instance got %d attempts, want %d: %+v", tc.method, tc.header, len(reqs), tc.want, reqs)
			}
			for i, r := range reqs {
				if r.method != tc.method || r.attempt != strconv.Itoa(i+1) || r.body != body {
					t.Errorf("attempt %d: %s, X-Meshd-Attempt %q, body %q; want %s, %d, %q", i+1, r.method, r.attempt, r.body, tc.method, i+1, body)
				}
			}
		})
	}
}

// TestBreakerOpensAndRecovers: slow failing instances trip the service
// breaker after MESHD_BREAKER_CONSECUTIVE_FAILURES requests; while open,
// requests are refused at once without reaching any instance; after
// MESHD_BREAKER_OPEN_TIMEOUT one probe goes through: a failed one opens the
// breaker again, a successful one closes it.
func TestBreakerOpensAndRecovers(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	const (
		trip        = 5
		openTimeout = 3 * time.Second
		slow        = 500 * time.Millisecond
	)
	s := newResilienceSetup(t, 3,
		"MESHD_BREAKER_CONSECUTIVE_FAILURES="+strconv.Itoa(trip),
		"MESHD_BREAKER_OPEN_TIMEOUT="+openTimeout.String(),
		"MESHD_RETRY_MAX=0",
		"MESHD_EJECT_CONSECUTIVE_FAILURES=0")
	for _, in := range s.insts {
		in.fail.Store(true)
		in.delay.Store(int64(slow))
	}

	var (
		sent      int
		lastStart time.Time
		u         upstreamBreakers
	)
	for u.State != "open" {
		if sent == 2*trip {
			t.Fatalf("breaker still %q after %d failed requests (counts %+v), want open after %d", u.State, sent, u.Counts, trip)
		}
		lastStart = time.Now()
		a := mustSend(t, s.app, http.MethodGet, s.url, "payments", "")
		sent++
		if a.status != http.StatusServiceUnavailable || a.meshdError != "" || a.took < slow {
			t.Fatalf("request %d: %v; want the instance's own 503 after %v", sent, a, slow)
		}
		u = upstreamBreaker(t, s.admin, "payments")
	}
	openedBy := time.Now()
	t.Logf("breaker open after %d requests: since %v, reason %q, counts %+v", sent, u.Since.Format(time.RFC3339Nano), u.Reason, u.Counts)
	if sent != trip {
		t.Errorf("breaker opened after %d failed requests, want %d", sent, trip)
	}
	if u.Reason == "" {
		t.Errorf("open breaker without a reason")
	}
	if u.Since.Before(lastStart.Add(-50*time.Millisecond)) || u.Since.After(openedBy.Add(50*time.Millisecond)) {
		t.Errorf("since %v: not the time it opened (between %v and %v)", u.Since, lastStart, openedBy)
	}
	if got := totalHits(s.insts); got != int64(sent) {
		t.Errorf("instances got %d requests for %d sent with MESHD_RETRY_MAX=0", got, sent)
	}

	// Open: refused at once, nothing reaches an instance.
	before := hitsOf(s.insts)
	for i := range 5 {
		a := mustSend(t, s.app, http.MethodGet, s.url, "payments", "")
		if a.status != http.StatusServiceUnavailable || a.meshdError != "circuit-open" {
			t.Errorf("request %d while open: %v; want 503 circuit-open", i, a)
		}
		if a.took >= 100*time.Millisecond {
			t.Errorf("request %d while open took %v, want < 100ms (the instances take %v)", i, a.took, slow)
		}
	}
	if after := hitsOf(s.insts); !slices.Equal(before, after) {
		t.Errorf("instances got requests while the breaker was open: %v, then %v", before, after)
	}

	// Half-open, still failing: the first request after the open timeout
	// is the one probe (MESHD_BREAKER_HALF_OPEN_MAX=1); a second one meanwhile
	// is refused at once; the probe fails and the breaker opens again.
	time.Sleep(time.Until(u.Since.Add(openTimeout + 50*time.Millisecond)))
	before = hitsOf(s.insts)
	probe := make(chan answer, 1)
	go func() {
		a, err := send(s.app, http.MethodGet, s.url, "payments", "")
		if err != nil {
			a.body = "error: " + err.Error()
		}
		probe <- a
	}()
	time.Sleep(150 * time.Millisecond) // the probe is inside an instance for 500ms
	if a := mustSend(t, s.app, http.MethodGet, s.url, "payments", ""); a.status != http.StatusServiceUnavailable ||
		a.meshdError != "circuit-open" || a.took >= 100*time.Millisecond {
		t.Errorf("request while the half-open probe is out: %v; want 503 circuit-open at once", a)
	}
	if a := <-probe; a.status != http.StatusServiceUnavailable || a.meshdError != "" || a.took < slow {
		t.Errorf("half-open probe: %v; want the instance's own 503 after %v", a, slow)
	}
	if got := totalHits(s.insts) - sum(before); got != 1 {
		t.Errorf("%d requests reached the instances while half-open, want 1 probe", got)
	}
	failed := upstreamBreaker(t, s.admin, "payments")
	t.Logf("after the failed probe: %s since %v, reason %q", failed.State, failed.Since.Sub(u.Since).Round(time.Millisecond), failed.Reason)
	if failed.State != "open" || failed.Reason == "" || !failed.Since.After(u.Since.Add(openTimeout)) {
		t.Errorf("after a failed probe: %q since %v, reason %q; want open again, since after %v, with a reason",
			failed.State, failed.Since, failed.Reason, u.Since.Add(openTimeout))
	}
	u = failed

	// Healthy again: the first request after the open timeout is the
	// probe; it succeeds and closes the breaker.
	for _, in := range s.insts {
		in.fail.Store(false)
		in.delay.Store(0)
	}
	reopen := u.Since.Add(openTimeout)
	deadline := reopen.Add(3 * time.Second)
	var okAt time.Time
	for okAt.IsZero() {
		if time.Now().After(deadline) {
			t.Fatalf("no request succeeded by %v after the breaker opened (open timeout %v)", deadline.Sub(u.Since), openTimeout)
		}
		start := time.Now()
		a := mustSend(t, s.app, http.MethodGet, s.url, "payments", "")
		switch {
		case a.status == http.StatusOK:
			okAt = start
		case a.status == http.StatusServiceUnavailable && a.meshdError == "circuit-open":
			if start.After(reopen.Add(200 * time.Millisecond)) {
				t.Errorf("still circuit-open %v after the breaker opened (open timeout %v)", start.Sub(u.Since), openTimeout)
			}
			time.Sleep(100 * time.Millisecond) // poll interval, bounded by the deadline above
		default:
			t.Fatalf("request while waiting for half-open: %v", a)
		}
	}
	t.Logf("first success %v after the breaker opened", okAt.Sub(u.Since).Round(time.Millisecond))
	if okAt.Before(reopen.Add(-20 * time.Millisecond)) {
		t.Errorf("a request went through %v after the breaker opened, before the open timeout %v", okAt.Sub(u.Since), openTimeout)
	}
	u2 := upstreamBreaker(t, s.admin, "payments")
	if u2.State != "closed" {
		t.Errorf("after a successful probe the breaker is %q, want closed", u2.State)
	}
	if !u2.Since.After(u.Since) {
		t.Errorf("since %v did not move on from %v", u2.Since, u.Since)
	}
	if u2.Reason != u.Reason {
		t.Errorf("reason %q after closing, want the last trip's %q", u2.Reason, u.Reason)
	}
	for i := range 5 {
		if a := mustSend(t, s.app, http.MethodGet, s.url, "payments", ""); a.status != http.StatusOK {
			t.Errorf("request %d after the breaker closed: %v", i, a)
		}
	}
}

// TestRequestTimeout: an instance slower than MESHD_REQUEST_TIMEOUT gets a
// 504 timeout on time, with no retry past the deadline; a per-upstream
// MESHD_UPSTREAM_<NAME>_PER_TRY_TIMEOUT moves a slow attempt on to a fast
// instance.
func TestRequestTimeout(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	const timeout = 300 * time.Millisecond
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)
	insts, eps := startInstances(t, b, 3)
	slow, fast := insts[0], insts[1]
	slow.delay.Store(int64(2 * time.Second))
	insts[2].delay.Store(int64(2 * time.Second))
	startMeshd(t, a,
		"MESHD_STATIC_ENDPOINTS=payments="+eps[0]+";mixed="+eps[1]+","+eps[2],
		"MESHD_DETECT_TIMEOUT=300ms",
		"MESHD_REQUEST_TIMEOUT="+timeout.String(),
		"MESHD_UPSTREAM_MIXED_REQUEST_TIMEOUT=5s",
		"MESHD_UPSTREAM_MIXED_PER_TRY_TIMEOUT=200ms")
	c := podClient(t, a)
	url := "http://" + hostPort(b.Addr, 80) + "/"

	t.Run("request-timeout", func(t *testing.T) {
		for i := range 3 {
			before := slow.hits.Load()
			ans := mustSend(t, c, http.MethodGet, url, "payments", "")
			t.Logf("request %d: %v", i, ans)
			if ans.status != http.StatusGatewayTimeout || ans.meshdError != "timeout" {
				t.Errorf("request %d: %v; want 504 timeout", i, ans)
			}
			if ans.took < timeout || ans.took > time.Second {
				t.Errorf("request %d: answered after %v, want between %v and 1s", i, ans.took, timeout)
			}
			if n := slow.hits.Load() - before; n != 1 {
				t.Errorf("request %d: %d attempts; want 1, no retry after the request timeout", i, n)
			}
		}
	})

	t.Run("per-try-timeout", func(t *testing.T) {
		// mixed: instance 2 fast, instance 3 slow. An attempt on the slow
		// one is cut after 200ms and retried on the fast one.
		for i := range 20 {
			ans := mustSend(t, c, http.MethodGet, url, "mixed", "")
			if ans.status != http.StatusOK || ans.body != fast.name || ans.took > time.Second {
				t.Errorf("request %d: %v; want 200 %s within 1s", i, ans, fast.name)
			}
		}
		cut := insts[2].hits.Load()
		t.Logf("attempts: %s %d, %s %d", fast.name, fast.hits.Load(), insts[2].name, cut)
		if cut == 0 {
			t.Errorf("no attempt went to the slow instance of mixed in 20 requests")
		}
		if got := fast.attempts()["2"]; int64(got) != cut {
			t.Errorf("%d retries reached %s, want one per cut attempt (%d)", got, fast.name, cut)
		}
	})
}

// TestRetryStormBudget: every instance fails fast and 200 clients hammer
// payments for 3 s. Retries stay within MESHD_RETRY_BUDGET (ratio of
// requests over the 10 s window, at least MIN_PER_SEC × 10), and answers
// whose retry was refused say retry-budget-exhausted.
func TestRetryStormBudget(t *testing.T) {
	requireNetns(t)
	// Not parallel: it loads the machine, and the other tests time things.
	const (
		clients   = 200
		duration  = 3 * time.Second
		ratio     = 0.2
		minPerSec = 10
		window    = 10 // seconds, the contract's budget window
	)
	s := newResilienceSetup(t, 3,
		"MESHD_RETRY_MAX=2",
		"MESHD_RETRY_BUDGET=0.2",
		"MESHD_RETRY_BUDGET_MIN_PER_SEC="+strconv.Itoa(minPerSec),
		"MESHD_BREAKER_CONSECUTIVE_FAILURES=0",
		"MESHD_BREAKER_FAILURE_RATIO=1",
		"MESHD_BREAKER_MIN_REQUESTS=1000000",
		"MESHD_EJECT_CONSECUTIVE_FAILURES=0")
	for _, in := range s.insts {
		in.fail.Store(true)
	}
	s.app.Transport.(*http.Transport).MaxIdleConnsPerHost = clients

	var (
		requests, exhausted, errs, wrong atomic.Int64
		firstErr                         atomic.Value
		wg                               sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(duration)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				requests.Add(1)
				a, err := send(s.app, http.MethodGet, s.url, "payments", "")
				switch {
				case err != nil:
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				case a.status != http.StatusServiceUnavailable || !strings.HasSuffix(a.body, "is failing"):
					wrong.Add(1)
					firstErr.CompareAndSwap(nil, a.String())
				case a.meshdError == "retry-budget-exhausted":
					exhausted.Add(1)
				case a.meshdError != "":
					wrong.Add(1)
					firstErr.CompareAndSwap(nil, a.String())
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	r, u := requests.Load(), totalHits(s.insts)
	retries := u - r
	allowed := max(int64(ratio*float64(r)), minPerSec*window)
	slack := r / 100 // window edges
	t.Logf("%d clients for %v: R=%d client requests, U=%d upstream attempts, U/R=%.3f, retries=%d (%.1f%% of R), budget allows %d; %d answers retry-budget-exhausted",
		clients, elapsed.Round(time.Millisecond), r, u, float64(u)/float64(r), retries, 100*float64(retries)/float64(r), allowed, exhausted.Load())
	if n := errs.Load() + wrong.Load(); n > 0 {
		t.Errorf("%d requests failed (%d errors, %d unexpected answers); first: %v", n, errs.Load(), wrong.Load(), firstErr.Load())
	}
	if retries < 0 || retries > allowed+slack {
		t.Errorf("%d retries for %d requests: over the budget max(%.1f × R, %d × %d s) = %d", retries, r, ratio, minPerSec, window, allowed)
	}
	if exhausted.Load() == 0 {
		t.Errorf("no answer carried X-Meshd-Error: retry-budget-exhausted")
	}
	if retries < allowed/2 {
		t.Errorf("only %d retries of the %d the budget allows: retries starved", retries, allowed)
	}
}

// TestOverloadLimit: with MESHD_MAX_REQUESTS_PER_UPSTREAM=2 and instances
// that hold each request 1 s, 6 concurrent requests: 2 reach the instances,
// the others are refused at once with 503 overloaded; the slots are given
// back afterwards.
func TestOverloadLimit(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	const hold = time.Second
	s := newResilienceSetup(t, 3, "MESHD_MAX_REQUESTS_PER_UPSTREAM=2")
	for _, in := range s.insts {
		in.delay.Store(int64(hold))
	}
	fl := s.insts[0].fleet

	burst := func(n int) []answer {
		out := make([]answer, n)
		errs := make([]error, n)
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				out[i], errs[i] = send(s.app, http.MethodGet, s.url, "payments", "")
			}()
		}
		close(gate)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("concurrent request %d: %v", i, err)
			}
		}
		return out
	}

	var ok, overloaded int
	for i, a := range burst(6) {
		t.Logf("request %d: %v", i, a)
		switch {
		case a.status == http.StatusOK:
			ok++
			if a.took < hold {
				t.Errorf("request %d: 200 after %v, before the instance's hold of %v", i, a.took, hold)
			}
		case a.status == http.StatusServiceUnavailable && a.meshdError == "overloaded":
			overloaded++
			if a.took > 300*time.Millisecond {
				t.Errorf("request %d: overloaded after %v, want at once (< 300ms)", i, a.took)
			}
		default:
			t.Errorf("request %d: %v; want 200 or 503 overloaded", i, a)
		}
	}
	if p := fl.peak.Load(); p > 2 {
		t.Errorf("%d requests inside the instances at once, want at most 2", p)
	}
	if ok != 2 || overloaded != 4 {
		t.Errorf("%d answered 200, %d overloaded; want 2 and 4", ok, overloaded)
	}
	if n := totalHits(s.insts); n != int64(ok) {
		t.Errorf("instances got %d requests, want the %d that were let through", n, ok)
	}

	// The slots were given back: two at once go through again.
	for _, in := range s.insts {
		in.delay.Store(int64(200 * time.Millisecond))
	}
	for i, a := range burst(2) {
		if a.status != http.StatusOK {
			t.Errorf("request %d of 2 after the burst: %v; want 200", i, a)
		}
	}
}

// synCount reads how many TCP SYNs to port reached pod b, from a counting
// rule in b's own INPUT chain (added by countSYNs).
func synCount(t *testing.T, b *netnstest.Pod, port uint16) int {
	t.Helper()
	out := b.Run(t, "iptables", "-w", "-n", "-v", "-x", "-L", "INPUT")
	for line := range strings.Lines(out) {
		if strings.Contains(line, fmt.Sprintf("dpt:%d ", port)) {
			if f := strings.Fields(line); len(f) > 0 {
				n, err := strconv.Atoi(f[0])
				if err == nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no SYN counting rule for port %d in %s:\n%s", port, b.Name, out)
	return 0
}

// TestBreakerOpaqueTCP: opaque TCP to an endpoint of static service db,
// where nothing listens: after MESHD_BREAKER_CONSECUTIVE_FAILURES refused
// connects the breaker opens, and then connections are closed at once,
// without meshd dialling (no SYN reaches pod B).
func TestBreakerOpaqueTCP(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	const trip = 3
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)
	db := hostPort(b.Addr, 9000)
	// A rule without target that only counts the SYNs to 9000 in pod B.
	b.Run(t, "iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "9000", "--syn")
	startMeshd(t, a,
		"MESHD_STATIC_ENDPOINTS=db="+db,
		"MESHD_DETECT_TIMEOUT=300ms",
		"MESHD_CONNECT_TIMEOUT=1s",
		"MESHD_BREAKER_CONSECUTIVE_FAILURES="+strconv.Itoa(trip),
		"MESHD_BREAKER_OPEN_TIMEOUT=30s")
	admin := podClient(t, a)

	// connect dials db from A's app, sends one byte that is not HTTP and
	// returns how the connection ended and when.
	connect := func(t *testing.T) (time.Duration, error) {
		t.Helper()
		start := time.Now()
		c := mustDial(t, a, db)
		_ = c.SetDeadline(start.Add(5 * time.Second))
		_, _ = c.Write([]byte{0}) // may fail once meshd has reset it
		got, err := io.ReadAll(c)
		took := time.Since(start)
		c.Close()
		if len(got) > 0 {
			t.Fatalf("read %q from %s, where nothing listens", got, db)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection to %s still open after %v", db, took)
		}
		if err == nil {
			err = io.EOF
		}
		return took, err
	}

	var u upstreamBreakers
	conns := 0
	for u.State != "open" {
		if conns == 3*trip {
			t.Fatalf("db breaker still %q after %d refused connects (counts %+v), want open after %d", u.State, conns, u.Counts, trip)
		}
		took, err := connect(t)
		conns++
		t.Logf("connection %d: closed after %v (%v)", conns, took.Round(time.Microsecond), err)
		doc := breakers(t, admin)
		var ok bool
		if u, ok = doc.Upstreams["db"]; !ok {
			t.Fatalf("/breakers has no upstream db after a connection to its endpoint %s: %+v", db, doc)
		}
	}
	syns := synCount(t, b, 9000)
	t.Logf("db open after %d connections (%d SYNs reached B): reason %q, counts %+v", conns, syns, u.Reason, u.Counts)
	if conns != trip {
		t.Errorf("db breaker opened after %d refused connects, want %d", conns, trip)
	}
	if u.Reason == "" {
		t.Errorf("open breaker without a reason")
	}
	if syns < conns {
		t.Errorf("only %d SYNs reached %s for %d connections", syns, db, conns)
	}

	for i := range 5 {
		took, err := connect(t)
		t.Logf("connection while open: closed after %v (%v)", took.Round(time.Microsecond), err)
		if took > 100*time.Millisecond {
			t.Errorf("connection %d while open: closed after %v, want at once (connect timeout 1s)", i, took)
		}
	}
	if after := synCount(t, b, 9000); after != syns {
		t.Errorf("meshd dialled %s %d times while its breaker was open", db, after-syns)
	}
	if u := upstreamBreaker(t, admin, "db"); u.State != "open" {
		t.Errorf("db breaker %q after the refused connections, want open", u.State)
	}
}

// TestCutResponse: an upstream closes its connection half way through a
// response body. A body within MESHD_RETRY_BODY_MAX is read whole before
// meshd answers, so the cut is a failed attempt: retried when the request
// allows (the client gets the whole body of the next attempt) and
// answered 502 reset when no attempt is left. A larger body is streamed,
// so its cut reaches the client as a cut. Every request is counted in
// meshd_requests_total and access-logged either way.
func TestCutResponse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var hits sync.Map // path → *atomic.Int64
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _ := hits.LoadOrStore(r.URL.Path, new(atomic.Int64))
		n := v.(*atomic.Int64).Add(1)
		size := 2 << 10
		if strings.HasSuffix(r.URL.Path, "-big") {
			size = 128 << 10 // over MESHD_RETRY_BODY_MAX
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.WriteHeader(http.StatusOK)
		if strings.HasPrefix(r.URL.Path, "/once") && n > 1 {
			_, _ = io.WriteString(w, strings.Repeat("w", size))
			return
		}
		_, _ = io.WriteString(w, strings.Repeat("c", size/2))
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // closes the connection mid-body
	})}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	m := startLoopbackMeshd(t, "MESHD_STATIC_ENDPOINTS=cut="+ln.Addr().String(), "MESHD_ACCESS_LOG=true",
		"MESHD_RETRY_BACKOFF_BASE=1ms")
	m.ready(t, http.StatusOK, 15*time.Second)

	cases := []struct {
		path     string
		status   int    // 0: the client gets no whole answer
		meshdErr string // x-meshd-error
		body     int    // whole body bytes, for status 200
		hits     int64  // attempts that reached the upstream
		cut      bool   // the access log says the answer was cut
	}{
		{path: "/once", status: http.StatusOK, body: 2 << 10, hits: 2},
		{path: "/always", status: http.StatusBadGateway, meshdErr: "reset", hits: 3},
		{path: "/always-big", status: 0, hits: 1, cut: true},
	}
	for _, tc := range cases {
		c, err := net.DialTimeout("tcp", m.outbound, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = fmt.Fprintf(c, "GET http://cut%s HTTP/1.1\r\nHost: cut\r\nConnection: close\r\n\r\n", tc.path)
		got, rerr := io.ReadAll(c)
		c.Close()
		head, body, _ := strings.Cut(string(got), "\r\n\r\n")
		t.Logf("%s: the client got %q and %d body bytes, then %v", tc.path, firstLine(head), len(body), rerr)
		resp, perr := http.ReadResponse(bufio.NewReader(strings.NewReader(string(got))), nil)
		whole := perr == nil
		var b []byte
		if whole {
			b, perr = io.ReadAll(resp.Body)
			whole = perr == nil
		}
		switch {
		case tc.status == 0 && whole:
			t.Errorf("%s: a whole answer %d with %d body bytes, want the cut passed on", tc.path, resp.StatusCode, len(b))
		case tc.status != 0 && !whole:
			t.Errorf("%s: no whole answer (%v), want %d", tc.path, perr, tc.status)
		case tc.status != 0 && (resp.StatusCode != tc.status || resp.Header.Get("X-Meshd-Error") != tc.meshdErr):
			t.Errorf("%s: %d x-meshd-error %q, want %d %q", tc.path, resp.StatusCode, resp.Header.Get("X-Meshd-Error"), tc.status, tc.meshdErr)
		case tc.status == http.StatusOK && len(b) != tc.body:
			t.Errorf("%s: %d body bytes, want %d", tc.path, len(b), tc.body)
		}
		if v, _ := hits.Load(tc.path); v == nil || v.(*atomic.Int64).Load() != tc.hits {
			t.Errorf("%s: the upstream saw %v attempts, want %d", tc.path, v, tc.hits)
		}
	}

	// The access log line is written when the request's handling ends.
	deadline := time.Now().Add(3 * time.Second)
	for {
		var missing []string
		out := m.output()
		metrics, err := adminGet(m.admin, "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		counted := 0
		for _, l := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(l, "meshd_requests_total{") && strings.Contains(l, `upstream="cut"`) {
				var v int
				_, _ = fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v)
				counted += v
			}
		}
		if counted != len(cases) {
			missing = append(missing, fmt.Sprintf("%d requests in meshd_requests_total, want %d", counted, len(cases)))
		}
		for _, tc := range cases {
			if !strings.Contains(out, fmt.Sprintf(`"path":%q`, tc.path)) {
				missing = append(missing, "no access log line for "+tc.path)
			} else if tc.cut && !strings.Contains(out, `"cut":true`) {
				missing = append(missing, "the access log line of "+tc.path+" does not say cut")
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the cut responses: %s", strings.Join(missing, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
