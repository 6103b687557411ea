package h1

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peekSocket looks at what waits on nc's socket without blocking and
// without consuming anything: one system call.
func peekSocket(nc net.Conn) peekState {
	var sc syscall.Conn
	switch c := nc.(type) {
	case socketConn:
		sc = c.Socket()
	case syscall.Conn:
		sc = c
	default:
		return peekUnknown
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return peekUnknown
	}
	// Control, not Read: a read deadline that has passed must not stop the
	// look (the call never waits).
	state := peekNothing
	var b [1]byte
	err = rc.Control(func(fd uintptr) {
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
		case err == nil && n > 0:
			state = peekBytes
		default:
			state = peekEnded // n == 0: end of stream; or an error (a reset)
		}
	})
	if err != nil {
		return peekEnded // closed meanwhile
	}
	return state
}
