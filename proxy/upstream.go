package proxy

import (
	"strconv"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/metrics"
	"github.com/meshd/meshd/proxy/balance"
	"github.com/meshd/meshd/resilience"
)

// maxUpstreams bounds how many upstreams (services and passthrough
// destinations) get state of their own; passthrough destinations beyond it
// share one, so a client cannot grow meshd's memory without bound.
const maxUpstreams = 4096

// upstream is a mesh service, or a passthrough destination, as the proxy
// sees it: its policy, its resilience state, and for a service its
// endpoints with their live load. The endpoint list follows discovery's
// snapshots; an endpoint that stays across snapshots keeps its counters.
type upstream struct {
	name   string
	label  string           // metrics label: the service, or metrics.Passthrough
	source discovery.Source // set for passthrough; services take it from their snapshot
	policy config.Policy

	breaker *resilience.Breaker
	budget  *resilience.Budget
	limiter *resilience.Limiter
	ejector *resilience.Ejector

	mu  sync.Mutex
	cur atomic.Pointer[endpointSet]

	stats [2]atomic.Pointer[requestStats] // by side (sideOutbound, sideInbound), made at first use
}

type endpointSet struct {
	snap *discovery.Snapshot
	eps  []*balance.Endpoint
}

func (p *Proxy) newUpstream(name, label string, source discovery.Source) *upstream {
	pol := p.cfg.Policy(name)
	u := &upstream{name: name, label: label, source: source, policy: pol}
	u.breaker = resilience.NewBreaker(name, pol, p.breakerChanged)
	u.budget = resilience.NewBudget(pol.RetryBudget, pol.RetryBudgetMinPerSec, nil)
	u.limiter = resilience.NewLimiter(pol.MaxRequestsPerUpstream)
	u.ejector = resilience.NewEjector(name, pol, nil, p.endpointChanged)
	if p.metrics != nil {
		p.metrics.BreakerState.WithLabelValues(label).Set(0)
	}
	return u
}

// upstream returns a service's upstream, creating it on first use.
func (p *Proxy) upstream(name string) *upstream {
	if u, ok := p.upstreams.Load(name); ok {
		return u.(*upstream)
	}
	u, loaded := p.upstreams.LoadOrStore(name, p.newUpstream(name, name, ""))
	if !loaded {
		p.nUpstreams.Add(1)
	}
	return u.(*upstream)
}

// passthrough returns the upstream of a destination discovery does not
// know, keyed by host:port.
func (p *Proxy) passthrough(target string) *upstream {
	if u, ok := p.upstreams.Load(target); ok {
		return u.(*upstream)
	}
	if p.nUpstreams.Load() >= maxUpstreams {
		target = metrics.Passthrough
	}
	u, loaded := p.upstreams.LoadOrStore(target, p.newUpstream(target, metrics.Passthrough, discovery.SourcePassthrough))
	if !loaded {
		p.nUpstreams.Add(1)
	}
	return u.(*upstream)
}

// endpoints returns the balancer's view of snap, rebuilt only when the
// snapshot changed.
func (u *upstream) endpoints(snap *discovery.Snapshot) []*balance.Endpoint {
	if cur := u.cur.Load(); cur != nil && cur.snap == snap {
		return cur.eps
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	cur := u.cur.Load()
	if cur != nil && cur.snap == snap {
		return cur.eps
	}
	old := map[string]*balance.Endpoint{}
	if cur != nil {
		for _, e := range cur.eps {
			old[e.Addr] = e
		}
	}
	eps := make([]*balance.Endpoint, len(snap.Endpoints))
	addrs := make([]string, len(snap.Endpoints))
	for i, e := range snap.Endpoints {
		if prev, ok := old[e.Address]; ok {
			eps[i] = prev
		} else {
			eps[i] = balance.NewEndpoint(e.Address)
		}
		addrs[i] = e.Address
	}
	u.ejector.Sync(addrs)
	u.cur.Store(&endpointSet{snap: snap, eps: eps})
	return eps
}

// breakerChanged logs a service breaker's transition and updates its gauge.
func (p *Proxy) breakerChanged(name string, from, to resilience.State, reason string) {
	p.log.Info("breaker state changed", zap.String("upstream", name), zap.Stringer("from", from),
		zap.Stringer("to", to), zap.String("reason", reason))
	if p.metrics != nil {
		p.metrics.BreakerState.WithLabelValues(p.labelOf(name)).Set(to.Metric())
	}
}

// endpointChanged logs an endpoint breaker's transition and counts
// ejections.
func (p *Proxy) endpointChanged(name, addr string, from, to resilience.State) {
	p.log.Info("endpoint breaker state changed", zap.String("upstream", name), zap.String("endpoint", addr),
		zap.Stringer("from", from), zap.Stringer("to", to))
	if p.metrics != nil && to == resilience.StateOpen {
		p.metrics.Ejections.WithLabelValues(p.labelOf(name)).Inc()
	}
}

// labelOf is an upstream's metrics label.
func (p *Proxy) labelOf(name string) string {
	if u, ok := p.upstreams.Load(name); ok {
		return u.(*upstream).label
	}
	return metrics.Passthrough
}

// countRetry counts one retry with the condition that caused it.
func (p *Proxy) countRetry(u *upstream, o resilience.Outcome) {
	if p.metrics == nil {
		return
	}
	reason := "status"
	switch {
	case o.Cond == config.RetryConnectFailure:
		reason = "connect-failure"
	case o.Cond == config.RetryReset:
		reason = "reset"
	case o.Cond == config.RetryRefusedStream:
		reason = "refused-stream"
	case o.GRPC > 0:
		reason = "grpc"
	case o.Status == 504 && o.Failure:
		reason = "timeout"
	case o.Status > 0:
		reason = strconv.Itoa(o.Status)
	}
	p.metrics.Retries.WithLabelValues(u.label, reason).Inc()
}
