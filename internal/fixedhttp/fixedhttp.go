// Package fixedhttp is an upstream for benchmarks: a loopback HTTP/1.1
// server that answers every body-less request with the same bytes, without
// allocating, so that a benchmark's allocs/op counts its client's own.
package fixedhttp

import (
	"bufio"
	"net"
	"testing"

	"github.com/meshd/meshd/internal/loopserve"
)

// Start serves answer to every request head read on a new loopback
// listener and returns its address. At the end of tb it closes the
// listener and every connection, and waits for their goroutines.
func Start(tb testing.TB, answer []byte) string {
	tb.Helper()
	return loopserve.Serve(tb, func(c net.Conn) { serve(c, answer) })
}

// serve answers each head on c; requests carry no body, so a head ends
// with its empty line.
func serve(c net.Conn, answer []byte) {
	br := bufio.NewReader(c)
	for {
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
		}
		if _, err := c.Write(answer); err != nil {
			return
		}
	}
}
