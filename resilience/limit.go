package resilience

import (
	"errors"
	"math"
	"sync/atomic"
)

// ErrOverloaded is what the proxy returns when a Limiter refuses a
// request. meshd answers it with 503 and x-meshd-error: overloaded.
var ErrOverloaded = errors.New("overloaded")

// Limiter bounds the requests in flight to one upstream
// (MESHD_MAX_REQUESTS_PER_UPSTREAM); one more is refused at once rather
// than queued. It is a single atomic counter.
type Limiter struct {
	max      int64
	inFlight atomic.Int64
}

// NewLimiter returns a limiter allowing max requests in flight; max <= 0
// means no limit.
func NewLimiter(max int) *Limiter {
	m := int64(max)
	if m <= 0 {
		m = math.MaxInt64
	}
	return &Limiter{max: m}
}

// Acquire takes one slot and reports whether it got one. Every true must
// be followed by one Release.
func (l *Limiter) Acquire() bool {
	for {
		n := l.inFlight.Load()
		if n >= l.max {
			return false
		}
		if l.inFlight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release gives back a slot taken by Acquire.
func (l *Limiter) Release() { l.inFlight.Add(-1) }

// InFlight returns the number of slots taken.
func (l *Limiter) InFlight() int { return int(l.inFlight.Load()) }
