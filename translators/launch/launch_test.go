package launch_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"herd/proto"
	"herd/translators/kit/kittest"
	"herd/translators/launch"
)

var hello string

func TestMain(m *testing.M) {
	kittest.Main(m, map[string]*string{"hello": &hello})
}

// start starts spec and stops the translator at cleanup.
func start(t *testing.T, spec launch.Spec) *launch.Process {
	t.Helper()
	p, err := launch.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func TestStartDialStop(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "t.sock")
	// A stale socket from a translator that died is replaced.
	if err := syscall.Bind(mustSocket(t), &syscall.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	p := start(t, launch.Spec{Program: hello, Argv: []string{"hello", "--contents", "hi\n"}, Socket: sock})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	c, err := p.Dial(ctx, proto.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root, err := c.Root(ctx)
	if err != nil || root.Attr.Mode&syscall.S_IFMT != syscall.S_IFREG || root.Attr.Size != 3 {
		t.Fatalf("root %+v, %v", root, err)
	}
	// Stop asks it to go away: the kit exits with status 0 on goaway.
	p.Stop()
	select {
	case <-p.Exited():
	default:
		t.Fatal("Stop returned before the translator exited")
	}
	if p.Err() != nil {
		t.Errorf("after goaway: %v", p.Err())
	}
	if _, err := c.Root(ctx); err == nil {
		t.Error("the client still answers after Stop")
	}
}

func TestExitedAtStart(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "t.sock")
	p := start(t, launch.Spec{Program: hello, Argv: []string{"hello", "--no-such-flag"}, Socket: sock, Output: &strings.Builder{}})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := p.Dial(ctx, proto.ClientOptions{}); !errors.Is(err, launch.ErrExited) {
		t.Fatalf("dial: %v, want ErrExited", err)
	}
	if p.Err() == nil {
		t.Error("a translator that failed exited with status 0")
	}
}

// TestHandOver checks what the program is given: fd 3 the socket, fd 4
// the node beneath, the environment saying so, and no socket activation
// of ours.
func TestHandOver(t *testing.T) {
	dir := t.TempDir()
	sock, out := filepath.Join(dir, "t.sock"), filepath.Join(dir, "out")
	under, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer under.Close()
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("HERD_UNDERLYING", "9")
	script := `env | grep -E '^(LISTEN_|HERD_RUNTIME_DIR|HERD_UNDERLYING)' | sort > ` + out + `.tmp
readlink /proc/self/fd/4 >> ` + out + `.tmp
[ -S /proc/self/fd/3 ] || stat -L -c %F /proc/self/fd/3 >> ` + out + `.tmp
mv ` + out + `.tmp ` + out + `
exec sleep 600`
	p := start(t, launch.Spec{Program: "/bin/sh", Argv: []string{"sh", "-c", script}, Socket: sock,
		Underlying: under, RuntimeDir: "/run/x"})
	// sh never answers: Dial ends with its context.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := p.Dial(ctx, proto.ClientOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial: %v, want the deadline", err)
	}
	var got []byte
	for deadline := time.Now().Add(60 * time.Second); ; {
		if got, err = os.ReadFile(out); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := "HERD_RUNTIME_DIR=/run/x\nHERD_UNDERLYING=4\nLISTEN_FDS=1\n" + dir + "\n"
	if string(got) != want {
		t.Errorf("the program was given\n%s\nwant\n%s", got, want)
	}
	// Stop without a client: SIGTERM ends sh's sleep.
	p.Stop()
	if p.Err() == nil {
		t.Error("sh killed by SIGTERM reports success")
	}
}

func mustSocket(t *testing.T) int {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return fd
}
