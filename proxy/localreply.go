package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

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

// localReply is how one kind of error is answered: an HTTP status, and for
// gRPC clients the matching gRPC status.
type localReply struct {
	status int
	reason string // the x-meshd-error value
	grpc   int    // gRPC status: 14 UNAVAILABLE, 4 DEADLINE_EXCEEDED
}

// The table of local replies, keyed by error kind.
var (
	replyConnectFailure = localReply{http.StatusBadGateway, "connect-failure", grpcUnavailable}
	replyReset          = localReply{http.StatusBadGateway, "reset", grpcUnavailable}
	replyNoHealthy      = localReply{http.StatusServiceUnavailable, "no-healthy-upstream", grpcUnavailable}
	replyTimeout        = localReply{http.StatusGatewayTimeout, "timeout", grpcDeadlineExceeded}
	replyLoop           = localReply{http.StatusBadRequest, "loop", grpcUnavailable}
	replyCircuitOpen    = localReply{http.StatusServiceUnavailable, "circuit-open", grpcUnavailable}
	replyOverloaded     = localReply{http.StatusServiceUnavailable, "overloaded", grpcUnavailable}
	replyBadRequest     = localReply{http.StatusBadRequest, "bad-request", grpcUnavailable}
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
	case errors.Is(err, errBadRequestBody):
		return replyBadRequest
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

// gRPC status codes meshd answers with.
const (
	grpcUnavailable      = 14
	grpcDeadlineExceeded = 4
)

// isGRPC reports whether a request is a gRPC call.
func isGRPC(r *http.Request) bool {
	return r != nil && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// writeGRPCReply answers a gRPC client the gRPC way: HTTP 200, the status
// in the trailers, the reason in grpc-message and x-meshd-error.
func writeGRPCReply(w http.ResponseWriter, lr localReply, detail string) {
	h := w.Header()
	h.Set(HeaderError, lr.reason)
	h.Set("Content-Type", "application/grpc")
	h.Set(http.TrailerPrefix+"Grpc-Status", strconv.Itoa(lr.grpc))
	h.Set(http.TrailerPrefix+"Grpc-Message", "meshd: "+lr.reason+": "+grpcEscape(detail))
	w.WriteHeader(http.StatusOK)
}

// grpcEscape percent-encodes a grpc-message as the gRPC spec asks.
func grpcEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// writeLocalReply answers the client by itself.
func writeLocalReply(w http.ResponseWriter, lr localReply, detail string) {
	h := w.Header()
	h.Set(HeaderError, lr.reason)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(lr.status)
	_, _ = fmt.Fprintf(w, "meshd: %s: %s\n", lr.reason, detail)
}
