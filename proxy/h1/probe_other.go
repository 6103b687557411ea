//go:build !linux

package h1

import "net"

// peekSocket cannot look into a connection on this system.
func peekSocket(net.Conn) peekState { return peekUnknown }
