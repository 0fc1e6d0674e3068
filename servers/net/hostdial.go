package net

import (
	"context"
	"errors"
	stdnet "net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// hostTCP is a host-side TCP connection made by dialHostTCP: the socket
// as a pollable *os.File (Read, Write, deadlines and SyscallConn come from
// it), which the splice reads and writes at the descriptor.
type hostTCP struct {
	*os.File
	remote netip.AddrPort
	once   sync.Once
}

// Close shuts the socket down at once (the peer sees the end, the splice's
// waits end) and closes the descriptor a moment later (closeLater).
func (h *hostTCP) Close() error {
	h.once.Do(func() {
		if raw, err := h.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) { rawShutdown(int(fd), unix.SHUT_RDWR) })
		}
		closeLater(h.File)
	})
	return nil
}

var _ stdnet.Conn = (*hostTCP)(nil)

func (h *hostTCP) CloseWrite() error {
	raw, err := h.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = rawShutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return err
	}
	return serr
}

func (h *hostTCP) RemoteAddr() stdnet.Addr { return stdnet.TCPAddrFromAddrPort(h.remote) }

func (h *hostTCP) LocalAddr() stdnet.Addr {
	raw, err := h.SyscallConn()
	if err != nil {
		return &stdnet.TCPAddr{}
	}
	var sa unix.Sockaddr
	raw.Control(func(fd uintptr) { sa, _ = unix.Getsockname(int(fd)) })
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &stdnet.TCPAddr{IP: a.Addr[:], Port: a.Port}
	case *unix.SockaddrInet6:
		return &stdnet.TCPAddr{IP: a.Addr[:], Port: a.Port}
	}
	return &stdnet.TCPAddr{}
}

// dialHostTCP connects to target (an IP address and port) for a member's
// connection, which waits for it (the SYN-ACK follows the host's answer).
// It is net.Dialer's job done with fewer steps: a connection to the host's
// loopback (the gateway, the common case) is established by the time
// connect(2) returns EINPROGRESS, so it is checked at once instead of
// parking the goroutine until the runtime's poller reports it (a wake-up
// that cost tens of microseconds per connection when the other CPU was
// busy with the previous connection's close); and no keep-alive options
// are set (the member's own kernel keeps its connection alive, or not).
// Other targets wait in the poller, until ctx ends.
func dialHostTCP(ctx context.Context, target string) (stdnet.Conn, error) {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return nil, err
	}
	a := ap.Addr().Unmap()
	var sa unix.Sockaddr
	family := unix.AF_INET
	if a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	} else {
		family = unix.AF_INET6
		sa6 := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
		if z := a.Zone(); z != "" {
			if ifi, err := stdnet.InterfaceByName(z); err == nil {
				sa6.ZoneId = uint32(ifi.Index)
			}
		}
		sa = sa6
	}
	ps, err := pooledSocket(family)
	if err != nil {
		return nil, err
	}
	f, fd := ps.f, ps.fd
	err = rawConnect(fd, sa)
	switch err {
	case nil, unix.EINPROGRESS, unix.EINTR, unix.EALREADY:
	default:
		f.Close()
		return nil, &stdnet.OpError{Op: "dial", Net: "tcp", Addr: stdnet.TCPAddrFromAddrPort(ap), Err: os.NewSyscallError("connect", err)}
	}
	if err != nil && !rawWritable(fd) {
		if err := waitWritable(ctx, f); err != nil {
			f.Close()
			return nil, &stdnet.OpError{Op: "dial", Net: "tcp", Addr: stdnet.TCPAddrFromAddrPort(ap), Err: err}
		}
	}
	if e, gerr := rawSockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR, false, 0); gerr != nil || e != 0 {
		f.Close()
		if gerr == nil {
			gerr = syscall.Errno(e)
		}
		return nil, &stdnet.OpError{Op: "dial", Net: "tcp", Addr: stdnet.TCPAddrFromAddrPort(ap), Err: os.NewSyscallError("connect", gerr)}
	}
	return &hostTCP{File: f, remote: ap}, nil
}

// waitWritable waits in the runtime's poller until f's connect finishes,
// or ctx ends.
func waitWritable(ctx context.Context, f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		f.SetWriteDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	err = raw.Write(func(fd uintptr) bool { return rawWritable(int(fd)) })
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = context.DeadlineExceeded
	}
	f.SetWriteDeadline(time.Time{})
	return err
}
