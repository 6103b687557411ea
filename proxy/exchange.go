package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy/balance"
	"github.com/meshd/meshd/resilience"
)

// Header a client sets to let meshd retry a request whose method is not
// idempotent.
const HeaderRetryable = "X-Meshd-Retryable"

// errTimeout is the request or per-try timeout firing before response
// headers arrived.
var errTimeout = errors.New("upstream timeout")

var attemptValues = [...]string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}

func attemptValue(n int) string {
	if n < len(attemptValues) {
		return attemptValues[n]
	}
	return strconv.Itoa(n)
}

// RoundTrip sends one request upstream under the upstream's policy:
// overload limit and service breaker first, then attempts on balanced,
// non-ejected endpoints with retries (backoff, budget, a different endpoint
// when there is one), the request timeout over all of it and the per-try
// timeout over each attempt. The response body is bounded by the stream
// idle timeout.
func (p *Proxy) RoundTrip(req *http.Request) (*http.Response, error) {
	rt, _ := req.Context().Value(routeKey).(*route)
	if rt == nil {
		return nil, errors.New("request without a route")
	}
	if rt.up == nil {
		// Inbound: delivered to the local app as it is, under no policy
		// but the connect timeout.
		req.URL.Host = rt.target
		return p.transport.RoundTrip(req)
	}
	u := rt.up
	if !u.limiter.Acquire() {
		return nil, resilience.ErrOverloaded
	}
	done, err := u.breaker.Allow()
	if err != nil {
		u.limiter.Release()
		return nil, err
	}
	u.budget.Request()
	x := &exchange{p: p, u: u, rt: rt, pol: &u.policy, req: req, breakerDone: done}
	return x.run()
}

// exchange is one request's way through the resilience policy.
type exchange struct {
	p           *Proxy
	u           *upstream
	rt          *route
	pol         *config.Policy
	req         *http.Request
	breakerDone func(resilience.Result)

	ctx       context.Context // the request's own, with meshd's deadline
	cancel    context.CancelFunc
	deadline  time.Time // zero: none
	timedOut  atomic.Bool
	reqTimer  *time.Timer
	body      *replayBody
	tried     [4]*balance.Endpoint
	triedN    int
	retryable bool // idempotent, or x-meshd-retryable: true
}

func (x *exchange) run() (*http.Response, error) {
	req, pol := x.req, x.pol
	parent := req.Context()
	x.ctx, x.cancel = context.WithCancel(parent)
	if pol.RequestTimeout > 0 {
		x.deadline = time.Now().Add(pol.RequestTimeout)
	}
	// The request's own deadline shortens meshd's, never lengthens it.
	if d, ok := parent.Deadline(); ok && (x.deadline.IsZero() || d.Before(x.deadline)) {
		x.deadline = d
	}
	if !x.deadline.IsZero() {
		x.reqTimer = time.AfterFunc(time.Until(x.deadline), func() { x.timedOut.Store(true); x.cancel() })
	}
	if req.Body != nil && req.Body != http.NoBody {
		x.body = newReplayBody(req.Body, int64(pol.RetryBodyMax))
	}
	x.retryable = resilience.Idempotent(req.Method) || strings.EqualFold(req.Header.Get(HeaderRetryable), "true")

	var bo backoff.BackOff
	for attempt := 1; ; attempt++ {
		ep, target := x.pick()
		if target == "" {
			return x.fail(ErrNoHealthyUpstream)
		}
		resp, tryTimedOut, tryCancel, err := x.attempt(attempt, ep, target)
		outcome := classify(resp, err, tryTimedOut || x.timedOut.Load())
		if ep != nil {
			x.u.ejector.Done(ep.Addr, outcome.Failure)
		}
		final := err == nil && !outcome.Failure && !x.p.cfgRetriesStatus(pol, resp.StatusCode)
		if !final {
			sent := true
			var de *DialError
			if errors.As(err, &de) {
				sent = false
			}
			canRetry := attempt <= pol.RetryMax && !x.timedOut.Load() && parent.Err() == nil &&
				resilience.ShouldRetry(pol.RetryOn, req.Method, x.retryable, x.body.replayable(), sent, outcome)
			if canRetry {
				if bo == nil {
					bo = resilience.NewBackoff(pol.RetryBackoffBase, pol.RetryBackoffMax, nil)
				}
				wait := bo.NextBackOff()
				switch {
				case !x.deadline.IsZero() && time.Now().Add(wait).After(x.deadline):
					// No time left for another attempt: the last answer stands.
				case !x.u.budget.TryRetry():
					if resp != nil {
						resp.Header.Set(HeaderError, "retry-budget-exhausted")
					}
				default:
					x.discard(resp, ep, tryCancel)
					x.p.countRetry(x.u, outcome)
					if !x.sleep(wait) {
						return x.fail(x.ctxErr())
					}
					x.remember(ep)
					continue
				}
			}
		}
		if err != nil {
			if ep != nil {
				ep.Release()
			}
			tryCancel()
			if tryTimedOut || x.timedOut.Load() {
				err = errTimeout
			}
			return x.fail(err)
		}
		return x.succeed(resp, ep, tryCancel, outcome), nil
	}
}

// cfgRetriesStatus reports whether a status would be retried by the
// policy's status rules (so a 409 with retriable-4xx is not final).
func (p *Proxy) cfgRetriesStatus(pol *config.Policy, status int) bool {
	return pol.RetryOn.RetriesStatus(status)
}

// pick chooses the attempt's endpoint: a usable one not tried yet, else a
// usable one, else (every endpoint ejected) the least bad. Passthrough has
// its single target.
func (x *exchange) pick() (*balance.Endpoint, string) {
	eps := x.rt.eps
	if eps == nil {
		if x.rt.target == "" {
			return nil, ""
		}
		return nil, x.rt.target
	}
	if len(eps) == 0 {
		return nil, ""
	}
	ej := x.u.ejector
	usable := func(e *balance.Endpoint) bool { return !ej.Usable(e.Addr) }
	fresh := func(e *balance.Endpoint) bool { return x.wasTried(e) || !ej.Usable(e.Addr) }
	for i := 0; i < 3; i++ {
		ep := balance.Pick(eps, x.p.rand, fresh)
		if ep == nil {
			ep = balance.Pick(eps, x.p.rand, usable)
		}
		if ep == nil {
			break
		}
		if ej.Begin(ep.Addr) {
			return ep, ep.Addr
		}
	}
	// Panic mode: every endpoint is ejected; the least bad keeps serving.
	addrs := make([]string, len(eps))
	for i, e := range eps {
		addrs[i] = e.Addr
	}
	lb := ej.LeastBad(addrs)
	for _, e := range eps {
		if e.Addr == lb {
			return e, e.Addr
		}
	}
	return eps[0], eps[0].Addr
}

func (x *exchange) wasTried(e *balance.Endpoint) bool {
	for _, t := range x.tried[:x.triedN] {
		if t == e {
			return true
		}
	}
	return false
}

func (x *exchange) remember(e *balance.Endpoint) {
	if e != nil && x.triedN < len(x.tried) {
		x.tried[x.triedN] = e
		x.triedN++
	}
}

// attempt sends one try. The returned cancel ends the try's context; the
// caller calls it when the try's response is done with.
func (x *exchange) attempt(n int, ep *balance.Endpoint, target string) (resp *http.Response, timedOut bool, cancel context.CancelFunc, err error) {
	ctx, cancel := context.WithCancel(x.ctx)
	var tryTimer *time.Timer
	var fired atomic.Bool
	if pt := x.pol.PerTryTimeout; pt > 0 {
		tryTimer = time.AfterFunc(pt, func() { fired.Store(true); cancel() })
	}
	x.rt.attempts, x.rt.endpoint = n, target
	out := x.req.WithContext(ctx)
	out.URL.Host = target
	out.Header.Set(HeaderAttempt, attemptValue(n))
	if x.body != nil {
		out.Body = x.body.attempt()
	}
	if ep != nil {
		ep.Acquire()
	}
	resp, err = x.p.transport.RoundTrip(out)
	if tryTimer != nil {
		tryTimer.Stop()
	}
	return resp, fired.Load(), cancel, err
}

// classify turns an attempt's result into an outcome for breakers and
// retries.
func classify(resp *http.Response, err error, timedOut bool) resilience.Outcome {
	if err != nil {
		var de *DialError
		switch {
		case errors.As(err, &de):
			return resilience.ErrorOutcome(config.RetryConnectFailure)
		case timedOut:
			return resilience.TimeoutOutcome()
		default:
			return resilience.ErrorOutcome(config.RetryReset)
		}
	}
	return resilience.StatusOutcome(resp.StatusCode)
}

// discard drops an attempt that will be retried.
func (x *exchange) discard(resp *http.Response, ep *balance.Endpoint, cancel context.CancelFunc) {
	if resp != nil {
		// Read a little so a small error body lets the connection be
		// reused; more is not worth the wait.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		_ = resp.Body.Close()
	}
	if ep != nil {
		ep.Release()
	}
	cancel()
}

// sleep waits out a backoff, unless the request ends first.
func (x *exchange) sleep(d time.Duration) bool {
	if d <= 0 {
		return x.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-x.ctx.Done():
		return false
	}
}

func (x *exchange) ctxErr() error {
	if x.timedOut.Load() {
		return errTimeout
	}
	return x.req.Context().Err()
}

// fail ends the exchange without a response.
func (x *exchange) fail(err error) (*http.Response, error) {
	x.stopRequestTimer()
	switch {
	case x.req.Context().Err() != nil && !x.timedOut.Load():
		x.breakerDone(resilience.Ignore) // the client went away: says nothing of the upstream
	case errors.Is(err, ErrNoHealthyUpstream):
		// Nothing was tried: the breaker counts requests that reached an
		// endpoint.
		x.breakerDone(resilience.Ignore)
	default:
		x.breakerDone(resilience.Failure)
	}
	x.u.limiter.Release()
	x.cancel()
	return nil, err
}

// succeed hands the response on; the body keeps the request's resources
// until it is closed, under the stream idle timeout.
func (x *exchange) succeed(resp *http.Response, ep *balance.Endpoint, tryCancel context.CancelFunc, o resilience.Outcome) *http.Response {
	x.stopRequestTimer()
	if o.Failure {
		x.breakerDone(resilience.Failure)
	} else {
		x.breakerDone(resilience.Success)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The connection becomes a tunnel; it is no longer a request.
		if ep != nil {
			ep.Release()
		}
		x.u.limiter.Release()
		return resp
	}
	b := &responseBody{ReadCloser: resp.Body, ep: ep, limiter: x.u.limiter, cancels: [2]context.CancelFunc{tryCancel, x.cancel}}
	if idle := x.pol.StreamIdleTimeout; idle > 0 {
		b.idle = idle
		b.timer = time.AfterFunc(idle, b.expire)
	}
	resp.Body = b
	return resp
}

func (x *exchange) stopRequestTimer() {
	if x.reqTimer != nil {
		x.reqTimer.Stop()
	}
}

// responseBody releases what the exchange holds when the body is closed,
// and cuts a body that moves no byte for the stream idle timeout.
type responseBody struct {
	io.ReadCloser
	ep      *balance.Endpoint
	limiter *resilience.Limiter
	cancels [2]context.CancelFunc
	idle    time.Duration
	timer   *time.Timer
	once    sync.Once
}

func (b *responseBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && b.timer != nil {
		b.timer.Reset(b.idle)
	}
	return n, err
}

// expire cuts the stream: its context ends, so the read fails.
func (b *responseBody) expire() {
	for _, c := range b.cancels {
		c()
	}
}

func (b *responseBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		if b.timer != nil {
			b.timer.Stop()
		}
		for _, c := range b.cancels {
			c()
		}
		if b.ep != nil {
			b.ep.Release()
		}
		b.limiter.Release()
	})
	return err
}

// replayBody lets a request body be sent again: it keeps the first max
// bytes it reads, and each attempt reads those again before going on with
// the rest. Once more than max bytes were read the body cannot be replayed.
// A stale attempt (one the transport may still be reading after a retry
// began) gets an error instead of the next attempt's bytes.
type replayBody struct {
	mu       sync.Mutex
	src      io.ReadCloser
	max      int64
	buf      []byte
	read     int64 // bytes taken from src
	overflow bool
	gen      int
}

func newReplayBody(src io.ReadCloser, max int64) *replayBody {
	return &replayBody{src: src, max: max}
}

// replayable reports whether another attempt can send the whole body:
// nothing was read yet, or everything read was kept. A nil body is.
func (b *replayBody) replayable() bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read == 0 || !b.overflow
}

// attempt returns the body for a new attempt.
func (b *replayBody) attempt() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	return &attemptBody{b: b, gen: b.gen}
}

var errStaleAttempt = errors.New("request body belongs to a newer attempt")

type attemptBody struct {
	b   *replayBody
	gen int
	off int64
}

func (a *attemptBody) Read(p []byte) (int, error) {
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.gen != b.gen {
		return 0, errStaleAttempt
	}
	if a.off < int64(len(b.buf)) {
		n := copy(p, b.buf[a.off:])
		a.off += int64(n)
		return n, nil
	}
	if a.off < b.read {
		// The kept bytes were dropped (overflow): this attempt cannot
		// be completed.
		return 0, errStaleAttempt
	}
	n, err := b.src.Read(p)
	if n > 0 {
		b.read += int64(n)
		a.off += int64(n)
		if !b.overflow && int64(len(b.buf)+n) <= b.max {
			b.buf = append(b.buf, p[:n]...)
		} else {
			b.overflow, b.buf = true, nil
		}
	}
	return n, err
}

// Close does not close the client's body: another attempt may need it.
// The server closes it when the handler returns.
func (a *attemptBody) Close() error { return nil }
