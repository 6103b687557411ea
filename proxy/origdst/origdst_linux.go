//go:build linux

package origdst

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and, at level
// SOL_IPV6, IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h): both 80.
const soOriginalDst = 80

var errNoEntry = errors.New("no conntrack entry")

// lookup asks the kernel through the connection's raw fd (SyscallConn, so
// the descriptor is neither duplicated nor switched to blocking mode).
// IPv4 connections, including those accepted on a dual-stack socket, are
// asked at level SOL_IP.
func lookup(c *net.TCPConn, v4 bool) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var (
		sa    unix.RawSockaddrInet6 // large enough for either family
		opErr error
	)
	level := unix.SOL_IPV6
	if v4 {
		level = unix.SOL_IP
	}
	if err := rc.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(sa))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst,
			uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			opErr = errno
		}
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if opErr != nil {
		if errors.Is(opErr, unix.ENOENT) {
			return netip.AddrPort{}, errNoEntry
		}
		return netip.AddrPort{}, opErr
	}
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port)), nil
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port)), nil
	}
	return netip.AddrPort{}, errors.New("unexpected address family in SO_ORIGINAL_DST answer")
}

// ntohs turns the raw sockaddr port (network byte order) into a number.
func ntohs(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}
