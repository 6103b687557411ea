package resilience

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestLimiterBoundary(t *testing.T) {
	tests := []struct {
		max, acquires, wantOK int
	}{
		{1, 2, 1},
		{3, 3, 3},
		{3, 4, 3},
		{1024, 1025, 1024},
		{0, 5000, 5000}, // no limit
	}
	for _, tt := range tests {
		l := NewLimiter(tt.max)
		ok := 0
		for range tt.acquires {
			if l.Acquire() {
				ok++
			}
		}
		if ok != tt.wantOK || l.InFlight() != tt.wantOK {
			t.Errorf("max %d: %d of %d acquired, %d in flight; want %d", tt.max, ok, tt.acquires, l.InFlight(), tt.wantOK)
		}
		if tt.max > 0 {
			l.Release()
			if !l.Acquire() || l.Acquire() {
				t.Errorf("max %d: after one Release, want exactly one more Acquire", tt.max)
			}
		}
	}
}

func TestLimiterConcurrent(t *testing.T) {
	const limit = 5
	l := NewLimiter(limit)
	var peak, granted atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 2000 {
				if !l.Acquire() {
					continue
				}
				granted.Add(1)
				if n := int64(l.InFlight()); n > peak.Load() {
					peak.Store(n) // racy max, but never above the true peak
				}
				l.Release()
			}
		})
	}
	wg.Wait()
	if peak.Load() > limit || l.InFlight() != 0 || granted.Load() == 0 {
		t.Fatalf("peak %d (limit %d), in flight %d, granted %d", peak.Load(), limit, l.InFlight(), granted.Load())
	}
}
