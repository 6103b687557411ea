package proxy

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// requestStats are the request metrics of one listener side and upstream,
// resolved once: a request counts itself without hashing its labels or
// taking the metric vectors' locks.
type requestStats struct {
	direction, label string
	duration         prometheus.Observer
	// codes holds the counters of the status codes seen so far, at most
	// maxCachedCodes; it is replaced, never changed in place.
	codes atomic.Pointer[[]codeCounter]
}

type codeCounter struct {
	code    int
	counter prometheus.Counter
}

// maxCachedCodes bounds the codes resolved per upstream; a rarer code is
// looked up each time.
const maxCachedCodes = 16

// Side indexes of upstream.stats.
const (
	sideOutbound = iota
	sideInbound
)

// stats returns the request metrics of requests on side s along rt (nil
// when routing failed). p.metrics must be set.
func (p *Proxy) stats(s *httpSide, rt *route) *requestStats {
	slot := &s.local // every request of the side without an upstream has the same label
	if rt != nil && rt.up != nil {
		slot = &rt.up.stats[s.index]
	}
	if st := slot.Load(); st != nil {
		return st
	}
	label := p.label(rt, s.name)
	st := &requestStats{direction: s.name, label: label,
		duration: p.metrics.RequestDuration.WithLabelValues(s.name, label)}
	if !slot.CompareAndSwap(nil, st) {
		return slot.Load()
	}
	return st
}

// count adds a request answered with code.
func (st *requestStats) count(p *Proxy, code int) {
	cs := st.codes.Load()
	if cs != nil {
		for _, c := range *cs {
			if c.code == code {
				c.counter.Inc()
				return
			}
		}
	}
	counter := p.metrics.Requests.WithLabelValues(st.direction, st.label, strconv.Itoa(code))
	counter.Inc()
	for cs == nil || len(*cs) < maxCachedCodes {
		next := make([]codeCounter, 0, maxCachedCodes)
		if cs != nil {
			next = append(next, *cs...)
		}
		next = append(next, codeCounter{code, counter})
		if st.codes.CompareAndSwap(cs, &next) {
			return
		}
		cs = st.codes.Load() // another code was added meanwhile
		for _, c := range *cs {
			if c.code == code {
				return
			}
		}
	}
}
