package proxy

import (
	"testing"
	"time"
)

// An attempt that fails once the deadline has passed is a timeout, even
// when meshd's timer has not run yet (a gRPC server enforcing the
// grpc-timeout meshd passed on resets the stream at that moment), but for
// meshd's own timeout of a gRPC call with a body, which its timer may
// extend while the client streams.
func TestExchangePastDeadline(t *testing.T) {
	now := time.Now()
	body := &replayBody{}
	for _, tc := range []struct {
		name     string
		deadline time.Time
		grpc     bool
		ownLimit bool
		body     *replayBody
		want     bool
	}{
		{"no deadline", time.Time{}, true, false, body, false},
		{"grpc-timeout passed", now.Add(-time.Millisecond), true, false, body, true},
		{"grpc-timeout passed this instant", now, true, false, body, true},
		{"grpc-timeout not yet", now.Add(time.Millisecond), true, false, body, false},
		{"own timeout passed", now.Add(-time.Millisecond), false, true, body, true},
		{"own timeout of a gRPC call without a body", now.Add(-time.Millisecond), true, true, nil, true},
		{"own timeout of a gRPC call with a body: extendable", now.Add(-time.Millisecond), true, true, body, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := &exchange{deadline: tc.deadline, grpc: tc.grpc, ownLimit: tc.ownLimit, body: tc.body}
			if got := x.pastDeadline(now); got != tc.want {
				t.Errorf("pastDeadline = %v, want %v", got, tc.want)
			}
		})
	}
}
