package resilience

import (
	"github.com/meshd/meshd/config"
)

// gRPC status codes that MESHD_RETRY_ON can name.
const (
	grpcCancelled         = 1
	grpcDeadlineExceeded  = 4
	grpcResourceExhausted = 8
	grpcUnavailable       = 14
)

// Outcome classifies one attempt. Build it with ErrorOutcome,
// TimeoutOutcome, StatusOutcome or GRPCOutcome, which fill Failure the way
// the contract defines it, or by hand.
type Outcome struct {
	// Cond is the retry condition this outcome matches, 0 if none:
	// RetryConnectFailure, RetryReset or RetryRefusedStream for transport
	// errors, or a gRPC condition (RetryUnavailable, ...). A gRPC
	// condition is also derived from GRPC, so setting GRPC is enough.
	Cond config.RetryCondition
	// Status is the HTTP status when a response came back, else 0.
	Status int
	// GRPC is the gRPC status when known, -1 when none.
	GRPC int
	// Failure says whether the attempt counts as a failure for breakers:
	// connect error or timeout, reset, attempt timeout, HTTP 5xx, gRPC
	// UNAVAILABLE. A 4xx is not a failure.
	Failure bool
}

// ErrorOutcome is an attempt that got no answer: cond is
// RetryConnectFailure (the connect failed or timed out), RetryReset (the
// upstream closed or reset mid-request) or RetryRefusedStream (HTTP/2
// REFUSED_STREAM). It is a failure.
func ErrorOutcome(cond config.RetryCondition) Outcome {
	return Outcome{Cond: cond, GRPC: -1, Failure: true}
}

// TimeoutOutcome is an attempt that hit the per-try timeout. It is a
// failure and has status 504, meshd's own answer to a timeout, so that 5xx
// and gateway-error retry it as Envoy does.
func TimeoutOutcome() Outcome {
	return Outcome{Status: 504, GRPC: -1, Failure: true}
}

// StatusOutcome is an HTTP answer with this status. It is a failure when the
// status is 5xx.
func StatusOutcome(status int) Outcome {
	return Outcome{Status: status, GRPC: -1, Failure: status >= 500 && status <= 599}
}

// GRPCOutcome is a gRPC answer: HTTP status and gRPC status code (-1 when
// there is none, e.g. no grpc-status trailer). It is a failure when the
// status is 5xx or the code is UNAVAILABLE (14).
func GRPCOutcome(status, code int) Outcome {
	return Outcome{
		Cond:    grpcCondition(code),
		Status:  status,
		GRPC:    code,
		Failure: (status >= 500 && status <= 599) || code == grpcUnavailable,
	}
}

func grpcCondition(code int) config.RetryCondition {
	switch code {
	case grpcUnavailable:
		return config.RetryUnavailable
	case grpcCancelled:
		return config.RetryCancelled
	case grpcDeadlineExceeded:
		return config.RetryDeadlineExceeded
	case grpcResourceExhausted:
		return config.RetryResourceExhausted
	}
	return 0
}

const grpcConditions = config.RetryUnavailable | config.RetryCancelled |
	config.RetryDeadlineExceeded | config.RetryResourceExhausted

// Idempotent reports whether an HTTP method may be retried on any
// condition: GET, HEAD, OPTIONS, TRACE, PUT and DELETE (RFC 9110, 9.2.2).
// Methods are case-sensitive, as RFC 9110 says.
func Idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// ShouldRetry is the one retry decision: may an attempt with outcome o be
// retried under the policy's RetryOn? method is the request's method,
// retryableHeader whether it carries x-meshd-retryable: true,
// bodyReplayable whether its body can be sent again (it had none, or it
// was buffered whole), sent whether anything of it reached the upstream.
//
// Whether a retry is safe depends on what the upstream may have processed:
//
//   - A connect failure processed nothing: it is retried for any request.
//   - A refused stream processed nothing either, but its body may have
//     been consumed: retried for any request whose body is replayable or
//     of which nothing was sent.
//   - The gRPC conditions (unavailable, cancelled, deadline-exceeded,
//     resource-exhausted) are retried for any method (gRPC is always POST)
//     as the contract says of unary calls, but only with a replayable body,
//     so a streaming call is never retried once a message was sent.
//   - Everything else (reset, 5xx, gateway-error, retriable-4xx, explicit
//     status codes) only for idempotent methods or x-meshd-retryable
//     requests, and only with a replayable body (or nothing sent).
//
// Which outcomes a token covers follows Envoy: 5xx and gateway-error also
// retry connect failures, resets and refused streams (meshd answers those
// with 502/503 itself); 5xx covers every status gateway-error covers.
func ShouldRetry(on config.RetryOn, method string, retryableHeader, bodyReplayable, sent bool, o Outcome) bool {
	replayable := bodyReplayable || !sent
	const gateway = config.Retry5xx | config.RetryGatewayError
	switch o.Cond {
	case config.RetryConnectFailure:
		return on.Conditions&(config.RetryConnectFailure|gateway) != 0
	case config.RetryRefusedStream:
		return replayable && on.Conditions&(config.RetryRefusedStream|gateway) != 0
	}
	if !replayable {
		return false
	}
	if c := o.Cond | grpcCondition(o.GRPC); c&grpcConditions != 0 && on.Conditions&c&grpcConditions != 0 {
		return true
	}
	if !Idempotent(method) && !retryableHeader {
		return false
	}
	if o.Cond == config.RetryReset {
		return on.Conditions&(config.RetryReset|gateway) != 0
	}
	return o.Status != 0 && on.RetriesStatus(o.Status)
}
