package resilience

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
)

type transition struct {
	from, to State
	reason   string
}

// recorder collects a Breaker's onChange calls.
type recorder struct {
	mu  sync.Mutex
	got []transition
}

func (r *recorder) onChange(t *testing.T) func(string, State, State, string) {
	return func(name string, from, to State, reason string) {
		if name != "payments" {
			t.Errorf("onChange name %q", name)
		}
		r.mu.Lock()
		r.got = append(r.got, transition{from, to, reason})
		r.mu.Unlock()
	}
}

func (r *recorder) take() []transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := r.got
	r.got = nil
	return got
}

func (r *recorder) expect(t *testing.T, want ...transition) {
	t.Helper()
	got := r.take()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("transitions = %v, want %v", got, want)
	}
}

func breakerPolicy() config.Policy {
	return config.Policy{
		BreakerConsecutiveFailures: 3,
		BreakerFailureRatio:        0.5,
		BreakerMinRequests:         1000,
		BreakerInterval:            time.Hour,
		BreakerOpenTimeout:         time.Hour,
		BreakerHalfOpenMax:         1,
	}
}

// run sends one request through b with result r.
func run(t *testing.T, b *Breaker, r Result) {
	t.Helper()
	done, err := b.Allow()
	if err != nil {
		t.Fatalf("Allow: %v (state %v)", err, b.State())
	}
	done(r)
}

func waitState(t *testing.T, b *Breaker, want State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %v, want %v", b.State(), want)
		}
		time.Sleep(5 * time.Millisecond) // gobreaker reads the real clock
	}
}

func TestBreakerTrips(t *testing.T) {
	tests := []struct {
		name    string
		policy  func(*config.Policy)
		results []Result // the last one trips the breaker
		reason  string
	}{
		{"consecutive failures", nil,
			[]Result{Failure, Success, Failure, Failure, errors.New("reset")},
			"3 consecutive failures"},
		{"failure ratio over min requests", func(p *config.Policy) {
			p.BreakerConsecutiveFailures = 0
			p.BreakerMinRequests = 10
		}, []Result{Success, Failure, Success, Failure, Success, Failure, Success, Failure, Success, Failure},
			"failure ratio 0.50 over 10 requests"},
		{"ratio with consecutive trigger on", func(p *config.Policy) {
			p.BreakerConsecutiveFailures = 5
			p.BreakerMinRequests = 5
			p.BreakerFailureRatio = 0.6
		}, []Result{Failure, Success, Failure, Success, Failure},
			"failure ratio 0.60 over 5 requests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := breakerPolicy()
			if tt.policy != nil {
				tt.policy(&p)
			}
			var rec recorder
			start := time.Now()
			b := NewBreaker("payments", p, rec.onChange(t))
			for i, r := range tt.results {
				if s := b.State(); s != StateClosed {
					t.Fatalf("before request %d: state %v", i+1, s)
				}
				run(t, b, r)
			}
			rec.expect(t, transition{StateClosed, StateOpen, tt.reason})
			if _, err := b.Allow(); !errors.Is(err, ErrCircuitOpen) {
				t.Fatalf("Allow when open: %v, want ErrCircuitOpen", err)
			}
			v := b.View()
			if v.State != StateOpen || v.Reason != tt.reason || v.Since.Before(start) || v.Counts != (Counts{}) {
				t.Fatalf("View = %+v", v)
			}
			if s := StateOpen.String(); s != "open" {
				t.Fatalf("String = %q", s)
			}
		})
	}
}

func TestBreakerRatioNeedsMinRequests(t *testing.T) {
	p := breakerPolicy()
	p.BreakerConsecutiveFailures = 0
	p.BreakerMinRequests = 10
	b := NewBreaker("payments", p, nil)
	// Requests still in flight do not dilute the ratio, nor count toward
	// the minimum.
	var pending []func(Result)
	for range 20 {
		done, err := b.Allow()
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, done)
	}
	for range 9 {
		run(t, b, Failure)
	}
	if s := b.State(); s != StateClosed {
		t.Fatalf("9 of 9 failed: state %v, want closed below min requests", s)
	}
	run(t, b, Failure)
	if s := b.State(); s != StateOpen {
		t.Fatalf("10 of 10 failed: state %v, want open", s)
	}
	for _, done := range pending {
		done(Success) // stale: from an older generation, ignored
	}
	if v := b.View(); v.State != StateOpen || v.Counts != (Counts{}) {
		t.Fatalf("after stale results: %+v", v)
	}
}

func TestBreakerHalfOpen(t *testing.T) {
	tests := []struct {
		name     string
		probes   int
		results  []Result // outcome of each probe, reported in order
		want     State
		wantWhy  string
		finalWhy string // View().Reason afterwards
	}{
		{"probe succeeds", 1, []Result{Success}, StateClosed, "half-open probe succeeded", "3 consecutive failures"},
		{"probe fails", 1, []Result{Failure}, StateOpen, "half-open probe failed", "half-open probe failed"},
		{"three probes succeed", 3, []Result{Success, Success, Success}, StateClosed, "3 half-open probes succeeded", "3 consecutive failures"},
		{"third probe fails", 3, []Result{Success, Success, Failure}, StateOpen, "half-open probe failed", "half-open probe failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := breakerPolicy()
			p.BreakerOpenTimeout = 50 * time.Millisecond
			p.BreakerHalfOpenMax = tt.probes
			var rec recorder
			b := NewBreaker("payments", p, rec.onChange(t))
			for range 3 {
				run(t, b, Failure)
			}
			opened := b.View().Since
			waitState(t, b, StateHalfOpen)
			rec.expect(t,
				transition{StateClosed, StateOpen, "3 consecutive failures"},
				transition{StateOpen, StateHalfOpen, "open timeout elapsed"})
			if v := b.View(); v.State != StateHalfOpen || !v.Since.After(opened) || v.Reason != "3 consecutive failures" {
				t.Fatalf("half-open View = %+v", v)
			}

			// Exactly tt.probes concurrent probes.
			var dones []func(Result)
			for range tt.probes {
				done, err := b.Allow()
				if err != nil {
					t.Fatalf("probe refused: %v", err)
				}
				dones = append(dones, done)
			}
			if _, err := b.Allow(); !errors.Is(err, ErrCircuitOpen) {
				t.Fatalf("probe %d: %v, want ErrCircuitOpen", tt.probes+1, err)
			}
			for i, r := range tt.results {
				dones[i](r)
			}
			if s := b.State(); s != tt.want {
				t.Fatalf("state %v, want %v", s, tt.want)
			}
			rec.expect(t, transition{StateHalfOpen, tt.want, tt.wantWhy})
			if v := b.View(); v.Reason != tt.finalWhy {
				t.Fatalf("View reason %q, want %q", v.Reason, tt.finalWhy)
			}
		})
	}
}

func TestBreakerIgnore(t *testing.T) {
	p := breakerPolicy()
	p.BreakerConsecutiveFailures = 2
	var rec recorder
	b := NewBreaker("payments", p, rec.onChange(t))
	run(t, b, Failure)
	run(t, b, Ignore)
	run(t, b, context.Canceled)
	run(t, b, fmt.Errorf("client went away: %w", context.Canceled))
	want := Counts{Requests: 4, TotalFailures: 1, ConsecutiveFailures: 1}
	if v := b.View(); v.State != StateClosed || v.Counts != want || v.Reason != "" {
		t.Fatalf("View = %+v, want closed with counts %+v", v, want)
	}
	rec.expect(t)
	run(t, b, Failure)
	rec.expect(t, transition{StateClosed, StateOpen, "2 consecutive failures"})
}

func TestBreakerCountsAndInterval(t *testing.T) {
	p := breakerPolicy()
	p.BreakerInterval = 50 * time.Millisecond
	b := NewBreaker("payments", p, nil)
	run(t, b, Success)
	run(t, b, Success)
	run(t, b, Failure)
	want := Counts{Requests: 3, TotalSuccesses: 2, TotalFailures: 1, ConsecutiveFailures: 1}
	if v := b.View(); v.Counts != want {
		t.Fatalf("counts %+v, want %+v", v.Counts, want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.View().Counts != (Counts{}) {
		if time.Now().After(deadline) {
			t.Fatal("counts not cleared after the interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBreakerConcurrent(t *testing.T) {
	p := breakerPolicy()
	p.BreakerOpenTimeout = time.Millisecond
	p.BreakerHalfOpenMax = 2
	var rec recorder
	b := NewBreaker("payments", p, rec.onChange(t))
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 500 {
				if done, err := b.Allow(); err == nil {
					if (i+w)%3 == 0 {
						done(Failure)
					} else {
						done(Success)
					}
				}
				if i%50 == 0 {
					b.View()
				}
			}
		})
	}
	wg.Wait()
	// Every transition leaves the state the next one starts from.
	state := StateClosed
	for _, tr := range rec.take() {
		if tr.from != state || tr.from == tr.to {
			t.Fatalf("transition %v after state %v", tr, state)
		}
		state = tr.to
	}
}
