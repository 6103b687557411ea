// Package opaque copies bytes between two TCP connections: both directions
// at once, with half-close, an idle timeout and byte counts. Between two
// *net.TCPConn the copy is io.Copy on the raw connections, so Linux can
// splice without bringing the bytes into user space.
package opaque

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrIdle is returned when no byte moved either way for the idle timeout.
var ErrIdle = errors.New("idle timeout")

// chunk is how much one direction copies between deadline refreshes when
// an idle timeout is set. It is large enough that the refresh costs
// nothing next to the copy, small enough that a slow but live stream
// refreshes often.
const chunk = 256 << 10

// Stats counts the bytes that crossed in each direction.
type Stats struct {
	ClientToUpstream int64
	UpstreamToClient int64
}

// Pipe writes pre (bytes already read from client, such as those peeked
// for protocol detection) to upstream, then copies both ways until both
// directions have ended. When one side finishes sending (EOF), the other
// side's write half is closed (half-close), so protocols that shut down
// writing and then read on keep working. A read error or the idle timeout
// (idle > 0: no byte either way for that long) ends both directions. Pipe
// closes both connections before it returns. The error is the first that
// ended the pipe; nil when both sides finished cleanly.
func Pipe(client, upstream net.Conn, pre []byte, idle time.Duration) (Stats, error) {
	p := &pipe{client: client, upstream: upstream, idle: idle}
	p.touch()
	var st Stats
	if len(pre) > 0 {
		if idle > 0 {
			_ = upstream.SetWriteDeadline(time.Now().Add(idle))
		}
		n, err := upstream.Write(pre)
		st.ClientToUpstream += int64(n)
		if err != nil {
			p.abort(err)
			return st, err
		}
	}
	type result struct {
		n int64
	}
	up := make(chan result, 1)
	go func() {
		n, err := p.upstreamToClient()
		if err != nil {
			p.abort(err) // unblock the other direction at once
		}
		up <- result{n}
	}()
	n, err := p.clientToUpstream()
	if err != nil {
		p.abort(err)
	}
	st.ClientToUpstream += n
	r := <-up
	st.UpstreamToClient = r.n
	_ = client.Close()
	_ = upstream.Close()
	// The error that ended the pipe, not the ones it caused on the way.
	return st, p.err
}

type pipe struct {
	client, upstream net.Conn
	idle             time.Duration
	last             atomic.Int64  // unix nanoseconds of the last progress seen either way
	counted          atomic.Uint64 // the client socket's byte counters when last seen
	aborted          sync.Once
	idleMu           sync.Mutex // both directions' idle decisions, one at a time
	err              error      // the first error, set once by abort
}

func (p *pipe) touch() { p.last.Store(time.Now().UnixNano()) }

// active decides, when a direction's deadline passed, whether the pipe
// moved within the idle timeout. The two directions decide one at a time:
// the socket counters are read-and-reset, so a direction must see the
// progress the other one just found.
func (p *pipe) active() bool {
	p.idleMu.Lock()
	defer p.idleMu.Unlock()
	if p.moved() {
		p.touch()
	}
	return time.Since(time.Unix(0, p.last.Load())) < p.idle
}

// abort ends both directions now; the client sees a reset rather than a
// clean end of stream, since something went wrong.
func (p *pipe) abort(err error) {
	p.aborted.Do(func() {
		p.err = err
		if tc, ok := p.client.(interface{ SetLinger(int) error }); ok {
			_ = tc.SetLinger(0)
		}
		_ = p.client.Close()
		_ = p.upstream.Close()
	})
}

// moved reports whether bytes crossed the client socket since the last
// call, from the kernel's counters: a copy in progress (a splice waiting to
// fill its chunk) reports nothing until it returns, but the socket knows.
func (p *pipe) moved() bool {
	n, ok := socketBytes(p.client)
	if !ok {
		return false
	}
	return p.counted.Swap(n) != n
}

// The two directions have their own named methods so that goroutine dumps
// (/debug/pprof/goroutine) say which way a stuck copy goes.

func (p *pipe) clientToUpstream() (int64, error) { return p.copy(p.upstream, p.client) }
func (p *pipe) upstreamToClient() (int64, error) { return p.copy(p.client, p.upstream) }

// copy moves src to dst until EOF, then half-closes dst.
func (p *pipe) copy(dst, src net.Conn) (int64, error) {
	if p.idle <= 0 {
		n, err := io.Copy(dst, src)
		if err != nil {
			return n, err
		}
		return n, closeWrite(dst)
	}
	var total int64
	lr := &io.LimitedReader{R: src}
	for {
		deadline := time.Unix(0, p.last.Load()).Add(p.idle)
		_ = src.SetReadDeadline(deadline)
		_ = dst.SetWriteDeadline(deadline)
		lr.N = chunk
		// io.Copy to a *net.TCPConn from an io.LimitedReader around a
		// *net.TCPConn still splices.
		n, err := io.Copy(dst, lr)
		total += n
		if n > 0 {
			p.touch()
		}
		switch {
		case err == nil && lr.N > 0: // EOF before the chunk was full
			return total, closeWrite(dst)
		case err == nil: // a full chunk: refresh the deadline
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The deadline counts from the last progress either way: the
			// other direction may have moved meanwhile, even if its copy
			// has not returned yet.
			if p.active() {
				continue
			}
			return total, ErrIdle
		default:
			return total, err
		}
	}
}

// closeWrite sends FIN on c when it can, so the peer reads EOF while its
// own direction stays open.
func closeWrite(c net.Conn) error {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return nil
	}
	if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) && !isNotConnected(err) {
		return err
	}
	return nil
}
