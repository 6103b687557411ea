package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// RetryCondition is one condition of MESHD_RETRY_ON, in Envoy's vocabulary.
// Conditions combine as a bit set.
type RetryCondition uint16

// The retry conditions. Their tokens are those of Envoy's retry_on.
const (
	RetryConnectFailure    RetryCondition = 1 << iota // connect-failure: the TCP connect failed or timed out
	RetryReset                                        // reset: the upstream closed or reset mid-request
	Retry5xx                                          // 5xx: any 5xx answer, and everything gateway-error and reset cover
	RetryGatewayError                                 // gateway-error: 502, 503 or 504
	RetryRetriable4xx                                 // retriable-4xx: 409
	RetryRefusedStream                                // refused-stream: HTTP/2 REFUSED_STREAM
	RetryUnavailable                                  // unavailable: gRPC status 14
	RetryCancelled                                    // cancelled: gRPC status 1
	RetryDeadlineExceeded                             // deadline-exceeded: gRPC status 4
	RetryResourceExhausted                            // resource-exhausted: gRPC status 8
)

var retryTokens = []struct {
	token string
	cond  RetryCondition
}{
	{"connect-failure", RetryConnectFailure},
	{"reset", RetryReset},
	{"5xx", Retry5xx},
	{"gateway-error", RetryGatewayError},
	{"retriable-4xx", RetryRetriable4xx},
	{"refused-stream", RetryRefusedStream},
	{"unavailable", RetryUnavailable},
	{"cancelled", RetryCancelled},
	{"deadline-exceeded", RetryDeadlineExceeded},
	{"resource-exhausted", RetryResourceExhausted},
}

// RetryOn is the parsed MESHD_RETRY_ON: a set of conditions plus explicit
// HTTP status codes.
type RetryOn struct {
	Conditions RetryCondition
	Codes      []int // sorted, each from 100 to 599
}

// Has reports whether every condition in c is set.
func (r RetryOn) Has(c RetryCondition) bool { return r.Conditions&c == c }

// RetriesStatus reports whether an HTTP answer with this status code is to
// be retried by the status rules (5xx, gateway-error, retriable-4xx or an
// explicit code).
func (r RetryOn) RetriesStatus(code int) bool {
	switch {
	case r.Has(Retry5xx) && code >= 500 && code <= 599:
		return true
	case r.Has(RetryGatewayError) && (code == 502 || code == 503 || code == 504):
		return true
	case r.Has(RetryRetriable4xx) && code == 409:
		return true
	}
	_, ok := slices.BinarySearch(r.Codes, code)
	return ok
}

// ParseRetryOn reads a comma-separated list of tokens: connect-failure,
// reset, 5xx, gateway-error, retriable-4xx, refused-stream, unavailable,
// cancelled, deadline-exceeded, resource-exhausted, or a status code from
// 100 to 599. An empty list retries nothing.
func ParseRetryOn(s string) (RetryOn, error) {
	var r RetryOn
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		if code, err := strconv.Atoi(f); err == nil {
			if code < 100 || code > 599 {
				return RetryOn{}, expectation(fmt.Sprintf("status codes from 100 to 599 (got %d)", code))
			}
			r.Codes = append(r.Codes, code)
			continue
		}
		i := slices.IndexFunc(retryTokens, func(t struct {
			token string
			cond  RetryCondition
		}) bool {
			return t.token == f
		})
		if i < 0 {
			return RetryOn{}, expectation(fmt.Sprintf("a comma-separated list of %s or a status code such as 503 (unknown token %q)", retryVocabulary(), f))
		}
		r.Conditions |= retryTokens[i].cond
	}
	slices.Sort(r.Codes)
	r.Codes = slices.Compact(r.Codes)
	return r, nil
}

func retryVocabulary() string {
	s := make([]string, len(retryTokens))
	for i, t := range retryTokens {
		s[i] = t.token
	}
	return strings.Join(s, ", ")
}

// String writes the conditions in their canonical order, then the codes.
func (r RetryOn) String() string {
	var parts []string
	for _, t := range retryTokens {
		if r.Has(t.cond) {
			parts = append(parts, t.token)
		}
	}
	for _, c := range r.Codes {
		parts = append(parts, strconv.Itoa(c))
	}
	return strings.Join(parts, ",")
}
