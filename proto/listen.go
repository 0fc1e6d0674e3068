package proto

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// Listen returns the listener a server program should use: fd 3 when
// LISTEN_FDS=1 (systemd socket activation; LISTEN_PID, if set, must be this
// process), else a unix socket at path with mode 0600. The LISTEN_*
// variables are removed so the server's children do not inherit them.
func Listen(path string) (net.Listener, error) {
	if fds := os.Getenv("LISTEN_FDS"); fds != "" {
		pid := os.Getenv("LISTEN_PID")
		if pid == "" || pid == strconv.Itoa(os.Getpid()) {
			os.Unsetenv("LISTEN_FDS")
			os.Unsetenv("LISTEN_PID")
			os.Unsetenv("LISTEN_FDNAMES")
			if fds != "1" {
				return nil, fmt.Errorf("proto: LISTEN_FDS=%s: expected exactly one socket", fds)
			}
			f := os.NewFile(3, "listen-fd")
			defer f.Close()
			l, err := net.FileListener(f)
			if err != nil {
				return nil, fmt.Errorf("proto: fd 3 (LISTEN_FDS=1) is not a listening socket: %w", err)
			}
			return l, nil
		}
	}
	if path == "" {
		return nil, errors.New("proto: no socket: give a socket path or start with LISTEN_FDS=1")
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("proto: %w", err)
	}
	if err := os.Chmod(path, 0600); err != nil {
		l.Close()
		return nil, fmt.Errorf("proto: %w", err)
	}
	return l, nil
}

// removeStale removes a socket file nobody listens on any more (a server
// that died); a live one is an error, anything that is not a socket too.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("proto: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("proto: %s exists and is not a socket", path)
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("proto: %s: a server is already listening there", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// ENOENT after a concurrent removal is fine too.
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("proto: %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("proto: removing stale socket: %w", err)
	}
	return nil
}

// Pipe connects a client to fs in-process over a unix socketpair, lanes and
// descriptor passing included. The returned function closes both ends.
func Pipe(fs FileSystem, opts ServerOptions, copts ClientOptions) (*Client, func(), error) {
	c, srv, err := pipe(fs, opts, copts)
	if err != nil {
		return nil, nil, err
	}
	return c, func() { c.Close(); srv.Close() }, nil
}

func pipe(fs FileSystem, opts ServerOptions, copts ClientOptions) (*Client, *Server, error) {
	srv := NewServer(fs, opts)
	pair := func() (net.Conn, error) {
		a, b, err := socketpair()
		if err != nil {
			return nil, err
		}
		go srv.ServeConn(b)
		return a, nil
	}
	conn, err := pair()
	if err != nil {
		return nil, nil, err
	}
	c, err := newClient(conn, copts, pair)
	if err != nil {
		srv.Close()
		return nil, nil, err
	}
	return c, srv, nil
}

func socketpair() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("proto: socketpair: %w", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				syscall.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("proto: socketpair: %w", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1], nil
}
