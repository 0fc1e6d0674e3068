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
type fdReader struct {
	c   *net.UnixConn
	oob []byte
	fds []*os.File
}

func newFDReader(c *net.UnixConn) *fdReader {
	// Each reply carries at most one descriptor, and the kernel never
	// merges two descriptor-carrying writes into one read; room for a few
	// anyway, so a misbehaving peer's extra descriptors are received and
	// closed rather than truncated.
	return &fdReader{c: c, oob: make([]byte, syscall.CmsgSpace(8*4))}
}

func (r *fdReader) Read(p []byte) (int, error) {
	n, oobn, _, _, err := r.c.ReadMsgUnix(p, r.oob)
	if oobn > 0 {
		r.collect(r.oob[:oobn])
	}
	if n < 0 {
		n = 0
	}
	if n == 0 && err == nil && len(p) > 0 {
		err = io.EOF // recvmsg's 0 is the end of the stream
	}
	return n, err
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
