package resilience

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/config"
)

// MaxEjectionTime caps how long one ejection lasts, whatever
// EjectBaseTime × ejections says.
const MaxEjectionTime = 5 * time.Minute

// EndpointView is a snapshot of one endpoint's health for the admin API.
type EndpointView struct {
	// State is closed (in rotation), open (ejected) or half-open (one
	// probe at a time).
	State State `json:"state"`
	// Since is the time of the last change of state, or when the
	// endpoint appeared.
	Since time.Time `json:"since"`
	// Ejections counts the endpoint's ejections since it appeared.
	Ejections int `json:"ejections"`
	// ConsecutiveFailures counts its failed attempts in a row.
	ConsecutiveFailures int `json:"-"`
	// Until is when the current ejection ends; zero unless open.
	Until time.Time `json:"-"`
}

// Ejector holds the health of one upstream's endpoints, keyed by address:
// outlier detection, a per-endpoint breaker counting attempts.
//
// An endpoint is ejected (open) after EjectConsecutiveFailures failed
// attempts in a row (0 = never), for EjectBaseTime × its ejection
// multiplier, capped at MaxEjectionTime. Each ejection adds one to the
// multiplier; each full EjectBaseTime the endpoint then spends closed takes
// one off (down to 0), so, as with Envoy's decaying multiplier, an endpoint
// that keeps failing is ejected for longer each time while one that fails
// again long after it recovered starts over at EjectBaseTime.
//
// When the ejection ends the endpoint is half-open: one attempt at a time
// goes through as a probe. A successful probe closes it (consecutive
// failures reset); a failed one ejects it again, for longer.
//
// At most EjectMaxPercent of the current endpoints are open at once (the
// floor of percent × n / 100; half-open ones do not count). An ejection
// that would exceed this does not happen: the endpoint stays (or, after a
// failed probe, becomes) closed, its failures still counted, and its next
// failure tries again.
//
// The hot path is the *EndpointHealth that Endpoint returns, whose Usable,
// Begin and Done are a few atomic operations while the endpoint is closed;
// the Ejector-level methods of the same names add one map lookup on an
// immutable snapshot. Changes of state take the Ejector's mutex.
type Ejector struct {
	name      string
	threshold int32         // EjectConsecutiveFailures; 0 = never eject
	base      time.Duration // EjectBaseTime
	percent   int           // EjectMaxPercent
	clock     Clock
	onChange  func(name, addr string, from, to State)

	snap atomic.Pointer[ejectorSnapshot] // replaced whole by Sync, under mu

	mu sync.Mutex // serializes changes of state, so the cap holds
}

type ejectorSnapshot struct {
	byAddr map[string]*EndpointHealth
	list   []*EndpointHealth // in Sync's order
}

// EndpointHealth is the health of one endpoint of an Ejector. Callers may
// hold the pointer (from Ejector.Endpoint) across requests and call its
// methods without a map lookup. A nil *EndpointHealth is an endpoint the
// Ejector does not track: always usable, its outcomes ignored.
type EndpointHealth struct {
	e    *Ejector
	addr string

	state atomic.Int32 // State
	until atomic.Int64 // while open: when the ejection ends, in Unix ns
	fails atomic.Int32 // consecutive failed attempts
	probe atomic.Bool  // while half-open: the probe slot is taken

	// Guarded by e.mu.
	gone      bool      // no longer in the endpoint set
	since     time.Time // last change of state
	ejections int       // ejections since the endpoint appeared
	mult      int       // ejection multiplier (decays while closed)
}

type ejectEvent struct {
	addr     string
	from, to State
}

// NewEjector returns the ejector of the named upstream under policy p, with
// no endpoints until Sync. onChange, which may be nil, is called once per
// change of an endpoint's state, after the Ejector's lock is released. A
// nil clock is the real clock.
func NewEjector(name string, p config.Policy, clock Clock, onChange func(name, addr string, from, to State)) *Ejector {
	e := &Ejector{
		name:      name,
		threshold: int32(min(max(p.EjectConsecutiveFailures, 0), 1<<30)),
		base:      max(p.EjectBaseTime, 0),
		percent:   min(max(p.EjectMaxPercent, 0), 100),
		clock:     orReal(clock),
		onChange:  onChange,
	}
	e.snap.Store(&ejectorSnapshot{})
	return e
}

// Sync sets the current endpoint set: new addresses start closed, known
// ones keep their state, and those no longer listed are forgotten (a
// pointer to one still works but no longer changes state).
func (e *Ejector) Sync(addrs []string) {
	now := e.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.snap.Load()
	next := &ejectorSnapshot{byAddr: make(map[string]*EndpointHealth, len(addrs)), list: make([]*EndpointHealth, 0, len(addrs))}
	for _, a := range addrs {
		if _, dup := next.byAddr[a]; dup {
			continue
		}
		h := old.byAddr[a]
		if h == nil {
			h = &EndpointHealth{e: e, addr: a, since: now}
		}
		next.byAddr[a] = h
		next.list = append(next.list, h)
	}
	for a, h := range old.byAddr {
		if next.byAddr[a] != h {
			h.gone = true
		}
	}
	e.snap.Store(next)
}

// Endpoint returns the health of addr, or nil if addr is not in the set.
func (e *Ejector) Endpoint(addr string) *EndpointHealth {
	return e.snap.Load().byAddr[addr]
}

// Usable reports whether addr may be picked: closed, or half-open with its
// probe slot free. Usable does not take the slot. An unknown address is
// usable.
func (e *Ejector) Usable(addr string) bool { return e.Endpoint(addr).Usable() }

// Begin takes the attempt slot for addr: see EndpointHealth.Begin.
func (e *Ejector) Begin(addr string) bool { return e.Endpoint(addr).Begin() }

// Done reports the outcome of an attempt begun with Begin: see
// EndpointHealth.Done.
func (e *Ejector) Done(addr string, failure bool) { e.Endpoint(addr).Done(failure) }

// Panic reports whether the set is not empty but none of its endpoints is
// usable. Then, as Envoy's panic threshold does, the caller should send
// traffic anyway, to LeastBad's choice, without Begin and Done: the
// endpoints' states then change only by their own timeouts and probes.
func (e *Ejector) Panic() bool {
	list := e.snap.Load().list
	if len(list) == 0 {
		return false
	}
	for _, h := range list {
		if h.Usable() {
			return false
		}
	}
	return true
}

// LeastBad returns the best of addrs (all known endpoints when addrs is
// empty): a usable one first, then the one with the fewest consecutive
// failures, then the one whose ejection ends first; ties go to the earlier
// in the list. An address the Ejector does not track counts as usable with
// no failures. It returns "" when there is nothing to choose from.
func (e *Ejector) LeastBad(addrs []string) string {
	s := e.snap.Load()
	var (
		best     string
		found    bool
		bestRank rank
	)
	consider := func(addr string, h *EndpointHealth) {
		if r := h.rank(); !found || r.less(bestRank) {
			best, bestRank, found = addr, r, true
		}
	}
	if len(addrs) == 0 {
		for _, h := range s.list {
			consider(h.addr, h)
		}
	} else {
		for _, a := range addrs {
			consider(a, s.byAddr[a])
		}
	}
	return best
}

type rank struct {
	unusable bool
	fails    int32
	until    int64
}

func (r rank) less(o rank) bool {
	if r.unusable != o.unusable {
		return !r.unusable
	}
	if r.fails != o.fails {
		return r.fails < o.fails
	}
	return r.until < o.until
}

func (h *EndpointHealth) rank() rank {
	if h == nil {
		return rank{}
	}
	r := rank{unusable: !h.Usable(), fails: h.fails.Load()}
	if State(h.state.Load()) == StateOpen {
		r.until = h.until.Load()
	}
	return r
}

// View returns the health of every endpoint in the set, keyed by address.
func (e *Ejector) View() map[string]EndpointView {
	now := e.clock.Now()
	var events []ejectEvent
	e.mu.Lock()
	list := e.snap.Load().list
	v := make(map[string]EndpointView, len(list))
	for _, h := range list {
		h.promoteLocked(now, &events)
		ev := EndpointView{
			State:               State(h.state.Load()),
			Since:               h.since,
			Ejections:           h.ejections,
			ConsecutiveFailures: int(h.fails.Load()),
		}
		if ev.State == StateOpen {
			ev.Until = time.Unix(0, h.until.Load())
		}
		v[h.addr] = ev
	}
	e.mu.Unlock()
	e.deliver(events)
	return v
}

// Addr returns the endpoint's address.
func (h *EndpointHealth) Addr() string {
	if h == nil {
		return ""
	}
	return h.addr
}

// State returns the endpoint's state, moving it from open to half-open if
// its ejection has ended. A nil endpoint is closed.
func (h *EndpointHealth) State() State {
	if h == nil {
		return StateClosed
	}
	h.Usable()
	return State(h.state.Load())
}

// Usable reports whether the endpoint may be picked: closed, or half-open
// with its probe slot free. It does not take the slot.
func (h *EndpointHealth) Usable() bool {
	if h == nil {
		return true
	}
	switch State(h.state.Load()) {
	case StateClosed:
		return true
	case StateHalfOpen:
		return !h.probe.Load()
	}
	if !h.expired() {
		return false
	}
	return !h.probe.Load()
}

// expired reports whether an open endpoint's ejection has ended, and if so
// moves it to half-open. It returns true too when the state has left open
// in the meantime.
func (h *EndpointHealth) expired() bool {
	if h.e.clock.Now().UnixNano() < h.until.Load() {
		return false
	}
	h.e.promote(h)
	return State(h.state.Load()) != StateOpen
}

// Begin takes the attempt slot: it returns true if an attempt may go to
// the endpoint, which is always so while it is closed, and so for one
// attempt at a time while it is half-open (the probe). It returns false
// while the endpoint is ejected or its probe is out. Every true must be
// followed by one Done.
func (h *EndpointHealth) Begin() bool {
	if h == nil {
		return true
	}
	for {
		switch State(h.state.Load()) {
		case StateClosed:
			return true
		case StateHalfOpen:
			return h.probe.CompareAndSwap(false, true)
		}
		if !h.expired() {
			return false
		}
	}
}

// Done reports the outcome of an attempt begun with Begin: failure as
// Outcome.Failure says. While closed, a failure counts toward ejection and
// a success resets the count. While half-open, the outcome settles the
// probe. While open, it is ignored: the attempt began before the ejection.
func (h *EndpointHealth) Done(failure bool) {
	if h == nil {
		return
	}
	switch State(h.state.Load()) {
	case StateClosed:
		if !failure {
			if h.fails.Load() != 0 {
				h.fails.Store(0)
			}
			return
		}
		if n := h.fails.Add(1); h.e.threshold > 0 && n >= h.e.threshold {
			h.e.tryEject(h)
		}
	case StateHalfOpen:
		h.e.settle(h, failure)
	}
}

// promote moves h from open to half-open if its ejection has ended.
func (e *Ejector) promote(h *EndpointHealth) {
	now := e.clock.Now()
	var events []ejectEvent
	e.mu.Lock()
	h.promoteLocked(now, &events)
	e.mu.Unlock()
	e.deliver(events)
}

// promoteLocked moves h from open to half-open if its ejection has ended
// by now. e.mu must be held.
func (h *EndpointHealth) promoteLocked(now time.Time, events *[]ejectEvent) {
	if h.gone || State(h.state.Load()) != StateOpen {
		return
	}
	until := h.until.Load()
	if now.UnixNano() < until {
		return
	}
	h.probe.Store(false) // before the state, so a Begin that sees half-open finds the slot free
	h.state.Store(int32(StateHalfOpen))
	h.since = time.Unix(0, until)
	*events = append(*events, ejectEvent{h.addr, StateOpen, StateHalfOpen})
}

// tryEject ejects a closed endpoint that reached the threshold, if the cap
// allows it.
func (e *Ejector) tryEject(h *EndpointHealth) {
	now := e.clock.Now()
	var events []ejectEvent
	e.mu.Lock()
	if !h.gone && State(h.state.Load()) == StateClosed && h.fails.Load() >= e.threshold && e.mayEjectLocked(now, &events) {
		e.ejectLocked(h, now, &events)
	}
	e.mu.Unlock()
	e.deliver(events)
}

// settle ends a half-open endpoint's probe.
func (e *Ejector) settle(h *EndpointHealth, failure bool) {
	now := e.clock.Now()
	var events []ejectEvent
	e.mu.Lock()
	// Without the probe out, this outcome belongs to an attempt that began
	// before the ejection: ignore it.
	if !h.gone && State(h.state.Load()) == StateHalfOpen && h.probe.Load() {
		switch {
		case !failure:
			h.fails.Store(0)
			h.closeLocked(now, &events)
		case e.threshold > 0 && e.mayEjectLocked(now, &events):
			h.fails.Add(1)
			e.ejectLocked(h, now, &events)
		default: // the cap forbids another ejection
			h.fails.Add(1)
			h.closeLocked(now, &events)
		}
	}
	e.mu.Unlock()
	e.deliver(events)
}

// mayEjectLocked reports whether one more endpoint may be open now, moving
// those whose ejection has ended to half-open first. e.mu must be held;
// since endpoints become open only under it, the count cannot rise while
// we decide.
func (e *Ejector) mayEjectLocked(now time.Time, events *[]ejectEvent) bool {
	list := e.snap.Load().list
	allowed := e.percent * len(list) / 100
	if allowed == 0 {
		return false
	}
	open := 0
	for _, o := range list {
		o.promoteLocked(now, events) // an ejection that has ended does not count
		if State(o.state.Load()) == StateOpen {
			open++
		}
	}
	return open < allowed
}

// ejectLocked opens h for base × its multiplier. e.mu must be held.
func (e *Ejector) ejectLocked(h *EndpointHealth, now time.Time, events *[]ejectEvent) {
	from := State(h.state.Load())
	if from == StateClosed && e.base > 0 {
		// Decay: one step off the multiplier per full base time spent closed.
		h.mult = max(h.mult-int(now.Sub(h.since)/e.base), 0)
	}
	h.mult = min(h.mult+1, e.maxMult())
	h.ejections++
	d := MaxEjectionTime
	if e.base <= 0 {
		d = 0
	} else if h.mult <= int(MaxEjectionTime/e.base) {
		d = e.base * time.Duration(h.mult)
	}
	h.until.Store(now.Add(d).UnixNano())
	h.probe.Store(false)
	h.state.Store(int32(StateOpen))
	h.since = now
	*events = append(*events, ejectEvent{h.addr, from, StateOpen})
}

// maxMult is the multiplier past which ejections last MaxEjectionTime
// anyway; the multiplier stops there, so that it decays in reasonable time.
func (e *Ejector) maxMult() int {
	if e.base <= 0 {
		return 1
	}
	return int(MaxEjectionTime/e.base) + 1
}

// closeLocked puts h back into rotation. e.mu must be held.
func (h *EndpointHealth) closeLocked(now time.Time, events *[]ejectEvent) {
	from := State(h.state.Load())
	h.state.Store(int32(StateClosed))
	h.probe.Store(false)
	h.since = now
	*events = append(*events, ejectEvent{h.addr, from, StateClosed})
}

func (e *Ejector) deliver(events []ejectEvent) {
	if e.onChange == nil {
		return
	}
	for _, ev := range events {
		e.onChange(e.name, ev.addr, ev.from, ev.to)
	}
}
