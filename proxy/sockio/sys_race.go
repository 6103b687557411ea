//go:build linux && race

package sockio

import "syscall"

const supported = true

// With the race detector, reads and writes go through package syscall,
// whose calls tell the detector that bytes written to a connection
// happen before the same bytes read from it. Without that, a test that
// passes a value and then a message over a connection is reported as a
// race.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return fixN(n), errnoOf(err)
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return fixN(n), errnoOf(err)
}

func fixN(n int) int { return max(n, 0) }

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return syscall.EIO
}
