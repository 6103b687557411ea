package proxy

import (
	"errors"
	"io"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/meshd/meshd/proxy/opaque"
)

// pipe copies between the client and an upstream connection until both
// sides are done, then closes both. The copy runs on the raw TCP
// connections so that Linux can splice.
func (p *Proxy) pipe(c *conn, up net.Conn, pre []byte, idle time.Duration, target string) {
	start := time.Now()
	st, err := opaque.Pipe(c.tcp, up, pre, idle)
	_ = c.Close()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		if ce := p.log.Check(zap.DebugLevel, "tcp connection ended with an error"); ce != nil {
			ce.Write(zap.String("target", target), zap.Error(err))
		}
	}
	if p.metrics != nil {
		dir, label := "outbound", p.labelOf(target)
		if c.info.inbound {
			dir, label = "inbound", p.label(nil, "inbound")
		}
		p.metrics.TCPConnections.WithLabelValues(dir, label).Inc()
		p.metrics.TCPBytes.WithLabelValues(dir, label, "sent").Add(float64(st.ClientToUpstream))
		p.metrics.TCPBytes.WithLabelValues(dir, label, "received").Add(float64(st.UpstreamToClient))
	}
	if p.cfg.AccessLog {
		p.log.Info("tcp", zap.Bool("inbound", c.info.inbound), zap.Stringer("client", c.RemoteAddr()),
			zap.String("target", target), zap.Int64("bytes_sent", st.ClientToUpstream),
			zap.Int64("bytes_received", st.UpstreamToClient), zap.Duration("duration", time.Since(start)),
			zap.NamedError("error", err))
	}
}
