package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/net/http2"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy/balance"
	"github.com/meshd/meshd/proxy/h1"
	"github.com/meshd/meshd/resilience"
)

// Header a client sets to let meshd retry a request whose method is not
// idempotent.
const HeaderRetryable = "X-Meshd-Retryable"

// errTimeout is the request or per-try timeout firing before response
// headers arrived.
var errTimeout = errors.New("upstream timeout")

// attemptFields are X-Meshd-Attempt's values, shared by every request:
// nothing changes a field's values in place.
var attemptFields = [...][]string{{"0"}, {"1"}, {"2"}, {"3"}, {"4"}, {"5"}, {"6"}, {"7"}, {"8"}, {"9"}}

func attemptField(n int) []string {
	if n < len(attemptFields) {
		return attemptFields[n]
	}
	return []string{strconv.Itoa(n)}
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
	return p.roundTrip(req, rt, new(exchange))
}

// roundTrip is RoundTrip for a request whose route is known; x is the
// exchange to fill, part of the request's state.
func (p *Proxy) roundTrip(req *http.Request, rt *route, x *exchange) (*http.Response, error) {
	if rt.up == nil {
		// Inbound: delivered to the local app as it is, under no policy
		// but the connect timeout.
		req.URL.Host = rt.target
		return p.transportFor(req).RoundTrip(req)
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
	*x = exchange{p: p, u: u, rt: rt, pol: &u.policy, req: req, breakerDone: done}
	return x.run()
}

// routeContext is an exchange's context: it also answers routeKey, for
// the dialer (the route's connect timeout), without a context.WithValue
// of its own. It is part of the exchange.
type routeContext struct {
	context.Context
	rt *route
}

// Value answers routeKey, and passes every other key on.
func (c *routeContext) Value(key any) any {
	if key == routeKey {
		return c.rt
	}
	return c.Context.Value(key)
}

// exchange is one request's way through the resilience policy.
type exchange struct {
	p           *Proxy
	u           *upstream
	rt          *route
	pol         *config.Policy
	req         *http.Request
	breakerDone func(resilience.Result)

	ctx       context.Context // the request's own, with meshd's deadline: &rctx
	cancel    context.CancelFunc
	rctx      routeContext
	first     http.Request // the first try's request
	whole     wholeBody    // the first try's answer, when read whole
	respBody  responseBody // the answer handed on
	deadline  time.Time    // zero: none
	timedOut  atomic.Bool
	timerMu   sync.Mutex // guards reqTimer's re-arming against stopRequestTimer
	reqTimer  *time.Timer
	timerOff  bool // stopRequestTimer was called
	ownLimit  bool // the deadline is meshd's request timeout, not the client's
	body      *replayBody
	tried     []*balance.Endpoint // endpoints already attempted; backed by triedBuf
	triedBuf  [4]*balance.Endpoint
	retryable bool // idempotent, or x-meshd-retryable: true
	grpc      bool // a gRPC call
	activity  activity
}

// activity is when a request last moved a byte, either way: the stream
// idle timeout counts from it, so a stream that only the client feeds
// (client streaming, WebSocket-like bidi traffic) is not cut while bytes
// flow.
type activity struct{ last atomic.Int64 }

func (a *activity) touch() { a.touchAt(time.Now()) }

func (a *activity) touchAt(t time.Time) { a.last.Store(t.UnixNano()) }

func (a *activity) idleFor() time.Duration {
	return time.Duration(time.Now().UnixNano() - a.last.Load())
}

func (x *exchange) run() (*http.Response, error) {
	req, pol := x.req, x.pol
	parent := req.Context()
	x.rctx.Context, x.cancel = context.WithCancel(parent)
	x.rctx.rt = x.rt
	x.ctx = &x.rctx
	now := time.Now()
	if pol.RequestTimeout > 0 {
		x.deadline = now.Add(pol.RequestTimeout)
		x.ownLimit = true
	}
	// The request's own deadline shortens meshd's, never lengthens it:
	// the client going away, or a gRPC call's grpc-timeout.
	if d, ok := parent.Deadline(); ok && (x.deadline.IsZero() || d.Before(x.deadline)) {
		x.deadline, x.ownLimit = d, false
	}
	x.grpc = isGRPC(req)
	if x.grpc {
		if t, ok := parseGRPCTimeout(req.Header.Get("Grpc-Timeout")); ok {
			if d := now.Add(t); x.deadline.IsZero() || d.Before(x.deadline) {
				x.deadline, x.ownLimit = d, false
			}
		}
	}
	if req.Body != nil && req.Body != http.NoBody {
		x.body = newReplayBody(req.Body, int64(pol.RetryBodyMax))
		x.body.activity = &x.activity
	}
	x.activity.touchAt(now)
	if !x.deadline.IsZero() {
		x.timerMu.Lock()
		x.reqTimer = time.AfterFunc(x.deadline.Sub(now), x.requestTimeout)
		x.timerMu.Unlock()
	}
	x.retryable = resilience.Idempotent(req.Method) || strings.EqualFold(req.Header.Get(HeaderRetryable), "true")

	var bo backoff.BackOff
	for attempt := 1; ; attempt++ {
		ep, target, begun := x.pick()
		if target == "" {
			return x.fail(ErrNoHealthyUpstream)
		}
		resp, tryTimedOut, tryCancel, err := x.attempt(attempt, ep, target)
		if err != nil && !tryTimedOut && !x.timedOut.Load() && x.pastDeadline(time.Now()) {
			// The upstream ended the attempt as the deadline passed, before
			// meshd's timer ran: a gRPC server that enforces the
			// grpc-timeout meshd passed on resets the stream then.
			tryTimedOut = true
		}
		if cerr := x.body.clientErr(); cerr != nil {
			// The client's own body broke the attempt (malformed chunked
			// encoding, a reset mid-upload): nothing to blame on the
			// endpoint or the service, and nothing to retry. An answer the
			// upstream gave to the broken request is not passed on.
			if resp != nil {
				_ = resp.Body.Close()
			}
			if ep != nil {
				ep.Release()
				if begun {
					x.u.ejector.Done(ep.Addr, false)
				}
			}
			tryCancel()
			return x.clientFailed(cerr)
		}
		outcome := classify(resp, err, tryTimedOut || x.timedOut.Load(), x.grpc)
		final := err == nil && !outcome.Failure && outcome.Cond == 0 && !pol.RetryOn.RetriesStatus(resp.StatusCode)
		// A gRPC answer without grpc-status in its headers carries its
		// status in the trailers: the endpoint's and the service's outcome
		// is settled by the response body (responseBody.onSettle).
		inTrailers := final && x.grpc && outcome.GRPC < 0 && resp.StatusCode == http.StatusOK
		// Only an attempt that took the endpoint's slot (Begin) reports to
		// its breaker: a panic-mode attempt must not settle a probe.
		if ep != nil && begun && !inTrailers {
			x.u.ejector.Done(ep.Addr, outcome.Failure)
		}
		if !final {
			sent := true
			var de *DialError
			if errors.As(err, &de) || errors.Is(err, h1.ErrServerClosedIdle) {
				sent = false
			}
			// A gRPC call is retried only when it is unary: its whole
			// request, one message, is in hand.
			replayable := x.body.replayable() && (!x.grpc || x.body.singleGRPCMessage())
			canRetry := attempt <= pol.RetryMax && !x.timedOut.Load() && parent.Err() == nil &&
				resilience.ShouldRetry(pol.RetryOn, req.Method, x.retryable, replayable, sent, outcome)
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
		return x.succeed(resp, ep, begun, tryCancel, outcome, inTrailers), nil
	}
}

// pastDeadline reports whether the exchange's deadline has passed by now.
// meshd's own request timeout of a gRPC call with a request body is left
// out: its timer may move it (requestTimeout), and x.deadline does not say.
func (x *exchange) pastDeadline(now time.Time) bool {
	if x.deadline.IsZero() || x.grpc && x.ownLimit && x.body != nil {
		return false
	}
	return !now.Before(x.deadline)
}

// pick chooses the attempt's endpoint: a usable one not tried yet, else a
// usable one, else (every endpoint ejected) the least bad. begun says the
// endpoint's breaker admitted the attempt (Begin); a panic-mode pick is
// not admitted and reports nothing. Passthrough has its single target.
func (x *exchange) pick() (ep *balance.Endpoint, target string, begun bool) {
	eps := x.rt.eps
	if eps == nil {
		if x.rt.target == "" {
			return nil, "", false
		}
		return nil, x.rt.target, false
	}
	if len(eps) == 0 {
		return nil, "", false
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
			return ep, ep.Addr, true
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
			return e, e.Addr, false
		}
	}
	return eps[0], eps[0].Addr, false
}

func (x *exchange) wasTried(e *balance.Endpoint) bool {
	for _, t := range x.tried {
		if t == e {
			return true
		}
	}
	return false
}

func (x *exchange) remember(e *balance.Endpoint) {
	if e != nil {
		if x.tried == nil {
			x.tried = x.triedBuf[:0]
		}
		x.tried = append(x.tried, e)
	}
}

// attempt sends one try. The returned cancel ends the try's context; the
// caller calls it when the try's response is done with.
func (x *exchange) attempt(n int, ep *balance.Endpoint, target string) (resp *http.Response, timedOut bool, cancel context.CancelFunc, err error) {
	// The first attempt runs in the exchange's own context unless a
	// per-try timeout needs one to cancel: the try is the exchange then.
	// A retry gets its own, so that the try it replaces can be ended.
	ctx, cancel := x.ctx, context.CancelFunc(noCancel)
	if x.pol.PerTryTimeout > 0 || n > 1 {
		ctx, cancel = context.WithCancel(x.ctx)
	}
	var tryTimer *time.Timer
	var fired *atomic.Bool // made only with a per-try timeout
	if pt := x.pol.PerTryTimeout; pt > 0 {
		fired = new(atomic.Bool)
		tryTimer = time.AfterFunc(pt, func() { fired.Store(true); cancel() })
	}
	x.rt.attempts, x.rt.endpoint = n, target
	var out *http.Request
	if n == 1 {
		// The first try's request is part of the exchange. A retry's is
		// its own: the try it replaces may still hold the one before.
		x.first = *x.req.WithContext(ctx)
		out = &x.first
	} else {
		out = x.req.WithContext(ctx)
	}
	out.URL.Host = target
	out.Header[HeaderAttempt] = attemptField(n)
	if x.body != nil {
		out.Body = x.body.attempt()
	}
	if ep != nil {
		ep.Acquire()
	}
	resp, err = x.p.transportFor(out).RoundTrip(out)
	if err == nil && x.saveable(resp) {
		var into *wholeBody
		if n == 1 {
			into = &x.whole
		}
		if berr := readWhole(resp, into); berr != nil {
			resp, err = nil, fmt.Errorf("%w: %w", errCutResponse, berr)
		}
	}
	if tryTimer != nil {
		tryTimer.Stop()
	}
	return resp, fired != nil && fired.Load(), cancel, err
}

func noCancel() {}

// errCutResponse is an upstream ending a response before its body was
// whole.
var errCutResponse = errors.New("upstream cut the response mid-body")

// saveable reports whether meshd reads attempt n's response body whole
// before it answers: a body of known length up to the retry body limit
// (not gRPC, whose streams must flow). A response cut mid-body is then a
// failed attempt, a reset, retried like one when the request allows, and
// answered 502 when it does not, instead of a truncated answer the client
// may take for whole.
func (x *exchange) saveable(resp *http.Response) bool {
	return !x.grpc && resp.ContentLength > 0 && resp.ContentLength <= int64(x.pol.RetryBodyMax) &&
		x.req.Method != http.MethodHead && resp.StatusCode >= 200 && resp.StatusCode != http.StatusSwitchingProtocols
}

// readWhole reads a response body of known length into memory (a pooled
// buffer when it fits) and releases the upstream connection. On error the
// body is closed and the response must be dropped. The new body is into,
// or a new one when into is nil.
func readWhole(resp *http.Response, into *wholeBody) error {
	n := int(resp.ContentLength)
	var pooled *[]byte
	var buf []byte
	if n <= 32<<10 {
		pooled = copyBufs.Get().(*[]byte)
		buf = (*pooled)[:n]
	} else {
		buf = make([]byte, n)
	}
	_, err := io.ReadFull(resp.Body, buf)
	_ = resp.Body.Close()
	if err != nil {
		if pooled != nil {
			copyBufs.Put(pooled)
		}
		return err
	}
	if into == nil {
		into = new(wholeBody)
	}
	*into = wholeBody{buf: buf, pooled: pooled}
	resp.Body = into
	return nil
}

// wholeBody is a response body held in memory.
type wholeBody struct {
	buf    []byte
	off    int
	pooled *[]byte
}

func (b *wholeBody) Read(p []byte) (int, error) {
	if b.off >= len(b.buf) {
		return 0, io.EOF
	}
	n := copy(p, b.buf[b.off:])
	b.off += n
	return n, nil
}

// WriteTo lets io.Copy hand the whole body to the client in one write.
func (b *wholeBody) WriteTo(w io.Writer) (int64, error) {
	if b.off >= len(b.buf) {
		return 0, nil
	}
	n, err := w.Write(b.buf[b.off:])
	b.off += n
	return int64(n), err
}

func (b *wholeBody) Close() error {
	if b.pooled != nil {
		copyBufs.Put(b.pooled)
		b.pooled, b.buf = nil, nil
	}
	return nil
}

// classify turns an attempt's result into an outcome for breakers and
// retries. A gRPC answer's status is read from its headers (a
// trailers-only answer, which is how gRPC servers fail a call before any
// message).
func classify(resp *http.Response, err error, timedOut, grpc bool) resilience.Outcome {
	if err != nil {
		var de *DialError
		var se http2.StreamError
		switch {
		case errors.As(err, &de), errors.Is(err, h1.ErrServerClosedIdle):
			// A reused connection the upstream had closed: the request
			// never reached it, like a connection that failed to open.
			return resilience.ErrorOutcome(config.RetryConnectFailure)
		case errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream:
			return resilience.ErrorOutcome(config.RetryRefusedStream)
		case timedOut:
			return resilience.TimeoutOutcome()
		default:
			return resilience.ErrorOutcome(config.RetryReset)
		}
	}
	if grpc {
		if v := resp.Header.Get("Grpc-Status"); v != "" {
			if code, err := strconv.Atoi(v); err == nil {
				return resilience.GRPCOutcome(resp.StatusCode, code)
			}
		}
	}
	return resilience.StatusOutcome(resp.StatusCode)
}

// parseGRPCTimeout reads a grpc-timeout header: an integer of at most 8
// digits and a unit (H, M, S, m, u, n).
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
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

// errBadRequestBody is the client's request body being malformed.
var errBadRequestBody = errors.New("malformed request body")

// clientFailed ends the exchange on the client's own fault: the breaker
// ignores it and the client is answered 400.
func (x *exchange) clientFailed(err error) (*http.Response, error) {
	x.stopRequestTimer()
	x.breakerDone(resilience.Ignore)
	x.u.limiter.Release()
	x.cancel()
	return nil, fmt.Errorf("%w: %v", errBadRequestBody, err)
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
//
// inTrailers says the outcome is in the trailers of a gRPC answer: the
// body reports it to the endpoint's and the service's breakers.
func (x *exchange) succeed(resp *http.Response, ep *balance.Endpoint, begun bool, tryCancel context.CancelFunc, o resilience.Outcome, inTrailers bool) *http.Response {
	x.stopRequestTimer()
	switch {
	case inTrailers:
	case o.Failure:
		x.breakerDone(resilience.Failure)
	default:
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
	b := &x.respBody // an exchange answers once
	*b = responseBody{ReadCloser: resp.Body, resp: resp, client: x.req.Context(), act: &x.activity,
		ep: ep, limiter: x.u.limiter, cancels: [2]context.CancelFunc{tryCancel, x.cancel}}
	if inTrailers {
		b.onSettle = func(failure, ignore bool) {
			if ep != nil && begun {
				x.u.ejector.Done(ep.Addr, failure)
			}
			switch {
			case ignore:
				x.breakerDone(resilience.Ignore)
			case failure:
				x.breakerDone(resilience.Failure)
			default:
				x.breakerDone(resilience.Success)
			}
		}
	}
	if _, whole := resp.Body.(*wholeBody); whole {
		// Read whole already: no stream left to go idle.
	} else if idle := x.pol.StreamIdleTimeout; idle > 0 {
		// Only this timer reads the activity from here on.
		x.activity.touch()
		b.idle = idle
		b.mu.Lock()
		b.timer = time.AfterFunc(idle, b.expire)
		b.mu.Unlock()
	}
	resp.Body = b
	return resp
}

func (x *exchange) stopRequestTimer() {
	x.timerMu.Lock()
	defer x.timerMu.Unlock()
	x.timerOff = true
	if x.reqTimer != nil {
		x.reqTimer.Stop()
	}
}

// requestTimeout ends the exchange when its deadline passes. A gRPC
// client-streaming call gets its response headers only when it ends, so
// for gRPC meshd's own request timeout counts from the end of the
// client's stream: while the client still streams, the call lives as long
// as bytes flow within the stream idle timeout (the contract's streams
// rule). A client's own deadline (grpc-timeout) always holds.
func (x *exchange) requestTimeout() {
	x.timerMu.Lock()
	defer x.timerMu.Unlock()
	if x.timerOff {
		return
	}
	if x.grpc && x.ownLimit && x.body != nil {
		if next, ok := x.body.extendTimeout(x.pol.RequestTimeout, x.pol.StreamIdleTimeout, &x.activity); ok {
			x.reqTimer.Reset(time.Until(next))
			return
		}
	}
	x.timedOut.Store(true)
	x.cancel()
}

// responseBody releases what the exchange holds when the body is closed,
// and cuts a stream that moves no byte either way for the stream idle
// timeout. For a gRPC answer whose status comes in the trailers it settles
// the call's outcome (onSettle): at the first message (the upstream is
// serving the call; a long stream must not hold a half-open breaker's
// probe slot for its whole life), or at the end from grpc-status.
type responseBody struct {
	io.ReadCloser
	resp     *http.Response  // its Trailer is filled when the body ends
	client   context.Context // the client's request
	act      *activity
	ep       *balance.Endpoint
	limiter  *resilience.Limiter
	cancels  [2]context.CancelFunc
	idle     time.Duration
	onSettle func(failure, ignore bool) // nil: settled at the headers
	settled  sync.Once
	cut      atomic.Bool // the idle timeout ended the stream

	mu     sync.Mutex // guards timer and closed
	timer  *time.Timer
	closed bool
	once   sync.Once
}

func (b *responseBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && b.idle > 0 {
		b.act.touch() // for the stream idle timer, the only reader
	}
	if b.onSettle != nil {
		switch {
		case n > 0:
			b.settle(false, false)
		case errors.Is(err, io.EOF):
			b.settle(grpcTrailerFailure(b.resp.Trailer), false)
		case err != nil:
			// Cut by meshd (idle) or by the client going away: says
			// nothing of the upstream. Otherwise the upstream reset it.
			ignore := b.cut.Load() || b.client.Err() != nil
			b.settle(!ignore, ignore)
		}
	}
	return n, err
}

func (b *responseBody) settle(failure, ignore bool) {
	b.settled.Do(func() { b.onSettle(failure, ignore) })
}

// grpcTrailerFailure reports whether a gRPC call's trailers say it failed
// (contract: UNAVAILABLE). A call that ends without a grpc-status is one
// too: gRPC clients see it as UNAVAILABLE.
func grpcTrailerFailure(tr http.Header) bool {
	code, err := strconv.Atoi(tr.Get("Grpc-Status"))
	if err != nil {
		return true
	}
	return resilience.GRPCOutcome(http.StatusOK, code).Failure
}

// expire cuts the stream, unless bytes moved since the timer was set: its
// context ends, so the read fails.
func (b *responseBody) expire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if rest := b.idle - b.act.idleFor(); rest > 0 {
		b.timer.Reset(rest)
		return
	}
	b.cut.Store(true)
	for _, c := range b.cancels {
		c()
	}
}

func (b *responseBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		if b.onSettle != nil {
			b.settle(false, true) // the client stopped reading before the end
		}
		b.mu.Lock()
		b.closed = true
		if b.timer != nil {
			b.timer.Stop()
		}
		b.mu.Unlock()
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
//
// Reads from src are serialized by rmu, held while a read blocks; the
// state is guarded by mu, never held across a read, so that the retry
// decision never waits for a client that sends nothing more until it hears
// back (a bidi gRPC call waiting for its first answer).
type replayBody struct {
	rmu      sync.Mutex
	mu       sync.Mutex
	src      io.ReadCloser
	max      int64
	buf      []byte
	read     int64 // bytes taken from src
	eof      bool  // src has ended
	eofAt    time.Time
	overflow bool
	gen      int
	activity *activity // touched when bytes come from the client; may be nil
	srcErr   error     // the client's body failed (malformed chunking, reset): its fault, not the upstream's
}

// clientErr returns the error the client's body failed with, if it did.
func (b *replayBody) clientErr() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.srcErr
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

// singleGRPCMessage reports whether the body has ended and is exactly one
// whole gRPC message (a unary call's request), so replaying it repeats
// nothing a stream would not. A streaming call that has sent one message
// so far is not: its body has not ended.
func (b *replayBody) singleGRPCMessage() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.eof || b.overflow || len(b.buf) < 5 || int64(len(b.buf)) != b.read {
		return false
	}
	n := int(b.buf[1])<<24 | int(b.buf[2])<<16 | int(b.buf[3])<<8 | int(b.buf[4])
	return len(b.buf) == 5+n
}

// extendTimeout says when a streaming request's timeout should next be
// checked instead of firing now: while the client still sends, within the
// stream idle timeout (idle, 0 = none) of its last byte; once it has
// ended, the request timeout (timeout) after its end.
func (b *replayBody) extendTimeout(timeout, idle time.Duration, act *activity) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if b.eof {
		next := b.eofAt.Add(timeout)
		return next, next.After(now)
	}
	if b.read == 0 {
		return time.Time{}, false // nothing sent yet: no stream to speak of
	}
	if idle <= 0 {
		return now.Add(timeout), true
	}
	rest := idle - act.idleFor()
	return now.Add(min(rest, timeout)), rest > 0
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
	if n, done, err := a.fromKept(p); done {
		return n, err
	}
	b := a.b
	b.rmu.Lock()
	defer b.rmu.Unlock()
	// Another attempt's read may have kept more bytes while this one
	// waited for rmu.
	if n, done, err := a.fromKept(p); done {
		return n, err
	}
	n, err := b.src.Read(p)
	b.mu.Lock()
	if n > 0 {
		b.read += int64(n)
		a.off += int64(n)
		if !b.overflow && int64(len(b.buf)+n) <= b.max {
			b.buf = append(b.buf, p[:n]...)
		} else {
			b.overflow, b.buf = true, nil
		}
	}
	if errors.Is(err, io.EOF) && !b.eof {
		b.eof, b.eofAt = true, time.Now()
	} else if err != nil && !errors.Is(err, io.EOF) && b.srcErr == nil {
		b.srcErr = err
	}
	b.mu.Unlock()
	if n > 0 && b.activity != nil {
		b.activity.touch()
	}
	return n, err
}

// fromKept serves the attempt from what was kept or is known; done is
// false when it must read on from src.
func (a *attemptBody) fromKept(p []byte) (n int, done bool, err error) {
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case a.gen != b.gen:
		return 0, true, errStaleAttempt
	case a.off < int64(len(b.buf)):
		n = copy(p, b.buf[a.off:])
		a.off += int64(n)
		return n, true, nil
	case a.off < b.read:
		// The kept bytes were dropped (overflow): this attempt cannot
		// be completed.
		return 0, true, errStaleAttempt
	case b.eof:
		return 0, true, io.EOF
	}
	return 0, false, nil
}

// Close does not close the client's body: another attempt may need it.
// The server closes it when the handler returns.
func (a *attemptBody) Close() error { return nil }
