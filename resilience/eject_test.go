package resilience

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
)

type ejectEventRec struct {
	addr     string
	from, to State
}

type ejectRecorder struct {
	mu  sync.Mutex
	got []ejectEventRec
}

func (r *ejectRecorder) onChange(name, addr string, from, to State) {
	r.mu.Lock()
	r.got = append(r.got, ejectEventRec{addr, from, to})
	r.mu.Unlock()
}

func (r *ejectRecorder) expect(t *testing.T, want ...ejectEventRec) {
	t.Helper()
	r.mu.Lock()
	got := r.got
	r.got = nil
	r.mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("transitions = %v, want %v", got, want)
	}
}

func ejectPolicy(failures int, base time.Duration, percent int) config.Policy {
	return config.Policy{EjectConsecutiveFailures: failures, EjectBaseTime: base, EjectMaxPercent: percent}
}

func fail(h *EndpointHealth, n int) {
	for range n {
		if h.Begin() {
			h.Done(true)
		}
	}
}

func TestEjectLifecycle(t *testing.T) {
	clk := newFakeClock()
	var rec ejectRecorder
	e := NewEjector("payments", ejectPolicy(3, 10*time.Second, 50), clk, rec.onChange)
	e.Sync([]string{"a", "b"})
	a := e.Endpoint("a")
	t0 := clk.Now()

	fail(a, 2)
	a.Begin()
	a.Done(false) // a success resets the run
	fail(a, 2)
	if !a.Usable() {
		t.Fatal("ejected after 2 failures in a row, want 3")
	}
	fail(a, 1)
	rec.expect(t, ejectEventRec{"a", StateClosed, StateOpen})
	if a.Usable() || e.Usable("a") || a.Begin() || e.Begin("a") {
		t.Fatal("ejected endpoint usable")
	}
	if v := e.View()["a"]; v.State != StateOpen || !v.Since.Equal(t0) || v.Ejections != 1 || !v.Until.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("View = %+v", v)
	}

	clk.Advance(10*time.Second - 1)
	if a.Usable() {
		t.Fatal("usable before base × 1")
	}
	clk.Advance(1)
	if !a.Usable() || a.State() != StateHalfOpen {
		t.Fatalf("at base × 1: usable %v, state %v; want half-open", a.Usable(), a.State())
	}
	rec.expect(t, ejectEventRec{"a", StateOpen, StateHalfOpen})
	if !a.Begin() {
		t.Fatal("half-open: probe refused")
	}
	if a.Usable() || a.Begin() || e.Begin("a") {
		t.Fatal("half-open: a second probe allowed")
	}
	a.Done(true) // the probe fails: ejected for base × 2
	rec.expect(t, ejectEventRec{"a", StateHalfOpen, StateOpen})
	if v := e.View()["a"]; v.State != StateOpen || v.Ejections != 2 || v.ConsecutiveFailures != 4 {
		t.Fatalf("after a failed probe: %+v", v)
	}
	clk.Advance(20*time.Second - 1)
	if a.Usable() {
		t.Fatal("usable before base × 2")
	}
	clk.Advance(1)
	if !e.Begin("a") {
		t.Fatal("probe refused after base × 2")
	}
	e.Done("a", false) // the probe succeeds
	rec.expect(t, ejectEventRec{"a", StateOpen, StateHalfOpen}, ejectEventRec{"a", StateHalfOpen, StateClosed})
	if v := e.View()["a"]; v.State != StateClosed || v.ConsecutiveFailures != 0 || v.Ejections != 2 || !v.Since.Equal(clk.Now()) {
		t.Fatalf("after a good probe: %+v", v)
	}
	if !a.Usable() || !a.Begin() || !a.Begin() {
		t.Fatal("closed endpoint refused")
	}
}

func TestEjectStaleOutcomes(t *testing.T) {
	clk := newFakeClock()
	var rec ejectRecorder
	e := NewEjector("payments", ejectPolicy(2, time.Second, 100), clk, rec.onChange)
	e.Sync([]string{"a"})
	a := e.Endpoint("a")
	// Three attempts begin while closed; two fail and eject it.
	for range 3 {
		a.Begin()
	}
	a.Done(true)
	a.Done(true)
	a.Done(false) // began before the ejection: ignored while open
	if a.State() != StateOpen {
		t.Fatalf("state %v, want open", a.State())
	}
	clk.Advance(time.Second)
	a.Done(false) // half-open with no probe out: ignored
	if a.State() != StateHalfOpen {
		t.Fatalf("state %v, want half-open", a.State())
	}
	rec.expect(t, ejectEventRec{"a", StateClosed, StateOpen}, ejectEventRec{"a", StateOpen, StateHalfOpen})
}

func TestEjectDurationGrowsAndCaps(t *testing.T) {
	clk := newFakeClock()
	e := NewEjector("payments", ejectPolicy(1, time.Minute, 100), clk, nil)
	e.Sync([]string{"a"})
	a := e.Endpoint("a")
	fail(a, 1)
	want := []time.Duration{1, 2, 3, 4, 5, 5, 5}
	for i, w := range want {
		w *= time.Minute
		v := e.View()["a"]
		if v.State != StateOpen || v.Until.Sub(v.Since) != w || v.Ejections != i+1 {
			t.Fatalf("ejection %d: %+v, want open for %v", i+1, v, w)
		}
		clk.Advance(w)
		if !a.Begin() {
			t.Fatalf("ejection %d: no probe after %v", i+1, w)
		}
		a.Done(true)
	}
}

func TestEjectMultiplierDecays(t *testing.T) {
	tests := []struct {
		name     string
		closed   time.Duration // time spent closed before failing again
		wantNext time.Duration // length of the next ejection
	}{
		{"fails again at once", 0, 30 * time.Second},
		{"closed less than one base", 9 * time.Second, 30 * time.Second},
		{"closed one base", 10 * time.Second, 20 * time.Second},
		{"closed two bases", 25 * time.Second, 10 * time.Second},
		{"closed long", time.Hour, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			e := NewEjector("payments", ejectPolicy(1, 10*time.Second, 100), clk, nil)
			e.Sync([]string{"a"})
			a := e.Endpoint("a")
			fail(a, 1) // ejected for 10 s
			clk.Advance(10 * time.Second)
			fail(a, 1) // failed probe: 20 s
			clk.Advance(20 * time.Second)
			a.Begin()
			a.Done(false) // closed, multiplier 2
			clk.Advance(tt.closed)
			fail(a, 1)
			if v := e.View()["a"]; v.Until.Sub(v.Since) != tt.wantNext || v.Ejections != 3 {
				t.Fatalf("next ejection %+v, want %v", v, tt.wantNext)
			}
		})
	}
}

func TestEjectMaxPercent(t *testing.T) {
	tests := []struct {
		endpoints, percent, threshold int
		wantOpen                      int
	}{
		{3, 50, 3, 1},
		{1, 50, 3, 0},
		{1, 100, 3, 1},
		{4, 50, 3, 2},
		{10, 0, 3, 0},
		{10, 100, 3, 10},
		{10, 34, 3, 3},
		{3, 100, 0, 0}, // threshold 0: never eject
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d endpoints %d%% threshold %d", tt.endpoints, tt.percent, tt.threshold), func(t *testing.T) {
			clk := newFakeClock()
			e := NewEjector("payments", ejectPolicy(tt.threshold, time.Minute, tt.percent), clk, nil)
			var addrs []string
			for i := range tt.endpoints {
				addrs = append(addrs, fmt.Sprintf("10.0.0.%d:80", i+1))
			}
			e.Sync(addrs)
			for _, a := range addrs {
				fail(e.Endpoint(a), 10)
			}
			open := 0
			for a, v := range e.View() {
				switch v.State {
				case StateOpen:
					open++
				case StateClosed:
					if v.ConsecutiveFailures != 10 {
						t.Errorf("%s spared by the cap: %d failures counted, want 10", a, v.ConsecutiveFailures)
					}
					if !e.Usable(a) {
						t.Errorf("%s spared by the cap but not usable", a)
					}
				}
			}
			if open != tt.wantOpen {
				t.Fatalf("%d open, want %d", open, tt.wantOpen)
			}
		})
	}
}

func TestEjectMaxPercentFreedSlot(t *testing.T) {
	clk := newFakeClock()
	var rec ejectRecorder
	e := NewEjector("payments", ejectPolicy(3, 10*time.Second, 50), clk, rec.onChange)
	e.Sync([]string{"a", "b", "c"})
	a, b := e.Endpoint("a"), e.Endpoint("b")
	fail(a, 3)
	fail(b, 3)
	rec.expect(t, ejectEventRec{"a", StateClosed, StateOpen})
	if !b.Usable() {
		t.Fatal("b ejected beyond the cap")
	}
	clk.Advance(10 * time.Second) // a's ejection ends: half-open does not count
	fail(b, 1)
	if b.State() != StateOpen {
		t.Fatalf("b %v, want open once a slot is free", b.State())
	}
	// a's probe fails but b holds the only slot: a goes back into rotation.
	fail(a, 1)
	if a.State() != StateClosed || !a.Usable() {
		t.Fatalf("a %v, want closed (cap reached)", a.State())
	}
	rec.expect(t,
		ejectEventRec{"a", StateOpen, StateHalfOpen},
		ejectEventRec{"b", StateClosed, StateOpen},
		ejectEventRec{"a", StateHalfOpen, StateClosed})
	if v := e.View()["a"]; v.ConsecutiveFailures != 4 {
		t.Fatalf("a %+v, want its 4 failures counted", v)
	}
}

func TestEjectPanic(t *testing.T) {
	clk := newFakeClock()
	e := NewEjector("payments", ejectPolicy(2, 10*time.Second, 100), clk, nil)
	if e.Panic() || e.LeastBad(nil) != "" {
		t.Fatal("panic with no endpoints")
	}
	e.Sync([]string{"a", "b", "c"})
	a, b, c := e.Endpoint("a"), e.Endpoint("b"), e.Endpoint("c")

	fail(b, 2) // t=0: b open until 10 s
	clk.Advance(10 * time.Second)
	fail(b, 1) // t=10: b's probe fails: 3 failures, open until 30 s
	fail(a, 2) // t=10: a open until 20 s
	clk.Advance(10 * time.Second)
	a.Begin()
	a.Done(false) // t=20: a's probe succeeds
	fail(a, 2)    // a open again, multiplier 2: until 40 s, 2 failures
	if e.Panic() {
		t.Fatal("panic while c is usable")
	}
	if got := e.LeastBad(nil); got != "c" {
		t.Fatalf("LeastBad = %q, want the usable c", got)
	}
	fail(c, 2) // c open until 30 s, 2 failures
	if !e.Panic() {
		t.Fatal("no panic with every endpoint ejected")
	}
	tests := []struct {
		addrs []string
		want  string
	}{
		{nil, "c"},                          // a and c have 2 failures; c's ejection ends first
		{[]string{"b", "a"}, "a"},           // fewer failures beats an earlier end
		{[]string{"b"}, "b"},                // the only candidate
		{[]string{"b", "new:80"}, "new:80"}, // untracked: usable, no failures
	}
	for _, tt := range tests {
		if got := e.LeastBad(tt.addrs); got != tt.want {
			t.Errorf("LeastBad(%v) = %q, want %q", tt.addrs, got, tt.want)
		}
	}
	clk.Advance(10 * time.Second) // t=30: b and c are half-open
	if e.Panic() {
		t.Fatal("panic with half-open endpoints")
	}
	b.Begin()
	c.Begin()
	if !e.Panic() {
		t.Fatal("no panic with every probe out")
	}
}

func TestEjectSync(t *testing.T) {
	clk := newFakeClock()
	e := NewEjector("payments", ejectPolicy(1, time.Minute, 100), clk, nil)
	e.Sync([]string{"a"})
	old := e.Endpoint("a")
	fail(old, 1)
	clk.Advance(time.Second)
	e.Sync([]string{"a", "b", "b"})
	if e.Endpoint("a") != old {
		t.Fatal("Sync replaced a known endpoint")
	}
	v := e.View()
	if len(v) != 2 || v["a"].State != StateOpen || v["b"].State != StateClosed || !v["b"].Since.Equal(clk.Now()) {
		t.Fatalf("View = %+v", v)
	}
	e.Sync([]string{"b"})
	if e.Endpoint("a") != nil || len(e.View()) != 1 {
		t.Fatalf("a not forgotten: %+v", e.View())
	}
	// The forgotten endpoint and unknown addresses are inert.
	clk.Advance(time.Hour)
	old.Done(true)
	if !e.Usable("a") || !e.Begin("a") {
		t.Fatal("unknown address not usable")
	}
	e.Done("a", true)
	e.Sync([]string{"a", "b"})
	if h := e.Endpoint("a"); h == old || h.State() != StateClosed {
		t.Fatal("re-added endpoint kept its old state")
	}
	var nilH *EndpointHealth
	if !nilH.Usable() || !nilH.Begin() || nilH.State() != StateClosed || nilH.Addr() != "" {
		t.Fatal("nil endpoint not inert")
	}
	nilH.Done(true)
}

func TestEjectConcurrent(t *testing.T) {
	clk := newFakeClock()
	var rec ejectRecorder
	e := NewEjector("payments", ejectPolicy(2, time.Second, 50), clk, rec.onChange)
	addrs := []string{"a", "b", "c", "d", "e"}
	e.Sync(addrs)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 2000 {
				a := addrs[r.IntN(len(addrs))]
				if e.Usable(a) && e.Begin(a) {
					e.Done(a, r.IntN(3) == 0)
				}
				switch i % 100 {
				case 0:
					clk.Advance(100 * time.Millisecond)
				case 50:
					open := 0
					for _, v := range e.View() {
						if v.State == StateOpen {
							open++
						}
					}
					if open > 2 { // 50% of 5
						t.Errorf("%d endpoints open, cap is 2", open)
					}
				}
				if w == 0 && i%500 == 0 {
					e.Sync(addrs[:3+i%3])
				}
				e.Panic()
			}
		})
	}
	wg.Wait()
}
