package resilience

import (
	"testing"
	"time"

	"github.com/meshd/meshd/config"
)

type perRequest struct {
	l  *Limiter
	br *Breaker
	bu *Budget
	ej *Ejector
	h  *EndpointHealth
}

func newPerRequest() perRequest {
	p := config.Policy{
		BreakerConsecutiveFailures: 5, BreakerFailureRatio: 0.5, BreakerMinRequests: 20,
		BreakerInterval: 10 * time.Second, BreakerOpenTimeout: 15 * time.Second, BreakerHalfOpenMax: 1,
		EjectConsecutiveFailures: 5, EjectBaseTime: 30 * time.Second, EjectMaxPercent: 50,
		MaxRequestsPerUpstream: 1024,
	}
	ej := NewEjector("payments", p, nil, nil)
	ej.Sync([]string{"10.0.0.1:8080", "10.0.0.2:8080"})
	return perRequest{
		l:  NewLimiter(p.MaxRequestsPerUpstream),
		br: NewBreaker("payments", p, nil),
		bu: NewBudget(0.2, 10, nil),
		ej: ej,
		h:  ej.Endpoint("10.0.0.1:8080"),
	}
}

// BenchmarkPerRequest measures the bookkeeping of one successful request
// with one attempt: Limiter, Breaker, Budget and ejection.
func BenchmarkPerRequest(b *testing.B) {
	b.Run("endpoint pointer", func(b *testing.B) {
		r := newPerRequest()
		b.ReportAllocs()
		for b.Loop() {
			r.once(func() bool { return r.h.Begin() }, func() { r.h.Done(false) })
		}
	})
	b.Run("ejector by address", func(b *testing.B) {
		r := newPerRequest()
		b.ReportAllocs()
		for b.Loop() {
			r.once(func() bool { return r.ej.Begin("10.0.0.1:8080") }, func() { r.ej.Done("10.0.0.1:8080", false) })
		}
	})
	b.Run("parallel", func(b *testing.B) {
		r := newPerRequest()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.once(func() bool { return r.h.Begin() }, func() { r.h.Done(false) })
			}
		})
	})
}

//go:noinline
func (r perRequest) once(begin func() bool, done func()) {
	if !r.l.Acquire() {
		panic("overloaded")
	}
	d, err := r.br.Allow()
	if err != nil {
		panic(err)
	}
	r.bu.Request()
	if !r.h.Usable() || !begin() {
		panic("ejected")
	}
	done()
	d(Success)
	r.l.Release()
}
