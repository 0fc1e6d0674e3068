package net

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// forwardTo starts a --forward to the host's 127.0.0.1:hostPort on a
// listener of our own (it stands for the one subenv run makes inside the
// namespace) and returns the address a program would connect to.
func forwardTo(t *testing.T, srv *Server, hostPort int) string {
	t.Helper()
	l, err := stdnet.ListenTCP("tcp4", &stdnet.TCPAddr{IP: stdnet.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseForward(fmt.Sprint(l.Addr().(*stdnet.TCPAddr).Port, ":", hostPort))
	if err != nil {
		t.Fatal(err)
	}
	srv.StartForward(f, l)
	return l.Addr().String()
}

func newForwardServer(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.NAT = true
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// A forwarded connection carries data both ways, passes a half-close on
// (the echo server sees EOF only because the program shut its side), is
// listed with its byte counts while it lives, and is gone once closed.
func TestForward(t *testing.T) {
	port := hostEcho(t)
	srv := newForwardServer(t, Options{})
	addr := forwardTo(t, srv, port)
	c, err := stdnet.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB: many pipefuls
	if _, err := c.Write(msg[:10]); err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, 10)
	if _, err := io.ReadFull(c, echo); err != nil || string(echo) != string(msg[:10]) {
		t.Fatalf("echo %q, %v", echo, err)
	}
	conns := srv.Connections()
	if len(conns) != 1 || conns[0].Flow.Dst.String() != fmt.Sprintf("10.0.2.2:%d", port) ||
		conns[0].Flow.Target != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Fatalf("connections %+v, want one to 10.0.2.2:%d (127.0.0.1)", conns, port)
	}
	// The rest, then a half-close: everything comes back, then EOF.
	go func() {
		c.Write(msg[10:])
		c.(*stdnet.TCPConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg[10:]) {
		t.Fatalf("echoed %d bytes (err %v), want %d equal bytes", len(got), err, len(msg)-10)
	}
	if in, out := conns[0].In.Load(), conns[0].Out.Load(); in != uint64(len(msg)) || out != uint64(len(msg)) {
		t.Errorf("counted %d bytes in, %d out, want %d each", in, out, len(msg))
	}
	waitFor(t, func() bool { return len(srv.Connections()) == 0 }, "the closed connection to leave the list")
}

// A wrapping server's Dial that returns its own net.Conn (not a socket)
// gets the bytes through Read and Write instead of splice(2): 16 MiB are
// echoed whole and counted.
func TestForwardWrappedDial(t *testing.T) {
	port := hostEcho(t)
	var dials atomic.Int32
	srv := newForwardServer(t, Options{Dial: func(ctx context.Context, f Flow) (stdnet.Conn, error) {
		c, err := (&stdnet.Dialer{}).DialContext(ctx, f.Network, f.Target)
		if err != nil {
			return nil, err
		}
		dials.Add(1)
		return wrappedConn{c}, nil
	}})
	c, err := stdnet.Dial("tcp", forwardTo(t, srv, port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("fedcba9876543210"), 1<<20)
	go c.Write(msg)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through a wrapped conn: %v (equal: %v)", err, bytes.Equal(got, msg))
	}
	conns := srv.Connections()
	if dials.Load() != 1 || len(conns) != 1 || conns[0].Out.Load() != uint64(len(msg)) {
		t.Fatalf("%d dials, connections %+v: want one dial and %d bytes out", dials.Load(), conns, len(msg))
	}
}

// A forward to a denied port, or to a host port nobody listens on, resets
// the program's connection (its connect already succeeded: the listener
// is its own kernel's), counts it, and leaves the forward serving.
func TestForwardRefused(t *testing.T) {
	open, closed, denied := hostEcho(t), freeTCP(t), hostEcho(t)
	pol, err := ParsePolicy([]string{fmt.Sprintf("--deny=10.0.2.2:%d", denied)})
	if err != nil {
		t.Fatal(err)
	}
	srv := newForwardServer(t, Options{Policy: pol})
	reset := func(addr string) {
		t.Helper()
		// (On loopback the reset may come before connect returns.)
		c, err := stdnet.Dial("tcp", addr)
		if err == nil {
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(time.Minute))
			_, err = c.Read(make([]byte, 1))
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection to %s: %v, want ECONNRESET", addr, err)
		}
	}
	reset(forwardTo(t, srv, denied))
	if st := srv.Stats(); st.Refused != 1 {
		t.Errorf("refused = %d, want 1", st.Refused)
	}
	reset(forwardTo(t, srv, closed))
	if st := srv.Stats(); st.DialFailed != 1 {
		t.Errorf("dial failures = %d, want 1", st.DialFailed)
	}
	// Still serving.
	c, err := stdnet.Dial("tcp", forwardTo(t, srv, open))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("echo after refusals: %q %v", b, err)
	}
}

// Closing the server stops its forwards: live connections end and the
// listener takes no more.
func TestForwardClose(t *testing.T) {
	srv := newForwardServer(t, Options{})
	addr := forwardTo(t, srv, hostEcho(t))
	c, err := stdnet.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	srv.Close()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection outlived the server")
	}
	if c2, err := stdnet.Dial("tcp", addr); err == nil {
		c2.Close()
		t.Fatal("the forward's listener still accepts after Close")
	}
}

// The program side: a --forward needs its listener, and says where to
// get one; a bad spec is refused.
func TestForwardFlags(t *testing.T) {
	for _, bad := range []string{"", "0", "70000", "80:", ":80", "a:b", "80:0", "1:2:3"} {
		if _, err := ParseForward(bad); err == nil {
			t.Errorf("ParseForward(%q) accepted", bad)
		}
	}
	if f, err := ParseForward("5432"); err != nil || f.Port != 5432 || f.HostPort != 5432 {
		t.Errorf("ParseForward(5432) = %+v, %v", f, err)
	}
	if f, err := ParseForward("8080:80"); err != nil || f.Port != 8080 || f.HostPort != 80 {
		t.Errorf("ParseForward(8080:80) = %+v, %v", f, err)
	}
	srv := newForwardServer(t, Options{})
	f, _ := ParseForward("5432")
	err := startForwards(srv, []Forward{f}, "")
	if err == nil || !strings.Contains(err.Error(), "subenv run --forward") {
		t.Errorf("a --forward without its listener: %v", err)
	}
	// A descriptor that is no listener.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fd, err := syscall.Dup(int(r.Fd()))
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := startForwards(srv, []Forward{f}, fmt.Sprint(fd)); err == nil {
		t.Error("a pipe taken as a --forward listener")
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for i := 0; i < 600; i++ {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func FuzzParseForward(f *testing.F) {
	for _, s := range []string{"5432", "8080:80", "0", "1:65535", "a:b", "80:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		x, err := ParseForward(s)
		if err != nil {
			return
		}
		if x.Port == 0 || x.HostPort == 0 {
			t.Fatalf("%q parsed to port 0", s)
		}
		if x.String() != s {
			t.Fatalf("%q prints as %q", s, x.String())
		}
	})
}

// sysctlInts reads the whitespace-separated numbers of a /proc/sys file
// and refuses anything else.
func TestSysctlInts(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := sysctlInts(write("tcp_wmem", "4096\t16384\t4194304\n"))
	if err != nil || fmt.Sprint(got) != "[4096 16384 4194304]" {
		t.Errorf("tcp_wmem: %v, %v", got, err)
	}
	if got, err := sysctlInts(write("bad", "4096 lots\n")); err == nil {
		t.Errorf("a word was read as %v", got)
	}
	if _, err := sysctlInts(dir + "/missing"); err == nil {
		t.Error("a missing file was read")
	}
}

// 2,000 short forwarded connections (each with its two sockets and two
// splice pipes) leave no goroutine and no descriptor behind.
func TestForwardNoLeaks(t *testing.T) {
	// An echo that copies through a buffer: one that
	// splices (hostEcho's io.Copy) keeps pipes in Go's pool, which would
	// count here.
	port := hostEchoWith(t, func(c stdnet.Conn) {
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 512))
	})
	srv := newForwardServer(t, Options{})
	addr := forwardTo(t, srv, port)
	echo := func() {
		t.Helper()
		c, err := stdnet.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		b := []byte("x")
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
	}
	settle := func() (int, int) {
		waitFor(t, func() bool { return len(srv.Connections()) == 0 }, "the connections to end")
		return runtime.NumGoroutine() - idleWorkers(), openFDs(t)
	}
	echo()
	g0, f0 := settle()
	for range 2000 {
		echo()
	}
	var g, f int
	for range 300 {
		if g, f = settle(); g <= g0+5 && f <= f0+2 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("after 2,000 forwarded connections: goroutines %d (before %d), fds %d (before %d)", g, g0, f, f0)
}
