package proto

// Call lanes. On a unix socket the client opens a second, raw connection to
// the same listener and sends its calls there as bare frames: no yamux
// framing, no window updates, one read and one write per call on each side,
// and replies to Open and Create can carry the backing file's descriptor
// (SCM_RIGHTS). The lane starts with laneMagic, the version and the session
// cookie from the handshake, so the server attaches it to that session.

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

const laneMagic = "HERDFD"

// laneHelloSize: magic, u16 version, cookie.
const laneHelloSize = len(laneMagic) + 2 + cookieSize

func encodeLaneHello(cookie []byte) []byte {
	b := make([]byte, 0, laneHelloSize)
	b = append(b, laneMagic...)
	b = binary.LittleEndian.AppendUint16(b, Version)
	return append(b, cookie...)
}

// attachLane sends the lane hello on c and waits for the server's verdict
// (a u32 errno, 0 = attached).
func attachLane(c net.Conn, cookie []byte, deadline time.Time) error {
	c.SetDeadline(deadline)
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(encodeLaneHello(cookie)); err != nil {
		return err
	}
	var v [4]byte
	if _, err := io.ReadFull(c, v[:]); err != nil {
		return err
	}
	if e := binary.LittleEndian.Uint32(v[:]); e != 0 {
		return fmt.Errorf("server refused the call lane: %w", syscall.Errno(e))
	}
	return nil
}

// fdReader reads a unix stream socket with recvmsg and queues, in arrival
// order, the descriptors that come with the bytes.
//
// It calls recvmsg itself through the connection's RawConn (which keeps
// the network poller's waiting and the read deadline) rather than through
// ReadMsgUnix, which allocates the sender's address on every read.
type fdReader struct {
	c   *net.UnixConn
	bc  *blockConn      // a blocking lane: read with its recvmsg
	rc  syscall.RawConn // nil: fall back to ReadMsgUnix
	oob []byte
	fds []*os.File

	// The arguments and results of recv, a method value made once so a
	// read allocates nothing.
	p       []byte
	n, oobn int
	errno   syscall.Errno
	recvFn  func(fd uintptr) bool
}

// fdOOBSize: room for the control message of a few descriptors.
var fdOOBSize = syscall.CmsgSpace(8 * 4)

func newFDReader(c *net.UnixConn) *fdReader {
	// Each reply carries at most one descriptor, and the kernel never
	// merges two descriptor-carrying writes into one read; room for a few
	// anyway, so a misbehaving peer's extra descriptors are received and
	// closed rather than truncated.
	r := &fdReader{c: c, oob: make([]byte, fdOOBSize)}
	if rc, err := c.SyscallConn(); err == nil {
		r.rc = rc
		r.recvFn = r.recv
	}
	return r
}

func (r *fdReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n, oobn int
	var err error
	switch {
	case r.bc != nil:
		n, oobn, err = r.bc.recvmsg(p, r.oob)
		if err == io.EOF {
			err = nil // n is 0: io.EOF below
		}
	case r.rc == nil:
		n, oobn, _, _, err = r.c.ReadMsgUnix(p, r.oob)
	default:
		r.p = p
		r.n, r.oobn, r.errno = 0, 0, 0
		err = r.rc.Read(r.recvFn)
		r.p = nil
		// recv's results count only if it ran and had its way: the
		// poller's own errors (a deadline that passed before or
		// while waiting) come without a receive.
		if err == nil {
			n, oobn = r.n, r.oobn
			if r.errno != 0 {
				err = os.NewSyscallError("recvmsg", r.errno)
			}
		}
	}
	if oobn > 0 {
		r.collect(r.oob[:oobn])
	}
	if n < 0 {
		n = 0
	}
	if n == 0 && err == nil {
		err = io.EOF // recvmsg's 0 is the end of the stream
	}
	return n, err
}

// recv is one recvmsg; false asks the poller to wait for readability.
func (r *fdReader) recv(fd uintptr) bool {
	var iov syscall.Iovec
	iov.Base = &r.p[0]
	iov.SetLen(len(r.p))
	var msg syscall.Msghdr
	msg.Iov = &iov
	msg.Iovlen = 1
	msg.Control = &r.oob[0]
	msg.SetControllen(len(r.oob))
	for {
		n, _, e := syscall.Syscall(syscall.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&msg)), syscall.MSG_CMSG_CLOEXEC)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case 0:
			r.n, r.oobn, r.errno = int(n), int(msg.Controllen), 0
		default:
			r.n, r.oobn, r.errno = 0, 0, e
		}
		return true
	}
}

func (r *fdReader) collect(oob []byte) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for i := range msgs {
		fds, err := syscall.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range fds {
			// Go receives with MSG_CMSG_CLOEXEC on Linux.
			r.fds = append(r.fds, os.NewFile(uintptr(fd), "proto-fd"))
		}
	}
}

func (r *fdReader) pop() *os.File {
	if len(r.fds) == 0 {
		return nil
	}
	f := r.fds[0]
	r.fds[0] = nil
	r.fds = r.fds[1:]
	return f
}

// closeAll closes descriptors nobody claimed.
func (r *fdReader) closeAll() {
	for _, f := range r.fds {
		f.Close()
	}
	r.fds = nil
}

func unixRights(f *os.File) []byte {
	return syscall.UnixRights(int(f.Fd()))
}
