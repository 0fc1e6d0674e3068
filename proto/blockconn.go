package proto

// Call lanes in blocking mode. A goroutine that waits for a reply on a Go
// net.Conn parks in the runtime's network poller: its thread looks for
// other work, sleeps in epoll_pwait, is woken by epoll, finds the goroutine
// runnable and switches to it; and every byte the peer consumes wakes the
// poller once more (EPOLLOUT: Go registers every socket for writability).
// Measured on the 2-core machines (a bare echo between two processes),
// that costs twice the CPU of a thread that simply blocks in recvmsg until
// the bytes come: 6 µs of CPU per round trip per side against 3. A lane
// has exactly one reader at a time on each side (the reader role), so it
// can afford to block a thread in the kernel: blockConn is the lane's
// socket taken out of the poller and switched to blocking mode.
//
// Deadlines become SO_RCVTIMEO / SO_SNDTIMEO, set only when they must move
// earlier (a system call), so a receive may return up to deadlineSlack
// after its deadline, never before it goes on waiting. Close shuts the
// socket down first, which wakes a thread blocked in it, and closes the
// descriptor once no system call uses it any more.

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// deadlineSlack is how late a blocked receive or send may notice its
// deadline, so that the socket's timeout need not be set per call.
const deadlineSlack = 5 * time.Millisecond

type blockConn struct {
	fd           int
	laddr, raddr net.Addr

	mu     sync.Mutex
	refs   int  // system calls using fd
	closed bool // fd is shut down; closed when refs drops to 0
	rdl    time.Time
	wdl    time.Time

	// The socket timeouts as set (0: none). rto belongs to the one
	// reader, sto to the writer holding the frameWriter's lock.
	rto, sto time.Duration
}

// otherProcess reports whether the peer of c is another process. Lanes
// within one process (Pipe, tests, in-process servers) stay in the network
// poller: there both ends would each block a thread holding one of the
// runtime's few Ps, and the goroutines that must run between them (the
// handler, the callers handed their replies) would wait for the runtime's
// monitor to take a P back.
func otherProcess(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return cred.Pid != int32(os.Getpid())
}

// toBlocking takes a unix connection out of the network poller: its
// descriptor is duplicated, the original closed (which removes it from the
// poller), and the copy made blocking.
func toBlocking(c *net.UnixConn) (*blockConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(sfd uintptr) {
		fd, derr = dupCloexec(int(sfd))
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("dup", derr)
	}
	bc := &blockConn{fd: fd, laddr: c.LocalAddr(), raddr: c.RemoteAddr()}
	c.Close()
	if err := syscall.SetNonblock(fd, false); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	return bc, nil
}

func dupCloexec(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func (bc *blockConn) acquire() (rdl, wdl time.Time, ok bool) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if bc.closed {
		return rdl, wdl, false
	}
	bc.refs++
	return bc.rdl, bc.wdl, true
}

func (bc *blockConn) release() {
	bc.mu.Lock()
	bc.refs--
	last := bc.closed && bc.refs == 0
	bc.mu.Unlock()
	if last {
		syscall.Close(bc.fd)
	}
}

// Close shuts the socket down (waking whoever blocks in it) and closes it
// once nobody uses it.
func (bc *blockConn) Close() error {
	bc.mu.Lock()
	if bc.closed {
		bc.mu.Unlock()
		return nil
	}
	bc.closed = true
	syscall.Shutdown(bc.fd, syscall.SHUT_RDWR)
	last := bc.refs == 0
	bc.mu.Unlock()
	if last {
		syscall.Close(bc.fd)
	}
	return nil
}

func (bc *blockConn) LocalAddr() net.Addr  { return bc.laddr }
func (bc *blockConn) RemoteAddr() net.Addr { return bc.raddr }

func (bc *blockConn) SetDeadline(t time.Time) error {
	bc.SetReadDeadline(t)
	return bc.SetWriteDeadline(t)
}

func (bc *blockConn) SetReadDeadline(t time.Time) error {
	bc.mu.Lock()
	bc.rdl = t
	bc.mu.Unlock()
	return nil
}

func (bc *blockConn) SetWriteDeadline(t time.Time) error {
	bc.mu.Lock()
	bc.wdl = t
	bc.mu.Unlock()
	return nil
}

// timeout makes the socket's timeout opt (SO_RCVTIMEO or SO_SNDTIMEO, now
// *cur) end no later than deadlineSlack after deadline, and reports false
// if the deadline has passed.
func (bc *blockConn) timeout(opt int, cur *time.Duration, deadline time.Time) bool {
	want := time.Duration(0)
	if !deadline.IsZero() {
		want = time.Until(deadline)
		if want <= 0 {
			return false
		}
		if *cur != 0 && *cur <= want+deadlineSlack {
			return true
		}
	} else if *cur == 0 {
		return true
	}
	tv := syscall.NsecToTimeval(int64(want))
	if want > 0 && tv.Sec == 0 && tv.Usec == 0 {
		tv.Usec = 1 // 0 would mean no timeout
	}
	if err := syscall.SetsockoptTimeval(bc.fd, syscall.SOL_SOCKET, opt, &tv); err == nil {
		*cur = want
	}
	return true
}

var errTimeout = os.ErrDeadlineExceeded

// recvmsg receives into p, and descriptors into oob when it is not nil.
func (bc *blockConn) recvmsg(p, oob []byte) (n, oobn int, err error) {
	if len(p) == 0 {
		return 0, 0, nil
	}
	rdl, _, ok := bc.acquire()
	if !ok {
		return 0, 0, net.ErrClosed
	}
	defer bc.release()
	var iov syscall.Iovec
	iov.Base = &p[0]
	iov.SetLen(len(p))
	var msg syscall.Msghdr
	msg.Iov = &iov
	msg.Iovlen = 1
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	for {
		if !bc.timeout(syscall.SO_RCVTIMEO, &bc.rto, rdl) {
			return 0, 0, errTimeout
		}
		r, _, e := syscall.Syscall(syscall.SYS_RECVMSG, uintptr(bc.fd), uintptr(unsafe.Pointer(&msg)), syscall.MSG_CMSG_CLOEXEC)
		switch e {
		case 0:
			if r == 0 {
				return 0, 0, io.EOF
			}
			return int(r), int(msg.Controllen), nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			// The socket's timeout: our deadline, or an earlier
			// one's, or moved since.
			rdl = bc.readDeadline()
			continue
		}
		if bc.isClosed() {
			return 0, 0, net.ErrClosed
		}
		return 0, 0, os.NewSyscallError("recvmsg", e)
	}
}

func (bc *blockConn) readDeadline() time.Time {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return bc.rdl
}

func (bc *blockConn) writeDeadline() time.Time {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return bc.wdl
}

func (bc *blockConn) isClosed() bool {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return bc.closed
}

func (bc *blockConn) Read(p []byte) (int, error) {
	n, _, err := bc.recvmsg(p, nil)
	return n, err
}

func (bc *blockConn) Write(p []byte) (int, error) {
	return bc.sendmsg([][]byte{p}, nil)
}

// sendmsg sends bufs in order with one sendmsg per attempt, and oob
// (descriptors) with the first byte. It returns what was sent; short
// only with an error.
func (bc *blockConn) sendmsg(bufs [][]byte, oob []byte) (int, error) {
	_, wdl, ok := bc.acquire()
	if !ok {
		return 0, net.ErrClosed
	}
	defer bc.release()
	var iovs [8]syscall.Iovec
	total := 0
	for len(bufs) > 0 {
		iov := iovs[:0]
		for _, b := range bufs {
			if len(b) == 0 {
				continue
			}
			if len(iov) == len(iovs) {
				break
			}
			v := syscall.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
		if len(iov) == 0 {
			break
		}
		var msg syscall.Msghdr
		msg.Iov = &iov[0]
		// Iovlen is the size of a pointer on every Linux port.
		*(*uintptr)(unsafe.Pointer(&msg.Iovlen)) = uintptr(len(iov))
		if len(oob) > 0 {
			msg.Control = &oob[0]
			msg.SetControllen(len(oob))
		}
		if !bc.timeout(syscall.SO_SNDTIMEO, &bc.sto, wdl) {
			return total, errTimeout
		}
		r, _, e := syscall.Syscall(syscall.SYS_SENDMSG, uintptr(bc.fd), uintptr(unsafe.Pointer(&msg)), syscall.MSG_NOSIGNAL)
		switch e {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			wdl = bc.writeDeadline()
			continue
		default:
			if bc.isClosed() {
				return total, net.ErrClosed
			}
			return total, os.NewSyscallError("sendmsg", e)
		}
		n := int(r)
		total += n
		if n > 0 {
			oob = nil // went with the first byte
		}
		for n > 0 && len(bufs) > 0 {
			k := min(n, len(bufs[0]))
			bufs[0] = bufs[0][k:]
			n -= k
			if len(bufs[0]) == 0 {
				bufs = bufs[1:]
			}
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
	}
	return total, nil
}

var _ net.Conn = (*blockConn)(nil)
