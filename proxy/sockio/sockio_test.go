//go:build linux

package sockio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair returns a connected loopback pair: the accepted side wrapped in a
// Conn, and the dialing side as it is.
func pair(t testing.TB) (*Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := New(nc.(*net.TCPConn))
	if c == nil {
		t.Fatal("New returned nil for a loopback TCP connection")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer.(*net.TCPConn)
}

func TestReadWriteWholeStreams(t *testing.T) {
	c, peer := pair(t)
	// Far more than the socket buffers hold: writes wait for the poller
	// and reads come back short.
	want := make([]byte, 16<<20)
	_, _ = rand.Read(want)
	for _, tc := range []struct {
		name string
		w    io.Writer
		r    io.Reader
	}{
		{"conn writes", c, peer},
		{"conn reads", peer, c},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errc := make(chan error, 1)
			go func() {
				n, err := tc.w.Write(want)
				if err == nil && n != len(want) {
					err = io.ErrShortWrite
				}
				errc <- err
			}()
			got := make([]byte, len(want))
			if _, err := io.ReadFull(onlyReader{tc.r}, got); err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("the bytes read differ from the bytes written")
			}
		})
	}
}

// onlyReader hides WriteTo, so that io.ReadFull goes through Read.
type onlyReader struct{ io.Reader }

func TestErrors(t *testing.T) {
	t.Run("end of stream", func(t *testing.T) {
		c, peer := pair(t)
		_, _ = peer.Write([]byte("last"))
		_ = peer.CloseWrite()
		got, err := io.ReadAll(onlyReader{c})
		if err != nil || string(got) != "last" {
			t.Fatalf("ReadAll = %q, %v; want \"last\", nil", got, err)
		}
		if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Fatalf("Read after the end = %d, %v; want 0, io.EOF", n, err)
		}
	})
	t.Run("read deadline", func(t *testing.T) {
		c, _ := pair(t)
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := c.Read(make([]byte, 8))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Read = %v; want a timeout (os.ErrDeadlineExceeded)", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" {
			t.Fatalf("Read = %#v; want a *net.OpError with Op \"read\"", err)
		}
	})
	t.Run("reset by peer", func(t *testing.T) {
		c, peer := pair(t)
		_ = peer.SetLinger(0)
		_ = peer.Close()
		_, err := c.Read(make([]byte, 8))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("Read = %v; want ECONNRESET", err)
		}
		var se *os.SyscallError
		if !errors.As(err, &se) {
			t.Fatalf("Read = %#v; want an *os.SyscallError inside", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		c, _ := pair(t)
		_ = c.Close()
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write on a closed Conn = %v; want net.ErrClosed", err)
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read on a closed Conn = %v; want net.ErrClosed", err)
		}
	})
	t.Run("write after peer reset", func(t *testing.T) {
		c, peer := pair(t)
		_ = peer.SetLinger(0)
		_ = peer.Close()
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			_, err = c.Write(make([]byte, 1024))
			time.Sleep(time.Millisecond)
		}
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("Write = %v; want ECONNRESET or EPIPE", err)
		}
	})
	t.Run("close wakes a blocked read", func(t *testing.T) {
		c, _ := pair(t)
		errc := make(chan error, 1)
		go func() { _, err := c.Read(make([]byte, 8)); errc <- err }()
		time.Sleep(20 * time.Millisecond)
		_ = c.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read = %v; want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a Read blocked in the poller did not end when the Conn closed")
		}
	})
}

// Concurrent writers each get their whole buffer out in one piece, as on
// a net.Conn.
func TestConcurrentWrites(t *testing.T) {
	c, peer := pair(t)
	const writers, writes, size = 4, 200, 4096
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := bytes.Repeat([]byte{byte('a' + i)}, size)
			for range writes {
				if _, err := c.Write(b); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	got := make([]byte, writers*writes*size)
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for off := 0; off < len(got); off += size {
		blk := got[off : off+size]
		if bytes.Count(blk, blk[:1]) != size {
			t.Fatalf("block at %d mixes writers: %q…", off, blk[:16])
		}
	}
}

func TestNoAllocations(t *testing.T) {
	c, peer := pair(t)
	msg := make([]byte, 512)
	buf := make([]byte, 512)
	got := testing.AllocsPerRun(200, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	})
	if got != 0 {
		t.Fatalf("a Write and a Read allocate %v times; want 0", got)
	}
}

// ReadFrom is the TCP connection's: io.Copy into a Conn still splices.
func TestCopyKeepsTCPFastPath(t *testing.T) {
	c, peer := pair(t)
	var _ io.ReaderFrom = c
	src, srcPeer := pair(t)
	want := bytes.Repeat([]byte("0123456789"), 100000)
	go func() { _, _ = srcPeer.Write(want); _ = srcPeer.CloseWrite() }()
	go func() { _, _ = io.Copy(c, src.TCPConn); _ = c.CloseWrite() }()
	got, err := io.ReadAll(peer)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("copied %d bytes (%v); want the %d sent", len(got), err, len(want))
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	for _, tc := range []struct {
		name string
		wrap bool
	}{{"tcp", false}, {"sockio", true}} {
		b.Run(tc.name, func(b *testing.B) {
			s, peer := pair(b)
			var c net.Conn = s
			if !tc.wrap {
				c = s.TCPConn
			}
			go func() { _, _ = io.Copy(peer, peer) }() // echo
			msg := make([]byte, 1024)
			buf := make([]byte, 1024)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// WriteRead writes a request and returns the answer's first bytes; when
// the send buffer fills, it returns what it wrote and reads nothing; a
// closed peer and a deadline end it with an error, never a hang.
func TestWriteRead(t *testing.T) {
	t.Run("answer", func(t *testing.T) {
		c, peer := pair(t)
		for i := range 100 { // each answer arrives only after its request
			req := []byte{byte(i), 1, 2}
			go func() {
				buf := make([]byte, 3)
				if _, err := io.ReadFull(peer, buf); err == nil {
					time.Sleep(time.Millisecond)
					_, _ = peer.Write(append([]byte("re:"), buf...))
				}
			}()
			buf := make([]byte, 64)
			nw, nr, werr, rerr := c.WriteRead(req, buf)
			got := buf[:nr]
			for rerr == nil && len(got) < 6 {
				var n int
				n, rerr = c.Read(buf[len(got):])
				got = buf[:len(got)+n]
			}
			if nw != 3 || werr != nil || rerr != nil || !bytes.Equal(got, append([]byte("re:"), req...)) {
				t.Fatalf("exchange %d: wrote %d (%v), read %q (%v)", i, nw, werr, got, rerr)
			}
		}
	})
	t.Run("send buffer full", func(t *testing.T) {
		c, peer := pair(t)
		big := make([]byte, 64<<20) // more than the socket buffers hold: the peer reads nothing yet
		nw, nr, werr, rerr := c.WriteRead(big, make([]byte, 16))
		if nw <= 0 || nw >= len(big) || nr != 0 || werr != nil || rerr != nil {
			t.Fatalf("wrote %d of %d (%v), read %d (%v)", nw, len(big), werr, nr, rerr)
		}
		go func() { _, _ = io.Copy(io.Discard, peer) }()
		if _, err := c.Write(big[nw:]); err != nil {
			t.Fatalf("writing the rest: %v", err)
		}
	})
	t.Run("peer closed before", func(t *testing.T) {
		c, peer := pair(t)
		_ = peer.Close()
		time.Sleep(20 * time.Millisecond) // its FIN is in before the call
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, nr, werr, rerr := c.WriteRead([]byte("GET / HTTP/1.1\r\n\r\n"), make([]byte, 16))
		if werr == nil && rerr == nil || nr != 0 || time.Since(start) > 2*time.Second {
			t.Fatalf("read %d, write error %v, read error %v after %v", nr, werr, rerr, time.Since(start))
		}
	})
	t.Run("deadline", func(t *testing.T) {
		c, _ := pair(t)
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, _, werr, rerr := c.WriteRead([]byte("x"), make([]byte, 16))
		if werr != nil || !errors.Is(rerr, os.ErrDeadlineExceeded) {
			t.Fatalf("write error %v, read error %v; want a deadline", werr, rerr)
		}
	})
}
