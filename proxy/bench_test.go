package proxy

import (
	"testing"

	"go.uber.org/zap"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/balance"
	"github.com/meshd/meshd/resilience"
)

// BenchmarkPerRequestResilience measures what the resilience policy adds
// to one request, with no I/O: the upstream and policy lookup, the
// overload limit, the service breaker, the retry budget, the balancer's
// pick among usable endpoints and the endpoint breaker's bookkeeping.
func BenchmarkPerRequestResilience(b *testing.B) {
	cfg := config.Default()
	static := discovery.NewStatic(map[string][]string{"payments": {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}})
	p := New(Options{Config: cfg, Resolver: discovery.Chain{static}, Log: zap.NewNop()})
	defer p.Close()
	snap, _ := static.Resolve(b.Context(), "payments")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		u := p.upstream("payments")
		eps := u.endpoints(snap)
		if !u.limiter.Acquire() {
			b.Fatal("overloaded")
		}
		done, err := u.breaker.Allow()
		if err != nil {
			b.Fatal(err)
		}
		u.budget.Request()
		ep := balance.Pick(eps, nil, func(e *balance.Endpoint) bool { return !u.ejector.Usable(e.Addr) })
		u.ejector.Begin(ep.Addr)
		ep.Acquire()
		ep.Release()
		u.ejector.Done(ep.Addr, false)
		done(resilience.Success)
		u.limiter.Release()
	}
}
