package net

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// System calls on nonblocking descriptors that move little data are made
// raw (without the runtime's entersyscall/exitsyscall), as gVisor's own
// link endpoints do. Such a call never waits, yet a TUN write runs the
// namespace's receive path and a loopback connect the whole handshake,
// tens of microseconds: long enough for the runtime's monitor to take the
// P away and hand it to another thread, and to keep polling every 20 us
// (a short connection made dozens of such calls; perf put the monitor at
// 17% of herd-net's CPU). Big transfers through the stack keep the
// ordinary calls: there the P handed over is what lets the copy run beside
// the other work. A --forward's splices are raw too (socksplice.go): they
// are the only work of their transfer, and a handed-over P only wakes a
// thread that finds nothing to do.
const rawMax = 4096

func iovecs(bufs [][]byte, iov []unix.Iovec) []unix.Iovec {
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	return iov
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// rawWritev is unix.Writev without entersyscall.
func rawWritev(fd int, bufs [][]byte) (int, error) { return rawIov(unix.SYS_WRITEV, fd, bufs) }

// rawReadv is unix.Readv without entersyscall.
func rawReadv(fd int, bufs [][]byte) (int, error) { return rawIov(unix.SYS_READV, fd, bufs) }

// rawWrite is unix.Write without entersyscall.
func rawWrite(fd int, b []byte) (int, error) { return rawBuf(unix.SYS_WRITE, fd, b) }

// rawRead is unix.Read without entersyscall.
func rawRead(fd int, b []byte) (int, error) { return rawBuf(unix.SYS_READ, fd, b) }

// rawBuf makes the read or write system call nr on one buffer.
func rawBuf(nr uintptr, fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := unix.RawSyscall(nr, uintptr(fd), uintptr(p), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawIov makes the readv or writev system call nr on bufs.
func rawIov(nr uintptr, fd int, bufs [][]byte) (int, error) {
	var a [8]unix.Iovec
	iov := iovecs(bufs, a[:0])
	var p unsafe.Pointer
	if len(iov) > 0 {
		p = unsafe.Pointer(&iov[0])
	}
	n, _, e := unix.RawSyscall(nr, uintptr(fd), uintptr(p), uintptr(len(iov)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawConnect is unix.Connect without entersyscall, for a nonblocking
// socket.
func rawConnect(fd int, sa unix.Sockaddr) error {
	var p unsafe.Pointer
	var l uintptr
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		r := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr}
		setPort(&r.Port, a.Port)
		p, l = unsafe.Pointer(&r), unsafe.Sizeof(r)
	case *unix.SockaddrInet6:
		r := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.Addr, Scope_id: a.ZoneId}
		setPort(&r.Port, a.Port)
		p, l = unsafe.Pointer(&r), unsafe.Sizeof(r)
	default:
		return unix.Connect(fd, sa)
	}
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(p), l)
	return errnoErr(e)
}

// setPort stores port in network byte order.
func setPort(p *uint16, port int) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

// rawInq is the SIOCINQ ioctl (bytes queued to read) without entersyscall.
func rawInq(fd int) (int, error) {
	var v int32
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCINQ, uintptr(unsafe.Pointer(&v)))
	if e != 0 {
		return 0, e
	}
	return int(v), nil
}

// rawPeek peeks at one byte (MSG_PEEK|MSG_DONTWAIT) without entersyscall.
func rawPeek(fd int) (int, error) {
	var b [1]byte
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawSocket is unix.Socket without entersyscall.
func rawSocket(family, typ, proto int) (int, error) {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), uintptr(typ), uintptr(proto))
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// rawSockoptInt sets (set true) or gets an int socket option without
// entersyscall.
func rawSockoptInt(fd, level, opt int, set bool, v int) (int, error) {
	x := int32(v)
	l := uint32(4)
	nr := uintptr(unix.SYS_GETSOCKOPT)
	last := uintptr(unsafe.Pointer(&l))
	if set {
		nr, last = unix.SYS_SETSOCKOPT, 4
	}
	_, _, e := unix.RawSyscall6(nr, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&x)), last, 0)
	if e != 0 {
		return 0, e
	}
	return int(x), nil
}

// rawShutdown is unix.Shutdown without entersyscall.
func rawShutdown(fd, how int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
	return errnoErr(e)
}

// rawWritable: poll(2) for POLLOUT with no wait, without entersyscall.
func rawWritable(fd int) bool {
	p := unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
	var ts unix.Timespec
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&p)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		return e == 0 && n == 1
	}
}
