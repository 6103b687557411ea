package proxy

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// hopHeaders are the hop-by-hop fields (RFC 9110 §7.6.1): they describe
// one connection, so a proxy consumes them and never passes them on.
var hopHeaders = [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// teTrailers is the one TE value passed on: gRPC needs it end to end.
var teTrailers = []string{"trailers"}

// removeHopHeaders deletes the hop-by-hop fields of h: the fixed ones and
// those its Connection field names.
func removeHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for f != "" {
			var name string
			name, f, _ = strings.Cut(f, ",")
			if name = strings.TrimSpace(name); name != "" && !fixedHop(name) {
				h.Del(name) // the fixed ones go below, without Del's canonical copy of the name
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// fixedHop reports whether name is one of hopHeaders, in any case.
func fixedHop(name string) bool {
	for _, k := range hopHeaders {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// errUnaskedUpgrade is an upstream switching protocols for a request that
// did not ask to.
var errUnaskedUpgrade = errors.New("the upstream switched protocols for a request that did not ask to")

// forward sends r along its route (RoundTrip: the resilience policy) and
// passes the answer back, status, fields, body and trailers, without the
// hop-by-hop fields either way. It is what httputil.ReverseProxy does for
// meshd, minus the copies of the request and its header a general proxy
// makes: r is meshd's own, used once. A body that breaks after the answer
// began aborts the client's response (http.ErrAbortHandler) so that it is
// never taken for whole.
func (p *Proxy) forward(w *responseWriter, r *http.Request, rt *route) {
	out := r // meshd's own: changed in place, no copy
	if r.ContentLength == 0 {
		out.Body = nil // no body: nothing to frame or replay
	}
	out.Close = false
	trailersTE := httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers")
	removeHopHeaders(out.Header)
	if trailersTE {
		out.Header["Te"] = teTrailers
	}
	out.URL.Scheme = "http"

	resp, err := p.roundTrip(out, rt, &w.st.x)
	if err != nil {
		p.answerError(w, out, rt, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		p.answerError(w, out, rt, errUnaskedUpgrade)
		return
	}
	removeHopHeaders(resp.Header)
	var h http.Header
	if hs, ok := w.ResponseWriter.(headerSetter); ok && resp.Header != nil {
		hs.SetHeader(resp.Header) // the answer's own fields, not a copy
		h = resp.Header
	} else {
		h = w.Header()
		for k, vv := range resp.Header {
			h[k] = vv
		}
	}
	if n := len(resp.Trailer); n > 0 {
		// Announced, so that an HTTP/1.1 client gets a chunked answer
		// with room for them.
		keys := make([]string, 0, n)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	if err := copyBody(w, resp.Body, streaming(resp)); err != nil {
		panic(http.ErrAbortHandler)
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
}

// headerSetter is a ResponseWriter that can take a whole header in place
// of its own (proxy/h1's).
type headerSetter interface {
	SetHeader(h http.Header)
}

// streaming reports whether an answer is passed on as it comes, each read
// flushed to the client: a body of unknown length (streams, gRPC) or
// server-sent events.
func streaming(resp *http.Response) bool {
	if resp.ContentLength == -1 {
		return true
	}
	ct := resp.Header["Content-Type"]
	if len(ct) == 0 || !strings.HasPrefix(ct[0], "text/event-stream") {
		return false
	}
	base, _, _ := mime.ParseMediaType(ct[0])
	return base == "text/event-stream"
}

// copyBody copies an upstream body to the client through a pooled buffer,
// flushing after each write when flush is set. A read error other than
// the body's end, or a write error, is returned.
func copyBody(w *responseWriter, body io.Reader, flush bool) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush {
				w.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
