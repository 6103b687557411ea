package proxy

import (
	"strconv"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/metrics"
)

// Pre-resolved request metrics count what the labelled vectors would:
// every code, past the cached ones too, from many goroutines, for a
// service, a passthrough target and requests without a route, per side.
func TestRequestStats(t *testing.T) {
	m := metrics.New()
	p := New(Options{Config: config.Default(), Resolver: discovery.Chain{}, Log: zap.NewNop(), Metrics: m})
	defer p.Close()
	routes := []*route{
		{key: "payments", up: p.upstream("payments")},
		{key: "10.0.0.1:80", up: p.passthrough("10.0.0.1:80")},
		nil,
	}
	const goroutines, rounds = 4, 50
	codes := make([]int, 0, maxCachedCodes+4) // more codes than are cached
	for c := 200; len(codes) < cap(codes); c++ {
		codes = append(codes, c)
	}
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				for _, s := range []*httpSide{p.outbound, p.inbound} {
					for _, rt := range routes {
						st := p.stats(s, rt)
						for _, c := range codes {
							st.count(p, c)
						}
						st.duration.Observe(0.001)
					}
				}
			}
		}()
	}
	wg.Wait()
	for _, s := range []*httpSide{p.outbound, p.inbound} {
		for _, rt := range routes {
			label := p.label(rt, s.name)
			if st := p.stats(s, rt); st.label != label || st.direction != s.name {
				t.Fatalf("stats for %s/%v carry labels %s/%s", s.name, rt, st.direction, st.label)
			}
			for _, c := range codes {
				got := counterValue(m.Requests.WithLabelValues(s.name, label, strconv.Itoa(c)))
				// The requests without a route and, inbound, those of the
				// passthrough route share a label with other rows.
				want := float64(goroutines * rounds * sharers(p, s, routes, label))
				if got != want {
					t.Fatalf("meshd_requests_total{%s,%s,%d} = %v; want %v", s.name, label, c, got, want)
				}
			}
		}
	}
	if n := len(*p.stats(p.outbound, routes[0]).codes.Load()); n != maxCachedCodes {
		t.Fatalf("%d codes cached; want the bound, %d", n, maxCachedCodes)
	}
}

// sharers is how many of routes count under label on side s.
func sharers(p *Proxy, s *httpSide, routes []*route, label string) int {
	n := 0
	for _, rt := range routes {
		if p.label(rt, s.name) == label {
			n++
		}
	}
	return n
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
