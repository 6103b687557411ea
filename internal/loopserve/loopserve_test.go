package loopserve

import (
	"io"
	"net"
	"testing"
	"time"
)

// Each connection gets its own handler; at the test's end the listener and
// every connection are closed, the handlers' blocked reads included.
func TestServe(t *testing.T) {
	ended := make(chan struct{}, 2)
	var addr string
	t.Run("serving", func(t *testing.T) {
		addr = Serve(t, func(c net.Conn) {
			defer func() { ended <- struct{}{} }()
			_, _ = io.Copy(c, c)
		})
		for i := range 2 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			msg := []byte{'a' + byte(i)}
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 1)
			if _, err := io.ReadFull(c, got); err != nil || got[0] != msg[0] {
				t.Fatalf("connection %d echoed %q (%v)", i, got, err)
			}
		}
	})
	// The cleanup of "serving" has run: both handlers returned.
	for range 2 {
		select {
		case <-ended:
		default:
			t.Fatal("a handler was still running after the cleanup")
		}
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("the listener still accepts")
	}
}
