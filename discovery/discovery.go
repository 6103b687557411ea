// Package discovery is the seam between the proxy and the sources of
// endpoints: a Resolver answers a service name with an immutable Snapshot
// of its endpoints, and each Snapshot says when it has been superseded. The
// static list and Consul plug in behind it. It imports no other meshd
// package.
package discovery

import (
	"context"
	"errors"
	"net/netip"
	"strings"
)

// Source says where a snapshot came from, as the admin API shows it.
type Source string

// The sources of endpoints.
const (
	SourceStatic      Source = "static"
	SourceConsul      Source = "consul"
	SourcePassthrough Source = "passthrough"
)

// ErrUnknownService is returned by a Resolver that does not know the name:
// the proxy then passes the traffic through to its original destination.
var ErrUnknownService = errors.New("unknown service")

// Endpoint is one instance of a service.
type Endpoint struct {
	// Address is host:port; the host is an IP address, or a DNS name for
	// static endpoints written that way.
	Address string
}

// Snapshot is the endpoint set of one service at one moment. It is never
// modified; a change produces a new Snapshot.
type Snapshot struct {
	Service   string
	Source    Source
	Endpoints []Endpoint
	// Changed is closed when a newer snapshot replaces this one; nil means
	// this snapshot never changes.
	Changed <-chan struct{}
}

// Resolver finds the endpoints of a service.
type Resolver interface {
	// Resolve returns the current snapshot of service, or an error
	// wrapping ErrUnknownService when the resolver does not know it. The
	// first call for a name may wait for the source (bounded by ctx);
	// later calls answer from memory.
	Resolve(ctx context.Context, service string) (*Snapshot, error)
}

// AddressIndex is implemented by resolvers that can tell which of the
// services they watch has an endpoint at addr (ip:port): opaque TCP to such
// an address is treated as traffic for that service.
type AddressIndex interface {
	ServiceOf(addr string) (service string, ok bool)
}

// Lister is implemented by resolvers that can list the snapshots they hold
// (for the admin API).
type Lister interface {
	Snapshots() []*Snapshot
}

// Chain asks each resolver in turn and returns the first answer that is
// not ErrUnknownService: a name in the static list is served from it, other
// names go to Consul.
type Chain []Resolver

// Resolve implements Resolver.
func (ch Chain) Resolve(ctx context.Context, service string) (*Snapshot, error) {
	for _, r := range ch {
		s, err := r.Resolve(ctx, service)
		if errors.Is(err, ErrUnknownService) {
			continue
		}
		return s, err
	}
	return nil, ErrUnknownService
}

// ServiceOf implements AddressIndex over the resolvers that do.
func (ch Chain) ServiceOf(addr string) (string, bool) {
	for _, r := range ch {
		if idx, ok := r.(AddressIndex); ok {
			if s, ok := idx.ServiceOf(addr); ok {
				return s, true
			}
		}
	}
	return "", false
}

// Snapshots implements Lister over the resolvers that do; a name listed by
// an earlier resolver hides the same name in a later one.
func (ch Chain) Snapshots() []*Snapshot {
	var out []*Snapshot
	seen := map[string]bool{}
	for _, r := range ch {
		if l, ok := r.(Lister); ok {
			for _, s := range l.Snapshots() {
				if !seen[strings.ToLower(s.Service)] {
					seen[strings.ToLower(s.Service)] = true
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// Static serves fixed endpoint lists. Names are matched without regard to
// case.
type Static struct {
	services map[string]*Snapshot
	byAddr   map[string]string
}

// NewStatic returns a resolver over lists: service name → host:port
// addresses. A name with an empty list is known and has no endpoints.
func NewStatic(lists map[string][]string) *Static {
	s := &Static{services: make(map[string]*Snapshot, len(lists)), byAddr: map[string]string{}}
	for name, addrs := range lists {
		snap := &Snapshot{Service: name, Source: SourceStatic, Endpoints: make([]Endpoint, len(addrs))}
		for i, a := range addrs {
			snap.Endpoints[i] = Endpoint{Address: a}
			if ap, err := netip.ParseAddrPort(a); err == nil {
				s.byAddr[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()] = name
			}
		}
		s.services[strings.ToLower(name)] = snap
	}
	return s
}

// Resolve implements Resolver; it never blocks.
func (s *Static) Resolve(_ context.Context, service string) (*Snapshot, error) {
	if snap, ok := s.services[service]; ok {
		return snap, nil
	}
	if snap, ok := s.services[strings.ToLower(service)]; ok {
		return snap, nil
	}
	return nil, ErrUnknownService
}

// ServiceOf implements AddressIndex.
func (s *Static) ServiceOf(addr string) (string, bool) {
	name, ok := s.byAddr[addr]
	return name, ok
}

// Snapshots implements Lister.
func (s *Static) Snapshots() []*Snapshot {
	out := make([]*Snapshot, 0, len(s.services))
	for _, snap := range s.services {
		out = append(out, snap)
	}
	return out
}
