//go:build linux

package origdst_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/netnstest"
	"github.com/meshd/meshd/proxy/origdst"
)

// listen opens a TCP listener inside pod and returns it with a channel of
// its accepted connections.
func listen(t *testing.T, pod *netnstest.Pod, addr string) (net.Listener, <-chan *net.TCPConn) {
	t.Helper()
	var ln net.Listener
	if err := pod.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, pod.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan *net.TCPConn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			ch <- c.(*net.TCPConn)
		}
	}()
	return ln, ch
}

func dial(t *testing.T, pod *netnstest.Pod, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := pod.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s from %s: %v", addr, pod.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func accepted(t *testing.T, ch <-chan *net.TCPConn, what string) *net.TCPConn {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no connection arrived", what)
		return nil
	}
}

func notAccepted(t *testing.T, ch <-chan *net.TCPConn, what string) {
	t.Helper()
	select {
	case c := <-ch:
		t.Fatalf("%s: unexpected connection from %v", what, c.RemoteAddr())
	case <-time.After(200 * time.Millisecond):
	}
}

// TestLookupAfterApply installs the rules with the real binary in a pod,
// then checks that redirected connections arrive at port 15001 with the
// address the client dialled, and that the proxy uid, loopback and explicit
// connections are not redirected.
func TestLookupAfterApply(t *testing.T) {
	netnstest.Require(t, "ip", "setpriv", "bash", "iptables", "iptables-save", "iptables-restore", "ip6tables-restore")
	bin := netnstest.BuildMeshd(t)
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)

	a.Run(t, bin, "iptables", "apply", "--ipv6=true")
	t.Cleanup(func() { _, _ = a.Output(bin, "iptables", "clean", "--ipv6=true") })

	_, out4 := listen(t, a, "127.0.0.1:15001")
	_, out6 := listen(t, a, "[::1]:15001")
	_, local := listen(t, a, "127.0.0.1:9000")
	_, app := listen(t, b, ":8080")

	cases := []struct {
		name   string
		dial   string
		accept <-chan *net.TCPConn
		want   netip.AddrPort
	}{
		{"ipv4", netip.AddrPortFrom(b.Addr, 8080).String(), out4, netip.AddrPortFrom(b.Addr, 8080)},
		{"ipv6", netip.AddrPortFrom(b.Addr6, 8080).String(), out6, netip.AddrPortFrom(b.Addr6, 8080)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, a, tc.dial)
			got := accepted(t, tc.accept, "redirected "+tc.name)
			dst, redirected, err := origdst.Lookup(got)
			if err != nil {
				t.Fatal(err)
			}
			if !redirected || dst != tc.want {
				t.Fatalf("Lookup = %v, redirected=%v; want %v, true", dst, redirected, tc.want)
			}
			// The bytes flow on the redirected connection.
			fmt.Fprint(c, "ping")
			buf := make([]byte, 4)
			got.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(got, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("read %q, %v", buf, err)
			}
			notAccepted(t, app, "the app in pod b, bypassing the redirect")
		})
	}

	t.Run("explicit", func(t *testing.T) {
		dial(t, a, "127.0.0.1:15001")
		got := accepted(t, out4, "explicit")
		dst, redirected, err := origdst.Lookup(got)
		if err != nil || redirected || dst != netip.MustParseAddrPort("127.0.0.1:15001") {
			t.Fatalf("Lookup = %v, %v, %v; want 127.0.0.1:15001 not redirected", dst, redirected, err)
		}
	})

	t.Run("loopback-not-redirected", func(t *testing.T) {
		dial(t, a, "127.0.0.1:9000")
		accepted(t, local, "loopback destination")
		notAccepted(t, out4, "outbound listener")
	})

	t.Run("proxy-uid-not-redirected", func(t *testing.T) {
		p := a.Start(t, 1337, nil, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/8080 && echo hi >&3", b.Addr))
		if code, err := p.Wait(10 * time.Second); err != nil || code != 0 {
			t.Fatalf("uid 1337 client: code %d, %v: %s", code, err, p.Output())
		}
		c := accepted(t, app, "the app in pod b, dialled by uid 1337")
		buf := make([]byte, 3)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi\n" {
			t.Fatalf("read %q, %v", buf, err)
		}
		notAccepted(t, out4, "outbound listener")
	})

	t.Run("after-clean", func(t *testing.T) {
		a.Run(t, bin, "iptables", "clean", "--ipv6=true")
		dial(t, a, netip.AddrPortFrom(b.Addr, 8080).String())
		accepted(t, app, "the app in pod b after clean")
		notAccepted(t, out4, "outbound listener after clean")
	})
}
