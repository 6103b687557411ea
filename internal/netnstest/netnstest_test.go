//go:build linux

package netnstest

import (
	"net"
	"strings"
	"testing"
	"time"
)

// TestTopology checks that two pods reach each other over the bridge, that
// a socket opened through Do lives in the pod, and that Start runs a
// program inside the pod as another uid.
func TestTopology(t *testing.T) {
	Require(t, "ip", "setpriv")
	tp := NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)

	var ln net.Listener
	if err := b.Do(func() (err error) {
		ln, err = net.Listen("tcp", ":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello from b\n"))
			c.Close()
		}
	}()

	for _, target := range []string{b.Addr.String(), "[" + b.Addr6.String() + "]"} {
		var got string
		if err := a.Do(func() error {
			c, err := net.DialTimeout("tcp", target+":8080", 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			got = string(buf[:n])
			return nil
		}); err != nil {
			t.Fatalf("dial %s from pod a: %v", target, err)
		}
		if got != "hello from b\n" {
			t.Fatalf("from %s got %q", target, got)
		}
	}

	// A process started as another uid runs inside the pod.
	out := a.Run(t, "ip", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(out, a.Addr.String()) {
		t.Fatalf("pod a's eth0 does not carry %s: %s", a.Addr, out)
	}
	p := a.Start(t, 1337, nil, "id", "-u")
	if code, err := p.Wait(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("id -u as 1337: code %d, %v", code, err)
	}
	if got := strings.TrimSpace(p.Output()); got != "1337" {
		t.Fatalf("id -u printed %q, want 1337", got)
	}
}
