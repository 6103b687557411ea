package resilience

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
)

const ms = time.Millisecond

// caps is the cap sequence of n waits from base doubling up to max.
func caps(base, max time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	c := base
	for i := range out {
		out[i] = c
		c = min(2*c, max)
	}
	return out
}

func TestBackoffExtremes(t *testing.T) {
	tests := []struct {
		name string
		rnd  func() float64
		want []time.Duration
	}{
		{"rnd 1 gives the caps", func() float64 { return 1 }, []time.Duration{25 * ms, 50 * ms, 100 * ms, 200 * ms, 250 * ms, 250 * ms, 250 * ms}},
		{"rnd 0 gives 0", func() float64 { return 0 }, make([]time.Duration, 7)},
		{"rnd 0.5 gives half", func() float64 { return 0.5 }, []time.Duration{12500 * time.Microsecond, 25 * ms, 50 * ms, 100 * ms, 125 * ms, 125 * ms, 125 * ms}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBackoff(25*ms, 250*ms, tt.rnd)
			for i, want := range tt.want {
				if got := b.NextBackOff(); got != want {
					t.Fatalf("wait %d = %v, want %v", i+1, got, want)
				}
			}
			b.Reset()
			if got, want := b.NextBackOff(), tt.want[0]; got != want {
				t.Fatalf("after Reset: %v, want %v", got, want)
			}
		})
	}
}

func TestBackoffBounds(t *testing.T) {
	tests := []struct {
		name      string
		base, max time.Duration
		rnd       func() float64
	}{
		{"default rand", 25 * ms, 250 * ms, nil},
		{"seeded rand", 10 * ms, time.Second, rand.New(rand.NewPCG(1, 2)).Float64},
		{"max below base", 100 * ms, 10 * ms, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const draws = 2000
			want := caps(tt.base, max(tt.max, tt.base), draws)
			b := NewBackoff(tt.base, tt.max, tt.rnd)
			var sum time.Duration
			for i := range draws {
				got := b.NextBackOff()
				if got == backoff.Stop {
					t.Fatalf("wait %d: Stop; MaxElapsedTime must be 0", i+1)
				}
				if got < 0 || got > want[i] {
					t.Fatalf("wait %d = %v, want in [0, %v]", i+1, got, want[i])
				}
				sum += got
			}
			// Full jitter averages half the cap; the ±50% of backoff's
			// default would average the cap itself.
			capMax := max(tt.max, tt.base)
			if mean := sum / draws; mean < capMax/3 || mean > 2*capMax/3 {
				t.Errorf("mean wait %v, want about %v", mean, capMax/2)
			}
		})
	}
}
