package control_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"herd/translators/control"
	"herd/translators/internal/transtest"
)

// testUserName is the unprivileged user of these tests (one per package,
// so concurrent test binaries do not interfere).
const testUserName = "herdctl"

// env is one test's world: a directory for nodes, a runtime dir, and the
// identity the programs run as.
type env struct {
	t       *testing.T
	dir     string // nodes live here
	runtime string // XDG_RUNTIME_DIR
	cred    *syscall.Credential
	uid     int
}

// identities lists the identities every host test runs as.
var identities = []string{"root", "user"}

func newEnv(t *testing.T, who string) *env {
	t.Helper()
	user := ""
	if who == "user" {
		user = testUserName
	}
	w := transtest.NewWorkspace(t, "", "control-test-", user)
	e := &env{t: t, dir: w.Dir, runtime: w.Runtime, cred: w.Cred}
	if w.Cred != nil {
		e.uid = int(w.Cred.Uid)
	}
	t.Cleanup(e.checkClean)
	return e
}

// run runs a program (one of ours by name, or any other) as the env's
// identity and returns what it printed and its status.
func (e *env) run(prog string, args ...string) transtest.Result {
	e.t.Helper()
	return e.runEnv(nil, prog, args...)
}

// runEnv is run with more environment variables.
func (e *env) runEnv(extra []string, prog string, args ...string) transtest.Result {
	e.t.Helper()
	if !strings.Contains(prog, "/") {
		if _, err := os.Stat(filepath.Join(binDir, prog)); err == nil {
			prog = filepath.Join(binDir, prog)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append(transtest.WithoutEnv(os.Environ(), "XDG_RUNTIME_DIR", "HERD_TRANSLATORS"), "XDG_RUNTIME_DIR="+e.runtime)
	cmd.Env = append(cmd.Env, extra...)
	cmd.Dir = e.dir
	if e.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: e.cred}
	}
	return transtest.Run(e.t, ctx, cmd)
}

// ok runs a program and fails the test unless it succeeds.
func (e *env) ok(prog string, args ...string) string {
	e.t.Helper()
	r := e.run(prog, args...)
	if r.Code != 0 {
		e.t.Fatalf("%s %s: exit %d: %s%s", prog, strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// fails runs a program, expects it to fail with a one-line message
// containing want, and returns the message.
func (e *env) fails(want string, prog string, args ...string) string {
	e.t.Helper()
	r := e.run(prog, args...)
	if r.Code == 0 {
		e.t.Fatalf("%s %s succeeded; want an error about %q", prog, strings.Join(args, " "), want)
	}
	msg := strings.TrimSpace(r.Stderr)
	if strings.Count(msg, "\n") > 0 || !strings.Contains(msg, want) {
		e.t.Fatalf("%s %s: message %q; want one line containing %q", prog, strings.Join(args, " "), msg, want)
	}
	return msg
}

// file creates a node owned by the env's identity.
func (e *env) file(name, contents string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(contents), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if e.cred != nil {
		os.Chown(p, int(e.cred.Uid), int(e.cred.Gid))
	}
	return p
}

// mounted reports whether a translator is mounted on path.
func mounted(t *testing.T, path string) bool {
	t.Helper()
	ms, err := control.ReadMounts()
	if err != nil {
		t.Fatal(err)
	}
	m, ok := control.MountAt(ms, path)
	return ok && m.IsFUSE()
}

// state returns the state of the translator on node, or nil.
func (e *env) state(node string) *control.State {
	st, err := control.ReadState(control.PathsFor(filepath.Join(e.runtime, "herd", "trans"), node).State)
	if err != nil {
		return nil
	}
	return st
}

// waitGone waits until pid is gone.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for control.Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkClean fails the test if anything is left mounted under the env's
// directory, or running, or in its runtime dir.
func (e *env) checkClean() {
	t := e.t
	ms, _ := control.ReadMounts()
	for _, m := range ms {
		if strings.HasPrefix(m.MountPoint, e.dir) {
			t.Errorf("left mounted: %s (%s)", m.MountPoint, m.Source)
			exec.Command("umount", "-l", m.MountPoint).Run()
		}
	}
	trans := filepath.Join(e.runtime, "herd", "trans")
	ents, _ := os.ReadDir(trans)
	for _, de := range ents {
		if strings.HasSuffix(de.Name(), ".json") {
			if st, err := control.ReadState(filepath.Join(trans, de.Name())); err == nil {
				for _, pid := range []int{st.HolderPid, st.TranslatorPid} {
					if control.Alive(pid) {
						t.Errorf("left running: pid %d (%s)", pid, control.ShowArgv(st.Argv))
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
		}
		t.Errorf("left in the runtime dir: %s", de.Name())
	}
}

func controlAlive(pid int) bool { return control.Alive(pid) }

// eventually runs a program until it prints want (a cache that is
// invalidated asynchronously), failing the test after a minute.
func (e *env) eventually(prog string, args []string, want string) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := e.ok(prog, args...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s %v = %q; want %q", prog, args, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freshReadsScript changes hello's contents on $1 with fsysopts again and
// again and reads the node right after each change, through the page
// cache; it prints what was read stale. Same sizes in a row too: the
// kernel drops its cached pages by itself on a size change, not otherwise.
const freshReadsScript = `n=$1
cat "$n" >/dev/null || exit 2
for v in aaaa bbbb cccccc dd eeee ffff gggg hhhhhhhh iiii jjjj; do
	fsysopts "$n" --contents=$v || exit 2
	got=$(cat "$n")
	[ "$got" = "$v" ] || echo "stale: $v read as $got"
done`

// freshReads runs freshReadsScript on node (a hello translator's) on the
// host as the env's identity.
func (e *env) freshReads(node string) {
	e.t.Helper()
	r := e.runEnv([]string{"PATH=" + binDir + ":/usr/local/bin:/usr/bin:/bin"}, "sh", "-c", freshReadsScript, "sh", node)
	if r.Code != 0 || r.Stdout != "" {
		e.t.Fatalf("reads right after fsysopts: %+v", r)
	}
}
