package proxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"time"

	"golang.org/x/net/http/httpguts"
)

// isUpgrade reports an HTTP/1.1 protocol upgrade request (WebSocket and
// others): Connection names "upgrade" and Upgrade says to what.
func isUpgrade(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.Header.Get("Upgrade") != "" &&
		httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade")
}

// serveUpgrade forwards an upgrade request on a connection of its own.
// After the upstream's 101 Switching Protocols, the client's and the
// upstream's connections are joined as an opaque tunnel, with half-close
// both ways and the stream idle timeout. Any other answer is passed back
// as an ordinary response.
func (p *Proxy) serveUpgrade(w http.ResponseWriter, r *http.Request, rt *route) {
	pol := rt.policy(p)
	ctx := r.Context()
	if pol.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, pol.RequestTimeout)
		defer cancel()
	}
	target := rt.target
	up, err := p.dialRoute(ctx, rt)
	if err != nil {
		p.localReply(w, r, rt, localReplyFor(err), err.Error())
		return
	}
	if a := up.RemoteAddr(); a != nil {
		target = a.String()
	}
	rt.attempts, rt.endpoint = 1, target

	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = "", ""
	out.URL.Opaque = ""
	out.Host = r.Host
	if out.URL.Path == "" {
		out.URL.Path = "/"
	}
	// Hop by hop like any request, except that the upgrade itself is
	// asked for again.
	protocol := out.Header["Upgrade"]
	removeHopHeaders(out.Header)
	out.Header["Upgrade"] = protocol
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set(HeaderAttempt, "1")

	// The handshake is bounded by the request timeout; the tunnel then
	// lives by the stream idle timeout.
	if d, ok := ctx.Deadline(); ok {
		_ = up.SetDeadline(d)
	}
	if err := out.Write(up); err != nil {
		_ = up.Close()
		p.localReply(w, r, rt, replyReset, err.Error())
		return
	}
	ubr := bufio.NewReader(up)
	resp, err := http.ReadResponse(ubr, out)
	if err != nil {
		_ = up.Close()
		lr := replyReset
		if ctx.Err() != nil {
			lr = replyTimeout
		}
		p.localReply(w, r, rt, lr, err.Error())
		return
	}
	_ = up.SetDeadline(time.Time{})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer up.Close()
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		buf := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(buf)
		_, _ = copyBuffer(w, resp.Body, *buf)
		return
	}
	if rw, ok := w.(*responseWriter); ok {
		rw.code, rw.headersAt = http.StatusSwitchingProtocols, time.Now() // for the access log and metrics
	}
	// The 101 goes back as the upstream sent it, then whatever the
	// upstream already sent after it.
	p.tunnel(w, up, func(c io.Writer) error {
		if err := resp.Write(c); err != nil {
			return err
		}
		if n := ubr.Buffered(); n > 0 {
			early, _ := ubr.Peek(n)
			if _, err := c.Write(early); err != nil {
				return err
			}
		}
		return nil
	}, pol.StreamIdleTimeout, rt.key)
}

// copyBuffer copies a response body to the client, flushing as it goes.
func copyBuffer(w http.ResponseWriter, body interface{ Read([]byte) (int, error) }, buf []byte) (int64, error) {
	rc := http.NewResponseController(w)
	var total int64
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
			_ = rc.Flush()
		}
		if err != nil {
			return total, nil
		}
	}
}
