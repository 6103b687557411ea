package resilience

import (
	"math"
	"sync"
	"time"
)

const (
	budgetBuckets = 10
	budgetBucket  = time.Second
	// BudgetWindow is the sliding window over which a Budget counts
	// requests and retries.
	BudgetWindow = budgetBuckets * budgetBucket
)

// Budget limits retries to at most Ratio × requests over a sliding
// 10-second window, but always allows MinPerSec × 10 retries per window, as
// Linkerd's and Finagle's retry budgets do. One Budget serves one upstream.
//
// The window is a ring of ten one-second buckets advanced by the clock, so
// it covers between nine and ten seconds of history. A small mutex guards
// it; running totals keep each call O(1) apart from clearing the buckets
// that the clock has passed.
type Budget struct {
	ratio float64
	floor int64 // minPerSec × 10: retries always allowed per window
	clock Clock

	mu      sync.Mutex
	tick    int64 // the second the newest bucket stands for
	buckets [budgetBuckets]budgetBucketCounts
	reqs    int64 // sum of buckets[*].reqs
	retries int64 // sum of buckets[*].retries
}

type budgetBucketCounts struct{ reqs, retries int64 }

// NewBudget returns a budget allowing retries up to ratio × requests in the
// window, and at least minPerSec × 10 retries per window whatever the
// ratio. A negative ratio or minPerSec counts as 0. A nil clock is the real
// clock.
func NewBudget(ratio float64, minPerSec int, clock Clock) *Budget {
	if ratio < 0 || math.IsNaN(ratio) {
		ratio = 0
	}
	if minPerSec < 0 {
		minPerSec = 0
	}
	b := &Budget{ratio: ratio, floor: int64(minPerSec) * budgetBuckets, clock: orReal(clock)}
	b.tick = b.tickOf(b.clock.Now())
	return b
}

func (b *Budget) tickOf(t time.Time) int64 { return t.UnixNano() / int64(budgetBucket) }

// advance moves the ring to the clock's current second, clearing the
// buckets that slid out of the window. A clock that goes backwards keeps
// counting into the newest bucket. b.mu must be held.
func (b *Budget) advance() *budgetBucketCounts { return b.advanceTo(b.tickOf(b.clock.Now())) }

// advanceTo is advance to the tick now.
func (b *Budget) advanceTo(now int64) *budgetBucketCounts {
	if d := now - b.tick; d > 0 {
		if d >= budgetBuckets {
			b.buckets = [budgetBuckets]budgetBucketCounts{}
			b.reqs, b.retries = 0, 0
		} else {
			for t := b.tick + 1; t <= now; t++ {
				old := &b.buckets[t%budgetBuckets]
				b.reqs -= old.reqs
				b.retries -= old.retries
				*old = budgetBucketCounts{}
			}
		}
		b.tick = now
	}
	return &b.buckets[b.tick%budgetBuckets]
}

// Request counts one new request (its first attempt).
func (b *Budget) Request() { b.RequestAt(b.clock.Now()) }

// RequestAt is Request for a caller that read the clock already: now is
// the time of the request.
func (b *Budget) RequestAt(now time.Time) {
	b.mu.Lock()
	b.advanceTo(b.tickOf(now)).reqs++
	b.reqs++
	b.mu.Unlock()
}

// TryRetry reserves one retry if the window allows it, that is if the
// retries already in the window are fewer than max(ratio × requests in the
// window, minPerSec × 10). It counts the retry when it returns true.
func (b *Budget) TryRetry() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.advance()
	// The small epsilon keeps 0.2 × 100 at 20 whatever the rounding.
	allowed := max(int64(math.Floor(b.ratio*float64(b.reqs)+1e-9)), b.floor)
	if b.retries >= allowed {
		return false
	}
	cur.retries++
	b.retries++
	return true
}

// BudgetView is a snapshot of a Budget's window.
type BudgetView struct {
	Requests int64 `json:"requests"` // requests counted in the window
	Retries  int64 `json:"retries"`  // retries granted in the window
	Allowed  int64 `json:"allowed"`  // retries the window allows in all
}

// View returns the counts of the current window.
func (b *Budget) View() BudgetView {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advance()
	return BudgetView{
		Requests: b.reqs,
		Retries:  b.retries,
		Allowed:  max(int64(math.Floor(b.ratio*float64(b.reqs)+1e-9)), b.floor),
	}
}
