// Package resilience owns what wraps every outbound call: retries with
// backoff and a budget, the per-service circuit breaker, per-endpoint
// ejection and overload limits. It reads its policy types from config and
// imports no other meshd package.
//
// Everything here is pure bookkeeping with no network I/O: the proxy asks
// before an attempt (Limiter.Acquire, Breaker.Allow, Budget.TryRetry,
// EndpointHealth.Begin) and reports afterwards (Release, done, Done). Every
// type is safe for concurrent use, and the per-request calls do not allocate
// except for the one closure gobreaker's two-step breaker returns.
//
// Time comes from an injected Clock so that tests never sleep. The service
// breaker is the exception: gobreaker reads the real clock.
package resilience

import (
	"fmt"
	"time"
)

// Clock tells the time; a nil Clock means the real clock.
type Clock interface{ Now() time.Time }

type realClock struct{}

// Now returns time.Now().
func (realClock) Now() time.Time { return time.Now() }

func orReal(c Clock) Clock {
	if c == nil {
		return realClock{}
	}
	return c
}

// State is the state of a breaker, either the service breaker or one
// endpoint's ejection state. Its values follow gobreaker's, and the metric
// meshd_breaker_state exports them as numbers (see Metric).
type State int

// The breaker states.
const (
	// StateClosed lets every request through.
	StateClosed State = iota
	// StateHalfOpen lets a limited number of probes through.
	StateHalfOpen
	// StateOpen refuses every request (the endpoint is ejected).
	StateOpen
)

// String returns the contract's wording: "closed", "half-open" or "open".
func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateHalfOpen:
		return "half-open"
	case StateOpen:
		return "open"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Metric returns the value of meshd_breaker_state: 0 closed, 1 half-open,
// 2 open.
func (s State) Metric() float64 { return float64(s) }

// MarshalText writes the state as String does, so that views encode to the
// admin API's JSON as they are.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
