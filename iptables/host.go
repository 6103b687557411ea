package iptables

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

// ErrNotRoot is wrapped by CheckRoot's error: changing iptables rules needs
// root (or at least CAP_NET_ADMIN).
var ErrNotRoot = errors.New("must run as root (uid 0) with CAP_NET_ADMIN")

// CheckRoot returns an error wrapping ErrNotRoot unless the process runs
// with effective uid 0. Callers of Apply and Clean check it first, to fail
// with a clear message rather than with iptables' own.
func CheckRoot() error { return checkRoot(os.Geteuid()) }

func checkRoot(euid int) error {
	if euid == 0 {
		return nil
	}
	return fmt.Errorf("iptables: running as uid %d: %w", euid, ErrNotRoot)
}

// HostHasIPv6 reports whether the current network namespace has IPv6: at
// least one IPv6 address, as listed by if_inet6. IPv6 disabled by sysctl or
// absent from the kernel gives false.
//
// It reads the calling thread's view (/proc/thread-self), so a goroutine
// locked to a thread that entered another namespace gets that namespace's
// answer; /proc/net would answer for the process's main thread.
func HostHasIPv6() bool {
	for _, path := range []string{"/proc/thread-self/net/if_inet6", "/proc/net/if_inet6"} {
		b, err := os.ReadFile(path)
		if err == nil {
			return len(bytes.TrimSpace(b)) > 0
		}
	}
	return false
}
