// Package consul resolves mesh services from a Consul agent, behind the
// discovery seam. Each service name is watched on first use with blocking
// queries on the agent's health endpoint (passing instances only, stale
// reads, the agent cache), and stops being watched after an idle time. When
// Consul is unreachable the last known endpoints stay in use: the proxy
// reads snapshots from memory and never waits for Consul once a name has
// been answered.
//
// The package also registers the local app with the agent
// (Register/Deregister).
package consul

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/meshd/meshd/discovery"
)

// Options configure a Resolver.
type Options struct {
	Client     *api.Client
	Datacenter string // empty: the agent's own
	// Idle is how long a name may go unused before its watch stops;
	// default 10 minutes.
	Idle time.Duration
	// UnknownTTL is how long a name Consul does not know is answered as
	// unknown from memory before Consul is asked again; default 5 s.
	UnknownTTL time.Duration
	// MaxBackoff caps the wait between retries while Consul fails;
	// default 10 s.
	MaxBackoff time.Duration
	Log        *zap.Logger
	// OnUpdate is called with the service name when its endpoints change;
	// OnError when a query fails. Both may be nil.
	OnUpdate func(service string)
	OnError  func()
}

// Resolver is a discovery.Resolver over Consul.
type Resolver struct {
	o       Options
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	watches map[string]*watch

	answered atomic.Bool // the agent has answered at least once
	outage   atomic.Bool // the last query failed (for one log line per outage)
}

var _ discovery.Resolver = (*Resolver)(nil)

// New starts a Resolver; Close stops its watches.
func New(o Options) *Resolver {
	if o.Idle <= 0 {
		o.Idle = 10 * time.Minute
	}
	if o.UnknownTTL <= 0 {
		o.UnknownTTL = 5 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Resolver{o: o, ctx: ctx, cancel: cancel, watches: map[string]*watch{}}
	r.wg.Add(1)
	go r.janitor()
	return r
}

// watch follows one service name.
type watch struct {
	name     string
	cancel   context.CancelFunc
	lastUsed atomic.Int64 // unix nanoseconds
	ready    chan struct{}
	snap     atomic.Pointer[discovery.Snapshot] // nil: unknown to Consul
	changed  chan struct{}                      // Changed of the current snapshot
	expires  atomic.Int64                       // for unknown names: when to ask again
	stopped  atomic.Bool
}

// Resolve implements discovery.Resolver. The first call for a name starts
// its watch and waits for Consul's first answer, bounded by ctx; a name
// still unanswered when ctx ends is reported unknown (the traffic is passed
// through) while the watch goes on.
func (r *Resolver) Resolve(ctx context.Context, service string) (*discovery.Snapshot, error) {
	now := time.Now().UnixNano()
	w := r.watchFor(service, now)
	w.lastUsed.Store(now)
	select {
	case <-w.ready:
	default:
		select {
		case <-w.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("consul has not answered for %q yet: %w", service, discovery.ErrUnknownService)
		}
	}
	if s := w.snap.Load(); s != nil {
		return s, nil
	}
	return nil, discovery.ErrUnknownService
}

// watchFor returns the live watch of a name, starting one when there is
// none or when an unknown name's memory expired.
func (r *Resolver) watchFor(service string, now int64) *watch {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.watches[service]; ok {
		exp := w.expires.Load()
		switch {
		case exp != 0 && now < exp: // remembered as unknown
			return w
		case exp == 0 && !w.stopped.Load(): // watching
			return w
		}
		w.cancel()
	}
	ctx, cancel := context.WithCancel(r.ctx)
	w := &watch{name: service, cancel: cancel, ready: make(chan struct{})}
	w.lastUsed.Store(now)
	r.watches[service] = w
	r.wg.Add(1)
	go r.run(ctx, w)
	return w
}

// run is one name's blocking-query loop.
func (r *Resolver) run(ctx context.Context, w *watch) {
	defer r.wg.Done()
	defer w.stopped.Store(true)
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = r.o.MaxBackoff
	b.MaxElapsedTime = 0 // a watcher never gives up
	b.Reset()
	var index uint64
	first := true
	for ctx.Err() == nil {
		opts := &api.QueryOptions{
			Datacenter: r.o.Datacenter,
			AllowStale: true,
			UseCache:   true,
			WaitIndex:  index,
			WaitTime:   5 * time.Minute,
		}
		entries, meta, err := r.o.Client.Health().Service(w.name, "", true, opts.WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.failed(w, err)
			// Restart from index 0 once Consul answers again.
			index = 0
			select {
			case <-ctx.Done():
				return
			case <-time.After(b.NextBackOff()):
			}
			continue
		}
		b.Reset()
		r.recovered()
		if meta.LastIndex < index || meta.LastIndex == 0 {
			index = 0 // the index went backwards: start over, as Consul's watch does
		} else {
			index = meta.LastIndex
		}
		if len(entries) == 0 {
			known, err := r.known(ctx, w.name)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				r.failed(w, err)
				continue
			}
			if !known {
				// Consul does not know the name: remember that for a while
				// without keeping a query open for it.
				w.snap.Store(nil)
				w.expires.Store(time.Now().Add(r.o.UnknownTTL).UnixNano())
				// Stopped before anyone waiting is told: a caller that got
				// the answer sees no watch left open.
				w.stopped.Store(true)
				if first {
					close(w.ready)
				}
				return
			}
		}
		r.publish(w, entries)
		if first {
			first = false
			close(w.ready)
		}
		if index == 0 {
			// Never spin on an agent that reports no index.
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// known reports whether the catalog has the service at all (a service
// whose instances all fail their checks is known and has no endpoints).
func (r *Resolver) known(ctx context.Context, name string) (bool, error) {
	opts := (&api.QueryOptions{Datacenter: r.o.Datacenter, AllowStale: true}).WithContext(ctx)
	svcs, _, err := r.o.Client.Catalog().Service(name, "", opts)
	if err != nil {
		return false, err
	}
	return len(svcs) > 0, nil
}

// publish stores a new snapshot when the endpoint set changed.
func (r *Resolver) publish(w *watch, entries []*api.ServiceEntry) {
	eps := make([]discovery.Endpoint, 0, len(entries))
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		eps = append(eps, discovery.Endpoint{Address: Address(e)})
	}
	slices.SortFunc(eps, func(a, b discovery.Endpoint) int {
		if a.Address < b.Address {
			return -1
		}
		if a.Address > b.Address {
			return 1
		}
		return 0
	})
	eps = slices.Compact(eps)
	if cur := w.snap.Load(); cur != nil && slices.Equal(cur.Endpoints, eps) {
		return
	}
	changed := make(chan struct{})
	w.snap.Store(&discovery.Snapshot{Service: w.name, Source: discovery.SourceConsul, Endpoints: eps, Changed: changed})
	if w.changed != nil {
		close(w.changed)
	}
	w.changed = changed
	if r.o.OnUpdate != nil {
		r.o.OnUpdate(w.name)
	}
	if ce := r.o.Log.Check(zap.DebugLevel, "endpoints changed"); ce != nil {
		ce.Write(zap.String("upstream", w.name), zap.Int("endpoints", len(eps)))
	}
}

// Address is an instance's host:port: the service address, else the node
// address.
func Address(e *api.ServiceEntry) string {
	host := e.Service.Address
	if host == "" && e.Node != nil {
		host = e.Node.Address
	}
	return net.JoinHostPort(host, strconv.Itoa(e.Service.Port))
}

func (r *Resolver) failed(w *watch, err error) {
	if r.o.OnError != nil {
		r.o.OnError()
	}
	if !r.outage.Swap(true) {
		r.o.Log.Warn("consul unreachable: keeping the last known endpoints", zap.String("upstream", w.name), zap.Error(err))
	}
}

func (r *Resolver) recovered() {
	r.answered.Store(true)
	if r.outage.Swap(false) {
		r.o.Log.Info("consul reachable again")
	}
}

// Answered reports whether the agent has answered at least once.
func (r *Resolver) Answered() bool { return r.answered.Load() }

// Ping asks the agent for its leader; it marks the resolver answered on
// success. Readiness uses it before any name is watched.
func (r *Resolver) Ping(ctx context.Context) error {
	opts := (&api.QueryOptions{}).WithContext(ctx)
	_, err := r.o.Client.Status().LeaderWithQueryOptions(opts)
	if err != nil {
		return fmt.Errorf("consul agent: %w", err)
	}
	r.answered.Store(true)
	return nil
}

// Snapshots returns the current snapshot of every watched, known name.
func (r *Resolver) Snapshots() []*discovery.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*discovery.Snapshot, 0, len(r.watches))
	for _, w := range r.watches {
		if s := w.snap.Load(); s != nil && !w.stopped.Load() {
			out = append(out, s)
		}
	}
	return out
}

// ServiceOf returns the watched service that has addr (ip:port) among its
// endpoints.
func (r *Resolver) ServiceOf(addr string) (string, bool) {
	for _, s := range r.Snapshots() {
		for _, e := range s.Endpoints {
			if e.Address == addr {
				return s.Service, true
			}
		}
	}
	return "", false
}

// Watching returns the number of names with a live watch.
func (r *Resolver) Watching() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, w := range r.watches {
		if !w.stopped.Load() {
			n++
		}
	}
	return n
}

// janitor stops the watches of names unused for the idle time and forgets
// expired unknown names.
func (r *Resolver) janitor() {
	defer r.wg.Done()
	every := min(max(r.o.Idle/4, 50*time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case now := <-t.C:
			r.mu.Lock()
			for name, w := range r.watches {
				idle := now.Sub(time.Unix(0, w.lastUsed.Load())) > r.o.Idle
				expired := w.expires.Load() != 0 && now.UnixNano() > w.expires.Load()
				if idle || expired {
					w.cancel()
					delete(r.watches, name)
					if idle {
						if ce := r.o.Log.Check(zap.DebugLevel, "watch stopped: unused"); ce != nil {
							ce.Write(zap.String("upstream", name))
						}
					}
				}
			}
			r.mu.Unlock()
		}
	}
}

// Close stops every watch and waits for them.
func (r *Resolver) Close() error {
	r.cancel()
	r.wg.Wait()
	return nil
}

// ErrNoAddress is returned by Register when no address to register can be
// found.
var ErrNoAddress = errors.New("no non-loopback address to register")

// Registration is the local app as registered in Consul.
type Registration struct {
	Name    string
	Address string // empty: the first non-loopback address
	Port    int
	// Host names the instance in its ID; empty: os.Hostname.
	Host string
	// CheckInterval is the TCP check's interval; default 5 s.
	CheckInterval time.Duration
	// DeregisterAfter removes an instance critical for this long; default 1 m.
	DeregisterAfter time.Duration
}

// ServiceID is the stable, unique ID of a registration:
// <name>-<host>-<port>.
func ServiceID(name, host string, port int) string {
	return name + "-" + host + "-" + strconv.Itoa(port)
}

// Register registers the local app with the agent, with a TCP check on
// its port, and returns the service ID.
func Register(ctx context.Context, c *api.Client, reg Registration) (string, error) {
	if reg.Address == "" {
		a, err := FirstAddress()
		if err != nil {
			return "", err
		}
		reg.Address = a
	}
	if reg.CheckInterval <= 0 {
		reg.CheckInterval = 5 * time.Second
	}
	if reg.DeregisterAfter <= 0 {
		reg.DeregisterAfter = time.Minute
	}
	id := ServiceID(reg.Name, reg.Host, reg.Port)
	err := c.Agent().ServiceRegisterOpts(&api.AgentServiceRegistration{
		ID:      id,
		Name:    reg.Name,
		Address: reg.Address,
		Port:    reg.Port,
		Meta:    map[string]string{"sidecar": "meshd"},
		Check: &api.AgentServiceCheck{
			Name:                           "meshd: app port " + strconv.Itoa(reg.Port),
			TCP:                            net.JoinHostPort(reg.Address, strconv.Itoa(reg.Port)),
			Interval:                       reg.CheckInterval.String(),
			Timeout:                        "2s",
			DeregisterCriticalServiceAfter: reg.DeregisterAfter.String(),
		},
	}, api.ServiceRegisterOpts{}.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("register %s with consul: %w", id, err)
	}
	return id, nil
}

// Deregister removes a registration.
func Deregister(ctx context.Context, c *api.Client, id string) error {
	if err := c.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("deregister %s from consul: %w", id, err)
	}
	return nil
}

// FirstAddress returns the first non-loopback unicast address of this
// network namespace, IPv4 first.
func FirstAddress() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("list addresses: %w", err)
	}
	var v6 string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || !ipn.IP.IsGlobalUnicast() {
			continue
		}
		if ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
		if v6 == "" {
			v6 = ipn.IP.String()
		}
	}
	if v6 != "" {
		return v6, nil
	}
	return "", ErrNoAddress
}
