package proxy

import (
	"sync"
	"sync/atomic"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/balance"
)

// upstream is a mesh service as the proxy sees it: its policy and its
// endpoints with their live load. The endpoint list follows discovery's
// snapshots; an endpoint that stays across snapshots keeps its counters.
type upstream struct {
	name   string
	policy config.Policy

	mu  sync.Mutex
	cur atomic.Pointer[endpointSet]
}

type endpointSet struct {
	snap *discovery.Snapshot
	eps  []*balance.Endpoint
}

// upstream returns the service's upstream, creating it on first use.
func (p *Proxy) upstream(name string) *upstream {
	if u, ok := p.upstreams.Load(name); ok {
		return u.(*upstream)
	}
	u, _ := p.upstreams.LoadOrStore(name, &upstream{name: name, policy: p.cfg.Policy(name)})
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
	for i, e := range snap.Endpoints {
		if prev, ok := old[e.Address]; ok {
			eps[i] = prev
		} else {
			eps[i] = balance.NewEndpoint(e.Address)
		}
	}
	u.cur.Store(&endpointSet{snap: snap, eps: eps})
	return eps
}
