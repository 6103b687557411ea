package h1

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// clientPeerGone reports whether an idle connection can no longer carry a
// request: the upstream closed it (a FIN or a reset is waiting), or sent
// bytes no request asked for. It peeks without blocking, one system call,
// and never consumes anything. A connection it cannot look into is taken
// as alive.
func clientPeerGone(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
		default:
			gone = true // n == 0: end of stream; n > 0: unasked-for bytes; or an error
			_ = n
		}
		return true
	})
	return gone || err != nil
}
