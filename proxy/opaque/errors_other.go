//go:build !linux

package opaque

import "net"

func isNotConnected(error) bool { return false }

func socketBytes(net.Conn) (uint64, bool) { return 0, false }
