// Package fixedhttp is an upstream for benchmarks: a loopback HTTP/1.1
// server that answers every body-less request with the same bytes, without
// allocating, so that a benchmark's allocs/op counts its client's own.
package fixedhttp

import (
	"bufio"
	"net"
	"sync"
	"testing"
)

// Start serves answer to every request head read on a new loopback
// listener and returns its address. At the end of tb it closes the
// listener and every connection, and waits for their goroutines.
func Start(tb testing.TB, answer []byte) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, answer)
			}()
		}
	}()
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
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
