package proto

// Tests that need a second process: a server killed with SIGKILL, socket
// activation (fd 3), and a client running as another uid (SO_PEERCRED).
// The test binary re-executes itself; HERD_PROTO_HELPER says as what.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	switch os.Getenv("HERD_PROTO_HELPER") {
	case "":
		os.Exit(m.Run())
	case "serve":
		helperServe()
	case "dial":
		helperDial()
	case "rawecho":
		helperRawEcho()
	default:
		fmt.Fprintln(os.Stderr, "unknown HERD_PROTO_HELPER")
		os.Exit(2)
	}
}

// helperServe serves a testFS on Listen(HERD_PROTO_SOCK) (or fd 3), says
// "ready" on stdout, and serves until killed.
func helperServe() {
	// Report what socket activation left in the environment.
	leftover := os.Getenv("LISTEN_FDS") + os.Getenv("LISTEN_PID")
	l, err := Listen(os.Getenv("HERD_PROTO_SOCK"))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	after := os.Getenv("LISTEN_FDS") + os.Getenv("LISTEN_PID")
	fs := &testFS{dir: os.Getenv("HERD_PROTO_DIR"), last: map[string][]any{}, callers: map[string]Caller{}, forgotten: map[NodeID]uint64{},
		released: map[HandleID]int{}, hang: make(chan struct{}), entered: make(chan string, 1000)}
	fs.fast = make([]byte, 1<<20)
	srv := NewServer(fs, ServerOptions{Name: "helper"})
	fmt.Printf("ready env-before=%q env-after=%q\n", leftover, after)
	srv.Serve(l)
	os.Exit(0)
}

// helperRawEcho answers length-prefixed frames on HERD_PROTO_SOCK: the
// floor the benchmarks compare against.
func helperRawEcho() {
	l, err := net.Listen("unix", os.Getenv("HERD_PROTO_SOCK"))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(0)
		}
		go rawEcho(c)
	}
}

// helperDial dials HERD_PROTO_SOCK and prints "ok" or the error.
func helperDial() {
	c, err := Dial(os.Getenv("HERD_PROTO_SOCK"), ClientOptions{})
	if err != nil {
		var pe *Error
		if errors.As(err, &pe) {
			fmt.Printf("errno=%d %v\n", pe.Errno, err)
		} else {
			fmt.Printf("error %v\n", err)
		}
		os.Exit(0)
	}
	defer c.Close()
	if _, err := c.GetAttr(context.Background(), 1); err != nil {
		fmt.Printf("getattr %v\n", err)
		os.Exit(0)
	}
	fmt.Println("ok")
}

type helper struct {
	cmd  *exec.Cmd
	line string // first line of output
}

// startHelperServer starts a server process on sock (or on fd 3 if l is
// given) and waits for it to say ready.
func startHelperServer(t testing.TB, sock string, l *net.UnixListener, env ...string) *helper {
	return startHelper(t, "serve", sock, l, env...)
}

func startHelper(t testing.TB, mode, sock string, l *net.UnixListener, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("hello through a descriptor\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "HERD_PROTO_HELPER="+mode, "HERD_PROTO_SOCK="+sock, "HERD_PROTO_DIR="+dir)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	if l != nil {
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.ExtraFiles = []*os.File{f}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("helper server did not start: %q %v", line, err)
	}
	return &helper{cmd: cmd, line: line}
}

// TestServerKilled: SIGKILL of the server process turns pending and later
// calls into EIO, and Done closes.
func TestServerKilled(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	h := startHelperServer(t, sock, nil)
	c, err := Dial(sock, ClientOptions{Timeout: time.Hour})
	noErr(t, "dial", err)
	defer c.Close()
	ctx := context.Background()
	_, err = c.GetAttr(ctx, 1)
	noErr(t, "getattr", err)
	pending := make(chan error, 1)
	go func() {
		_, err := c.GetAttr(ctx, hangNode)
		pending <- err
	}()
	// Wait until the call is at the server: the helper's hang has no
	// channel to us, so poll with round trips until one is in flight.
	waitFor(t, "the hanging call to be sent", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) > 0
	})
	h.cmd.Process.Kill()
	select {
	case err := <-pending:
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("pending call: %v, want EIO", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("pending call still waiting a minute after the kill")
	}
	<-c.Done()
	if c.Err() == nil || !strings.Contains(c.Err().Error(), "lost") {
		t.Errorf("Err = %v", c.Err())
	}
	if _, err := c.Lookup(ctx, 1, "x"); !errors.Is(err, syscall.EIO) {
		t.Errorf("later call: %v, want EIO", err)
	}
}

// TestListenFDs: a server started with its socket as fd 3 (LISTEN_FDS=1)
// serves it and clears the variables.
func TestListenFDs(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "act.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	noErr(t, "listen", err)
	defer l.Close()
	h := startHelperServer(t, "", l, "LISTEN_FDS=1")
	if !strings.Contains(h.line, `env-before="1"`) || !strings.Contains(h.line, `env-after=""`) {
		t.Errorf("helper environment: %s", h.line)
	}
	c, err := Dial(sock, ClientOptions{})
	noErr(t, "dial", err)
	defer c.Close()
	_, err = c.GetAttr(context.Background(), 1)
	noErr(t, "getattr", err)
}

func TestListenPath(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "p.sock")
	// A LISTEN_PID of another process means the fds are not ours.
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", "1")
	l, err := Listen(sock)
	noErr(t, "listen", err)
	if os.Getenv("LISTEN_FDS") != "1" {
		t.Error("Listen cleared another process's LISTEN_FDS")
	}
	fi, err := os.Stat(sock)
	noErr(t, "stat", err)
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v", fi.Mode())
	}
	// A live server is not replaced.
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	// A dead server's socket is.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := Listen(sock)
	noErr(t, "listen over a stale socket", err)
	l2.Close()
	// Anything else is left alone.
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0644)
	if _, err := Listen(plain); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen on a plain file: %v", err)
	}
	t.Setenv("LISTEN_FDS", "")
	if _, err := Listen(""); err == nil {
		t.Error("Listen without path or LISTEN_FDS succeeded")
	}
}

// TestPeerCredRefusal: a client of another uid gets a clear refusal; with
// AllowUids it gets in.
func TestPeerCredRefusal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as uid 65534")
	}
	dir, err := os.MkdirTemp("", "herd-proto-peercred")
	noErr(t, "mkdtemp", err)
	defer os.RemoveAll(dir)
	noErr(t, "chmod", os.Chmod(dir, 0o777))
	// The child runs a copy of this test binary that uid 65534 can read.
	bin := filepath.Join(dir, "proto.test")
	self, err := os.Executable()
	noErr(t, "executable", err)
	copyFile(t, self, bin)

	run := func(sock string) string {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), "HERD_PROTO_HELPER=dial", "HERD_PROTO_SOCK="+sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as uid 65534: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	serve := func(name string, opts ServerOptions) string {
		sock := filepath.Join(dir, name)
		l, err := Listen(sock)
		noErr(t, "listen", err)
		// Open the file mode, so only SO_PEERCRED stands in the way.
		noErr(t, "chmod", os.Chmod(sock, 0o666))
		srv := NewServer(newTestFS(t), opts)
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		return sock
	}
	got := run(serve("refuse.sock", ServerOptions{Name: "strict"}))
	want := fmt.Sprintf("errno=%d proto: server refuses uid 65534", syscall.EACCES)
	if !strings.HasPrefix(got, want) {
		t.Errorf("refused client said %q, want %q", got, want)
	}
	got = run(serve("allow.sock", ServerOptions{Name: "lenient", AllowUids: []uint32{65534}}))
	if got != "ok" {
		t.Errorf("allowed client said %q", got)
	}
}

func copyFile(t *testing.T, from, to string) {
	in, err := os.Open(from)
	noErr(t, "open", err)
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	noErr(t, "create", err)
	_, err = io.Copy(out, in)
	noErr(t, "copy", err)
	noErr(t, "close", out.Close())
}
