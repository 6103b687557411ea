package proxy

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// grpcFrame is one length-prefixed gRPC message.
func grpcFrame(msg string) []byte {
	n := len(msg)
	return append([]byte{0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, msg...)
}

// TestReplayBodyStreamingClient: while an attempt waits for the client's
// next bytes, the retry decision does not block, and one message is not a
// unary call until the client's stream has ended.
func TestReplayBodyStreamingClient(t *testing.T) {
	pr, pw := io.Pipe()
	defer pr.Close()
	b := newReplayBody(pr, 64<<10)
	first := b.attempt()

	go func() { _, _ = pw.Write(grpcFrame("one")) }()
	buf := make([]byte, 64)
	if n, err := first.Read(buf); err != nil || n != 8 {
		t.Fatalf("first read: %d, %v", n, err)
	}
	// The transport reads on: the client sends nothing until it hears
	// back.
	blocked := make(chan []byte, 1)
	go func() {
		p := make([]byte, 64)
		n, _ := first.Read(p)
		blocked <- p[:n]
	}()
	decided := make(chan bool, 1)
	go func() { decided <- b.replayable() && b.singleGRPCMessage() }()
	select {
	case unary := <-decided:
		if unary {
			t.Fatal("one message of a stream that has not ended counts as a unary call")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the retry decision blocked on a read waiting for the client")
	}

	// A retry takes over. If the stale attempt's read was already waiting
	// on the client, it keeps the bytes it gets and the retry sees them;
	// if it had not started, it fails as stale. Either way the retry reads
	// the whole body.
	second := b.attempt()
	go func() { _, _ = pw.Write([]byte("two")); pw.Close() }()
	if got := <-blocked; string(got) != "two" && string(got) != "" {
		t.Fatalf("stale read got %q", got)
	}
	all, err := io.ReadAll(second)
	if want := string(grpcFrame("one")) + "two"; err != nil || string(all) != want {
		t.Fatalf("retry read %q, %v; want %q", all, err, want)
	}
	if _, err := first.Read(buf); err != errStaleAttempt {
		t.Fatalf("stale attempt after the retry: %v, want errStaleAttempt", err)
	}
}

// TestReplayBodyUnary: a whole body of one message is a unary call.
func TestReplayBodyUnary(t *testing.T) {
	pr, pw := io.Pipe()
	b := newReplayBody(pr, 64<<10)
	go func() { _, _ = pw.Write(grpcFrame("hello")); pw.Close() }()
	if _, err := io.ReadAll(b.attempt()); err != nil {
		t.Fatal(err)
	}
	if !b.replayable() || !b.singleGRPCMessage() {
		t.Fatal("a one-message body that ended is not a unary call")
	}
	again, err := io.ReadAll(b.attempt())
	if err != nil || string(again) != string(grpcFrame("hello")) {
		t.Fatalf("replay: %q, %v", again, err)
	}
}

func TestParseGRPCTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"300m": 300 * time.Millisecond, "1S": time.Second, "2H": 2 * time.Hour, "99999999n": 99999999,
		"": 0, "m": 0, "10x": 0, "-1S": 0, "123456789S": 0,
	} {
		got, ok := parseGRPCTimeout(in)
		if got != want || ok != (want != 0) {
			t.Errorf("parseGRPCTimeout(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
}

// TestLazyTimeout: no timer until something waits, the timeout counts
// from then, Done fires at it (not at the parent's cancellation), the
// parent's values show through, and a released one is done.
func TestLazyTimeout(t *testing.T) {
	type key struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	cancel()
	lt := &lazyTimeout{values: parent, timeout: 30 * time.Millisecond}
	if v := lt.Value(key{}); v != "v" {
		t.Fatalf("Value = %v; want the parent's \"v\"", v)
	}
	if lt.cancel != nil {
		t.Fatal("a timer was armed before anyone waited")
	}
	time.Sleep(50 * time.Millisecond) // longer than the timeout: it has not begun
	start := time.Now()
	if lt.Err() != nil {
		t.Fatalf("Err() = %v at the first wait: the timeout counted from creation, or the parent's cancellation leaked in", lt.Err())
	}
	if d, ok := lt.Deadline(); !ok || d.Before(start) || d.After(time.Now().Add(30*time.Millisecond)) {
		t.Fatalf("Deadline() = %v, %v; want about 30 ms after the first wait", d, ok)
	}
	select {
	case <-lt.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("Done did not fire at the deadline")
	}
	if !errors.Is(lt.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() = %v, want DeadlineExceeded", lt.Err())
	}
	lt.release()

	unused := &lazyTimeout{values: context.Background(), timeout: time.Hour}
	unused.release()
	if unused.cancel != nil {
		t.Fatal("release armed a timer")
	}
	select {
	case <-unused.Done():
	default:
		t.Fatal("a released lazyTimeout is not done")
	}
}
