package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// headView is what a handler sees of a request head.
type headView struct {
	Method, Proto, Host, RequestURI string
	ProtoMajor, ProtoMinor          int
	URL                             url.URL
	Header, Trailer                 http.Header
	ContentLength                   int64
	TransferEncoding                []string
	Close                           bool
}

func viewOf(r *http.Request) headView {
	return headView{r.Method, r.Proto, r.Host, r.RequestURI, r.ProtoMajor, r.ProtoMinor,
		*r.URL, r.Header, r.Trailer, r.ContentLength, r.TransferEncoding, r.Close}
}

// headCompare parses head (as headRead returns it) both ways and reports
// how this package's request differs from what http.ReadRequest and
// net/http's server make of it. A head this package refuses is not
// compared; one it accepts must be accepted by net/http too.
func headCompare(head string) (accepted bool, diff string) {
	var req http.Request
	var u url.URL
	if _, herr := headParse(head, &req, &u); herr != nil {
		return false, ""
	}
	std, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
	if err != nil {
		return true, "net/http refuses it: " + err.Error()
	}
	delete(std.Header, "Host") // as net/http's server does
	ours, theirs := viewOf(&req), viewOf(std)
	if !reflect.DeepEqual(ours, theirs) {
		return true, fmt.Sprintf("\n    ours:     %+v\n    net/http: %+v", ours, theirs)
	}
	return true, ""
}

// Valid heads are parsed as http.ReadRequest parses them.
func TestHeadParseMatchesNetHTTP(t *testing.T) {
	for _, head := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a/b/c.html?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
		"GET /caf%C3%A9/%2F/x%7a HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a;b,c$d&e+f=g:h@i!j'k(l)m*n~o HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a?b? HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a? HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a?? HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET //double/slash HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /\"<>[]{}|\\^` HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://example.com/x?y HTTP/1.1\r\nHost: other\r\n\r\n",
		"GET HTTP://User@Example.COM:80/%41 HTTP/1.1\r\nHost: other\r\n\r\n",
		"GET https://[::1]:443/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://example.com HTTP/1.1\r\nHost: a\r\n\r\n",
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
		"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"CONNECT /rpc HTTP/1.1\r\nHost: a\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
		"GET / HTTP/1.9\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nhost: a\r\naccept-encoding: gzip\r\nx-A: 1\r\nX-a: 2\r\nX_Y: u\r\nx-1x: d\r\n\r\n",
		"GET / HTTP/1.1\r\nHost:a\r\nX:\t \tv  \t\r\nY:\r\nZ: a  b\tc\r\nO: \x80\xff\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: \r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\nCache-Control: max-age=0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nPragma: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length:  5 \r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\nTrailer: x-a, X-B,,c\r\nTrailer: d\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: ,\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTrailer: X-A\r\nContent-Length: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Type: text/html; charset=utf-8\r\nCookie: a=b; c=d\r\nCookie: e=f\r\n\r\n",
	} {
		accepted, diff := headCompare(head)
		if !accepted {
			t.Errorf("%q refused", head)
		} else if diff != "" {
			t.Errorf("%q:%s", head, diff)
		}
	}
}

// The fast path for origin-form targets agrees with url.ParseRequestURI
// whenever it is taken.
func TestHeadPlainPath(t *testing.T) {
	var targets []string
	for c := 0x21; c < 0x100; c++ {
		if c == 0x7f {
			continue
		}
		s := string([]byte{byte(c)})
		targets = append(targets, "/"+s, "/a"+s+"b", "/"+s+"?"+s, "/x?"+s)
	}
	targets = append(targets, "/", "/?", "/??", "/a?b?c", "/a?", "//", "//a/b", "/a/./b/../c", "/%41", "/a b")
	fast := 0
	for _, target := range targets {
		var u url.URL
		if !headPlainPath(&u, target) {
			continue
		}
		fast++
		want, err := url.ParseRequestURI(target)
		if err != nil {
			t.Errorf("%q: fast path taken, url.ParseRequestURI: %v", target, err)
			continue
		}
		if !reflect.DeepEqual(u, *want) {
			t.Errorf("%q: %+v, want %+v", target, u, *want)
		}
	}
	if fast < len(targets)/2 {
		t.Errorf("fast path taken for %d of %d targets", fast, len(targets))
	}
	var u url.URL
	if !headPlainPath(&u, "/api/v1/items?id=42&x=%20") {
		t.Error("plain path with an escaped query not on the fast path")
	}
}

// headRead returns the same head whatever pieces it comes in, and finds
// bare LFs before the head's end.
func TestHeadRead(t *testing.T) {
	const head = "GET / HTTP/1.1\r\nHost: a\r\nX: " + "0123456789abcdef" + "\r\n\r\n"
	for _, tc := range []struct {
		name, in, want string
		max            int
		err            error
	}{
		{"whole", head + "body", head, 1000, nil},
		{"leading CRLFs", "\r\n\r\n" + head, head, 1000, nil},
		{"at the limit", head, head, len(head), nil},
		{"over the limit", head, "", len(head) - 1, headErrTooLarge},
		{"leading CRLFs over the limit", "\r\n\r\n" + head, "", len(head) + 3, headErrTooLarge},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", "", 1000, headErrLineEnd},
		{"bare LF ending", "GET / HTTP/1.1\r\nHost: a\r\n\n", "", 1000, headErrLineEnd},
		{"bare CR first", "\rGET / HTTP/1.1\r\n\r\n", "", 1000, headErrLineEnd},
		{"cut short", "GET / HTTP/1.1\r\nHost: a\r\n", "", 1000, errHeadEOF},
		{"nothing", "", "", 1000, io.EOF},
	} {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tc.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			var scratch []byte
			got, err := headRead(bufio.NewReaderSize(r, 16), &scratch, tc.max)
			if got != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("%s (one byte %v): %q, %v; want %q, %v", tc.name, oneByte, got, err, tc.want, tc.err)
			}
		}
	}
	// A bare LF is found at once, without waiting for the head's end.
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = io.WriteString(pw, "GET / HTTP/1.1\nHost: a") }()
	var scratch []byte
	if _, err := headRead(bufio.NewReader(pr), &scratch, 1000); err != headErrLineEnd {
		t.Fatalf("got %v", err)
	}
}

// FuzzHeadParse: whatever head this package accepts, net/http accepts and
// reads the same way.
func FuzzHeadParse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://x/y?z HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: A, b\r\n\r\n",
		"POST /p HTTP/1.0\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
		"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
		"GET /%7e/a%2fb HTTP/1.1\r\nhost: a\r\nx-y:  z \r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var scratch []byte
		head, err := headRead(bufio.NewReader(strings.NewReader(in)), &scratch, 1<<16)
		if err != nil {
			return
		}
		if _, diff := headCompare(head); diff != "" {
			t.Fatalf("%q: %s", head, diff)
		}
	})
}
