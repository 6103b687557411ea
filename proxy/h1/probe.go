package h1

import (
	"net"
	"syscall"
)

// socketConn is a connection that wraps a socket without being a
// syscall.Conn itself: Socket gives the socket, for peekSocket.
type socketConn interface {
	Socket() syscall.Conn
}

// peekState is what a look at a socket (peekSocket) found waiting.
type peekState uint8

const (
	peekNothing peekState = iota // no byte, no end: the peer is there, silent
	peekBytes                    // bytes to read
	peekEnded                    // an end of stream or an error: the peer is gone
	peekUnknown                  // the socket cannot be looked at
)

// clientPeerGone reports whether an idle upstream connection can no longer
// carry a request: the upstream closed it (a FIN or a reset is waiting),
// or sent bytes no request asked for. A connection that cannot be looked
// at is taken as alive.
func clientPeerGone(nc net.Conn) bool {
	s := peekSocket(nc)
	return s == peekBytes || s == peekEnded
}
