package acceptance_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"herd/translators/internal/transtest"
)

// testUserName is this package's unprivileged user (one per package, so
// concurrent test binaries do not interfere).
const testUserName = "herdaccept"

// env is one test's world: a directory for nodes and data (under /var/tmp,
// so a subenvironment sees it too), a runtime dir, and the identity the
// programs run as.
type env struct {
	t       *testing.T
	dir     string // nodes and per-test data live here, owned by the identity
	runtime string // XDG_RUNTIME_DIR
	cred    *syscall.Credential
}

func newEnv(t *testing.T, who string) *env {
	t.Helper()
	user := ""
	if who == "user" {
		user = testUserName
	}
	w := transtest.NewWorkspace(t, "/var/tmp", "herd-accept-", user)
	e := &env{t: t, dir: w.Dir, runtime: w.Runtime, cred: w.Cred}
	t.Cleanup(e.checkClean)
	return e
}

// own gives path to the env's identity.
func (e *env) own(path string) {
	if e.cred != nil {
		if err := os.Lchown(path, int(e.cred.Uid), int(e.cred.Gid)); err != nil {
			e.t.Fatal(err)
		}
	}
}

// copyFile copies a fixture into the env's dir, owned by its identity.
func (e *env) copyFile(from, name string) string {
	e.t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		e.t.Fatal(err)
	}
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.own(p)
	return p
}

// mkdir makes a directory in the env's dir, owned by its identity.
func (e *env) mkdir(name string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		e.t.Fatal(err)
	}
	e.own(p)
	return p
}

// command prepares one of our programs (or any other) as the env's
// identity, our programs first on PATH.
func (e *env) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	if !strings.Contains(prog, "/") {
		if _, err := os.Stat(filepath.Join(binDir, prog)); err == nil {
			prog = filepath.Join(binDir, prog)
		}
	}
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append(transtest.WithoutEnv(os.Environ(), "XDG_RUNTIME_DIR", "XDG_DATA_HOME", "HOME", "PATH", "HERD_TRANSLATORS", "HERD_TRACE"),
		"XDG_RUNTIME_DIR="+e.runtime, "XDG_DATA_HOME="+filepath.Join(e.runtime, "data"), "HOME="+e.dir,
		"PATH="+binDir+":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
	cmd.Dir = e.dir
	if e.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: e.cred}
	}
	return cmd
}

// run runs prog as the env's identity and returns what it printed and its
// status; it fails the test if the program hangs.
func (e *env) run(prog string, args ...string) transtest.Result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, prog, args...)
	return transtest.Run(e.t, ctx, cmd)
}

// ok runs a program and fails the test unless it succeeds.
func (e *env) ok(prog string, args ...string) string {
	e.t.Helper()
	r := e.run(prog, args...)
	if r.Code != 0 {
		e.t.Fatalf("%s %q: %s", prog, args, r)
	}
	return r.Stdout
}

// inSubenv runs sh -c script in a subenvironment as the env's identity.
func (e *env) inSubenv(script string) transtest.Result {
	e.t.Helper()
	return e.run("subenv", "run", "--", "sh", "-c", script)
}

// checkClean fails the test if anything of it is left: a mount under its
// dirs, a process started for it (ours carry its XDG_RUNTIME_DIR), a file
// in its runtime dir.
func (e *env) checkClean() {
	t := e.t
	t.Helper()
	var problems []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		problems = problems[:0]
		base := filepath.Dir(e.dir)
		for _, m := range fuseMounts() {
			if strings.HasPrefix(m, base+"/") {
				problems = append(problems, "mounted: "+m)
			}
		}
		for _, p := range processes() {
			if p.env("XDG_RUNTIME_DIR") == e.runtime {
				problems = append(problems, "running: "+strconv.Itoa(p.pid)+" "+p.cmdline)
			}
		}
		filepath.WalkDir(e.runtime, func(path string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				problems = append(problems, "in the runtime dir: "+path)
			}
			if err == nil && d.IsDir() && filepath.Dir(path) == filepath.Join(e.runtime, "herd") && d.Name() != "trans" {
				// $XDG_RUNTIME_DIR/herd/ID is a subenvironment's.
				problems = append(problems, "runtime dir left: "+path)
			}
			return nil
		})
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range problems {
		t.Error("left behind: " + p)
	}
	if len(problems) > 0 {
		// Clean up for the next tests.
		for _, p := range processes() {
			if p.env("XDG_RUNTIME_DIR") == e.runtime {
				syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
		for _, m := range fuseMounts() {
			if strings.HasPrefix(m, filepath.Dir(e.dir)+"/") {
				exec.Command("umount", "-l", m).Run()
			}
		}
	}
}

type proc struct {
	pid, ppid int
	exe       string
	cmdline   string
	environ   []string
}

func (p proc) env(name string) string {
	for _, kv := range p.environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// processes lists the host's processes (those of other pid namespaces
// included: we look from the initial one).
func processes() []proc {
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		p := proc{pid: pid}
		p.exe, _ = os.Readlink(filepath.Join("/proc", d.Name(), "exe"))
		cl, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		p.cmdline = strings.TrimSpace(strings.ReplaceAll(string(cl), "\x00", " "))
		if ev, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ")); err == nil {
			p.environ = strings.Split(string(ev), "\x00")
		}
		if st, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat")); err == nil {
			// pid (comm) state ppid ...: comm may hold spaces.
			if i := bytes.LastIndexByte(st, ')'); i > 0 {
				f := strings.Fields(string(st[i+1:]))
				if len(f) > 1 {
					p.ppid, _ = strconv.Atoi(f[1])
				}
			}
		}
		out = append(out, p)
	}
	return out
}

// descendants lists the processes below pid.
func descendants(pid int) []proc {
	ps := processes()
	in := map[int]bool{pid: true}
	var out []proc
	for changed := true; changed; {
		changed = false
		for _, p := range ps {
			if !in[p.pid] && in[p.ppid] {
				in[p.pid] = true
				out = append(out, p)
				changed = true
			}
		}
	}
	return out
}

// fuseMounts lists the mount points of FUSE mounts in our mount namespace.
func fuseMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields := strings.Fields(pre)
		typ := strings.Fields(post)
		if len(fields) > 4 && len(typ) > 0 && strings.HasPrefix(typ[0], "fuse") {
			out = append(out, unescape(fields[4]))
		}
	}
	return out
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// shq quotes s for sh.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func shJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shq(a)
	}
	return strings.Join(q, " ")
}
