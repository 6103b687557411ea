//go:build !linux

package origdst

import (
	"errors"
	"net"
	"net/netip"
)

var errNoEntry = errors.New("no conntrack entry")

func lookup(*net.TCPConn, bool) (netip.AddrPort, error) { return netip.AddrPort{}, ErrUnsupported }
