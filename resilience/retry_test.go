package resilience

import (
	"testing"

	"github.com/meshd/meshd/config"
)

func retryOn(t *testing.T, s string) config.RetryOn {
	t.Helper()
	on, err := config.ParseRetryOn(s)
	if err != nil {
		t.Fatal(err)
	}
	return on
}

func TestIdempotent(t *testing.T) {
	for _, m := range []string{"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"} {
		if !Idempotent(m) {
			t.Errorf("Idempotent(%q) = false", m)
		}
	}
	for _, m := range []string{"POST", "PATCH", "CONNECT", "get", ""} {
		if Idempotent(m) {
			t.Errorf("Idempotent(%q) = true", m)
		}
	}
}

func TestOutcomes(t *testing.T) {
	tests := []struct {
		name string
		got  Outcome
		want Outcome
	}{
		{"connect failure", ErrorOutcome(config.RetryConnectFailure), Outcome{Cond: config.RetryConnectFailure, GRPC: -1, Failure: true}},
		{"timeout", TimeoutOutcome(), Outcome{Status: 504, GRPC: -1, Failure: true}},
		{"200", StatusOutcome(200), Outcome{Status: 200, GRPC: -1}},
		{"404 is no failure", StatusOutcome(404), Outcome{Status: 404, GRPC: -1}},
		{"503", StatusOutcome(503), Outcome{Status: 503, GRPC: -1, Failure: true}},
		{"grpc ok", GRPCOutcome(200, 0), Outcome{Status: 200, GRPC: 0}},
		{"grpc unavailable", GRPCOutcome(200, 14), Outcome{Cond: config.RetryUnavailable, Status: 200, GRPC: 14, Failure: true}},
		{"grpc deadline is no failure", GRPCOutcome(200, 4), Outcome{Cond: config.RetryDeadlineExceeded, Status: 200, GRPC: 4}},
		{"grpc resource exhausted", GRPCOutcome(200, 8), Outcome{Cond: config.RetryResourceExhausted, Status: 200, GRPC: 8}},
		{"grpc cancelled", GRPCOutcome(200, 1), Outcome{Cond: config.RetryCancelled, Status: 200, GRPC: 1}},
		{"grpc without status", GRPCOutcome(502, -1), Outcome{Status: 502, GRPC: -1, Failure: true}},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, tt.got, tt.want)
		}
	}
}

func TestShouldRetry(t *testing.T) {
	const (
		def = "connect-failure,refused-stream,unavailable,gateway-error" // the default
	)
	var (
		connect  = ErrorOutcome(config.RetryConnectFailure)
		reset    = ErrorOutcome(config.RetryReset)
		refused  = ErrorOutcome(config.RetryRefusedStream)
		timeout  = TimeoutOutcome()
		s200     = StatusOutcome(200)
		s409     = StatusOutcome(409)
		s429     = StatusOutcome(429)
		s500     = StatusOutcome(500)
		s503     = StatusOutcome(503)
		unavail  = GRPCOutcome(200, 14)
		deadline = GRPCOutcome(200, 4)
		exhaust  = GRPCOutcome(200, 8)
		cancel   = GRPCOutcome(200, 1)
		grpcOK   = GRPCOutcome(200, 0)
		// A gRPC code given only through Cond still counts.
		condOnly = Outcome{Cond: config.RetryUnavailable, GRPC: -1, Failure: true}
	)
	tests := []struct {
		name       string
		on         string
		method     string
		header     bool // x-meshd-retryable: true
		replayable bool
		sent       bool
		o          Outcome
		want       bool
	}{
		// connect-failure: any request, nothing was processed or sent.
		{"connect failure POST", def, "POST", false, false, false, connect, true},
		{"connect failure, big body", def, "POST", false, false, true, connect, true},
		{"connect failure not in RetryOn", "reset,unavailable", "GET", false, true, false, connect, false},
		{"connect failure under 5xx", "5xx", "POST", false, false, false, connect, true},
		{"connect failure under gateway-error", "gateway-error", "POST", false, false, false, connect, true},
		{"empty RetryOn retries nothing", "", "GET", false, true, false, connect, false},

		// refused-stream: any method, but the body must be replayable.
		{"refused stream POST replayable", def, "POST", false, true, true, refused, true},
		{"refused stream POST nothing sent", def, "POST", false, false, false, refused, true},
		{"refused stream body consumed", def, "GET", false, false, true, refused, false},
		{"refused stream not in RetryOn", "connect-failure", "GET", false, true, true, refused, false},
		{"refused stream under 5xx", "5xx", "POST", false, true, true, refused, true},

		// reset: idempotent or x-meshd-retryable, replayable body.
		{"reset GET", "reset", "GET", false, true, true, reset, true},
		{"reset POST", "reset", "POST", false, true, true, reset, false},
		{"reset POST retryable header", "reset", "POST", true, true, true, reset, true},
		{"reset PUT body consumed", "reset", "PUT", false, false, true, reset, false},
		{"reset under 5xx", "5xx", "DELETE", false, true, true, reset, true},
		{"reset under gateway-error", def, "GET", false, true, true, reset, true},
		{"reset not in RetryOn", "connect-failure,refused-stream,unavailable", "GET", false, true, true, reset, false},

		// Status rules.
		{"503 gateway-error GET", def, "GET", false, true, true, s503, true},
		{"503 gateway-error POST", def, "POST", false, true, true, s503, false},
		{"503 gateway-error POST header", def, "POST", true, true, true, s503, true},
		{"503 body not replayable", def, "GET", false, false, true, s503, false},
		{"500 not a gateway error", def, "GET", false, true, true, s500, false},
		{"500 under 5xx", "5xx", "HEAD", false, true, true, s500, true},
		{"explicit 200", "5xx,retriable-4xx,200", "GET", false, true, true, s200, true},
		{"200 without explicit code", "5xx,retriable-4xx", "GET", false, true, true, s200, false},
		{"409 retriable-4xx", "retriable-4xx", "PUT", false, true, true, s409, true},
		{"409 without retriable-4xx", "5xx", "PUT", false, true, true, s409, false},
		{"explicit 429", "429", "OPTIONS", false, true, true, s429, true},
		{"explicit 429 POST", "429", "POST", false, true, true, s429, false},
		{"timeout under gateway-error", def, "GET", false, true, true, timeout, true},
		{"timeout POST", def, "POST", false, true, true, timeout, false},
		{"timeout connect-failure only", "connect-failure", "GET", false, true, true, timeout, false},

		// gRPC conditions: unary calls (POST) with a replayable body.
		{"grpc unavailable", def, "POST", false, true, true, unavail, true},
		{"grpc unavailable streaming, message sent", def, "POST", false, false, true, unavail, false},
		{"grpc unavailable nothing sent", def, "POST", false, false, false, unavail, true},
		{"grpc unavailable not in RetryOn", "connect-failure,gateway-error", "POST", false, true, true, unavail, false},
		{"grpc deadline-exceeded", "deadline-exceeded", "POST", false, true, true, deadline, true},
		{"grpc deadline-exceeded not in RetryOn", def, "POST", false, true, true, deadline, false},
		{"grpc resource-exhausted", "resource-exhausted", "POST", false, true, true, exhaust, true},
		{"grpc cancelled", "cancelled", "POST", false, true, true, cancel, true},
		{"grpc cancelled only unavailable set", "unavailable", "POST", false, true, true, cancel, false},
		{"grpc OK", "unavailable,cancelled,deadline-exceeded,resource-exhausted,5xx", "POST", false, true, true, grpcOK, false},
		{"grpc condition in Cond only", def, "POST", false, true, true, condOnly, true},
		{"grpc 503 POST falls to status rules", def, "POST", false, true, true, GRPCOutcome(503, -1), false},
		{"grpc 503 with header", def, "POST", true, true, true, GRPCOutcome(503, -1), true},

		{"success", def, "GET", false, true, true, Outcome{GRPC: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ShouldRetry(retryOn(t, tt.on), tt.method, tt.header, tt.replayable, tt.sent, tt.o)
			if got != tt.want {
				t.Errorf("ShouldRetry(%q, %s, header=%v, replayable=%v, sent=%v, %+v) = %v, want %v",
					tt.on, tt.method, tt.header, tt.replayable, tt.sent, tt.o, got, tt.want)
			}
		})
	}
}
