// Package pages hands the memory of idle packet buffers back to the OS.
//
// wireguard-go keeps a batch of 64 KiB buffers in every goroutine that
// reads packets (one per UDP socket, one for relayed packets, one for the
// TUN device), for the device's lifetime. After a burst of traffic their
// pages stay resident although the buffers will be written again before
// they are read. Release drops those pages (madvise MADV_DONTNEED): the
// buffers stay valid, read as zeros, and the kernel maps fresh pages when
// they are written next.
package pages

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

var pageSize = uintptr(os.Getpagesize())

// interior is the page-aligned range [lo, hi) inside b up to its
// capacity, with b's start; hi <= lo if no whole page is in it.
func interior(b []byte) (start, lo, hi uintptr) {
	start = uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo = (start + pageSize - 1) &^ (pageSize - 1)
	hi = (start + uintptr(cap(b))) &^ (pageSize - 1)
	return start, lo, hi
}

// Release drops the whole pages inside each buffer, up to its capacity,
// and returns how many bytes that covered. Whatever the buffers held
// reads as zeros afterwards. The caller must own the buffers: nothing may
// read or write them while Release runs. A buffer smaller than a page,
// or one that an error leaves untouched, is skipped.
func Release(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		start, lo, hi := interior(b)
		if hi <= lo {
			continue
		}
		if unix.Madvise(b[lo-start:hi-start:hi-start], unix.MADV_DONTNEED) == nil {
			n += int(hi - lo)
		}
	}
	return n
}

// Resident counts the whole pages inside the buffers, up to their
// capacity, that are in memory (mincore).
func Resident(bufs [][]byte) (int, error) {
	n := 0
	for _, b := range bufs {
		_, lo, hi := interior(b)
		if hi <= lo {
			continue
		}
		vec := make([]byte, (hi-lo)/pageSize)
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, lo, hi-lo, uintptr(unsafe.Pointer(&vec[0])))
		runtime.KeepAlive(b)
		if errno != 0 {
			return 0, errno
		}
		for _, v := range vec {
			n += int(v & 1)
		}
	}
	return n, nil
}
