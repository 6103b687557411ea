package proxy

import (
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/resilience"
)

// BreakersView is the admin API's /breakers document.
type BreakersView struct {
	Upstreams map[string]UpstreamBreakers `json:"upstreams"`
}

// UpstreamBreakers is one upstream's service breaker and endpoint
// breakers.
type UpstreamBreakers struct {
	resilience.BreakerView
	Endpoints map[string]resilience.EndpointView `json:"endpoints"`
}

// EndpointsView is the admin API's /endpoints document.
type EndpointsView struct {
	Upstreams map[string]UpstreamEndpoints `json:"upstreams"`
}

// UpstreamEndpoints is one upstream's endpoints and where they came from.
type UpstreamEndpoints struct {
	Source    discovery.Source `json:"source"`
	Endpoints []EndpointState  `json:"endpoints"`
}

// EndpointState is one endpoint as the balancer sees it.
type EndpointState struct {
	Address     string `json:"address"`
	Healthy     bool   `json:"healthy"`
	Ejected     bool   `json:"ejected"`
	Outstanding int64  `json:"outstanding"`
}

// Breakers returns the state of every upstream's breakers.
func (p *Proxy) Breakers() BreakersView {
	v := BreakersView{Upstreams: map[string]UpstreamBreakers{}}
	p.upstreams.Range(func(k, val any) bool {
		u := val.(*upstream)
		eps := u.ejector.View()
		if eps == nil {
			eps = map[string]resilience.EndpointView{}
		}
		v.Upstreams[u.name] = UpstreamBreakers{BreakerView: u.breaker.View(), Endpoints: eps}
		return true
	})
	return v
}

// Endpoints returns every upstream's endpoints: those the proxy has used,
// and those discovery holds.
func (p *Proxy) Endpoints() EndpointsView {
	v := EndpointsView{Upstreams: map[string]UpstreamEndpoints{}}
	p.upstreams.Range(func(k, val any) bool {
		u := val.(*upstream)
		ue := UpstreamEndpoints{Source: u.source, Endpoints: []EndpointState{}}
		if u.source == discovery.SourcePassthrough {
			ue.Endpoints = append(ue.Endpoints, EndpointState{Address: u.name, Healthy: true})
		} else if cur := u.cur.Load(); cur != nil {
			ue.Source = cur.snap.Source
			ejected := u.ejector.View()
			for _, e := range cur.eps {
				ev, ok := ejected[e.Addr]
				ue.Endpoints = append(ue.Endpoints, EndpointState{
					Address: e.Addr, Healthy: true, Ejected: ok && ev.State == resilience.StateOpen, Outstanding: e.Outstanding(),
				})
			}
		}
		v.Upstreams[u.name] = ue
		return true
	})
	if l, ok := p.resolver.(discovery.Lister); ok {
		for _, s := range l.Snapshots() {
			if _, seen := v.Upstreams[s.Service]; seen {
				continue
			}
			ue := UpstreamEndpoints{Source: s.Source, Endpoints: []EndpointState{}}
			for _, e := range s.Endpoints {
				ue.Endpoints = append(ue.Endpoints, EndpointState{Address: e.Address, Healthy: true})
			}
			v.Upstreams[s.Service] = ue
		}
	}
	return v
}
