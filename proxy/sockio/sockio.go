// Package sockio reads and writes TCP connections with plain non-blocking
// system calls.
//
// A *net.TCPConn's Read and Write tell the Go scheduler about every system
// call (so that a blocked thread's processor can be handed to another). On
// a non-blocking socket the call never blocks, and the bookkeeping costs
// more than the call: on a busy proxy it also keeps the runtime's monitor
// thread waking every few microseconds. A Conn makes the same calls through
// syscall.RawConn without that bookkeeping, and still parks the goroutine
// in the network poller, with deadlines, when the socket is not ready.
package sockio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a TCP connection whose Read and Write are raw system calls.
// Every other method is the *net.TCPConn's: deadlines, Close, CloseWrite,
// and ReadFrom and WriteTo (so an io.Copy between connections still
// splices). Like a net.Conn, it may be read and written from several
// goroutines at once.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The callbacks are method values bound once, and their arguments and
	// results live here, so that no call allocates. Read and Write each
	// have their own: a reader and a writer may run at once.
	readFn, writeFn, writeReadFn func(fd uintptr) bool
	rmu, wmu                     sync.Mutex // guard r and w between callers
	r, w                         op
	wrote                        bool // WriteRead's write is done
}

// op is one system call's buffer and outcome.
type op struct {
	p     []byte
	n     int
	errno syscall.Errno
	eof   bool
}

// New wraps c. It returns nil when c's socket cannot be reached (or the
// platform has no raw path): callers then use c as it is.
func New(c *net.TCPConn) *Conn {
	if !supported {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	s := &Conn{TCPConn: c, rc: rc}
	s.readFn, s.writeFn, s.writeReadFn = s.doRead, s.doWrite, s.doWriteRead
	return s
}

// Read reads into p, waiting in the network poller until the socket has
// bytes, an end of stream or an error, or the read deadline passes.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.r = op{p: p}
	err := c.rc.Read(c.readFn)
	n, errno, eof := c.r.n, c.r.errno, c.r.eof
	c.r = op{}
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", errno)
	case eof:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting in the network poller while the socket's
// send buffer is full, until the write deadline passes.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.w = op{p: p}
	err := c.rc.Write(c.writeFn)
	n, errno := c.w.n, c.w.errno
	c.w = op{}
	c.wmu.Unlock()
	switch {
	case errno != 0:
		return n, c.opError("write", errno)
	case err != nil:
		return n, c.opError("write", err)
	}
	return n, nil
}

// WriteRead writes w, then reads into r: a request and the first bytes of
// its answer. After the write it waits in the network poller for the
// answer, instead of first trying a read that would find nothing yet:
// one system call less per exchange.
//
// It is only for a peer that sends nothing before it has read w: bytes or
// an end of stream that came before the call are seen only with the next
// event on the socket (the answer to w, or the reset a closed peer answers
// w with), or at the read deadline. The wait is armed before w is written,
// so the answer's own arrival is never missed.
//
// When the send buffer fills before the end of w, it returns what it wrote
// and nothing read: the caller writes the rest and reads as usual. werr is
// the write's error (nothing was read then), rerr the read's.
func (c *Conn) WriteRead(w, r []byte) (nw, nr int, werr, rerr error) {
	if len(w) == 0 || len(r) == 0 {
		return 0, 0, nil, nil
	}
	c.rmu.Lock()
	c.wmu.Lock()
	c.w, c.r, c.wrote = op{p: w}, op{p: r}, false
	err := c.rc.Read(c.writeReadFn)
	nw, werrno := c.w.n, c.w.errno
	nr, rerrno, eof := c.r.n, c.r.errno, c.r.eof
	c.w, c.r = op{}, op{}
	c.wmu.Unlock()
	c.rmu.Unlock()
	switch {
	case werrno != 0:
		return nw, 0, c.opError("write", werrno), nil
	case nw < len(w):
		if err != nil {
			return nw, 0, c.opError("write", err), nil
		}
		return nw, 0, nil, nil // the send buffer is full
	case err != nil:
		return nw, 0, nil, c.opError("read", err)
	case rerrno != 0:
		return nw, 0, nil, c.opError("read", rerrno)
	case eof:
		return nw, 0, nil, io.EOF
	}
	return nw, nr, nil, nil
}

// doWriteRead is WriteRead's callback: the write at the first call, then
// reads. It runs after the poller's read readiness was reset.
func (c *Conn) doWriteRead(fd uintptr) bool {
	if !c.wrote {
		c.wrote = true
		if !c.doWrite(fd) || c.w.errno != 0 {
			return true // the send buffer is full, or the write failed
		}
		return false // wait for the answer
	}
	return c.doRead(fd)
}

func (c *Conn) doRead(fd uintptr) bool {
	for {
		n, errno := sysRead(fd, c.r.p)
		switch errno {
		case 0:
			c.r.n, c.r.eof = n, n == 0
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.r.errno = errno
			return true
		}
	}
}

// doWrite writes c.w.p from c.w.n on. It reports false when the send
// buffer is full before the end.
func (c *Conn) doWrite(fd uintptr) bool {
	for c.w.n < len(c.w.p) {
		n, errno := sysWrite(fd, c.w.p[c.w.n:])
		switch errno {
		case 0:
			c.w.n += n
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.w.errno = errno
			return true
		}
	}
	return true
}

// opError has the shape of a *net.TCPConn's errors, so that callers'
// errors.Is checks (io.EOF aside, which is returned bare) see the same
// causes: os.ErrDeadlineExceeded, net.ErrClosed, syscall.ECONNRESET.
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err // the raw connection's "raw-read": say what was done
	}
	if errno, ok := err.(syscall.Errno); ok {
		err = &os.SyscallError{Syscall: op, Err: errno}
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
