package net

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// pollYield lets a goroutine that busy-waits give way to every other
// goroutine and to the runtime's network poller. runtime.Gosched is not
// enough: a goroutine that yields with it stays runnable, and the
// scheduler asks the poller for ready descriptors only when nothing is
// runnable, so with one P (herd-net's default) a busy-waiting goroutine
// would hide every host socket's readiness until sysmon's poll, 10 ms
// later. yield instead parks on an eventfd it has just made readable:
// the scheduler runs what is runnable, finds nothing else, polls (without
// blocking, the eventfd being ready), and so wakes both this goroutine and
// any whose descriptors became ready.
type pollYield struct {
	f   *os.File
	raw syscall.RawConn
}

func newPollYield() (*pollYield, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "eventfd")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &pollYield{f: f, raw: raw}, nil
}

// yield returns after the runtime has polled the network at least once
// (unless the eventfd still had a readiness nobody took, which only
// shortens one wait) and has run the goroutines that were runnable.
func (y *pollYield) yield() {
	one := [8]byte{1} // an eventfd counter increment, little-endian
	var drain [8]byte
	armed := false
	y.raw.Read(func(fd uintptr) bool {
		if !armed {
			armed = true
			rawWrite(int(fd), one[:])
			return false // park: the poller will find the eventfd ready
		}
		rawRead(int(fd), drain[:])
		return true
	})
}

func (y *pollYield) Close() error { return y.f.Close() }
