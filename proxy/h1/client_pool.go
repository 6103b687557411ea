package h1

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// clientConn is one upstream connection. It serves one request at a time;
// between requests it sits in its pool's idle list.
type clientConn struct {
	p      *clientPool
	nc     net.Conn
	br     *bufio.Reader // reads through the clientConn, to count bytes
	bw     *bufio.Writer
	cancel func() // cc.onCancel, bound once for context.AfterFunc

	reused   bool           // it served a request before the current one
	idleAt   time.Time      // when it last went idle
	nread    int64          // bytes read from nc; only the reading side touches it
	nwritten int64          // bytes written to nc; only the writing side touches it
	deadline bool           // a relayed request set a deadline on nc: RoundTrip clears it
	idleFrom time.Time      // when set, the time it goes idle at (the caller's clock reading)
	pending  []byte         // a relayed request the next Read writes first
	watch    *RelayResponse // a relayed exchange's, whose Watch may move the deadline
	werr     error          // the error of pending's write
	broken   atomic.Bool
}

var (
	clientReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, clientBufSize) }}
	clientWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, clientBufSize) }}
)

func clientNewConn(p *clientPool, nc net.Conn) *clientConn {
	cc := &clientConn{p: p, nc: nc}
	cc.br = clientReaders.Get().(*bufio.Reader)
	cc.br.Reset(cc)
	cc.bw = clientWriters.Get().(*bufio.Writer)
	cc.bw.Reset(cc)
	cc.cancel = cc.onCancel
	return cc
}

// Read and Write make the clientConn the io.Reader and io.Writer under its
// buffers, counting bytes: a stale connection is told by a request that
// got no byte back. A pending request (a relayed one) is written by the
// first Read, with the read, as writeRead does.
func (cc *clientConn) Read(p []byte) (int, error) {
	if w := cc.pending; w != nil {
		cc.pending = nil
		return cc.writeRead(w, p)
	}
	n, err := cc.nc.Read(p)
	cc.nread += int64(n)
	return n, err
}

// writeReader is a connection that writes a request and waits for its
// answer without a read that would find nothing yet (proxy/sockio).
type writeReader interface {
	WriteRead(w, r []byte) (nw, nr int, werr, rerr error)
}

// writeRead writes w, then reads into p. A write error is also kept in
// cc.werr, so that the caller tells it from a read error.
func (cc *clientConn) writeRead(w, p []byte) (int, error) {
	nw := 0
	if wr, ok := cc.nc.(writeReader); ok {
		var nr int
		var werr, rerr error
		nw, nr, werr, rerr = wr.WriteRead(w, p)
		cc.nwritten += int64(nw)
		switch {
		case werr != nil && !cc.resumeWait(werr):
			cc.werr = werr
			return 0, werr
		case werr != nil:
			// A relay's deadline passed and was moved: the rest is
			// written below.
		case nw == len(w):
			cc.nread += int64(nr)
			return nr, rerr
		}
	}
	for rest := w[nw:]; len(rest) > 0; {
		n, err := cc.Write(rest)
		rest = rest[n:]
		if err != nil && !cc.resumeWait(err) {
			cc.werr = err
			return 0, err
		}
	}
	return cc.Read(p)
}

func (cc *clientConn) Write(p []byte) (int, error) {
	n, err := cc.nc.Write(p)
	cc.nwritten += int64(n)
	return n, err
}

// onCancel runs when the request's context ends: every blocked or future
// read and write on the connection fails at once. The connection is never
// reused after that.
func (cc *clientConn) onCancel() {
	cc.broken.Store(true)
	_ = cc.nc.SetDeadline(clientPast)
}

// abort breaks the connection from another goroutine than its reader's,
// waking a blocked read. The reader then releases it.
func (cc *clientConn) abort() {
	cc.broken.Store(true)
	_ = cc.nc.Close()
}

// release ends the request on cc: the connection goes back to the pool
// when reuse is true and nothing forbids it (the context fired, the
// request body was not all written, bytes beyond the response), and is
// closed otherwise. stop unregisters the context's AfterFunc; w is the
// request body's writer, if any.
func (cc *clientConn) release(reuse bool, w *clientWriter, stop func() bool) {
	if stop != nil && !stop() {
		reuse = false
	}
	writerDone := true
	if w != nil {
		wait := time.Duration(0)
		if reuse {
			// The body's last bytes may still be on their way out while
			// the response, complete, is already here.
			wait = clientWriteWaitForReuse
		}
		var ok bool
		ok, writerDone = w.wait(wait)
		reuse = reuse && ok
	}
	if reuse && cc.br.Buffered() == 0 && !cc.broken.Load() {
		cc.p.put(cc)
		return
	}
	// A writer still running owns the write buffer: it is not recycled.
	cc.p.closeConn(cc, writerDone, true)
}

// close closes the network connection and gives its buffers back.
func (cc *clientConn) close(recycleWriter, recycleReader bool) {
	_ = cc.nc.Close()
	if recycleReader && cc.br != nil {
		cc.br.Reset(nil)
		clientReaders.Put(cc.br)
		cc.br = nil
	}
	if recycleWriter && cc.bw != nil {
		cc.bw.Reset(nil)
		clientWriters.Put(cc.bw)
		cc.bw = nil
	}
}

// clientPool holds one address's connections.
type clientPool struct {
	t    *Transport
	addr string

	mu      sync.Mutex
	idle    []*clientConn // oldest first; taken from the end (LIFO)
	conns   int           // being dialled, in use and idle
	waiters []chan *clientConn
	dead    bool // removed from the Transport's map: look it up again
}

// getConn returns a connection to addr: the most recently idle one, or a
// new one. fresh skips the idle ones. At MaxConnsPerHost it waits for a
// connection to come back or a slot to free up.
func (t *Transport) getConn(ctx context.Context, addr string, fresh bool) (*clientConn, error) {
	return t.getConnAt(ctx, addr, fresh, time.Now())
}

// getConnAt is getConn for a caller that read the clock already.
func (t *Transport) getConnAt(ctx context.Context, addr string, fresh bool, now time.Time) (*clientConn, error) {
	for {
		v, ok := t.pools.Load(addr)
		if !ok {
			v, _ = t.pools.LoadOrStore(addr, &clientPool{t: t, addr: addr})
		}
		p := v.(*clientPool)
		cc, dial, ch, live := p.take(fresh, now)
		switch {
		case !live:
			continue
		case cc != nil:
			return cc, nil
		case dial:
			return p.dial(ctx)
		}
		select {
		case cc := <-ch:
			if cc != nil {
				return cc, nil
			}
			return p.dial(ctx)
		case <-ctx.Done():
			p.giveUp(ch)
			return nil, clientCtxErr(ctx, "wait for connection", errors.New("connection limit reached"))
		}
	}
}

// take returns an idle connection, or dial true with a slot taken for a
// new one, or a channel to wait on. live false: the pool was removed.
func (p *clientPool) take(fresh bool, now time.Time) (cc *clientConn, dial bool, ch chan *clientConn, live bool) {
	t := p.t
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return nil, false, nil, false
	}
	if !fresh && len(p.idle) > 0 {
		timeout := t.idleTimeout()
		for n := len(p.idle); n > 0; n = len(p.idle) {
			cc := p.idle[n-1]
			p.idle[n-1] = nil
			p.idle = p.idle[:n-1]
			if timeout > 0 && now.Sub(cc.idleAt) >= timeout {
				cc.close(true, true)
				p.dropLocked()
				continue
			}
			return cc, false, nil, true
		}
	}
	max := t.MaxConnsPerHost
	if max <= 0 || p.conns < max {
		p.conns++
		return nil, true, nil, true
	}
	if fresh && len(p.idle) > 0 {
		// Make room for the new connection: the oldest idle one is the
		// most likely to be stale too.
		p.idle[0].close(true, true)
		p.idle = p.idle[:copy(p.idle, p.idle[1:])]
		return nil, true, nil, true
	}
	ch = make(chan *clientConn, 1)
	p.waiters = append(p.waiters, ch)
	return nil, false, ch, true
}

// giveUp withdraws a waiter whose context ended. What was handed to it
// meanwhile is passed on.
func (p *clientPool) giveUp(ch chan *clientConn) {
	p.mu.Lock()
	for i, w := range p.waiters {
		if w == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.mu.Unlock()
			return
		}
	}
	p.mu.Unlock()
	// Already served: a connection, or a slot (nil), arrived.
	if cc := <-ch; cc != nil {
		p.put(cc)
		return
	}
	p.mu.Lock()
	p.dropLocked()
	p.mu.Unlock()
}

// dial opens a new connection in a slot already counted.
func (p *clientPool) dial(ctx context.Context) (*clientConn, error) {
	nc, err := p.t.DialContext(ctx, p.addr)
	if err == nil && nc == nil {
		err = errors.New("h1: DialContext returned neither a connection nor an error")
	}
	if err != nil {
		p.mu.Lock()
		p.dropLocked()
		p.mu.Unlock()
		return nil, err
	}
	return clientNewConn(p, nc), nil
}

// dropLocked gives up one connection's slot: to the first waiter, or back
// to the count. A pool left with nothing is removed from the Transport.
func (p *clientPool) dropLocked() {
	if len(p.waiters) > 0 {
		ch := p.waiters[0]
		p.waiters = p.waiters[:copy(p.waiters, p.waiters[1:])]
		ch <- nil
		return
	}
	p.conns--
	if p.conns == 0 && len(p.idle) == 0 {
		p.dead = true
		p.t.pools.CompareAndDelete(p.addr, p)
	}
}

// put makes a connection idle, or hands it to a waiter.
func (p *clientPool) put(cc *clientConn) {
	cc.reused = true
	idleAt := cc.idleFrom
	cc.idleFrom = time.Time{}
	p.mu.Lock()
	if len(p.waiters) > 0 {
		ch := p.waiters[0]
		p.waiters = p.waiters[:copy(p.waiters, p.waiters[1:])]
		p.mu.Unlock()
		ch <- cc
		return
	}
	max := p.t.maxIdle()
	if max <= 0 {
		cc.close(true, true)
		p.dropLocked()
		p.mu.Unlock()
		return
	}
	if len(p.idle) >= max {
		p.idle[0].close(true, true)
		p.idle = p.idle[:copy(p.idle, p.idle[1:])]
		p.dropLocked()
	}
	if idleAt.IsZero() {
		idleAt = time.Now()
	}
	cc.idleAt = idleAt
	p.idle = append(p.idle, cc)
	p.mu.Unlock()
	p.t.janitor.ensure(p.t)
}

// closeConn closes a connection that is not idle and frees its slot.
func (p *clientPool) closeConn(cc *clientConn, recycleWriter, recycleReader bool) {
	cc.close(recycleWriter, recycleReader)
	p.mu.Lock()
	p.dropLocked()
	p.mu.Unlock()
}

// closeIdle closes every idle connection.
func (p *clientPool) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	idle := p.idle
	p.idle = nil
	for _, cc := range idle {
		cc.close(true, true)
		p.dropLocked()
	}
}

// sweep closes the idle connections older than timeout and returns how
// many are left and when the oldest of them expires.
func (p *clientPool) sweep(now time.Time, timeout time.Duration) (left int, next time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleAt) >= timeout {
		n++
	}
	if n > 0 {
		expired := p.idle[:n]
		for _, cc := range expired {
			cc.close(true, true)
		}
		p.idle = p.idle[:copy(p.idle, p.idle[n:])]
		for range expired {
			p.dropLocked()
		}
	}
	// An upstream closing its side of an idle connection (its own idle
	// timeout) is found here, so the socket is not held open until its
	// next use or expiry.
	kept, gone := p.idle[:0], 0
	for _, cc := range p.idle {
		if now.Sub(cc.idleAt) < clientProbeAfter {
			kept = append(kept, cc)
			continue
		}
		// A relayed request's deadline, passed by now, does not stop the
		// look: it never waits, and ignores deadlines.
		if clientPeerGone(cc.nc) {
			cc.close(true, true)
			gone++
			continue
		}
		kept = append(kept, cc)
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	for range gone {
		p.dropLocked()
	}
	if len(p.idle) > 0 {
		next = p.idle[0].idleAt.Add(timeout)
	}
	return len(p.idle), next
}

// clientProbeAfter is how long a connection is idle before the janitor
// looks whether its upstream closed it; it looks again as often.
const clientProbeAfter = time.Second

// clientJanitor is the goroutine that closes expired idle connections. It
// runs only while some connection is idle, so a Transport left with none
// (CloseIdleConnections) leaves no goroutine behind.
type clientJanitor struct {
	on   atomic.Bool
	mu   sync.Mutex
	wake chan struct{} // the running janitor's
}

// ensure starts the janitor unless it runs. A connection was just made
// idle.
func (j *clientJanitor) ensure(t *Transport) {
	if j.on.Load() || t.idleTimeout() < 0 || !j.on.CompareAndSwap(false, true) {
		return
	}
	wake := make(chan struct{}, 1)
	j.mu.Lock()
	j.wake = wake
	j.mu.Unlock()
	go j.run(t, wake)
}

// kick makes the janitor look again now.
func (j *clientJanitor) kick() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.wake != nil {
		select {
		case j.wake <- struct{}{}:
		default:
		}
	}
}

func (j *clientJanitor) run(t *Transport, wake chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	timeout := t.idleTimeout()
	for {
		left, next := t.sweep(timeout)
		if left == 0 {
			// Stop, unless a connection went idle while ensure still
			// saw this janitor running.
			j.on.Store(false)
			if left, next = t.sweep(timeout); left == 0 || !j.on.CompareAndSwap(false, true) {
				return
			}
		}
		timer.Reset(max(min(time.Until(next), clientProbeAfter), time.Millisecond))
		select {
		case <-timer.C:
		case <-wake:
		}
	}
}

// sweep sweeps every pool.
func (t *Transport) sweep(timeout time.Duration) (left int, next time.Time) {
	now := time.Now()
	t.pools.Range(func(_, v any) bool {
		n, nx := v.(*clientPool).sweep(now, timeout)
		if n > 0 && (left == 0 || nx.Before(next)) {
			next = nx
		}
		left += n
		return true
	})
	return left, next
}
