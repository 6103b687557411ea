package balance

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// scriptedRand returns the values in vals in order and records the n of
// every call. It fails the test when a value is out of range or the script
// runs out, so it also checks how many draws Pick makes.
type scriptedRand struct {
	t     *testing.T
	vals  []int
	calls []int
}

func (r *scriptedRand) IntN(n int) int {
	r.t.Helper()
	r.calls = append(r.calls, n)
	if len(r.vals) == 0 {
		r.t.Fatalf("IntN(%d) called more often than scripted", n)
	}
	v := r.vals[0]
	r.vals = r.vals[1:]
	if v < 0 || v >= n {
		r.t.Fatalf("scripted value %d out of range for IntN(%d)", v, n)
	}
	return v
}

// endpoints returns one endpoint per load, named A, B, C..., each with
// that many requests outstanding.
func endpoints(loads ...int) []*Endpoint {
	eps := make([]*Endpoint, len(loads))
	for i, l := range loads {
		eps[i] = NewEndpoint(string(rune('A' + i)))
		for range l {
			eps[i].Acquire()
		}
	}
	return eps
}

// skipAddrs returns a skip function that excludes the named endpoints.
func skipAddrs(addrs ...string) func(*Endpoint) bool {
	if addrs == nil {
		return nil
	}
	return func(e *Endpoint) bool {
		for _, a := range addrs {
			if e.Addr == a {
				return true
			}
		}
		return false
	}
}

func TestEndpoint(t *testing.T) {
	e := NewEndpoint("10.0.0.1:8080")
	if e.Addr != "10.0.0.1:8080" || e.Outstanding() != 0 {
		t.Fatalf("NewEndpoint = %q with %d outstanding; want 10.0.0.1:8080 with 0", e.Addr, e.Outstanding())
	}
	e.Acquire()
	e.Acquire()
	e.Release()
	if got := e.Outstanding(); got != 1 {
		t.Fatalf("after 2 Acquire and 1 Release, Outstanding = %d; want 1", got)
	}
}

// TestPickDistribution makes 3000 seeded picks and checks how they spread.
func TestPickDistribution(t *testing.T) {
	t.Parallel()
	const picks = 3000
	tests := []struct {
		desc  string
		loads []int
		skip  []string
		want  map[string][2]int // address → [min, max] picks
	}{
		{
			desc:  "equal load, a third each",
			loads: []int{0, 0, 0},
			want:  map[string][2]int{"A": {900, 1100}, "B": {900, 1100}, "C": {900, 1100}},
		},
		{
			desc:  "equal load, skip that excludes nothing",
			loads: []int{0, 0, 0},
			skip:  []string{},
			want:  map[string][2]int{"A": {900, 1100}, "B": {900, 1100}, "C": {900, 1100}},
		},
		{
			desc:  "equal load, one of four skipped",
			loads: []int{0, 0, 0, 0},
			skip:  []string{"B"},
			want:  map[string][2]int{"A": {900, 1100}, "C": {900, 1100}, "D": {900, 1100}},
		},
		{
			// Any two distinct draws include B or C.
			desc:  "busiest of three never wins",
			loads: []int{100, 0, 0},
			want:  map[string][2]int{"A": {0, 0}, "B": {1350, 1650}, "C": {1350, 1650}},
		},
		{
			desc:  "two endpoints, the less busy always wins",
			loads: []int{5, 4},
			want:  map[string][2]int{"A": {0, 0}, "B": {picks, picks}},
		},
		{
			// The idlest wins every pair it is in: 2 of 3 pairs.
			desc:  "graded load",
			loads: []int{0, 1, 2},
			want:  map[string][2]int{"A": {1800, 2200}, "B": {900, 1100}, "C": {0, 0}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			eps := endpoints(tt.loads...)
			r := rand.New(rand.NewPCG(1, 2))
			skip := skipAddrs(tt.skip...)
			if tt.skip != nil && skip == nil {
				skip = func(*Endpoint) bool { return false }
			}
			got := map[string]int{}
			for range picks {
				e := Pick(eps, r, skip)
				if e == nil {
					t.Fatal("Pick returned nil")
				}
				got[e.Addr]++
			}
			for addr, n := range got {
				if _, ok := tt.want[addr]; !ok {
					t.Errorf("%s picked %d times; want never", addr, n)
				}
			}
			for addr, bounds := range tt.want {
				if n := got[addr]; n < bounds[0] || n > bounds[1] {
					t.Errorf("%s picked %d times; want %d..%d (all: %v)", addr, n, bounds[0], bounds[1], got)
				}
			}
		})
	}
}

// TestPickScripted pins the exact draws and the tie rule with a scripted
// Rand.
func TestPickScripted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc      string
		loads     []int
		skip      []string
		script    []int
		want      string // "" for nil
		wantCalls []int
	}{
		{desc: "tie: first drawn wins", loads: []int{0, 0, 0}, script: []int{2, 0}, want: "C", wantCalls: []int{3, 2}},
		{desc: "tie, other order", loads: []int{0, 0, 0}, script: []int{0, 1}, want: "A", wantCalls: []int{3, 2}},
		{desc: "second draw shifted past the first", loads: []int{1, 0, 1}, script: []int{0, 0}, want: "B", wantCalls: []int{3, 2}},
		{desc: "second draw below the first is kept", loads: []int{0, 1, 1}, script: []int{2, 0}, want: "A", wantCalls: []int{3, 2}},
		{desc: "less loaded second wins", loads: []int{3, 2, 9}, script: []int{0, 0}, want: "B", wantCalls: []int{3, 2}},
		{desc: "less loaded first wins", loads: []int{3, 2, 9}, script: []int{1, 1}, want: "B", wantCalls: []int{3, 2}},
		{desc: "two endpoints", loads: []int{0, 0}, script: []int{1, 0}, want: "B", wantCalls: []int{2, 1}},
		{desc: "draws index the usable ones", loads: []int{0, 0, 0, 0}, skip: []string{"B"}, script: []int{1, 1}, want: "C", wantCalls: []int{3, 2}},
		{desc: "draws index the usable ones, last", loads: []int{0, 0, 5, 0}, skip: []string{"A"}, script: []int{1, 1}, want: "D", wantCalls: []int{3, 2}},
		{desc: "one endpoint: no draw", loads: []int{7}, want: "A"},
		{desc: "one usable endpoint: no draw", loads: []int{0, 0, 0}, skip: []string{"A", "C"}, want: "B"},
		{desc: "all skipped", loads: []int{0, 0}, skip: []string{"A", "B"}, want: ""},
		{desc: "no endpoints", loads: nil, want: ""},
		{desc: "no endpoints, with skip", loads: nil, skip: []string{"A"}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			r := &scriptedRand{t: t, vals: tt.script}
			e := Pick(endpoints(tt.loads...), r, skipAddrs(tt.skip...))
			got := ""
			if e != nil {
				got = e.Addr
			}
			if got != tt.want {
				t.Errorf("Pick = %q; want %q", got, tt.want)
			}
			if fmt.Sprint(r.calls) != fmt.Sprint(tt.wantCalls) {
				t.Errorf("IntN called with %v; want %v", r.calls, tt.wantCalls)
			}
			if len(r.vals) != 0 {
				t.Errorf("%d scripted values left unused", len(r.vals))
			}
		})
	}
}

// TestDraw2 checks that every script of the two draws gives two distinct
// indexes, and that together the scripts cover each ordered pair exactly
// once, so every pair is equally likely.
func TestDraw2(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2, 3, 5, 64} {
		seen := map[[2]int]bool{}
		for x := range n {
			for y := range n - 1 {
				i, j := draw2(&scriptedRand{t: t, vals: []int{x, y}}, n)
				if i == j || i < 0 || j < 0 || i >= n || j >= n {
					t.Fatalf("n=%d, draws %d, %d → indexes %d, %d; want distinct, in range", n, x, y, i, j)
				}
				seen[[2]int{i, j}] = true
			}
		}
		if want := n * (n - 1); len(seen) != want {
			t.Errorf("n=%d: %d distinct ordered pairs; want %d", n, len(seen), want)
		}
	}
}

func TestPickNilRand(t *testing.T) {
	t.Parallel()
	eps := endpoints(0, 0, 0)
	got := map[string]int{}
	for range 300 {
		e := Pick(eps, nil, nil)
		if e == nil {
			t.Fatal("Pick returned nil")
		}
		got[e.Addr]++
	}
	if len(got) != 3 {
		t.Errorf("300 picks with the default source reached %v; want all three", got)
	}
}

// TestPickSkipChangesMind gives Pick a skip function whose answers change
// during the call, as when an ejection lands mid-pick: Pick must not panic
// and must not return an endpoint skipped on the second look.
func TestPickSkipChangesMind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc   string
		second func(e *Endpoint) bool // skip's answers after the counting pass
		script []int
		want   string
	}{
		{desc: "everything ejected", second: func(*Endpoint) bool { return true }, script: []int{0, 0}, want: ""},
		{desc: "first draw ejected", second: func(e *Endpoint) bool { return e.Addr == "A" }, script: []int{2, 0}, want: "D"},
		{desc: "only one left", second: func(e *Endpoint) bool { return e.Addr != "B" }, script: []int{0, 0}, want: "B"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			eps := endpoints(0, 0, 0, 0)
			calls := 0
			skip := func(e *Endpoint) bool {
				calls++
				if calls <= len(eps) {
					return false
				}
				return tt.second(e)
			}
			e := Pick(eps, &scriptedRand{t: t, vals: tt.script}, skip)
			got := ""
			if e != nil {
				got = e.Addr
			}
			if got != tt.want {
				t.Errorf("Pick = %q; want %q", got, tt.want)
			}
		})
	}
}

// TestConcurrent runs Acquire, Release and Pick from many goroutines; run
// it with -race.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	const workers, rounds = 8, 2000
	eps := endpoints(0, 0, 0, 0)
	held := NewEndpoint("held")
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range rounds {
				e := Pick(eps, nil, func(e *Endpoint) bool { return e.Outstanding() > 1000 })
				e.Acquire()
				held.Acquire()
				e.Release()
			}
		})
	}
	wg.Wait()
	for _, e := range eps {
		if got := e.Outstanding(); got != 0 {
			t.Errorf("%s: %d outstanding after every Release; want 0", e.Addr, got)
		}
	}
	if got := held.Outstanding(); got != workers*rounds {
		t.Errorf("held: %d outstanding; want %d", got, workers*rounds)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	eps := endpoints(make([]int, 64)...)
	r := rand.New(rand.NewPCG(1, 2))
	skip := skipAddrs("C", "K", "Q")
	tests := []struct {
		desc string
		skip func(*Endpoint) bool
	}{
		{"no skip", nil},
		{"skip three of 64", skip},
	}
	for _, tt := range tests {
		if avg := testing.AllocsPerRun(1000, func() { Pick(eps, r, tt.skip) }); avg != 0 {
			t.Errorf("%s: Pick allocates %v times per call; want 0", tt.desc, avg)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 16, 64} {
		eps := endpoints(make([]int, n)...)
		for i, e := range eps {
			for range i % 5 {
				e.Acquire()
			}
		}
		tried := eps[1]
		variants := []struct {
			name string
			r    Rand
			skip func(*Endpoint) bool
		}{
			{"seeded", rand.New(rand.NewPCG(1, 2)), nil},
			{"seeded-skip", rand.New(rand.NewPCG(1, 2)), func(e *Endpoint) bool { return e == tried || e.Outstanding() > 3 }},
			{"default-rand", nil, nil},
		}
		for _, v := range variants {
			b.Run(fmt.Sprintf("n=%d/%s", n, v.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if Pick(eps, v.r, v.skip) == nil {
						b.Fatal("nil")
					}
				}
			})
		}
	}
}
