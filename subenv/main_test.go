package subenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"herd/internal/testbin"
	"herd/internal/testns"
)

// The subenv binary under test, built once in TestMain.
var subenvBin string

// garbageEnv makes the test binary act as a server that speaks garbage on
// the socket it is handed (fd 3), for the bad-input test.
const garbageEnv = "HERD_SUBENV_TEST_GARBAGE"

func TestMain(m *testing.M) {
	if os.Getenv(garbageEnv) == "1" {
		garbageServer()
		return
	}
	if !testns.Inside() && os.Geteuid() == 0 {
		// Re-run this binary in a mount namespace of its own, so that
		// nothing a failed test mounts can outlive it. Does not return.
		testns.Main(m)
	}
	if testns.Inside() {
		// What testns.Main does inside before m.Run; done here so that the
		// built programs can be removed after the tests.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			fmt.Fprintln(os.Stderr, "make / rprivate:", err)
			os.Exit(2)
		}
	}
	// herd-net next to subenv: the default --net nat starts it from there.
	subenvBin = testbin.MustBuild("subenv")
	testbin.MustBuild("herd-net")
	// SUBENV_TEST_BINARY runs the tests against another build (one with
	// -race, an installed one).
	if p := os.Getenv("SUBENV_TEST_BINARY"); p != "" {
		subenvBin = p
	}
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

func garbageServer() {
	l, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		os.Exit(3)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(4)
		}
		c.Write([]byte("HTTP/1.0 200 OK\r\nthis is not herd's protocol at all\r\n\r\n"))
		// Keep the connection open: the client must notice garbage, not EOF.
		defer c.Close()
	}
}

// env is where a test's subenv runs: its own runtime base and data dir,
// so that leftovers are easy to see.
type env struct {
	t       *testing.T
	base    string // world-searchable temp dir owned by the test
	runtime string // XDG_RUNTIME_DIR given to subenv
	data    string // XDG_DATA_HOME
	home    string
	cred    *syscall.Credential
}

func newEnv(t *testing.T, asUser bool) *env {
	t.Helper()
	base, err := os.MkdirTemp("", "subenv-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(base, 0o755)
	e := &env{t: t, base: base}
	t.Cleanup(func() { os.RemoveAll(base) })
	e.runtime = filepath.Join(base, "run")
	e.data = filepath.Join(base, "data")
	e.home = filepath.Join(base, "home")
	for _, d := range []string{e.runtime, e.data, e.home} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if asUser {
		uid, gid := testUser(t)
		e.cred = &syscall.Credential{Uid: uid, Gid: gid}
		for _, d := range []string{e.runtime, e.data, e.home} {
			if err := os.Chown(d, int(uid), int(gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() { e.checkClean() })
	return e
}

// testUser makes sure the test user exists and /dev/fuse is usable by all,
// as distributions ship it.
func testUser(t *testing.T) (uint32, uint32) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the unprivileged tests need root to create their user")
	}
	u, err := user.Lookup("herdtest")
	if err != nil {
		if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", "herdtest").CombinedOutput(); err != nil {
			// Another test binary may have created it meanwhile.
			if _, err2 := user.Lookup("herdtest"); err2 != nil {
				t.Fatalf("useradd herdtest: %v: %s", err, out)
			}
		}
		if u, err = user.Lookup("herdtest"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod("/dev/fuse", 0o666); err != nil {
		t.Fatal(err)
	}
	// The default network (nat) needs the TUN device, 0666 as shipped.
	if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uint32(uid), uint32(gid)
}

// command prepares `subenv ARGS...` in this env.
func (e *env) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, subenvBin, args...)
	cmd.Env = append(withoutEnv(os.Environ(), "XDG_RUNTIME_DIR", "XDG_DATA_HOME", "HOME", "HERD_TRACE"),
		"XDG_RUNTIME_DIR="+e.runtime, "XDG_DATA_HOME="+e.data, "HOME="+e.home)
	cmd.Dir = "/"
	cmd.WaitDelay = 10 * time.Second
	if e.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: e.cred}
	}
	return cmd
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs subenv with args and stdin, and returns what it printed and its
// exit status. It fails the test if subenv hangs.
func (e *env) run(stdin string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		e.t.Fatalf("subenv %q hung; stderr: %s", args, errb.String())
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("subenv %q: %v", args, err)
	}
	return r
}

// checkClean fails the test if anything of ours is left: a mount, a
// process running one of our binaries, a runtime dir.
func (e *env) checkClean() {
	t := e.t
	t.Helper()
	var problems []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		problems = leftovers(e)
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		// Processes may still be on their way out (reaped by a parent
		// that is itself exiting): wait for the condition, not a time.
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range problems {
		t.Error("left behind: " + p)
	}
}

func leftovers(e *env) []string {
	var problems []string
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			if strings.Contains(line, e.base) || strings.Contains(line, "fuse.herd") && strings.Contains(line, "subenv") {
				problems = append(problems, "mount: "+line)
			}
		}
	}
	dir, _ := testbin.Dir()
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil && dir != "" && strings.HasPrefix(exe, dir+"/") {
			problems = append(problems, fmt.Sprintf("process %d (%s)", pid, exe))
		}
	}
	for _, rd := range []string{filepath.Join(e.runtime, "herd")} {
		ents, _ := os.ReadDir(rd)
		for _, ent := range ents {
			problems = append(problems, "runtime dir "+filepath.Join(rd, ent.Name()))
		}
	}
	return problems
}

// oneLine checks that a failure was reported as one line starting with
// "subenv" and containing want.
func oneLine(t *testing.T, r result, want string) {
	t.Helper()
	msg := strings.TrimRight(r.stderr, "\n")
	if r.code == 0 {
		t.Errorf("exit status 0, want non-zero (stderr %q)", r.stderr)
	}
	if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "subenv") {
		t.Errorf("want one line starting with subenv, got %q", r.stderr)
	}
	if !strings.Contains(msg, want) {
		t.Errorf("stderr %q does not mention %q", msg, want)
	}
}
