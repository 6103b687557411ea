package config

import (
	"reflect"
	"testing"
)

// FuzzParseStaticEndpoints: any input parses or fails cleanly, and what
// parses prints back to a form that parses to the same value.
func FuzzParseStaticEndpoints(f *testing.F) {
	for _, s := range []string{"", "a=1.2.3.4:80", "a=1.2.3.4:80,localhost:81;b.svc=[fd00::1]:443", "empty=", "a=;b=", "=", ";;", "a=[::1]:0", "a=host:99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		se, err := ParseStaticEndpoints(in)
		if err != nil {
			return
		}
		again, err := ParseStaticEndpoints(se.String())
		if err != nil {
			t.Fatalf("%q parsed, but its form %q does not: %v", in, se.String(), err)
		}
		if !reflect.DeepEqual(se, again) && !(len(se) == 0 && len(again) == 0) {
			t.Fatalf("round trip of %q changed %v into %v", in, se, again)
		}
	})
}

// FuzzParseRetryOn: any input parses or fails cleanly; what parses round
// trips through String.
func FuzzParseRetryOn(f *testing.F) {
	for _, s := range []string{"", "connect-failure,refused-stream,unavailable,gateway-error", "5xx,409", "reset, 503 ,503", "teapot", "600", "retriable-4xx,resource-exhausted,cancelled,deadline-exceeded"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, err := ParseRetryOn(in)
		if err != nil {
			return
		}
		again, err := ParseRetryOn(r.String())
		if err != nil || again.Conditions != r.Conditions || !reflect.DeepEqual(again.Codes, r.Codes) {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", in, r, r.String(), again, err)
		}
		for code := 100; code < 600; code += 37 {
			_ = r.RetriesStatus(code)
		}
	})
}

// FuzzLoad: no environment value makes Load panic, and every error names a
// variable.
func FuzzLoad(f *testing.F) {
	f.Add("MESHD_CONNECT_TIMEOUT", "abc")
	f.Add("MESHD_UPSTREAM_PAYMENTS_REQUEST_TIMEOUT", "2s")
	f.Add("MESHD_EXCLUDE_OUTBOUND_CIDRS", "10.0.0.0/8,::1")
	f.Add("MESHD_INBOUND_PORTS", "*")
	f.Fuzz(func(t *testing.T, name, value string) {
		_, _, err := Load([]string{name + "=" + value}, nil)
		if e, ok := err.(*Error); ok && e.Name == "" {
			t.Fatalf("error without a variable name: %v", err)
		}
	})
}
