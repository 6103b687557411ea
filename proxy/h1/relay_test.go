package h1

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// ScanRequest takes only heads it can pass on byte for byte; every other
// one is left to the Handler path.
func TestScanRequest(t *testing.T) {
	for _, tc := range []struct {
		head string
		ok   bool
		host string
		cl   int64
		cls  bool
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, "a", 0, false},
		{"POST /x?y HTTP/1.1\r\nhost: a.b:80\r\ncontent-length: 12\r\nX: 1\r\n\r\n", true, "a.b:80", 12, false},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n", true, "a", 0, true},
		{"GET http://svc:8080/p HTTP/1.1\r\nHost: other\r\n\r\n", true, "svc:8080", 0, false},
		{"DELETE / HTTP/1.1\r\nHost: [::1]:80\r\nX:\r\n\r\n", true, "[::1]:80", 0, false},

		{"GET / HTTP/1.0\r\nHost: a\r\n\r\n", false, "", 0, false},                                // HTTP/1.0
		{"GET / HTTP/1.1\nHost: a\r\n\r\n", false, "", 0, false},                                  // bare LF
		{"GET / HTTP/1.1\r\nHost: a\n\r\n", false, "", 0, false},                                  // bare LF
		{"GET / HTTP/1.1\r\n\r\n", false, "", 0, false},                                           // no Host
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false, "", 0, false},                     // two
		{"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", false, "", 0, false},                              // userinfo
		{"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n", false, "", 0, false},                        // method
		{"BREW / HTTP/1.1\r\nHost: a\r\n\r\n", false, "", 0, false},                               // method
		{"GET * HTTP/1.1\r\nHost: a\r\n\r\n", false, "", 0, false},                                // asterisk form
		{"GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n", false, "", 0, false},                       // https
		{"GET http://a HTTP/1.1\r\nHost: a\r\n\r\n", false, "", 0, false},                         // no path
		{"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", false, "", 0, false},                               // two spaces
		{"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", false, "", 0, false},                            // control byte
		{"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", false, "", 0, false},                     // obs-fold
		{"GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\n\r\n", false, "", 0, false},                       // space before colon
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", false, "", 0, false},                   // NUL
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", false, "", 0, false}, // framing
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", false, "", 0, false},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", false, "", 0, false},
		{"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", false, "", 0, false},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Hop\r\n\r\n", false, "", 0, false},
		{"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", false, "", 0, false},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\n\r\n", false, "", 0, false},
		{"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: 5\r\n\r\n", false, "", 0, false},
		{"GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: 1\r\n", relayMaxFields) + "\r\n", false, "", 0, false},
	} {
		var r RawRequest
		ok := ScanRequest([]byte(tc.head), &r)
		if ok != tc.ok || ok && (string(r.Host) != tc.host || r.ContentLength != tc.cl || r.Close != tc.cls) {
			t.Errorf("%q: ok %v host %q length %d close %v", tc.head, ok, r.Host, r.ContentLength, r.Close)
		}
	}
}

func TestEqualFold(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		eq   bool
	}{
		{"Host", "host", true}, {"X-Request-Id", "x-request-id", true}, {"Host", "Hosts", false},
		{"a-b", "a_b", false}, {"[", "{", false}, {"@", "`", false},
	} {
		if EqualFold([]byte(tc.a), tc.b) != tc.eq {
			t.Errorf("EqualFold(%q, %q) = %v", tc.a, tc.b, !tc.eq)
		}
	}
}

// Whatever ScanRequest takes, the Server's strict parser takes too, and
// reads the same host, body length and path.
func FuzzScanRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x?y HTTP/1.1\r\nhost: a.b:80\r\ncontent-length: 12\r\nX: 1\r\n\r\n",
		"GET http://svc:8080/p?q HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb \r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, head string) {
		var r RawRequest
		if !ScanRequest([]byte(head), &r) {
			return
		}
		var req http.Request
		var u url.URL
		info, herr := headParse(head, &req, &u)
		if herr != nil {
			t.Fatalf("relayed, but the server refuses it: %v", herr)
		}
		path, _, _ := strings.Cut(string(r.Target), "?")
		if req.Host != string(r.Host) || req.ContentLength != r.ContentLength || req.URL.Path != path ||
			req.Method != r.Method || info.chunked || req.Close != r.Close {
			t.Fatalf("relay reads host %q length %d path %q close %v; server %q %d %q %v",
				r.Host, r.ContentLength, path, r.Close, req.Host, req.ContentLength, req.URL.Path, req.Close)
		}
	})
}
