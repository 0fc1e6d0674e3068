package kittest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"herd/proto"
	"herd/translators/internal/transtest"
	"herd/translators/kit"
	"herd/translators/launch"
)

// Program is a translator program a test started.
type Program struct {
	Cmd    *exec.Cmd // nil for RunListening's, which package launch runs
	Stderr *bytes.Buffer
	name   string
	exited chan struct{}
	err    error
}

// RunMount starts bin with args and --mount mnt, as the current user, and
// waits until mnt is mounted and answers. The test's cleanup stops it with
// SIGTERM and checks that it exits with status 0 and leaves nothing
// mounted.
func RunMount(t testing.TB, bin, mnt string, args ...string) *Program {
	t.Helper()
	cmd := exec.Command(bin, append(append([]string{}, args...), "--mount", mnt)...)
	p := &Program{Cmd: cmd, name: bin, Stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	deadline := time.After(60 * time.Second)
	// Mounted, and answering: the kernel has had the bridge's answer to
	// its INIT (until then an unmount makes the program fail).
	for !IsMounted(mnt) || !answers(mnt) {
		select {
		case <-p.exited:
			t.Fatalf("%s exited before mounting: %v: %s", bin, p.err, p.Stderr)
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("%s did not mount %s: %s", bin, mnt, p.Stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
				if p.err != nil {
					t.Errorf("%s on SIGTERM: %v: %s", bin, p.err, p.Stderr)
				}
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
				<-p.exited
				t.Errorf("%s did not stop on SIGTERM", bin)
			}
		}
		if IsMounted(mnt) {
			t.Errorf("%s still mounted after %s stopped", mnt, bin)
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	return p
}

func answers(mnt string) bool {
	_, err := os.Stat(mnt)
	return err == nil
}

// Wait waits for the program to exit on its own (umount, goaway) and
// returns its error.
func (p *Program) Wait(t testing.TB) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not exit", p.name)
		return nil
	}
}

// ShellPrelude defines waitmount PATH (wait until PATH is a mount point in
// this namespace, or fail) for scripts given to AsUser.
const ShellPrelude = `set -u
waitmount() {
	n=0
	while ! grep -q " $1 " /proc/self/mountinfo; do
		n=$((n+1))
		if [ $n -gt 6000 ]; then echo "waitmount: $1 never mounted" >&2; return 1; fi
		sleep 0.01
	done
}
waitgone() {
	n=0
	while kill -0 "$1" 2>/dev/null; do
		n=$((n+1))
		if [ $n -gt 6000 ]; then echo "waitgone: $1 still running" >&2; return 1; fi
		sleep 0.01
	done
}
`

// AsUser runs the shell script as the unprivileged user name (made by
// transtest.User if missing); with userns
// it runs inside a new user and mount namespace (unshare -Urm), where the
// user may mount FUSE filesystems though fusermount3 is absent. It returns
// the combined output.
func AsUser(t testing.TB, name string, userns bool, script string) (string, error) {
	t.Helper()
	uid, gid := transtest.User(t, name)
	var cmd *exec.Cmd
	if userns {
		cmd = exec.Command("unshare", "-Urm", "sh", "-c", ShellPrelude+script)
	} else {
		cmd = exec.Command("sh", "-c", ShellPrelude+script)
	}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/", "LANG=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(120 * time.Second):
		cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("script as %s timed out", name)
	}
}

// Quote quotes s for sh.
func Quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// TempDir returns a temporary directory every user can reach (mode 0755),
// removed at cleanup.
func TempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "kittest-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o755)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// RunListening starts bin as the fs server and settrans start a
// translator (package launch): its listening socket as fd 3 with
// LISTEN_FDS=1 and, when underlying is not nil, the node beneath as fd 4
// with HERD_UNDERLYING=4. It returns a client connected to it. The test's
// cleanup closes the client and stops the program if it still runs.
func RunListening(t testing.TB, underlying *os.File, bin string, args ...string) (*proto.Client, *Program) {
	t.Helper()
	p := &Program{name: bin, Stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	lp, err := launch.Start(launch.Spec{Program: bin, Argv: append([]string{bin}, args...),
		Socket: filepath.Join(TempDir(t), "t.sock"), Underlying: underlying, Output: p.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	go func() { <-lp.Exited(); p.err = lp.Err(); close(p.exited) }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := lp.Dial(ctx, proto.ClientOptions{Timeout: 60 * time.Second})
	if err != nil {
		lp.Stop()
		t.Fatalf("dial %s: %v: %s", bin, err, p.Stderr)
	}
	t.Cleanup(lp.Stop)
	return c, p
}

// RunSocket starts bin with args and --socket sock and waits until it
// answers there. The test's cleanup stops it (SIGTERM).
func RunSocket(t testing.TB, bin, sock string, args ...string) *Program {
	t.Helper()
	return RunSocketAs(t, nil, bin, sock, args...)
}

// RunSocketAs is RunSocket with the program running as cred (nil: as the
// test). The socket's directory must be writable by cred's user.
func RunSocketAs(t testing.TB, cred *syscall.Credential, bin, sock string, args ...string) *Program {
	t.Helper()
	cmd := exec.Command(bin, append(append([]string{}, args...), "--socket", sock)...)
	p := &Program{Cmd: cmd, name: bin, Stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			<-p.exited
		}
		if _, err := os.Stat(sock); err == nil {
			t.Errorf("%s left its socket %s", bin, sock)
		}
	})
	deadline := time.After(60 * time.Second)
	for {
		c, err := proto.Dial(sock, proto.ClientOptions{Timeout: 10 * time.Second})
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited: %v: %s", bin, p.err, p.Stderr)
		case <-deadline:
			t.Fatalf("%s does not answer on %s: %v", bin, sock, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Redirector is a directory (a kit.MemFS) in which looking up a name in
// Redirects answers with a redirect to that translator socket, as the fs
// server answers for a node with a passive translator. Mount it to test a
// translator reached the way a subenvironment reaches it.
type Redirector struct {
	*kit.FS
	Mem       *kit.MemFS
	Redirects map[string]string // name -> socket
}

// NewRedirector returns a Redirector with a regular file for each name
// (the underlying nodes).
func NewRedirector(redirects map[string]string) *Redirector {
	mem := kit.NewMemFSOwned(kit.MemOptions{})
	for name := range redirects {
		mem.Root().AddFile(name, nil, kit.Attrs{Mode: 0o644})
	}
	return &Redirector{FS: kit.NewFS(mem.Root()), Mem: mem, Redirects: redirects}
}

func (r *Redirector) Lookup(ctx context.Context, parent proto.NodeID, name string) (proto.Entry, error) {
	e, err := r.FS.Lookup(ctx, parent, name)
	if err != nil || parent != kit.RootID {
		return e, err
	}
	if sock, ok := r.Redirects[name]; ok {
		e.Redirect = &proto.Redirect{Socket: sock}
	}
	return e, nil
}
