//go:build linux && !race

package sockio

import (
	"syscall"
	"unsafe"
)

const supported = true

// sysRead and sysWrite are read(2) and write(2) without the scheduler's
// system-call bookkeeping: only for non-blocking descriptors, which a
// net.Conn's are.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), errno
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), errno
}
