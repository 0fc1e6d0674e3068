package net

import (
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Host sockets are made ahead, in batches, and closed late, in batches,
// because making one (os.NewFile asks fcntl(2) for its flags) and closing
// one are system calls the runtime enters as such, and such a call after
// an idle moment wakes the runtime's monitor, which then polls every
// 20 us for a millisecond or more: at one short connection every few
// hundred microseconds it never rested (perf: 13% of herd-net's CPU with
// every other call of a connection already raw).
const (
	poolBatch  = 16
	closeDelay = 5 * time.Millisecond
)

type pooledSock struct {
	f  *os.File
	fd int
}

var sockPool struct {
	mu   sync.Mutex
	free map[int][]pooledSock // by address family
}

// pooledSocket returns a new nonblocking TCP socket of family (TCP_NODELAY
// set, registered with the runtime's poller, not connected).
func pooledSocket(family int) (pooledSock, error) {
	sockPool.mu.Lock()
	defer sockPool.mu.Unlock()
	free := sockPool.free[family]
	if len(free) == 0 {
		for range poolBatch {
			fd, err := rawSocket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				if len(free) > 0 {
					break
				}
				return pooledSock{}, os.NewSyscallError("socket", err)
			}
			// As net.Dial: what the member sends is passed on as it comes.
			rawSockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, true, 1)
			free = append(free, pooledSock{os.NewFile(uintptr(fd), "tcp"), fd})
		}
	}
	s := free[len(free)-1]
	free[len(free)-1] = pooledSock{}
	if sockPool.free == nil {
		sockPool.free = map[int][]pooledSock{}
	}
	sockPool.free[family] = free[:len(free)-1]
	return s, nil
}

// pooledSockets is how many sockets wait in the pool (for leak tests).
func pooledSockets() int {
	sockPool.mu.Lock()
	defer sockPool.mu.Unlock()
	n := 0
	for _, l := range sockPool.free {
		n += len(l)
	}
	return n
}

var closer struct {
	mu    sync.Mutex
	files []*os.File
}

// closeLater closes f within closeDelay, with the others of that moment.
// The caller shuts the socket down first (which ends its waits at once).
func closeLater(f *os.File) {
	closer.mu.Lock()
	first := len(closer.files) == 0
	closer.files = append(closer.files, f)
	closer.mu.Unlock()
	if first {
		time.AfterFunc(closeDelay, flushCloses)
	}
}

func flushCloses() {
	closer.mu.Lock()
	fs := closer.files
	closer.files = nil
	closer.mu.Unlock()
	for _, f := range fs {
		f.Close()
	}
}
