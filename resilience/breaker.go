package resilience

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/sony/gobreaker/v2"
)

// ErrCircuitOpen is returned by Breaker.Allow when the breaker is open, or
// half-open with every probe slot taken. meshd answers it with 503 and
// x-meshd-error: circuit-open.
var ErrCircuitOpen = errors.New("circuit open")

// Result is what a Breaker's done func reports about one request: its
// final outcome, after retries.
//
//   - Success (nil) counts as a success.
//   - Ignore, or an error that is or wraps context.Canceled (the client
//     went away), counts as neither; use it for client cancellations.
//   - Failure, or any other error (the proxy may pass the request's own
//     error), counts as a failure.
//
// Result is an alias of error so that done is gobreaker's own callback:
// reporting costs no allocation beyond the one Allow makes.
type Result = error

// The three results a done func takes.
var (
	// Success is a request that the upstream served: a 2xx, 3xx or 4xx.
	Success Result
	// Failure is a request that failed: see Outcome.Failure.
	Failure Result = resultToken("request failed")
	// Ignore is a request whose outcome says nothing about the upstream,
	// such as one the client cancelled.
	Ignore Result = resultToken("request outcome ignored")
)

// resultToken is the type of Failure and Ignore: tokens to report, not
// errors to return.
type resultToken string

// Error returns the token's text.
func (r resultToken) Error() string { return string(r) }

// Counts are the breaker's counters in the current closed-state window (or
// since the last change of state). Requests counts the requests let
// through, including those still in flight and those ignored.
type Counts struct {
	Requests             uint32 `json:"requests"`
	TotalSuccesses       uint32 `json:"total_successes"`
	TotalFailures        uint32 `json:"total_failures"`
	ConsecutiveSuccesses uint32 `json:"consecutive_successes"`
	ConsecutiveFailures  uint32 `json:"consecutive_failures"`
}

// BreakerView is a snapshot of a Breaker for the admin API's /breakers.
type BreakerView struct {
	State State `json:"state"`
	// Since is the time of the last change of state (the breaker's
	// creation if it never changed).
	Since time.Time `json:"since"`
	// Reason says why the breaker last tripped; empty if it never did.
	Reason string `json:"reason"`
	Counts Counts `json:"counts"`
}

// Breaker is the circuit breaker of one upstream service: gobreaker v2's
// TwoStepCircuitBreaker, counting requests by their final outcome.
//
// It trips (closed → open) after BreakerConsecutiveFailures failures in a
// row, or when at least BreakerMinRequests requests have completed in the
// BreakerInterval window and the share of failures among them reaches
// BreakerFailureRatio. After BreakerOpenTimeout it is half-open and lets
// BreakerHalfOpenMax probes through at once; that many successes in a row
// close it, one failure opens it again.
//
// gobreaker has no clock option, so a Breaker runs on the real clock.
type Breaker struct {
	name     string
	probes   int // successes in a row that close a half-open breaker
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	onChange func(name string, from, to State, reason string)

	// tripReason is written by readyToTrip and read by onStateChange;
	// gobreaker calls both with its own mutex held.
	tripReason string

	mu     sync.Mutex // guards the fields below
	state  State
	since  time.Time
	reason string // why it last tripped
}

// NewBreaker returns the breaker of the named upstream under policy p.
// onChange, which may be nil, is called once per change of state with the
// upstream's name, the states before and after, and why: "5 consecutive
// failures", "failure ratio 0.60 over 20 requests", "half-open probe
// failed", "open timeout elapsed" or "half-open probe succeeded". It runs
// with the breaker's lock held (gobreaker calls it so): it must be quick
// (log, count) and must not call back into the Breaker.
//
// BreakerOpenTimeout 0 means gobreaker's default of 60 s; BreakerInterval 0
// means counts are cleared only on changes of state.
func NewBreaker(name string, p config.Policy, onChange func(name string, from, to State, reason string)) *Breaker {
	probes := min(max(p.BreakerHalfOpenMax, 1), math.MaxInt32)
	b := &Breaker{name: name, probes: probes, onChange: onChange, state: StateClosed, since: time.Now()}
	consecutive := p.BreakerConsecutiveFailures
	ratio := p.BreakerFailureRatio
	minReq := max(p.BreakerMinRequests, 1)
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: uint32(probes),
		Interval:    p.BreakerInterval,
		Timeout:     p.BreakerOpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if consecutive > 0 && int64(c.ConsecutiveFailures) >= int64(consecutive) {
				b.tripReason = fmt.Sprintf("%d consecutive failures", c.ConsecutiveFailures)
				return true
			}
			// Requests still in flight or ignored have no outcome yet and
			// do not dilute the ratio.
			done := uint64(c.TotalSuccesses) + uint64(c.TotalFailures)
			if ratio > 0 && done >= uint64(minReq) && float64(c.TotalFailures) >= ratio*float64(done)-1e-9 {
				b.tripReason = fmt.Sprintf("failure ratio %.2f over %d requests", float64(c.TotalFailures)/float64(done), done)
				return true
			}
			return false
		},
		OnStateChange: b.stateChanged,
		IsExcluded: func(err error) bool {
			return err != nil && (errors.Is(err, Ignore) || errors.Is(err, context.Canceled))
		},
	})
	return b
}

// stateChanged runs under gobreaker's mutex.
func (b *Breaker) stateChanged(name string, from, to gobreaker.State) {
	f, t := State(from), State(to)
	var reason string
	switch {
	case t == StateOpen && f == StateHalfOpen:
		reason = "half-open probe failed"
	case t == StateOpen:
		reason = b.tripReason
		if reason == "" {
			reason = "tripped"
		}
	case t == StateHalfOpen:
		reason = "open timeout elapsed"
	case f == StateHalfOpen:
		if b.probes == 1 {
			reason = "half-open probe succeeded"
		} else {
			reason = fmt.Sprintf("%d half-open probes succeeded", b.probes)
		}
	}
	b.tripReason = ""
	b.mu.Lock()
	b.state, b.since = t, time.Now()
	if t == StateOpen {
		b.reason = reason
	}
	b.mu.Unlock()
	if b.onChange != nil {
		b.onChange(name, f, t, reason)
	}
}

// Name returns the upstream's name.
func (b *Breaker) Name() string { return b.name }

// Allow asks to send one request. When the breaker lets it through, done
// must be called exactly once with the request's final Result. Otherwise
// err is ErrCircuitOpen. A done that comes after the breaker changed state
// is ignored (gobreaker's generations).
func (b *Breaker) Allow() (done func(Result), err error) {
	done, err = b.cb.Allow()
	if err != nil {
		return nil, ErrCircuitOpen
	}
	return done, nil
}

// State returns the current state, moving from open to half-open if the
// open timeout has passed.
func (b *Breaker) State() State { return State(b.cb.State()) }

// View returns the state, the time and reason of the last change, and the
// counts.
func (b *Breaker) View() BreakerView {
	b.cb.State() // moves open → half-open, and clears an expired window
	c := b.cb.Counts()
	b.mu.Lock()
	defer b.mu.Unlock()
	return BreakerView{
		State:  b.state,
		Since:  b.since,
		Reason: b.reason,
		Counts: Counts{
			Requests:             c.Requests,
			TotalSuccesses:       c.TotalSuccesses,
			TotalFailures:        c.TotalFailures,
			ConsecutiveSuccesses: c.ConsecutiveSuccesses,
			ConsecutiveFailures:  c.ConsecutiveFailures,
		},
	}
}
