package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// headError is a request head the server refuses to serve: the status it
// answers with, and the reason that answer's body gives.
type headError struct {
	status int
	reason string
}

func (e *headError) Error() string { return "h1: " + e.reason }

func headBad(reason string) *headError { return &headError{http.StatusBadRequest, reason} }

// The ways a request head is refused. Each rule cites where it comes from.
var (
	// RFC 9112 §2.2: a line ends in CRLF; a bare CR is an error (and so is
	// a bare LF here, which §2.2 lets a recipient accept: meshd does not).
	headErrLineEnd = headBad("line not ended by CRLF")
	// RFC 9112 §5.2: obs-fold in a request is answered with 400.
	headErrObsFold = headBad("obsolete line folding")
	// RFC 9112 §5.1: no whitespace between field name and colon; RFC 9110
	// §5.1: a field name is a token.
	headErrFieldName = headBad("malformed header field name")
	// RFC 9110 §5.5: a field value holds no CTL but HTAB.
	headErrFieldValue = headBad("invalid character in header field value")
	// RFC 9112 §3: method SP request-target SP HTTP-version.
	headErrReqLine = headBad("malformed request line")
	headErrMethod  = headBad("malformed method")
	// RFC 9112 §3.2: origin-, absolute-, authority- (CONNECT) or
	// asterisk-form (OPTIONS).
	headErrTarget = headBad("malformed request target")
	// RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive.
	headErrVersion = headBad("malformed HTTP version")
	// RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host, and any
	// request at most one, with a valid value.
	headErrHost = headBad("missing, repeated or malformed Host")
	// RFC 9112 §6.1, §6.3 and §11.2: a request with both framings is a
	// smuggling attempt.
	headErrCLTE = headBad("both Content-Length and Transfer-Encoding")
	// RFC 9110 §8.6 and RFC 9112 §6.3: 1*DIGIT; repeats must agree.
	headErrCL = headBad("malformed or conflicting Content-Length")
	// RFC 9112 §6.3: a final coding other than chunked is a 400; meshd
	// decodes no other coding, so chunked must be the only one (and
	// applied once, §6.1).
	headErrTE = headBad("unsupported Transfer-Encoding")
	// RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty
	// framing.
	headErrTE10 = headBad("Transfer-Encoding in an HTTP/1.0 request")
	// RFC 9110 §6.6.2: the fields a trailer may not carry.
	headErrTrailer = headBad("malformed Trailer")
	// RFC 6585 §5.
	headErrTooLarge = &headError{http.StatusRequestHeaderFieldsTooLarge, "request head too large"}
	// RFC 9110 §15.6.6: a major version the server does not speak.
	headErrVersionNS = &headError{http.StatusHTTPVersionNotSupported, "HTTP version not supported"}
	// RFC 9110 §10.1.1: an expectation other than 100-continue.
	headErrExpect = &headError{http.StatusExpectationFailed, "unsupported expectation"}
)

// Byte classes.
const (
	headTchar    = 1 << iota // tchar (RFC 9110 §5.6.2)
	headValue                // field-vchar, SP or HTAB (RFC 9110 §5.5)
	headPathSafe             // left as it is by url.URL.EscapedPath, '%', '?' and '#' excepted
)

var headClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0:
			t[c] |= headTchar
		}
		if c == '\t' || c >= 0x20 && c != 0x7f {
			t[c] |= headValue
		}
		if c > 0x20 && c != '%' && c != '?' && c != '#' {
			// Whatever the URL package would not escape again; asking it
			// keeps the fast path in line with url.ParseRequestURI.
			p := "/" + string([]byte{byte(c)})
			if (&url.URL{Path: p}).EscapedPath() == p {
				t[c] |= headPathSafe
			}
		}
	}
	return t
}()

func headIsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if headClass[s[i]]&headTchar == 0 {
			return false
		}
	}
	return true
}

func headValidValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if headClass[s[i]]&headValue == 0 {
			return false
		}
	}
	return true
}

// headTrimOWS removes optional whitespace (SP, HTAB: RFC 9110 §5.6.3) from
// both ends of s.
func headTrimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// headCanonicalKey returns the canonical form of the field name k (a valid
// token): k itself when it already is, which is the common case and costs
// no allocation.
func headCanonicalKey(k string) string {
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return textproto.CanonicalMIMEHeaderKey(k)
		}
		upper = c == '-'
	}
	return k
}

// headParseField splits a field line (without its CRLF) into its canonical
// name and its value without surrounding whitespace (RFC 9112 §5).
func headParseField(line string) (key, value string, err *headError) {
	if line[0] == ' ' || line[0] == '\t' {
		return "", "", headErrObsFold
	}
	colon := strings.IndexByte(line, ':')
	if colon <= 0 || !headIsToken(line[:colon]) {
		return "", "", headErrFieldName
	}
	value = headTrimOWS(line[colon+1:])
	if !headValidValue(value) {
		return "", "", headErrFieldValue
	}
	return headCanonicalKey(line[:colon]), value, nil
}

// headNextLine returns the first line of s without its CRLF, and what
// follows it.
func headNextLine(s string) (line, rest string, err *headError) {
	nl := strings.IndexByte(s, '\n')
	if nl < 1 || s[nl-1] != '\r' {
		return "", "", headErrLineEnd
	}
	return s[:nl-1], s[nl+1:], nil
}

// headInfo is what parsing a request head finds out besides the request.
type headInfo struct {
	chunked bool // the body is chunked (req.ContentLength is -1)
	expect  bool // "Expect: 100-continue" on an HTTP/1.1 request with a body
}

// headParse parses the request head s: the request line, the field lines
// and the empty line ending them, each ended by CRLF. It fills req as
// http.ReadRequest followed by net/http's server would (Method, URL,
// Proto*, Header without Host and Transfer-Encoding, Host, RequestURI,
// ContentLength, TransferEncoding, Close, Trailer), using u for req.URL
// when the target is plain. Strings in req are substrings of s where they
// can be, so that a head costs one allocation for all its bytes.
func headParse(s string, req *http.Request, u *url.URL) (headInfo, *headError) {
	var info headInfo
	line, rest, herr := headNextLine(s)
	if herr != nil {
		return info, herr
	}
	// Request line: method SP request-target SP HTTP-version (RFC 9112 §3).
	sp1 := strings.IndexByte(line, ' ')
	if sp1 < 0 {
		return info, headErrReqLine
	}
	method := line[:sp1]
	if !headIsToken(method) {
		return info, headErrMethod
	}
	line = line[sp1+1:]
	sp2 := strings.IndexByte(line, ' ')
	if sp2 <= 0 {
		return info, headErrReqLine
	}
	target, proto := line[:sp2], line[sp2+1:]
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return info, headErrTarget
		}
	}
	switch proto {
	case "HTTP/1.1":
		req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/1.1", 1, 1
	case "HTTP/1.0":
		req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/1.0", 1, 0
	default:
		if len(proto) != 8 || proto[:5] != "HTTP/" || proto[6] != '.' ||
			proto[5] < '0' || proto[5] > '9' || proto[7] < '0' || proto[7] > '9' {
			return info, headErrVersion
		}
		if proto[5] != '1' {
			return info, headErrVersionNS
		}
		// A later HTTP/1 minor version is served as HTTP/1.1 would be
		// (RFC 9110 §2.5), keeping its number as net/http does.
		req.Proto, req.ProtoMajor, req.ProtoMinor = proto, 1, int(proto[7]-'0')
	}
	req.Method = method
	req.RequestURI = target
	http11 := req.ProtoMinor >= 1

	// Field lines (RFC 9112 §5). Their values share one slice: each new
	// field name gets a one-element window of it.
	slab := make([]string, strings.Count(rest, "\n"))
	h := make(http.Header, len(slab))
	var (
		hosts, tes, cls   int
		host, te, cl      string
		clConflict        bool
		pragma, cacheCtrl bool
		trailer           bool
		expect            string
	)
	for {
		line, rest, herr = headNextLine(rest)
		if herr != nil {
			return info, herr
		}
		if line == "" {
			if rest != "" {
				return info, headErrReqLine
			}
			break
		}
		k, v, herr := headParseField(line)
		if herr != nil {
			return info, herr
		}
		switch k {
		case "Host":
			hosts++
			host = v
			continue // net/http's server keeps Host in req.Host only
		case "Transfer-Encoding":
			tes++
			te = v
			continue // as net/http: the framing is in req.TransferEncoding
		case "Content-Length":
			if cls++; cls == 1 {
				cl = v
			} else if v != cl {
				clConflict = true
			} else {
				continue // identical repeats count as one (RFC 9110 §8.6)
			}
		case "Pragma":
			pragma = true
		case "Cache-Control":
			cacheCtrl = true
		case "Trailer":
			trailer = true
		case "Expect":
			if expect == "" {
				expect = v
			}
		}
		if vv, ok := h[k]; ok {
			h[k] = append(vv, v)
		} else {
			slab[0] = v
			h[k] = slab[:1:1]
			slab = slab[1:]
		}
	}
	req.Header = h

	if hosts > 1 || http11 && hosts == 0 || hosts == 1 && !httpguts.ValidHostHeader(host) {
		return info, headErrHost
	}

	// Framing (RFC 9112 §6).
	req.ContentLength = 0
	switch {
	case tes > 0 && cls > 0:
		return info, headErrCLTE
	case tes > 0:
		if !http11 {
			return info, headErrTE10
		}
		if tes > 1 || !strings.EqualFold(te, "chunked") {
			return info, headErrTE
		}
		info.chunked = true
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
	case cls > 0:
		n, ok := headParseContentLength(cl)
		if clConflict || !ok {
			return info, headErrCL
		}
		req.ContentLength = n
	}

	// Declared trailer fields, as net/http announces them: keys with nil
	// values, filled in when the body ends. Only a chunked body has them.
	if trailer && info.chunked {
		req.Trailer = make(http.Header)
		for _, v := range h["Trailer"] {
			for f := range strings.SplitSeq(v, ",") {
				f = headTrimOWS(f)
				if f == "" {
					continue
				}
				if !headIsToken(f) {
					return info, headErrTrailer
				}
				f = textproto.CanonicalMIMEHeaderKey(f)
				switch f {
				case "Transfer-Encoding", "Trailer", "Content-Length":
					return info, headErrTrailer
				}
				req.Trailer[f] = nil
			}
		}
		delete(h, "Trailer")
		if len(req.Trailer) == 0 {
			req.Trailer = nil
		}
	}

	// Expectations (RFC 9110 §10.1.1), as net/http's server handles them.
	if expect != "" {
		if httpguts.HeaderValuesContainsToken([]string{expect}, "100-continue") {
			info.expect = http11 && req.ContentLength != 0
		} else {
			return info, headErrExpect
		}
	}

	if herr := headParseTarget(req, u, method, target); herr != nil {
		return info, herr
	}
	// RFC 9112 §3.2.2: the authority of an absolute-form target replaces
	// Host.
	req.Host = req.URL.Host
	if req.Host == "" {
		req.Host = host
	}

	if pragma && !cacheCtrl {
		// net/http's fixPragmaCacheControl (RFC 9111 §5.4).
		if hp := h["Pragma"]; hp[0] == "no-cache" {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	conn := h["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conn, "close")
	if http11 {
		req.Close = hasClose
	} else {
		req.Close = hasClose || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	}
	return info, nil
}

// headParseContentLength parses a Content-Length value: 1*DIGIT (RFC 9110
// §8.6), within int64.
func headParseContentLength(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// headParseTarget sets req.URL from the request target, as http.ReadRequest
// does, after checking its form against the method (RFC 9112 §3.2).
func headParseTarget(req *http.Request, u *url.URL, method, target string) *headError {
	switch {
	case target[0] == '/':
		// origin-form (net/rpc also sends it with CONNECT, as net/http allows).
		if headPlainPath(u, target) {
			req.URL = u
			return nil
		}
	case target == "*":
		// asterisk-form, for a server-wide OPTIONS only.
		if method != http.MethodOptions {
			return headErrTarget
		}
	case method == http.MethodConnect:
		// authority-form: host and port, nothing else. url.ParseRequestURI
		// reads it as the authority of an http URL, as net/http does.
		pu, err := url.ParseRequestURI("http://" + target)
		if err != nil || pu.Host == "" || pu.User != nil || pu.Path != "" || pu.RawQuery != "" || pu.ForceQuery {
			return headErrTarget
		}
		pu.Scheme = ""
		req.URL = pu
		return nil
	}
	// absolute-form, and paths the fast path leaves to the URL parser.
	pu, err := url.ParseRequestURI(target)
	if err != nil {
		return headErrTarget
	}
	// RFC 9110 §4.2.1: an http URI with an empty host is invalid and must
	// be rejected. An absolute-form target is an http(s) URI with an
	// authority ("http://host/..."); "http:host/path" (opaque) or another
	// scheme names nothing meshd could forward faithfully.
	if target[0] != '/' && target != "*" && (pu.Host == "" || pu.Opaque != "" || !headHTTPScheme(pu.Scheme)) {
		return headErrTarget
	}
	req.URL = pu
	return nil
}

// headHTTPScheme reports whether scheme is http or https, in any case.
func headHTTPScheme(scheme string) bool {
	return strings.EqualFold(scheme, "http") || strings.EqualFold(scheme, "https")
}

// headPlainPath fills u from an origin-form target whose path holds
// nothing that url.ParseRequestURI would unescape or record in RawPath, as
// that function would; it reports false for the others.
func headPlainPath(u *url.URL, target string) bool {
	path, query, hasQuery := strings.Cut(target, "?")
	for i := 0; i < len(path); i++ {
		if headClass[path[i]]&headPathSafe == 0 {
			return false
		}
	}
	*u = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return true
}

// errHeadEOF is a connection that ended in the middle of a request head.
var errHeadEOF = errors.New("h1: connection ended in a request head")

// headScratchMax is the largest scratch buffer kept for the next head.
const headScratchMax = 64 << 10

// headRead reads a request head off br: empty lines before the request
// line are skipped (RFC 9112 §2.2), then everything up to and including
// the empty line ending the field lines is returned as one string, of at
// most max bytes (skipped lines included). scratch holds a head longer
// than br's buffer. The error is a *headError for a head refused, or the
// read error.
func headRead(br *bufio.Reader, scratch *[]byte, max int) (string, error) {
	skipped := 0
	for {
		b, err := br.Peek(1)
		if err != nil {
			return "", err
		}
		if b[0] == '\n' {
			return "", headErrLineEnd
		}
		if b[0] != '\r' {
			break
		}
		if b, err = br.Peek(2); err != nil {
			return "", err
		}
		if b[1] != '\n' {
			return "", headErrLineEnd
		}
		if skipped += 2; skipped > max {
			return "", headErrTooLarge
		}
		_, _ = br.Discard(2)
	}
	return headReadSection(br, scratch, max-skipped)
}

// headReadSection reads lines off br up to and including an empty one,
// at most max bytes, and returns them as one string. Lines ended by a bare
// LF are refused as soon as they are seen.
func headReadSection(br *bufio.Reader, scratch *[]byte, max int) (string, error) {
	// Fast paths: the whole section is in the buffer already.
	if buf, _ := br.Peek(br.Buffered()); len(buf) > 0 {
		if len(buf) >= 2 && buf[0] == '\r' && buf[1] == '\n' {
			_, _ = br.Discard(2)
			return "\r\n", nil
		}
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 && i+4 <= max {
			s := string(buf[:i+4])
			_, _ = br.Discard(i + 4)
			return s, nil
		}
	}

	// Line by line, copied into scratch.
	acc := (*scratch)[:0]
	defer func() {
		if cap(acc) > headScratchMax {
			acc = nil
		}
		*scratch = acc[:0]
	}()
	start := 0 // of the current line in acc
	for {
		line, err := br.ReadSlice('\n')
		if len(acc)+len(line) > max {
			return "", headErrTooLarge
		}
		acc = append(acc, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF {
				err = errHeadEOF
			}
			return "", err
		}
		n := len(acc)
		if n-start < 2 || acc[n-2] != '\r' {
			return "", headErrLineEnd
		}
		if n-start == 2 {
			return string(acc), nil
		}
		start = n
	}
}
