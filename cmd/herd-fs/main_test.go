package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"herd/internal/testbin"
	"herd/proto"
)

var bin string

func TestMain(m *testing.M) {
	bin = testbin.MustBuild("herd-fs")
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// dial waits until the server at sock answers the handshake.
func dial(t *testing.T, sock string, exited <-chan error) *proto.Client {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := proto.Dial(sock, proto.ClientOptions{Timeout: 20 * time.Second})
		if err == nil {
			return c
		}
		select {
		case err := <-exited:
			t.Fatalf("herd-fs exited: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("herd-fs never answered on %s: %v", sock, err)
		}
	}
}

func start(t *testing.T, args ...string) (*exec.Cmd, chan error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exitedCopy(exited)
	})
	return cmd, exited
}

// exitedCopy lets Cleanup wait even when the test already received the exit.
func exitedCopy(c chan error) <-chan error {
	out := make(chan error, 1)
	select {
	case err := <-c:
		out <- err
		c <- err
	case <-time.After(30 * time.Second):
		out <- errors.New("timeout")
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestServeCopyOnWrite(t *testing.T) {
	dir := t.TempDir()
	root, upper, sock := filepath.Join(dir, "root"), filepath.Join(dir, "upper"), filepath.Join(dir, "fs.sock")
	must(t, os.MkdirAll(root, 0o755))
	must(t, os.MkdirAll(upper, 0o755))
	must(t, os.WriteFile(filepath.Join(root, "hello"), []byte("lower"), 0o644))
	_, exited := start(t, "--socket", sock, "--root", root, "--upper", upper, "--hide-tmp")
	c := dial(t, sock, exited)
	defer c.Close()
	ctx := context.Background()
	r, err := c.Root(ctx)
	must(t, err)
	e, err := c.Lookup(ctx, r.Node, "hello")
	must(t, err)
	o, err := c.Open(ctx, e.Node, unix.O_RDWR)
	must(t, err)
	if o.File == nil {
		t.Fatal("no descriptor passed with Open")
	}
	o.File.Close()
	_, err = c.Write(ctx, o.Handle, 0, []byte("UPPER"))
	must(t, err)
	must(t, c.Release(ctx, o.Handle))
	if b, _ := os.ReadFile(filepath.Join(root, "hello")); string(b) != "lower" {
		t.Fatalf("lower changed: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(upper, "hello")); string(b) != "UPPER" {
		t.Fatalf("upper has %q", b)
	}
	tmp, err := c.Lookup(ctx, r.Node, "tmp")
	must(t, err)
	if tmp.Attr.Mode != syscall.S_IFDIR|0o1777 {
		t.Fatalf("tmp mode %o", tmp.Attr.Mode)
	}
	// Goaway ends the program.
	must(t, c.Goaway(ctx, proto.GoawayForce))
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("exit after goaway: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("herd-fs did not exit after goaway")
	}
	if _, err := os.Stat(sock); err == nil {
		t.Fatal("socket left behind")
	}
}

func TestSocketActivationAndSIGTERM(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "fs.sock")
	l, err := net.Listen("unix", sock)
	must(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	f, err := l.(*net.UnixListener).File()
	must(t, err)
	l.Close()
	defer f.Close()
	cmd := exec.Command(bin, "--root", dir, "--rw")
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	c := dial(t, sock, exited)
	ctx := context.Background()
	r, err := c.Root(ctx)
	must(t, err)
	_, err = c.Mkdir(ctx, r.Node, "made", 0o755)
	must(t, err)
	if _, err := os.Stat(filepath.Join(dir, "made")); err != nil {
		t.Fatalf("--rw did not write through: %v", err)
	}
	c.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit on SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no exit on SIGTERM")
	}
}

func TestReadOnlyDefault(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "fs.sock")
	_, exited := start(t, "--socket", sock, "--root", dir)
	c := dial(t, sock, exited)
	defer c.Close()
	ctx := context.Background()
	r, err := c.Root(ctx)
	must(t, err)
	_, err = c.Mkdir(ctx, r.Node, "x", 0o755)
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("mkdir without upper or --rw: %v, want EROFS", err)
	}
}

func TestBadRoot(t *testing.T) {
	out, err := exec.Command(bin, "--socket", filepath.Join(t.TempDir(), "s"), "--root", "/nonexistent/dir").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "/nonexistent/dir") {
		t.Fatalf("want one line naming the root, got %q", out)
	}
}
