// Package balance picks the endpoint of a service that a request or
// connection goes to: power of two choices over least outstanding
// requests. Two distinct endpoints are drawn at random and the one with
// fewer requests in flight wins.
//
// It counts requests, not connections, because requests are multiplexed
// onto shared connections (HTTP/2, keep-alive pools). Comparing two random
// endpoints rather than scanning for the global minimum avoids sending a
// burst of requests all to the one endpoint that looked idlest a moment
// ago, and reads the load of only two endpoints per pick.
//
// The randomness is injected ([Rand]) so tests are deterministic; which
// endpoints are usable (healthy, not ejected, not already tried by this
// request) is the caller's to say, through a skip function.
package balance

import (
	"math/rand/v2"
	"sync/atomic"
)

// Endpoint is one address of a service, with its live load. It is safe
// for concurrent use. It must not be copied after first use: share it by
// pointer.
type Endpoint struct {
	// Addr is the endpoint's address, "host:port". It is not changed
	// after NewEndpoint.
	Addr string

	outstanding atomic.Int64 // requests in flight; atomic.Int64 also makes vet flag copies
}

// NewEndpoint returns an endpoint for addr with no requests outstanding.
func NewEndpoint(addr string) *Endpoint {
	return &Endpoint{Addr: addr}
}

// Outstanding returns the number of requests in flight to e: Acquire
// calls not yet matched by Release.
func (e *Endpoint) Outstanding() int64 {
	return e.outstanding.Load()
}

// Acquire records one more request in flight to e. Call it once the
// endpoint has been chosen, and pair it with exactly one Release when the
// request (or connection) ends, whatever the outcome.
func (e *Endpoint) Acquire() {
	e.outstanding.Add(1)
}

// Release records the end of a request started with Acquire.
func (e *Endpoint) Release() {
	e.outstanding.Add(-1)
}

// Rand is the source of randomness for Pick. IntN returns a number in
// [0, n) and is called only with n > 0. A *math/rand/v2.Rand satisfies
// it; such a value is not safe for concurrent use, so share one between
// goroutines only behind a lock.
type Rand interface {
	IntN(n int) int
}

// Pick chooses among eps by power of two choices: it draws two distinct
// usable endpoints uniformly at random, and the one with fewer outstanding
// requests wins; on a tie the first drawn wins. It draws with r.IntN(n)
// and then r.IntN(n-1), where n is the number of usable endpoints. A nil r
// means math/rand/v2's top-level functions, which are safe for concurrent
// use.
//
// skip, if non-nil, excludes endpoints: unusable ones, or those this
// request already tried. It is called at most twice per endpoint and
// should give the same answer both times; if it changes its mind during
// the call, Pick still returns nil or an endpoint it did not skip. With
// one usable endpoint Pick returns it without drawing; with none, or with
// empty eps, it returns nil. eps must not contain nil.
//
// Pick does not allocate, and only reads the load: the caller Acquires the
// endpoint it uses.
func Pick(eps []*Endpoint, r Rand, skip func(*Endpoint) bool) *Endpoint {
	if skip == nil {
		switch len(eps) {
		case 0:
			return nil
		case 1:
			return eps[0]
		}
		i, j := draw2(r, len(eps))
		return lessLoaded(eps[i], eps[j])
	}

	// Count the usable endpoints; the draws are indexes among them, so
	// no filtered slice has to be built.
	n, only := 0, (*Endpoint)(nil)
	for _, e := range eps {
		if !skip(e) {
			n++
			only = e
		}
	}
	switch n {
	case 0:
		return nil
	case 1:
		return only
	}
	i, j := draw2(r, n)

	// Find the i-th and j-th usable endpoints in one more pass.
	var a, b *Endpoint
	k := 0
	for _, e := range eps {
		if skip(e) {
			continue
		}
		switch k {
		case i:
			a = e
		case j:
			b = e
		}
		if a != nil && b != nil {
			break
		}
		k++
	}
	switch {
	case a == nil:
		return b // skip changed its mind; b may be nil as well
	case b == nil:
		return a
	}
	return lessLoaded(a, b)
}

// draw2 returns two distinct indexes in [0, n), n >= 2, each pair equally
// likely: the second is drawn among the n-1 indexes left, then shifted
// past the first.
func draw2(r Rand, n int) (i, j int) {
	if r == nil {
		i, j = rand.IntN(n), rand.IntN(n-1)
	} else {
		i, j = r.IntN(n), r.IntN(n-1)
	}
	if j >= i {
		j++
	}
	return i, j
}

// lessLoaded returns whichever of a and b has fewer outstanding requests,
// a (the first drawn) on a tie.
func lessLoaded(a, b *Endpoint) *Endpoint {
	if b.Outstanding() < a.Outstanding() {
		return b
	}
	return a
}
