//go:build linux

package opaque

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// isNotConnected reports ENOTCONN, which shutdown(2) returns when the peer
// already closed: nothing is lost then.
func isNotConnected(err error) bool { return errors.Is(err, syscall.ENOTCONN) }

// socketBytes returns the bytes received plus the bytes acknowledged by
// the peer on a TCP socket, from TCP_INFO.
func socketBytes(c net.Conn) (uint64, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return 0, false
	}
	return info.Bytes_received + info.Bytes_acked, true
}
