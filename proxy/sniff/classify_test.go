package sniff

import (
	"bytes"
	"strings"
	"testing"
)

func TestProtocolString(t *testing.T) {
	tests := []struct {
		p    Protocol
		want string
	}{
		{Opaque, "tcp"},
		{HTTP1, "http/1"},
		{HTTP2, "h2c"},
		{Protocol(7), "Protocol(7)"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("Protocol(%d).String() = %q, want %q", int(tt.p), got, tt.want)
		}
	}
}

// settingsFrame is an empty HTTP/2 SETTINGS frame, which follows the
// preface on a real h2c connection.
const settingsFrame = "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// classifyCases is shared by TestClassify and the fuzz seeds.
var classifyCases = []struct {
	desc string
	in   string
	want Protocol
	more bool
}{
	// Undecided.
	{desc: "empty", in: "", more: true},
	{desc: "one method byte", in: "G", more: true},
	{desc: "method without SP", in: "GET", more: true},
	{desc: "method and SP", in: "GET ", more: true},
	{desc: "target, no version yet", in: "GET /", more: true},
	{desc: "version prefix", in: "GET / H", more: true},
	{desc: "version without minor", in: "GET / HTTP/1.", more: true},
	{desc: "version without line end", in: "GET / HTTP/1.1", more: true},
	{desc: "CR without LF", in: "GET / HTTP/1.1\r", more: true},
	{desc: "h2 preface, first byte", in: "P", more: true},
	{desc: "h2 preface, first line", in: "PRI * HTTP/2.0\r\n", more: true},
	{desc: "h2 preface, all but one byte", in: h2Preface[:len(h2Preface)-1], more: true},

	// HTTP/1.
	{desc: "GET with headers", in: "GET / HTTP/1.1\r\nHost: payments\r\n\r\n", want: HTTP1},
	{desc: "POST", in: "POST /api/charge HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", want: HTTP1},
	{desc: "custom method", in: "PURGE /cache/x HTTP/1.1\r\n", want: HTTP1},
	{desc: "token method with punctuation", in: "M-SEARCH * HTTP/1.1\r\n", want: HTTP1},
	{desc: "HTTP/1.0", in: "GET /index.html HTTP/1.0\r\n\r\n", want: HTTP1},
	{desc: "absolute form", in: "GET http://payments/x HTTP/1.1\r\nHost: payments\r\n\r\n", want: HTTP1},
	{desc: "authority form", in: "CONNECT payments:443 HTTP/1.1\r\nHost: payments:443\r\n\r\n", want: HTTP1},
	{desc: "asterisk form", in: "OPTIONS * HTTP/1.1\r\n", want: HTTP1},
	{desc: "lowercase method is a token", in: "get / HTTP/1.1\r\n", want: HTTP1},
	{desc: "bare LF", in: "GET / HTTP/1.1\nHost: a\n\n", want: HTTP1},
	{desc: "line complete, rest is junk", in: "GET / HTTP/1.1\r\n\x00\xff", want: HTTP1},

	// HTTP/2 prior knowledge.
	{desc: "h2 preface", in: h2Preface, want: HTTP2},
	{desc: "h2 preface and SETTINGS", in: h2Preface + settingsFrame, want: HTTP2},
	{desc: "h2 first line, wrong rest", in: "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", want: Opaque},

	// Opaque.
	{desc: "TLS ClientHello", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", want: Opaque},
	{desc: "TLS record type alone", in: "\x16", want: Opaque},
	{desc: "binary junk", in: "\x00\x01\x02\xff", want: Opaque},
	{desc: "HTTP/2.0 request line", in: "GET / HTTP/2.0\r\n", want: Opaque},
	{desc: "HTTP/2.0 prefix", in: "GET / HTTP/2", want: Opaque},
	{desc: "HTTP/1.2", in: "GET / HTTP/1.2\r\n", want: Opaque},
	{desc: "lowercase version", in: "GET / http/1.1\r\n", want: Opaque},
	{desc: "HTTP/0.9 line", in: "GET /\r\n", want: Opaque},
	{desc: "control byte in target", in: "GET /a\x01b HTTP/1.1\r\n", want: Opaque},
	{desc: "control byte in unfinished target", in: "GET /a\x01", want: Opaque},
	{desc: "DEL in target", in: "GET /a\x7f HTTP/1.1\r\n", want: Opaque},
	{desc: "non-ASCII in target", in: "GET /caf\xc3\xa9 HTTP/1.1\r\n", want: Opaque},
	{desc: "empty target", in: "GET  HTTP/1.1\r\n", want: Opaque},
	{desc: "tab after method", in: "GET\t/ HTTP/1.1\r\n", want: Opaque},
	{desc: "leading SP", in: " GET / HTTP/1.1\r\n", want: Opaque},
	{desc: "leading empty line", in: "\r\nGET / HTTP/1.1\r\n", want: Opaque},
	{desc: "space before line end", in: "GET / HTTP/1.1 \r\n", want: Opaque},
	{desc: "CR CR LF", in: "GET / HTTP/1.1\r\r\n", want: Opaque},
	{desc: "non-token byte in method", in: "GE(T / HTTP/1.1\r\n", want: Opaque},
	{desc: "SSH banner", in: "SSH-2.0-OpenSSH_9.6\r\n", want: Opaque},
	{desc: "Redis RESP", in: "*1\r\n$4\r\nPING\r\n", want: Opaque},
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tt := range classifyCases {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			p, more := Classify([]byte(tt.in))
			if p != tt.want || more != tt.more {
				t.Errorf("Classify(%q) = %v, more=%v; want %v, more=%v", tt.in, p, more, tt.want, tt.more)
			}
		})
	}
}

// TestClassifyFull covers inputs of MaxPeek bytes or more: the request
// line must be decided even though it is unfinished.
func TestClassifyFull(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 2*MaxPeek)
	tests := []struct {
		desc string
		in   string
		want Protocol
		more bool
	}{
		{desc: "one short of MaxPeek", in: ("GET /" + long)[:MaxPeek-1], more: true},
		{desc: "long URL, standard method", in: ("GET /" + long)[:MaxPeek], want: HTTP1},
		{desc: "long URL, every standard method", in: ("PATCH /" + long)[:MaxPeek], want: HTTP1},
		{desc: "long URL beyond MaxPeek", in: "GET /" + long, want: HTTP1},
		{desc: "long URL, custom method", in: "PURGE /" + long, want: Opaque},
		{desc: "long URL, lowercase method", in: "get /" + long, want: Opaque},
		{desc: "long version-less line ends at MaxPeek", in: ("GET " + long)[:MaxPeek-2] + " H", want: HTTP1},
		{desc: "method never ends", in: strings.Repeat("A", MaxPeek), want: Opaque},
		{desc: "line ends past MaxPeek, standard method", in: "GET /" + long + " HTTP/1.1\r\n", want: HTTP1},
		{desc: "line ends past MaxPeek, custom method", in: "PURGE /" + long + " HTTP/1.1\r\n", want: Opaque},
		{desc: "short line, long headers", in: "GET / HTTP/1.1\r\nCookie: " + long, want: HTTP1},
		{desc: "bad byte before MaxPeek", in: "GET /\x00" + long, want: Opaque},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			p, more := Classify([]byte(tt.in))
			if p != tt.want || more != tt.more {
				t.Errorf("Classify(%d bytes %.12q...) = %v, more=%v; want %v, more=%v", len(tt.in), tt.in, p, more, tt.want, tt.more)
			}
		})
	}
}

// TestClassifyEveryPrefix checks that each HTTP case is undecided, never
// Opaque, on every proper prefix, so detection never gives up early on a
// client that writes in small pieces.
func TestClassifyEveryPrefix(t *testing.T) {
	t.Parallel()
	for _, tt := range classifyCases {
		if tt.want == Opaque {
			continue
		}
		in := []byte(tt.in)
		end := len(h2Preface) - 1
		if tt.want == HTTP1 {
			end = bytes.IndexByte(in, '\n')
		}
		for i := 0; i <= end; i++ {
			if p, more := Classify(in[:i]); !more {
				t.Errorf("%s: Classify(%q) = %v, decided; want undecided", tt.desc, in[:i], p)
			}
		}
	}
}

// refHTTP1 is a plain restatement of the request-line rule, used as an
// oracle for the fuzz test: line is a complete first line, LF included.
func refHTTP1(line string) bool {
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	parts := strings.Split(line, " ")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return false
	}
	for _, c := range []byte(parts[0]) {
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) &&
			!('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	for _, c := range []byte(parts[1]) {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return parts[2] == "HTTP/1.0" || parts[2] == "HTTP/1.1"
}

func FuzzClassify(f *testing.F) {
	for _, tt := range classifyCases {
		f.Add([]byte(tt.in), []byte("\r\n"))
		f.Add([]byte(tt.in), []byte(" HTTP/1.1\r\n"))
	}
	f.Add([]byte("GET /"+strings.Repeat("a", MaxPeek)), []byte(" HTTP/1.1\r\n"))
	f.Add([]byte(h2Preface[:10]), []byte(h2Preface[10:]))
	f.Fuzz(func(t *testing.T, b, extra []byte) {
		p, more := Classify(b)
		if more && (p != Opaque || len(b) >= MaxPeek) {
			t.Fatalf("Classify(%q) = %v, more=true; undecided must be Opaque and shorter than MaxPeek", b, p)
		}
		if p < Opaque || p > HTTP2 {
			t.Fatalf("Classify(%q) = %d, not a Protocol", b, int(p))
		}

		// A decision never flips when more bytes arrive.
		longer := append(bytes.Clone(b), extra...)
		p2, more2 := Classify(longer)
		if !more && (p2 != p || more2) {
			t.Fatalf("Classify(%q) = %v, but with %q appended = %v, more=%v", b, p, extra, p2, more2)
		}

		// On a complete first line within MaxPeek that is not the h2
		// preface, the decision agrees with the plain rule.
		if n := min(len(b), len(h2Preface)); string(b[:n]) == h2Preface[:n] {
			return
		}
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < MaxPeek {
			want := Opaque
			if refHTTP1(string(b[:i+1])) {
				want = HTTP1
			}
			if p != want || more {
				t.Fatalf("Classify(%q) = %v, more=%v; want %v", b, p, more, want)
			}
		}
	})
}

func BenchmarkClassify(b *testing.B) {
	inputs := []struct {
		name string
		in   []byte
	}{
		{"http1", []byte("GET /api/v1/payments/1234?expand=customer HTTP/1.1\r\nHost: payments\r\n\r\n")},
		{"h2c", []byte(h2Preface + settingsFrame)},
		{"tls", []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")},
		{"longurl", []byte("GET /" + strings.Repeat("a", MaxPeek))},
	}
	for _, in := range inputs {
		b.Run(in.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(min(len(in.in), MaxPeek)))
			for b.Loop() {
				if _, more := Classify(in.in); more {
					b.Fatal("undecided")
				}
			}
		})
	}
}
