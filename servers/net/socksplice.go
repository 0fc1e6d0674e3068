package net

import (
	"io"
	stdnet "net"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A splicePipe moves one direction of a --forward from socket to socket
// with splice(2), as Go's TCPConn.ReadFrom (and pasta) do: socket -> pipe,
// pipe -> socket, no byte through user memory. It waits in Go's poller as
// ReadFrom does, but makes the splice calls raw (rawsys.go): both ends are
// nonblocking, so a call never waits, yet moving a megabyte takes long
// enough that, entered as an ordinary system call, the runtime's monitor
// hands the P to another thread almost every time and then polls every
// 20 us. Alternating 3 s iperf3 runs against Go's ReadFrom, with cubic:
// host -> namespace 38.8-44.2 -> 52.9-57.6 Gbit/s, ns -> host 39.1-53.9
// -> 51.9-55.8 (pasta -T in the same rounds: 51.8-53.7 and 48.4-54.9);
// herd-net's CPU for the transfer 0.31 -> 0.22 of a CPU. With BBR, host
// -> ns 12.3-14.1 -> 14.7-17.2, ns -> host level (11.0-13.6 against
// 12.3-12.9). The cost: while a call runs (a full pipe, 1 MiB, takes
// about 150 us at 55 Gbit/s) no other goroutine of herd-net runs on its
// one P.
type splicePipe struct {
	r, w int
	size int // the pipe's capacity
}

// splicePipeSize is asked for; an unprivileged process gets at most
// fs.pipe-max-size (1 MiB by default), less once the user's pipes hold
// more than fs.pipe-user-pages-soft.
const splicePipeSize = 1 << 20

func newSplicePipe() (*splicePipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	p := &splicePipe{r: fds[0], w: fds[1]}
	unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, splicePipeSize) // best effort
	size, err := unix.FcntlInt(uintptr(p.w), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.size = size
	return p, nil
}

func (p *splicePipe) Close() error {
	unix.Close(p.r)
	return unix.Close(p.w)
}

// copy moves src's bytes to dst, counting them in n as they are
// written, until src's end (io.EOF) or an error, which includes either
// connection being closed meanwhile.
func (p *splicePipe) copy(dst, src *stdnet.TCPConn, n *atomic.Uint64) error {
	from, err := src.SyscallConn()
	if err != nil {
		return err
	}
	to, err := dst.SyscallConn()
	if err != nil {
		return err
	}
	for {
		// Read only into an empty pipe, as ReadFrom does: a pipe holds a
		// fixed number of buffers, one per piece of a socket buffer however
		// small, so a part-filled one may refuse data the socket still has.
		var inPipe int
		var serr error
		err := from.Read(func(fd uintptr) bool {
			inPipe, serr = rawSplice(int(fd), p.w, p.size)
			return serr != unix.EAGAIN // false: wait until readable
		})
		if err = firstErr(err, serr); err != nil {
			return err
		}
		if inPipe == 0 {
			return io.EOF
		}
		for inPipe > 0 {
			var moved int
			err := to.Write(func(fd uintptr) bool {
				moved, serr = rawSplice(p.r, int(fd), inPipe)
				return serr != unix.EAGAIN // false: wait until writable
			})
			if err = firstErr(err, serr); err != nil {
				return err
			}
			inPipe -= moved
			n.Add(uint64(moved))
		}
	}
}

// firstErr is the first of two errors that is not nil.
func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// rawSplice is a nonblocking splice(2) from in to out without entersyscall.
func rawSplice(in, out, max int) (int, error) {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(max), unix.SPLICE_F_NONBLOCK)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// copyConn copies src to dst until src's end (io.EOF) or an error: with
// a splicePipe when both are TCP sockets, else (a wrapping server's own
// connections, or no pipe to be had) with io.Copy's chunks.
func copyConn(dst, src stdnet.Conn, n *atomic.Uint64) error {
	d, ok1 := dst.(*stdnet.TCPConn)
	s, ok2 := src.(*stdnet.TCPConn)
	if ok1 && ok2 {
		if p, err := newSplicePipe(); err == nil {
			defer p.Close()
			return p.copy(d, s, n)
		}
	}
	for {
		k, err := io.CopyN(dst, src, copyChunk)
		n.Add(uint64(k))
		if err != nil {
			return err
		}
	}
}

// copyChunk is how much io.CopyN moves before the byte count is brought
// up to date.
const copyChunk = 4 << 20
