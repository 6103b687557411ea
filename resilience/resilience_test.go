package resilience

import (
	"encoding/json"
	"testing"
	"time"
)

func TestState(t *testing.T) {
	tests := []struct {
		s      State
		str    string
		metric float64
	}{
		{StateClosed, "closed", 0},
		{StateHalfOpen, "half-open", 1},
		{StateOpen, "open", 2},
		{State(7), "State(7)", 7},
	}
	for _, tt := range tests {
		if tt.s.String() != tt.str || tt.s.Metric() != tt.metric {
			t.Errorf("State %d: %q %v, want %q %v", int(tt.s), tt.s.String(), tt.s.Metric(), tt.str, tt.metric)
		}
	}
}

// The views encode to the admin API's /breakers JSON as they are.
func TestViewJSON(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"breaker", BreakerView{State: StateOpen, Since: since, Reason: "5 consecutive failures",
			Counts: Counts{Requests: 9, TotalSuccesses: 4, TotalFailures: 5, ConsecutiveFailures: 5}},
			`{"state":"open","since":"2026-01-02T03:04:05Z","reason":"5 consecutive failures",` +
				`"counts":{"requests":9,"total_successes":4,"total_failures":5,"consecutive_successes":0,"consecutive_failures":5}}`},
		{"endpoint", EndpointView{State: StateHalfOpen, Since: since, Ejections: 2, ConsecutiveFailures: 3, Until: since},
			`{"state":"half-open","since":"2026-01-02T03:04:05Z","ejections":2}`},
	}
	for _, tt := range tests {
		got, err := json.Marshal(tt.v)
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: %s (%v), want %s", tt.name, got, err, tt.want)
		}
	}
}
