// Package transtest holds the chores the translators' tests share: failing
// on an error, waiting for a condition, running a shell line or a program
// and keeping what it printed, making the unprivileged test user. Serving
// and mounting translators is kittest's job.
package transtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Must fails the test on err.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Eventually waits until cond holds (a cache invalidated asynchronously, a
// process going away), failing the test after a minute.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Sh runs a shell command line in dir (LC_ALL=C) and returns its output,
// failing the test if it fails.
func Sh(t testing.TB, dir, cmdline string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmdline, err, out)
	}
	return string(out)
}

// GoRoot is the Go tree: sources the archive tests pack.
func GoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// WithoutEnv is env without the variables named.
func WithoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); !slices.Contains(names, k) {
			out = append(out, kv)
		}
	}
	return out
}

// Result is what a program printed and its exit status.
type Result struct {
	Stdout, Stderr string
	Code           int
}

func (r Result) String() string {
	return "exit " + strconv.Itoa(r.Code) + ", stdout " + strconv.Quote(r.Stdout) + ", stderr " + strconv.Quote(r.Stderr)
}

// Run runs cmd, made with exec.CommandContext(ctx, ...), and returns what
// it printed and its status. It fails the test if the program cannot run
// or hangs (ctx ends). A child left running (a holder) may keep the
// output pipes open: Run does not wait for it.
func Run(t testing.TB, ctx context.Context, cmd *exec.Cmd) Result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Code = ee.ExitCode()
	} else if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		t.Fatalf("%s %q: %v", cmd.Path, cmd.Args[1:], err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %q hung: %s", cmd.Path, cmd.Args[1:], r)
	}
	return r
}

var users sync.Map // name -> *testUser

type testUser struct {
	once     sync.Once
	uid, gid uint32
	err      string
}

// User returns the uid and gid of the unprivileged test user name, creating
// it (useradd -M) if missing, and opens /dev/fuse and /dev/net/tun (if
// there) to everyone, as distributions ship them. It needs root.
func User(t testing.TB, name string) (uid, gid uint32) {
	t.Helper()
	v, _ := users.LoadOrStore(name, &testUser{})
	u := v.(*testUser)
	u.once.Do(func() { u.uid, u.gid, u.err = makeUser(name) })
	if u.err != "" {
		t.Fatal(u.err)
	}
	return u.uid, u.gid
}

func makeUser(name string) (uid, gid uint32, problem string) {
	if os.Geteuid() != 0 {
		return 0, 0, "creating test user " + name + " needs root"
	}
	if _, err := user.Lookup(name); err != nil {
		if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
			// Another test binary may have made it meanwhile.
			if _, err2 := user.Lookup(name); err2 != nil {
				return 0, 0, "useradd " + name + ": " + err.Error() + ": " + string(out)
			}
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err.Error()
	}
	if err := os.Chmod("/dev/fuse", 0o666); err != nil {
		return 0, 0, err.Error()
	}
	os.Chmod("/dev/net/tun", 0o666)
	u64, _ := strconv.ParseUint(u.Uid, 10, 32)
	g64, _ := strconv.ParseUint(u.Gid, 10, 32)
	return uint32(u64), uint32(g64), ""
}

// Names lists dir: its names sorted, joined by commas, a directory's with
// a trailing slash.
func Names(t testing.TB, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		s := e.Name()
		if e.IsDir() {
			s += "/"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// SameTrees fails the test unless diff -r finds trees a and b the same
// (symlinks compared as links).
func SameTrees(t testing.TB, a, b string) {
	t.Helper()
	out, err := exec.Command("diff", "-r", "--no-dereference", a, b).CombinedOutput()
	if err != nil {
		t.Fatalf("diff -r %s %s: %v\n%.3000s", a, b, err, out)
	}
}

// Workspace is a test's place for nodes (Dir) and its runtime directory
// (Runtime, for XDG_RUNTIME_DIR), both owned by the identity the programs
// under test run as.
type Workspace struct {
	Dir, Runtime string
	Cred         *syscall.Credential // nil: root
}

// NewWorkspace makes a Workspace in a new directory in parent ("": the
// temporary directory) named after prefix, for root or, when user is not
// "", for that test user (see User). The test's cleanup removes it; a
// cleanup the caller registers afterwards runs before that.
func NewWorkspace(t testing.TB, parent, prefix, user string) Workspace {
	t.Helper()
	base, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	w := Workspace{Dir: filepath.Join(base, "nodes"), Runtime: filepath.Join(base, "run")}
	Must(t, os.Mkdir(w.Dir, 0o755))
	Must(t, os.Mkdir(w.Runtime, 0o700))
	if user != "" {
		uid, gid := User(t, user)
		w.Cred = &syscall.Credential{Uid: uid, Gid: gid}
		for _, d := range []string{w.Dir, w.Runtime} {
			Must(t, os.Chown(d, int(uid), int(gid)))
		}
	}
	return w
}
