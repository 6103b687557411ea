// Package proxy owns meshd's traffic listeners: the outbound listener that
// takes the app's redirected and explicit traffic, and the inbound listener
// that takes redirected traffic addressed to the pod.
package proxy

import (
	"errors"
	"net"

	"go.uber.org/zap"
)

// Listener serves one traffic listener. Forwarding arrives with the proxy
// core; until then a connection is accepted and closed at once, so that a
// redirected client fails fast instead of hanging.
type Listener struct {
	Name string // "outbound" or "inbound", for logs
	Log  *zap.Logger
}

// Serve accepts connections on ln until ln is closed. It returns nil when
// ln was closed and the error otherwise.
func (l *Listener) Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if ce := l.Log.Check(zap.DebugLevel, "connection closed: forwarding not available"); ce != nil {
			ce.Write(zap.String("listener", l.Name), zap.Stringer("client", c.RemoteAddr()))
		}
		_ = c.Close()
	}
}
