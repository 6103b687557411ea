package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/meshd/meshd/proxy/balance"
	"github.com/meshd/meshd/proxy/h1"
	"github.com/meshd/meshd/resilience"
)

// The relay is the path of plain HTTP/1.1 requests: proxy/h1 offers it
// each request whose head and body are already buffered and hold nothing
// unusual (h1.ScanRequest), and it forwards the bytes as they are, without
// building an http.Request, a header map or a context per request.
//
// Outbound, it takes requests to a mesh service and sends them under the
// same resilience policy as the general path (exchange). It declines,
// leaving the request to the general path, whatever it does not handle
// the same way: authorities discovery does not know (passthrough), errors
// of routing, no request timeout, or a body over the retry body limit.
// The client is not watched for going away while the upstream works on
// its request: the request timeout bounds that wait, which is why a route
// without one is not relayed.
//
// Inbound, it takes every request, and delivers it to the local app as
// the general path does: one attempt, under no policy but the connect
// timeout. With no request timeout to bound the wait, the client is
// looked at every relayWatchEvery while the app has not answered, and
// watched as a Handler's is while a streamed answer passes on: a client
// that goes away ends the request (499), and closes the app's connection.
//
// Either way field names go upstream as the client wrote them, in its
// order.

// relayWatchEvery is how often an inbound relay looks at its client while
// the app has not answered.
const relayWatchEvery = 100 * time.Millisecond

// relayState is what relaying needs of its own on one client connection,
// made at its first relayed request and used by each of them in turn.
type relayState struct {
	host      string // the last Host, kept so that the next one costs no string
	rt        route
	routeWait *lazyTimeout // discovery's wait for a name's first answer
	connWait  *relayWait   // the wait for an upstream connection, and its dial
	x         exchange     // for its endpoint choice only
	out       []byte       // the request sent upstream
	buf       []byte       // the answer's head, and a short answer's body
	resp      h1.RelayResponse
	requestID [36]byte

	// Inbound.
	inCtx   routeContext     // the wait for a connection to the app, and its dial
	client  *h1.RelayConn    // the connection watchClient looks at
	watchFn func() time.Time // watchClient, bound once
	gone    bool             // the client went away during this request
	// The access log's path and request ID, copied when the request's
	// bytes leave the read buffer before the log is written (saved).
	logPath, logID []byte
	saved          bool
}

// relay is proxy/h1's Server.Relay.
func (p *Proxy) relay(s *httpSide, rc *h1.RelayConn) {
	req := &rc.Req
	info, _ := rc.Context().Value(connInfoKey).(*connInfo)
	if info == nil || req.NumFields() > p.cfg.MaxHeaderCount {
		return
	}
	rs, _ := rc.State.(*relayState)
	if rs == nil {
		rs = new(relayState)
		rc.State = rs
	}
	if string(req.Host) != rs.host {
		rs.host = string(req.Host)
	}
	start := time.Now()
	var rt *route
	var code int
	var answered time.Time
	var cut bool
	var reason string
	rs.saved = false
	if info.inbound {
		if rs.rt.target == "" {
			rs.rt = route{key: "inbound", target: p.inboundTarget(info.dst)}
		}
		rt = &rs.rt
		rc.Take()
		code, answered, cut, reason = p.relayInbound(rc, rs, start)
	} else {
		name := ServiceName(rs.host)
		if name == "" {
			return
		}
		rs.routeWait = reusable(rs.routeWait)
		var err error
		rt, err = p.serviceRouteInto(rc.Context(), name, &rs.rt, rs.routeWait)
		if err != nil {
			return
		}
		if pol := &rt.up.policy; pol.RequestTimeout <= 0 || req.ContentLength > int64(pol.RetryBodyMax) {
			return
		}
		rc.Take()
		code, answered, cut, reason = p.relayExchange(rc, rs, rt, start)
	}
	rc.SetNow(answered)
	if p.metrics != nil {
		st := p.stats(s, rt)
		st.count(p, code)
		st.duration.Observe(answered.Sub(start).Seconds())
	}
	if p.cfg.AccessLog {
		path, id := rs.logPath, rs.logID
		if !rs.saved {
			path, id = rs.logFields(req)
		}
		p.log.Info("request", zap.String("direction", s.name), zap.String("method", req.Method),
			zap.String("authority", rs.host), zap.ByteString("path", path), zap.Int("code", code),
			zap.Duration("duration", time.Since(start)), zap.String("upstream", rt.key),
			zap.Int("attempts", rt.attempts), zap.String("endpoint", rt.endpoint),
			zap.String("x_meshd_error", reason), zap.Bool("cut", cut),
			zap.ByteString("request_id", id))
	}
}

// logFields are the access log's path (the target without its query) and
// request ID of req: the client's, or the one meshd made.
func (rs *relayState) logFields(req *h1.RawRequest) (path, id []byte) {
	path = req.Target
	for i, c := range path {
		if c == '?' {
			path = path[:i]
			break
		}
	}
	id, _ = req.Get(HeaderRequestID)
	if len(id) == 0 {
		id = rs.requestID[:]
	}
	return path, id
}

// relayInbound delivers the request to the local app and answers the
// client, watching it. It returns what relayExchange does.
func (p *Proxy) relayInbound(rc *h1.RelayConn, rs *relayState, start time.Time) (code int, answered time.Time, cut bool, reason string) {
	req := &rc.Req
	rt := &rs.rt
	id, ok := req.Get(HeaderRequestID)
	newID := !ok || len(id) == 0
	if newID {
		appendRequestID(&rs.requestID)
	}
	rs.out = relayRequestHead(rs.out[:0], req, 0, newID, &rs.requestID)
	rs.out = append(rs.out, req.Body...)
	if rs.watchFn == nil {
		rs.watchFn = rs.watchClient
	}
	rs.client, rs.gone = rc, false
	rs.inCtx = routeContext{Context: rc.Context(), rt: rt}
	rr := &rs.resp
	rr.Watch = rs.watchFn
	err := p.transport.Relay(&rs.inCtx, rt.target, start, start.Add(relayWatchEvery), rs.out, req.Method, rr)
	rr.Watch = nil
	switch {
	case rs.gone && err != nil:
		rc.CloseAfter()
		return 499, time.Now(), false, "" // as the general path counts a client gone
	case err != nil:
		if ce := p.log.Check(zap.DebugLevel, "local reply"); ce != nil {
			ce.Write(zap.String("authority", rs.host), zap.Error(err))
		}
		return p.relayLocal(rc, rt, localReplyFor(err), err.Error())
	}
	if rr.Resp != nil {
		// A streamed answer's end is the app's to decide: the client is
		// watched meanwhile, as a Handler's is. The request's bytes go
		// first: what the access log needs of them is copied.
		path, id := rs.logFields(req)
		rs.logPath = append(rs.logPath[:0], path...)
		rs.logID = append(rs.logID[:0], id...)
		rs.saved = true
		body := rr.Resp.Body
		rc.WatchClient(func() { _ = body.Close() })
		defer rc.StopWatch()
		code, answered, cut = p.relayAnswer(rc, rs, req.Method, false, 0)
		return code, answered, cut, ""
	}
	code, answered, cut = p.relayAnswer(rc, rs, req.Method, false, 0)
	return code, answered, cut, ""
}

// watchClient is the inbound relay's RelayResponse.Watch: it ends the
// wait for the app's answer when the client has gone away.
func (rs *relayState) watchClient() time.Time {
	if rs.client.ClientGone() {
		rs.gone = true
		return time.Time{}
	}
	return time.Now().Add(relayWatchEvery)
}

// relayExchange sends the request along rt under its upstream's policy,
// as exchange.run does, and answers the client. It returns the status
// answered, when the answer began, whether it was cut, and the local
// reply's reason.
func (p *Proxy) relayExchange(rc *h1.RelayConn, rs *relayState, rt *route, start time.Time) (code int, answered time.Time, cut bool, reason string) {
	req := &rc.Req
	u := rt.up
	pol := &u.policy
	id, ok := req.Get(HeaderRequestID)
	newID := !ok || len(id) == 0
	if newID {
		appendRequestID(&rs.requestID)
	}
	if !u.limiter.Acquire() {
		return p.relayLocal(rc, rt, replyOverloaded, resilience.ErrOverloaded.Error())
	}
	done, err := u.breaker.Allow()
	if err != nil {
		u.limiter.Release()
		return p.relayLocal(rc, rt, localReplyFor(err), err.Error())
	}
	// What the exchange holds, given back if meshd itself fails (a
	// panic, recovered by proxy/h1 for this connection only).
	var held relayHeld
	held.limiter, held.done = u.limiter, done
	defer held.giveBack(u, &rs.resp)

	u.budget.RequestAt(start)
	deadline := start.Add(pol.RequestTimeout)
	retryable := resilience.Idempotent(req.Method)
	if v, ok := req.Get(HeaderRetryable); ok && h1.EqualFold(v, "true") {
		retryable = true
	}
	x := &rs.x
	x.p, x.u, x.rt, x.tried = p, u, rt, nil
	rr := &rs.resp
	var bo backoff.BackOff
	budgetOut := false
	for attempt := 1; ; attempt++ {
		ep, target, begun := x.pick()
		if target == "" {
			held.settle(resilience.Ignore)
			return p.relayLocal(rc, rt, replyNoHealthy, ErrNoHealthyUpstream.Error())
		}
		rt.attempts, rt.endpoint = attempt, target
		tryDeadline := deadline
		if pt := pol.PerTryTimeout; pt > 0 {
			if d := time.Now().Add(pt); d.Before(deadline) {
				tryDeadline = d
			}
		}
		rs.out = relayRequestHead(rs.out[:0], req, attempt, newID, &rs.requestID)
		rs.out = append(rs.out, req.Body...)
		if ep != nil {
			ep.Acquire()
			held.ep = ep
			if begun {
				held.begun = ep
			}
		}
		w := rs.wait(rc, rt, tryDeadline)
		err := p.transport.Relay(&w.lt, target, start, tryDeadline, rs.out, req.Method, rr)
		w.lt.release()
		held.resp = err == nil
		if err == nil && rr.Resp != nil && relaySaveable(rr.Resp, req.Method, int64(pol.RetryBodyMax)) {
			if berr := readWhole(rr.Resp, nil); berr != nil {
				err = fmt.Errorf("%w: %w", errCutResponse, berr)
				held.resp = false
			}
		}
		// A deadline passed: the socket's, or the wait for a connection
		// at MaxConnsPerEndpoint.
		timedOut := err != nil && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded))
		var outcome resilience.Outcome
		if err != nil {
			outcome = classify(nil, err, timedOut, false)
		} else {
			outcome = resilience.StatusOutcome(rr.Status)
		}
		if held.begun != nil {
			u.ejector.Done(ep.Addr, outcome.Failure)
			held.begun = nil
		}
		final := err == nil && !outcome.Failure && outcome.Cond == 0 && !pol.RetryOn.RetriesStatus(rr.Status)
		if !final {
			var de *DialError
			sent := !errors.As(err, &de) && !errors.Is(err, h1.ErrServerClosedIdle)
			canRetry := attempt <= pol.RetryMax && time.Now().Before(deadline) &&
				resilience.ShouldRetry(pol.RetryOn, req.Method, retryable, true, sent, outcome)
			if canRetry {
				if bo == nil {
					bo = resilience.NewBackoff(pol.RetryBackoffBase, pol.RetryBackoffMax, nil)
				}
				wait := bo.NextBackOff()
				switch {
				case time.Now().Add(wait).After(deadline):
					// No time left for another attempt: the last answer stands.
				case !u.budget.TryRetry():
					budgetOut = err == nil
				default:
					if held.resp {
						relayDiscard(rr)
						held.resp = false
					}
					held.releaseEndpoint()
					p.countRetry(u, outcome)
					if wait > 0 {
						time.Sleep(wait)
					}
					x.remember(ep)
					continue
				}
			}
		}
		if err != nil {
			held.releaseEndpoint()
			held.settle(resilience.Failure)
			if timedOut {
				err = errTimeout
			}
			if ce := p.log.Check(zap.DebugLevel, "local reply"); ce != nil {
				ce.Write(zap.String("authority", rs.host), zap.Error(err))
			}
			return p.relayLocal(rc, rt, localReplyFor(err), err.Error())
		}
		// The answer goes out first: the bookkeeping after it is not
		// the client's wait.
		held.resp = false // relayAnswer gives it back
		code, answered, cut = p.relayAnswer(rc, rs, req.Method, budgetOut, pol.StreamIdleTimeout)
		if outcome.Failure {
			held.settle(resilience.Failure)
		} else {
			held.settle(resilience.Success)
		}
		held.releaseEndpoint()
		held.releaseLimiter()
		if budgetOut {
			reason = "retry-budget-exhausted"
		}
		return code, answered, cut, reason
	}
}

// relayHeld is what a relayed exchange holds: the overload limiter's slot,
// the service breaker's admission, an endpoint and its breaker's
// admission, an upstream answer. Each is given back once; giveBack gives
// back what is left when the exchange panics.
type relayHeld struct {
	limiter *resilience.Limiter
	done    func(resilience.Result)
	ep      *balance.Endpoint
	begun   *balance.Endpoint // admitted by its breaker (Begin), not settled
	resp    bool
}

func (h *relayHeld) settle(r resilience.Result) {
	if h.done != nil {
		h.done(r)
		h.done = nil
	}
}

func (h *relayHeld) releaseEndpoint() {
	if h.ep != nil {
		h.ep.Release()
		h.ep = nil
	}
}

func (h *relayHeld) releaseLimiter() {
	if h.limiter != nil {
		h.limiter.Release()
		h.limiter = nil
	}
}

func (h *relayHeld) giveBack(u *upstream, rr *h1.RelayResponse) {
	if h.limiter == nil {
		return // the exchange ended normally
	}
	v := recover()
	if h.resp {
		relayDiscard(rr)
	}
	if h.begun != nil {
		u.ejector.Done(h.begun.Addr, false)
	}
	h.releaseEndpoint()
	h.settle(resilience.Ignore)
	h.releaseLimiter()
	if v != nil {
		panic(v)
	}
}

// relayWait is the context of the wait for an upstream connection and of
// its dial: the route (for the connect timeout) and the try's deadline.
type relayWait struct {
	lt   lazyTimeout
	rctx routeContext
}

// wait returns the connection's relayWait, ready for a try until deadline, or
// a new one when the last was armed: a context made from it may still be
// watching it.
func (rs *relayState) wait(rc *h1.RelayConn, rt *route, deadline time.Time) *relayWait {
	w := rs.connWait
	if w == nil || w.lt.cancel != nil {
		w = new(relayWait)
		rs.connWait = w
	}
	w.rctx = routeContext{Context: rc.Context(), rt: rt}
	w.lt = lazyTimeout{values: &w.rctx, deadline: deadline}
	return w
}

// reusable returns lt to be used again, or a new one when lt was armed:
// a context made from it may still be watching it.
func reusable(lt *lazyTimeout) *lazyTimeout {
	if lt == nil || lt.cancel != nil {
		return new(lazyTimeout)
	}
	return lt
}

// relaySaveable reports whether an answer that is not short is read whole
// before it is passed on, as exchange.saveable decides.
func relaySaveable(resp *http.Response, method string, max int64) bool {
	return resp.ContentLength > 0 && resp.ContentLength <= max && method != http.MethodHead
}

// relayDiscard drops an answer that will be tried again.
func relayDiscard(rr *h1.RelayResponse) {
	if rr.Resp == nil {
		rr.Release()
		return
	}
	_, _ = io.CopyN(io.Discard, rr.Resp.Body, 4<<10)
	_ = rr.Resp.Body.Close()
}

// headerRetryBudget is the field an answer gets when its retry was denied
// by the retry budget.
const headerRetryBudget = HeaderError + ": retry-budget-exhausted\r\n"

// relayAnswer passes the upstream's answer on. It reports the status,
// when the answer began and whether it was cut.
func (p *Proxy) relayAnswer(rc *h1.RelayConn, rs *relayState, method string, budgetOut bool, idle time.Duration) (int, time.Time, bool) {
	rr := &rs.resp
	now := time.Now()
	if resp := rr.Resp; resp != nil {
		if budgetOut {
			resp.Header.Set(HeaderError, "retry-budget-exhausted")
		}
		body := resp.Body
		if _, whole := body.(*wholeBody); !whole {
			// The request timeout ends at the answer's head; the stream
			// idle timeout bounds its body.
			if idle > 0 {
				body = &relayIdleBody{rr: rr, idle: idle, body: body}
				resp.Body = body
				rr.SetReadDeadline(now.Add(idle))
			} else {
				rr.SetReadDeadline(time.Time{})
			}
		}
		err := rc.WriteResponse(resp, method, nil, streaming(resp))
		if err == nil {
			err = rc.Flush()
		}
		_ = body.Close()
		return resp.StatusCode, now, err != nil
	}
	b := h1.AppendStatusLine(rs.buf[:0], rr.Status)
	for i, n := 0, rr.NumFields(); i < n; i++ {
		k, v := rr.Field(i)
		if string(k) == "Connection" || budgetOut && string(k) == HeaderError {
			continue
		}
		b = append(b, k...)
		b = append(b, ':', ' ')
		b = append(b, v...)
		b = append(b, '\r', '\n')
	}
	if budgetOut {
		b = append(b, headerRetryBudget...)
	}
	if rc.Closing() {
		rc.CloseAfter()
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, '\r', '\n')
	b = append(b, rr.Body...)
	rs.buf = b
	code := rr.Status
	rr.ReleaseAt(now)
	if _, err := rc.Write(b); err != nil || rc.Flush() != nil {
		rc.CloseAfter()
		return code, now, true
	}
	return code, now, false
}

// relayIdleBody cuts a streamed answer that sends nothing for the stream
// idle timeout.
type relayIdleBody struct {
	rr   *h1.RelayResponse
	idle time.Duration
	body io.ReadCloser
}

func (b *relayIdleBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if n > 0 && err == nil {
		b.rr.SetReadDeadline(time.Now().Add(b.idle))
	}
	return n, err
}

func (b *relayIdleBody) Close() error { return b.body.Close() }

// relayLocal answers the client by itself, as localReply does.
func (p *Proxy) relayLocal(rc *h1.RelayConn, rt *route, lr localReply, detail string) (int, time.Time, bool, string) {
	if p.metrics != nil {
		p.metrics.LocalReplies.WithLabelValues(p.label(rt, ""), lr.reason).Inc()
	}
	text := "meshd: " + lr.reason + ": " + detail + "\n"
	b := h1.AppendStatusLine(nil, lr.status)
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\n"...)
	b = append(b, HeaderError+": "...)
	b = append(b, lr.reason...)
	b = append(b, "\r\n"...)
	b = h1.AppendDate(b, time.Now())
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(text)), 10)
	b = append(b, "\r\n"...)
	if rc.Closing() {
		rc.CloseAfter()
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, text...)
	if _, err := rc.Write(b); err != nil || rc.Flush() != nil {
		rc.CloseAfter()
	}
	return lr.status, time.Now(), false, lr.reason
}

// relayRequestHead appends the head of attempt n of req as it goes
// upstream: its fields but Connection and X-Meshd-Attempt, an
// X-Request-Id when newID (id's), and X-Meshd-Attempt. n zero (inbound)
// leaves the client's X-Meshd-Attempt as it is, and adds none.
func relayRequestHead(b []byte, req *h1.RawRequest, n int, newID bool, id *[36]byte) []byte {
	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, req.Target...)
	b = append(b, " HTTP/1.1\r\n"...)
	if req.HostInTarget {
		b = append(b, "Host: "...)
		b = append(b, req.Host...)
		b = append(b, '\r', '\n')
	}
	for i, nf := 0, req.NumFields(); i < nf; i++ {
		k, v, hop := req.Field(i)
		if hop || n > 0 && h1.EqualFold(k, HeaderAttempt) || newID && h1.EqualFold(k, HeaderRequestID) {
			continue
		}
		b = append(b, k...)
		b = append(b, ':', ' ')
		b = append(b, v...)
		b = append(b, '\r', '\n')
	}
	if !req.HasLength && (req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch) {
		b = append(b, "Content-Length: 0\r\n"...) // as the h1 client sends it: some servers want a length
	}
	if newID {
		b = append(b, HeaderRequestID+": "...)
		b = append(b, id[:]...)
		b = append(b, '\r', '\n')
	}
	if n > 0 {
		b = append(b, HeaderAttempt+": "...)
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, '\r', '\n')
	}
	return append(b, '\r', '\n')
}
