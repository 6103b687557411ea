// Package origdst reads the original destination of a TCP connection that
// an iptables REDIRECT rule sent to a local listener: SO_ORIGINAL_DST for
// IPv4 and IP6T_SO_ORIGINAL_DST for IPv6, both answered by conntrack.
package origdst

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ErrUnsupported is returned where the platform has no original-destination
// lookup.
var ErrUnsupported = errors.New("original destination lookup is not supported on this platform")

// Lookup returns the address the client dialled before the connection was
// redirected to this listener, and whether it was redirected at all: a
// connection made straight to the listener (explicit mode) returns its own
// local address and false.
func Lookup(c *net.TCPConn) (dst netip.AddrPort, redirected bool, err error) {
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false, fmt.Errorf("original destination: local address %v is not TCP", c.LocalAddr())
	}
	la := local.AddrPort()
	la = netip.AddrPortFrom(la.Addr().Unmap(), la.Port())
	dst, err = lookup(c, la.Addr().Is4())
	if err != nil {
		// Without a conntrack entry the connection was not redirected.
		if errors.Is(err, errNoEntry) {
			return la, false, nil
		}
		return netip.AddrPort{}, false, fmt.Errorf("original destination: %w", err)
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	return dst, dst != la, nil
}
