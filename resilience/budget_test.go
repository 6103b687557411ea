package resilience

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBudgetArithmetic(t *testing.T) {
	tests := []struct {
		name        string
		ratio       float64
		minPerSec   int
		requests    int
		wantAllowed int
	}{
		{"ratio of requests", 0.2, 1, 100, 20},
		{"floor when few requests", 0.2, 10, 5, 100},
		{"ratio above the floor", 0.5, 1, 100, 50},
		{"floor equals ratio", 0.1, 1, 100, 10},
		{"nothing without requests or floor", 0.2, 0, 0, 0},
		{"rounds down", 0.2, 0, 9, 1},
		{"ratio 0 keeps the floor", 0, 2, 1000, 20},
		{"negative inputs count as 0", -1, -5, 100, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBudget(tt.ratio, tt.minPerSec, newFakeClock())
			for range tt.requests {
				b.Request()
			}
			for i := range tt.wantAllowed {
				if !b.TryRetry() {
					t.Fatalf("retry %d refused, want %d allowed", i+1, tt.wantAllowed)
				}
			}
			if b.TryRetry() {
				t.Fatalf("retry %d allowed, want only %d", tt.wantAllowed+1, tt.wantAllowed)
			}
			v := b.View()
			if v.Requests != int64(tt.requests) || v.Retries != int64(tt.wantAllowed) || v.Allowed != int64(tt.wantAllowed) {
				t.Errorf("View = %+v, want %d requests, %d retries of %d", v, tt.requests, tt.wantAllowed, tt.wantAllowed)
			}
		})
	}
}

func TestBudgetSlidingWindow(t *testing.T) {
	clk := newFakeClock()
	b := NewBudget(0.2, 0, clk)
	try := func(n int) int { // retries granted out of n tries
		got := 0
		for range n {
			if b.TryRetry() {
				got++
			}
		}
		return got
	}
	for range 100 {
		b.Request()
	}
	if got := try(25); got != 20 {
		t.Fatalf("t=0: granted %d, want 20", got)
	}
	clk.Advance(5 * time.Second)
	if got := try(1); got != 0 {
		t.Fatalf("t=5s: granted %d, want 0 (100 requests, 20 retries in window)", got)
	}
	for range 50 {
		b.Request()
	}
	if got := try(20); got != 10 {
		t.Fatalf("t=5s: granted %d after 50 more requests, want 10", got)
	}
	clk.Advance(4*time.Second + 999*time.Millisecond)
	if v := b.View(); v.Requests != 150 || v.Retries != 30 {
		t.Fatalf("t=9.999s: View = %+v, want the t=0 bucket still in the window", v)
	}
	clk.Advance(time.Millisecond) // t=10s: the t=0 bucket slides out
	if v := b.View(); v.Requests != 50 || v.Retries != 10 || v.Allowed != 10 {
		t.Fatalf("t=10s: View = %+v, want 50 requests, 10 retries, 10 allowed", v)
	}
	if got := try(1); got != 0 {
		t.Fatalf("t=10s: granted %d, want 0", got)
	}
	for range 50 {
		b.Request()
	}
	if got := try(20); got != 10 {
		t.Fatalf("t=10s: granted %d after 50 more requests, want 10", got)
	}
	clk.Advance(time.Hour) // everything slides out at once
	if v := b.View(); v != (BudgetView{}) {
		t.Fatalf("after an hour: View = %+v, want empty", v)
	}
	for range 10 {
		b.Request()
	}
	if got := try(5); got != 2 {
		t.Fatalf("after an hour: granted %d, want 2", got)
	}
}

func TestBudgetClockBackwards(t *testing.T) {
	clk := newFakeClock()
	b := NewBudget(1, 0, clk)
	b.Request()
	clk.Advance(-30 * time.Second)
	b.Request()
	if v := b.View(); v.Requests != 2 {
		t.Fatalf("View = %+v, want both requests counted", v)
	}
}

func TestBudgetConcurrent(t *testing.T) {
	b := NewBudget(0.2, 0, newFakeClock())
	const workers, perWorker = 8, 1000
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				b.Request()
			}
		})
	}
	wg.Wait()
	var granted atomic.Int64
	for range workers {
		wg.Go(func() {
			for range perWorker {
				if b.TryRetry() {
					granted.Add(1)
				}
				b.View()
			}
		})
	}
	wg.Wait()
	if want := int64(0.2 * workers * perWorker); granted.Load() != want {
		t.Fatalf("granted %d retries, want exactly %d", granted.Load(), want)
	}
}
