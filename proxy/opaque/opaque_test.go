package opaque

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-acc
	t.Cleanup(func() { d.Close(); a.Close() })
	return d.(*net.TCPConn), a.(*net.TCPConn)
}

// topology: app <-> (client, upstream) <-> server, with Pipe in the middle.
func runPipe(t *testing.T, pre []byte, idle time.Duration) (app, server *net.TCPConn, done <-chan result) {
	t.Helper()
	app, client := pair(t)
	upstream, server := pair(t)
	ch := make(chan result, 1)
	go func() {
		st, err := Pipe(client, upstream, pre, idle)
		ch <- result{st, err}
	}()
	return app, server, ch
}

type result struct {
	st  Stats
	err error
}

func wait(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("pipe did not end")
		return result{}
	}
}

func TestEchoByteExactWithHalfClose(t *testing.T) {
	for _, idle := range []time.Duration{0, time.Minute} {
		payload := make([]byte, 1<<20)
		rand.Read(payload)
		app, server, done := runPipe(t, payload[:10], idle)
		// The server echoes and half-closes once it has read everything.
		go func() {
			io.Copy(server, server)
			server.CloseWrite()
		}()
		go func() {
			app.Write(payload[10:])
			app.CloseWrite() // client -> server FIN
		}()
		got, err := io.ReadAll(app) // ends at the server's FIN
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("idle=%v: echoed %d bytes (err %v), want %d byte-exact", idle, len(got), err, len(payload))
		}
		r := wait(t, done)
		if r.err != nil || r.st.ClientToUpstream != int64(len(payload)) || r.st.UpstreamToClient != int64(len(payload)) {
			t.Fatalf("idle=%v: stats %+v err %v", idle, r.st, r.err)
		}
	}
}

func TestHalfCloseKeepsOtherDirection(t *testing.T) {
	app, server, done := runPipe(t, nil, 0)
	// The server sends first and shuts its write side; the client keeps
	// sending afterwards and still reaches the server.
	server.Write([]byte("banner"))
	server.CloseWrite()
	buf, err := io.ReadAll(app)
	if err != nil || string(buf) != "banner" {
		t.Fatalf("app read %q, %v", buf, err)
	}
	app.Write([]byte("after-eof"))
	app.CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "after-eof" {
		t.Fatalf("server read %q, %v", got, err)
	}
	wait(t, done)
}

func TestIdleTimeoutClosesBoth(t *testing.T) {
	app, server, done := runPipe(t, nil, 300*time.Millisecond)
	start := time.Now()
	r := wait(t, done)
	if !errors.Is(r.err, ErrIdle) || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("got %v after %v, want ErrIdle after 300ms", r.err, time.Since(start))
	}
	app.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := app.Read(make([]byte, 1)); err == nil {
		t.Fatalf("app side still open")
	}
	server.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := server.Read(make([]byte, 1)); err == nil {
		t.Fatalf("server side still open")
	}
}

func TestActivityOneWayKeepsPipeAlive(t *testing.T) {
	app, server, done := runPipe(t, nil, 600*time.Millisecond)
	// Only the server talks, every 100ms for 1s: the app's silent direction
	// must not time out.
	go func() {
		for i := 0; i < 10; i++ {
			server.Write([]byte("x"))
			time.Sleep(100 * time.Millisecond)
		}
	}()
	buf := make([]byte, 10)
	app.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(app, buf); err != nil {
		t.Fatalf("stream cut while one direction was active: %v", err)
	}
	r := wait(t, done) // then idle
	if !errors.Is(r.err, ErrIdle) || r.st.UpstreamToClient != 10 {
		t.Fatalf("got %+v %v", r.st, r.err)
	}
}

func TestUpstreamResetResetsClient(t *testing.T) {
	app, server, done := runPipe(t, nil, 0)
	server.SetLinger(0)
	server.Close()
	wait(t, done)
	app.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := app.Read(make([]byte, 1))
	if err == nil {
		t.Fatalf("client did not see the end")
	}
}
