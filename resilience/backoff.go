package resilience

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// jitterBackOff is an exponential backoff with full jitter: each wait is
// uniform in [0, cap], where cap is what a non-randomized exponential
// backoff would wait. Full jitter spreads the retries of many clients that
// failed together better than the ±50% of backoff's default (see "Exponential
// Backoff And Jitter", AWS Architecture Blog, 2015).
type jitterBackOff struct {
	mu  sync.Mutex
	exp *backoff.ExponentialBackOff // RandomizationFactor 0: yields the caps
	rnd func() float64
}

var _ backoff.BackOff = (*jitterBackOff)(nil)

// NewBackoff returns a backoff.BackOff whose caps start at base and double
// up to max, and whose waits are drawn uniformly in [0, cap] (full jitter).
// It never stops by itself (MaxElapsedTime 0): the request deadline and
// RetryMax bound the retries. It is Reset and ready to use. rnd returns
// numbers in [0, 1] and is there for tests; nil means math/rand/v2. A max
// below base is taken as base. The result is safe for concurrent use, but
// is meant for one request.
func NewBackoff(base, max time.Duration, rnd func() float64) backoff.BackOff {
	if base < 0 {
		base = 0
	}
	if max < base {
		max = base
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	exp := backoff.NewExponentialBackOff()
	exp.InitialInterval = base
	exp.MaxInterval = max
	exp.Multiplier = 2
	exp.RandomizationFactor = 0
	exp.MaxElapsedTime = 0
	exp.Reset()
	return &jitterBackOff{exp: exp, rnd: rnd}
}

// NextBackOff returns the next wait, uniform in [0, cap].
func (b *jitterBackOff) NextBackOff() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.exp.NextBackOff()
	if c == backoff.Stop || c <= 0 {
		return c
	}
	r := b.rnd()
	switch {
	case r <= 0:
		return 0
	case r >= 1:
		return c
	}
	return time.Duration(r * float64(c))
}

// Reset starts the caps again from base.
func (b *jitterBackOff) Reset() {
	b.mu.Lock()
	b.exp.Reset()
	b.mu.Unlock()
}
