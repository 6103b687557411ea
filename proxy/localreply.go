package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/meshd/meshd/resilience"
)

// Errors with a meaning of their own. Everything that answers a client by
// itself classifies its error through localReplyFor.
var (
	// ErrNoHealthyUpstream: the service has no usable endpoint.
	ErrNoHealthyUpstream = errors.New("no healthy upstream")
	// ErrLoop: the request would come back to meshd itself.
	ErrLoop = errors.New("request addressed to meshd itself")
)

// DialError is a failure to connect to an endpoint: nothing was sent, so
// any request may be tried again elsewhere.
type DialError struct {
	Addr string
	Err  error
}

func (e *DialError) Error() string { return "connect to " + e.Addr + ": " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// HeaderError is the response header in which meshd says why it answered
// by itself.
const HeaderError = "X-Meshd-Error"

// localReply is how one kind of error is answered.
type localReply struct {
	status int
	reason string // the x-meshd-error value
}

// The table of local replies, keyed by error kind.
var (
	replyConnectFailure = localReply{http.StatusBadGateway, "connect-failure"}
	replyReset          = localReply{http.StatusBadGateway, "reset"}
	replyNoHealthy      = localReply{http.StatusServiceUnavailable, "no-healthy-upstream"}
	replyTimeout        = localReply{http.StatusGatewayTimeout, "timeout"}
	replyLoop           = localReply{http.StatusBadRequest, "loop"}
	replyCircuitOpen    = localReply{http.StatusServiceUnavailable, "circuit-open"}
	replyOverloaded     = localReply{http.StatusServiceUnavailable, "overloaded"}
)

// localReplyFor classifies an upstream error.
func localReplyFor(err error) localReply {
	var de *DialError
	var ne net.Error
	switch {
	case errors.Is(err, ErrNoHealthyUpstream):
		return replyNoHealthy
	case errors.Is(err, resilience.ErrCircuitOpen):
		return replyCircuitOpen
	case errors.Is(err, resilience.ErrOverloaded):
		return replyOverloaded
	case errors.Is(err, errTimeout):
		return replyTimeout
	case errors.Is(err, ErrLoop):
		return replyLoop
	case errors.As(err, &de):
		return replyConnectFailure
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return replyTimeout
	default:
		return replyReset
	}
}

// writeLocalReply answers the client by itself.
func writeLocalReply(w http.ResponseWriter, lr localReply, detail string) {
	h := w.Header()
	h.Set(HeaderError, lr.reason)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(lr.status)
	_, _ = fmt.Fprintf(w, "meshd: %s: %s\n", lr.reason, detail)
}
