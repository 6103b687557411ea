package sniff

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a real loopback TCP connection; both are
// closed when the test ends.
func tcpPair(tb testing.TB) (client, server *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		c.Close()
		tb.Fatal(a.err)
	}
	tb.Cleanup(func() {
		c.Close()
		a.c.Close()
	})
	return c.(*net.TCPConn), a.c.(*net.TCPConn)
}

// notifyConn reports the size of every Read, so a test can write the next
// piece only after the previous one was consumed, without sleeping.
type notifyConn struct {
	net.Conn
	reads chan<- int
	count *atomic.Int32
}

func (c notifyConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.count.Add(1)
	c.reads <- n
	return n, err
}

// readRest reads n more bytes from c, bounded by a deadline so that a
// broken test fails instead of hanging.
func readRest(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading the rest: %v", err)
	}
	return b
}

// assertReadBlocks checks that a Read on server with no deadline set waits
// for data (for longer than wait) instead of failing at once, then feeds it
// one byte from client so the reader finishes.
func assertReadBlocks(t *testing.T, client, server net.Conn, wait time.Duration) {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b := make([]byte, 1)
		n, err := server.Read(b)
		ch <- result{b[:n], err}
	}()
	select {
	case r := <-ch:
		t.Fatalf("Read returned at once (%q, %v); the read deadline was not cleared", r.b, r.err)
	case <-time.After(wait):
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil || string(r.b) != "x" {
		t.Fatalf("Read after the deadline check = %q, %v; want \"x\", nil", r.b, r.err)
	}
}

// TestDetectPieces sends a client's bytes in several writes, each only
// after the previous one was read, and checks that every byte comes back.
func TestDetectPieces(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc   string
		pieces []string
		tail   string // written right after the last piece, past the decisive byte
		want   Protocol
	}{
		{desc: "HTTP/1 in three pieces", pieces: []string{"GE", "T / HT", "TP/1.1\r\n"}, tail: "Host: a\r\n\r\n", want: HTTP1},
		{desc: "HTTP/1 byte by byte", pieces: strings.Split("POST /x HTTP/1.0\n", ""), want: HTTP1},
		{desc: "h2 preface split", pieces: []string{"PRI * HTTP/2.0\r\n", "\r\nSM", "\r\n\r\n"}, tail: settingsFrame, want: HTTP2},
		{desc: "turns opaque in the second piece", pieces: []string{"GET /", "\x00\x01"}, want: Opaque},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			client, server := tcpPair(t)
			reads := make(chan int, 1024)
			stop := make(chan struct{})
			errc := make(chan error, 1)
			go func() {
				sent, got := 0, 0
				for i, piece := range tt.pieces {
					if _, err := client.Write([]byte(piece)); err != nil {
						errc <- err
						return
					}
					sent += len(piece)
					if i == len(tt.pieces)-1 {
						// The tail rides on the last write; Detect may
						// stop before reading it.
						if _, err := client.Write([]byte(tt.tail)); err != nil {
							errc <- err
							return
						}
					}
					for got < sent {
						select {
						case n := <-reads:
							got += n
						case <-stop:
							errc <- nil
							return
						}
					}
				}
				errc <- nil
			}()

			var count atomic.Int32
			p, peeked, err := Detect(notifyConn{server, reads, &count}, 5*time.Second, make([]byte, MaxPeek))
			close(stop)
			if werr := <-errc; werr != nil {
				t.Fatal(werr)
			}
			if err != nil || p != tt.want {
				t.Fatalf("Detect = %v, %q, %v; want %v, nil", p, peeked, err, tt.want)
			}
			if n := count.Load(); n < 2 {
				t.Errorf("Detect read %d times; the test meant to make it read in pieces", n)
			}
			all := strings.Join(tt.pieces, "") + tt.tail
			got := string(peeked) + string(readRest(t, server, len(all)-len(peeked)))
			if got != all {
				t.Errorf("peeked %q + rest = %q; want %q", peeked, got, all)
			}
		})
	}
}

// TestDetectOneWrite covers a client that sends its first bytes at once,
// with buffers of various sizes.
func TestDetectOneWrite(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 2*MaxPeek)
	tests := []struct {
		desc    string
		send    string
		buf     []byte
		want    Protocol
		wantLen int // -1: everything that was sent
	}{
		{desc: "HTTP/1", send: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", buf: make([]byte, MaxPeek), want: HTTP1, wantLen: -1},
		{desc: "h2 preface and SETTINGS", send: h2Preface + settingsFrame, buf: make([]byte, MaxPeek), want: HTTP2, wantLen: -1},
		{desc: "TLS ClientHello", send: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", buf: make([]byte, MaxPeek), want: Opaque, wantLen: -1},
		{desc: "pooled buf[:0] uses its capacity", send: "GET / HTTP/1.1\r\n", buf: make([]byte, 0, 64), want: HTTP1, wantLen: -1},
		{desc: "small buffer fills, standard method", send: "GET /abcdefgh HTTP/1.1\r\n", buf: make([]byte, 8), want: HTTP1, wantLen: 8},
		{desc: "small buffer fills, h2 preface", send: h2Preface, buf: make([]byte, 8), want: Opaque, wantLen: 8},
		{desc: "long URL stops at MaxPeek", send: "GET /" + long + " HTTP/1.1\r\n", buf: make([]byte, 2*MaxPeek), want: HTTP1, wantLen: MaxPeek},
		{desc: "long line, custom method", send: "PURGE /" + long + " HTTP/1.1\r\n", buf: make([]byte, MaxPeek), want: Opaque, wantLen: MaxPeek},
		{desc: "no buffer reads nothing", send: "GET / HTTP/1.1\r\n", buf: nil, want: Opaque, wantLen: 0},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			client, server := tcpPair(t)
			errc := make(chan error, 1)
			go func() {
				// A long send may not fit the socket buffers before
				// Detect reads, so write from a goroutine.
				_, err := client.Write([]byte(tt.send))
				errc <- err
			}()
			p, peeked, err := Detect(server, 5*time.Second, tt.buf)
			if err != nil || p != tt.want {
				t.Fatalf("Detect = %v, %.40q, %v; want %v, nil", p, peeked, err, tt.want)
			}
			wantLen := tt.wantLen
			if wantLen < 0 {
				wantLen = len(tt.send)
			}
			if len(peeked) != wantLen {
				t.Errorf("Detect returned %d bytes; want %d", len(peeked), wantLen)
			}
			if len(peeked) > 0 && &peeked[0] != &tt.buf[:1][0] {
				t.Errorf("Detect returned bytes outside the caller's buffer")
			}
			got := string(peeked) + string(readRest(t, server, len(tt.send)-len(peeked)))
			if got != tt.send {
				t.Errorf("peeked + rest differs from what the client sent")
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDetectTimeout covers clients that say nothing, or too little, within
// the timeout: server-first protocols and slow writers.
func TestDetectTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 150 * time.Millisecond
	const slack = 500 * time.Millisecond // generous, for -race on a busy machine

	t.Run("silent client", func(t *testing.T) {
		t.Parallel()
		client, server := tcpPair(t)
		start := time.Now()
		p, peeked, err := Detect(server, timeout, make([]byte, MaxPeek))
		elapsed := time.Since(start)
		if err != nil || p != Opaque || len(peeked) != 0 {
			t.Fatalf("Detect = %v, %q, %v; want Opaque, no bytes, nil", p, peeked, err)
		}
		if elapsed < timeout || elapsed > timeout+slack {
			t.Errorf("Detect took %v; want between %v and %v", elapsed, timeout, timeout+slack)
		}
		assertReadBlocks(t, client, server, 2*timeout)
	})

	t.Run("server-first exchange afterwards", func(t *testing.T) {
		t.Parallel()
		client, server := tcpPair(t)
		p, peeked, err := Detect(server, timeout, make([]byte, MaxPeek))
		if err != nil || p != Opaque || len(peeked) != 0 {
			t.Fatalf("Detect = %v, %q, %v; want Opaque, no bytes, nil", p, peeked, err)
		}
		// Now the server speaks first, as SMTP does, and the client answers.
		banner := "220 mail.example ESMTP\r\n"
		if _, err := server.Write([]byte(banner)); err != nil {
			t.Fatal(err)
		}
		if got := string(readRest(t, client, len(banner))); got != banner {
			t.Fatalf("client read %q; want %q", got, banner)
		}
		hello := "EHLO client.example\r\n"
		if _, err := client.Write([]byte(hello)); err != nil {
			t.Fatal(err)
		}
		// No deadline is set here: a stale one from Detect would fail this.
		b := make([]byte, len(hello))
		if _, err := io.ReadFull(server, b); err != nil || string(b) != hello {
			t.Fatalf("server read %q, %v; want %q", b, err, hello)
		}
	})

	t.Run("undecided prefix then silence", func(t *testing.T) {
		t.Parallel()
		client, server := tcpPair(t)
		if _, err := client.Write([]byte("GET /")); err != nil {
			t.Fatal(err)
		}
		p, peeked, err := Detect(server, timeout, make([]byte, MaxPeek))
		if err != nil || p != Opaque || string(peeked) != "GET /" {
			t.Fatalf("Detect = %v, %q, %v; want Opaque, \"GET /\", nil", p, peeked, err)
		}
	})

	t.Run("timeout is for all reads together", func(t *testing.T) {
		t.Parallel()
		client, server := tcpPair(t)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			// One byte of an endless request line every 20ms: each read
			// succeeds quickly, but the line never finishes.
			defer close(done)
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			msg := "GET /" + strings.Repeat("a", MaxPeek)
			for i := 0; i < len(msg); i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := client.Write([]byte{msg[i]}); err != nil {
					return
				}
			}
		}()
		start := time.Now()
		p, peeked, err := Detect(server, timeout, make([]byte, MaxPeek))
		elapsed := time.Since(start)
		close(stop)
		<-done
		if err != nil || p != Opaque || len(peeked) == 0 {
			t.Fatalf("Detect = %v, %q, %v; want Opaque, some bytes, nil", p, peeked, err)
		}
		if elapsed < timeout || elapsed > timeout+slack {
			t.Errorf("Detect took %v; want between %v and %v", elapsed, timeout, timeout+slack)
		}
	})

	t.Run("zero timeout reads nothing", func(t *testing.T) {
		t.Parallel()
		client, server := tcpPair(t)
		req := "GET / HTTP/1.1\r\n"
		if _, err := client.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		p, peeked, err := Detect(server, 0, make([]byte, MaxPeek))
		if err != nil || p != Opaque || len(peeked) != 0 {
			t.Fatalf("Detect = %v, %q, %v; want Opaque, no bytes, nil", p, peeked, err)
		}
		if got := string(readRest(t, server, len(req))); got != req {
			t.Fatalf("later read %q; want %q", got, req)
		}
	})
}

// TestDetectClearsDeadline checks that a decision made well within the
// timeout leaves no deadline behind to fail a later Read.
func TestDetectClearsDeadline(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	client, server := tcpPair(t)
	req := "GET / HTTP/1.1\r\n"
	if _, err := client.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	p, peeked, err := Detect(server, timeout, make([]byte, MaxPeek))
	if err != nil || p != HTTP1 || string(peeked) != req {
		t.Fatalf("Detect = %v, %q, %v; want HTTP1, %q, nil", p, peeked, err, req)
	}
	// Wait past the time the deadline would have fired.
	assertReadBlocks(t, client, server, 3*timeout)
}

// TestDetectEnd covers clients that go away during detection.
func TestDetectEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		send    string
		end     func(c *net.TCPConn) error
		want    Protocol
		peeked  string
		wantErr error // nil: no error
	}{
		{desc: "EOF before any byte", end: (*net.TCPConn).Close, wantErr: io.EOF},
		{desc: "half-close before any byte", end: (*net.TCPConn).CloseWrite, wantErr: io.EOF},
		{
			desc: "reset before any byte",
			end: func(c *net.TCPConn) error {
				if err := c.SetLinger(0); err != nil {
					return err
				}
				return c.Close()
			},
			wantErr: syscall.ECONNRESET,
		},
		{desc: "half-close after a few bytes", send: "GE", end: (*net.TCPConn).CloseWrite, peeked: "GE"},
		{desc: "close after a full request line", send: "GET / HTTP/1.1\r\n", end: (*net.TCPConn).Close, want: HTTP1, peeked: "GET / HTTP/1.1\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			client, server := tcpPair(t)
			if tt.send != "" {
				if _, err := client.Write([]byte(tt.send)); err != nil {
					t.Fatal(err)
				}
			}
			if err := tt.end(client); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			p, peeked, err := Detect(server, 5*time.Second, make([]byte, MaxPeek))
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("Detect took %v; the end of the connection should end it at once", elapsed)
			}
			if p != tt.want || string(peeked) != tt.peeked {
				t.Errorf("Detect = %v, %q; want %v, %q", p, peeked, tt.want, tt.peeked)
			}
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("Detect error = %v; want nil", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("Detect error = %v; want %v", err, tt.wantErr)
			}
		})
	}
}

// TestDetectDeadlineErrors checks that a connection whose deadline cannot
// be set fails detection with an error rather than reading without a limit.
func TestDetectDeadlineErrors(t *testing.T) {
	t.Parallel()
	_, server := tcpPair(t)
	server.Close()
	p, peeked, err := Detect(server, time.Second, make([]byte, MaxPeek))
	if err == nil || !errors.Is(err, net.ErrClosed) || p != Opaque || len(peeked) != 0 {
		t.Fatalf("Detect on a closed conn = %v, %q, %v; want Opaque, no bytes, net.ErrClosed", p, peeked, err)
	}
}

func BenchmarkDetect(b *testing.B) {
	client, server := tcpPair(b)
	req := []byte("GET /api/v1/payments/1234 HTTP/1.1\r\n")
	buf := make([]byte, MaxPeek)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Write(req); err != nil {
			b.Fatal(err)
		}
		// The request is exactly one line, so Detect consumes all of it.
		p, peeked, err := Detect(server, time.Second, buf)
		if err != nil || p != HTTP1 || !bytes.Equal(peeked, req) {
			b.Fatalf("Detect = %v, %q, %v", p, peeked, err)
		}
	}
}
