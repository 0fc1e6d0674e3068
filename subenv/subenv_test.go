package subenv

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
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"herd/internal/testbin"
	"herd/proto"
)

const acceptance = `echo hi > /tmp/%s; cat /tmp/%s; cat /etc/os-release`

func testAcceptance(t *testing.T, asUser bool) {
	e := newEnv(t, asUser)
	name := fmt.Sprintf("subenv-accept-%d-%d", os.Getpid(), time.Now().UnixNano())
	r := e.run("", "run", "--", "sh", "-c", fmt.Sprintf(acceptance, name, name))
	if r.code != 0 {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	osr, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	if want := "hi\n" + string(osr); r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	if _, err := os.Lstat("/tmp/" + name); err == nil {
		os.Remove("/tmp/" + name)
		t.Errorf("/tmp/%s appeared on the host", name)
	}
}

func TestAcceptanceRoot(t *testing.T) { testAcceptance(t, false) }
func TestAcceptanceUser(t *testing.T) { testAcceptance(t, true) }

// Inside, the user is root, /tmp is empty and private, and the usual
// devices, /proc, loopback and (the default nat network) eth0 are there.
func TestInsideView(t *testing.T) {
	for _, asUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("user=%v", asUser), func(t *testing.T) {
			e := newEnv(t, asUser)
			r := e.run("", "run", "--", "sh", "-c",
				`id -u; hostname; ls -A /tmp | wc -l; echo $PPID; test -c /dev/null && test -c /dev/urandom && echo devs; `+
					`head -c 4 /dev/zero | wc -c; test -d /proc/self && echo proc; cat /sys/class/net/lo/operstate 2>/dev/null || echo nosys; `+
					`ls /sys/class/net`)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
			}
			lines := strings.Fields(r.stdout)
			// The shell's parent is pid 1, the init.
			want := []string{"0", "subenv", "0", "1", "devs", "4", "proc", "unknown", "eth0", "lo"}
			if strings.Join(lines, " ") != strings.Join(want, " ") {
				t.Errorf("got %q, want %q", lines, want)
			}
		})
	}
}

func TestKeep(t *testing.T) {
	for _, asUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("user=%v", asUser), func(t *testing.T) {
			e := newEnv(t, asUser)
			r := e.run("", "run", "--keep", "k1", "--", "sh", "-c", "echo kept > /tmp/k; mkdir -p /tmp/kdir && echo x > /tmp/kdir/f")
			if r.code != 0 {
				t.Fatalf("first run: exit %d, stderr: %s", r.code, r.stderr)
			}
			r = e.run("", "run", "--keep", "k1", "--", "sh", "-c", "cat /tmp/k /tmp/kdir/f")
			if r.code != 0 || r.stdout != "kept\nx\n" {
				t.Fatalf("second run: exit %d, stdout %q, stderr: %s", r.code, r.stdout, r.stderr)
			}
			if _, err := os.Stat(filepath.Join(e.data, "herd", "keep", "k1")); err != nil {
				t.Errorf("keep dir: %v", err)
			}
			// Without --keep, nothing of it is seen.
			r = e.run("", "run", "--", "sh", "-c", "cat /tmp/k")
			if r.code == 0 {
				t.Errorf("a run without --keep saw the kept file")
			}
		})
	}
}

// minimalRoot makes a directory that can serve as --root: the host's /usr
// bound in (read-only) with the usual merged-/usr links.
func minimalRoot(t *testing.T, e *env) string {
	dir := filepath.Join(e.base, "tree")
	if err := os.MkdirAll(filepath.Join(dir, "usr"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if target, err := os.Readlink("/" + l); err == nil {
			os.Symlink(target, filepath.Join(dir, l))
		}
	}
	usr := filepath.Join(dir, "usr")
	if err := unix.Mount("/usr", usr, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(usr, unix.MNT_DETACH) })
	unix.Mount("", usr, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
	if e.cred != nil {
		os.Chown(dir, int(e.cred.Uid), int(e.cred.Gid))
	}
	return dir
}

func TestRWRoot(t *testing.T) {
	e := newEnv(t, false)
	dir := minimalRoot(t, e)
	r := e.run("", "run", "--rw", "--root", dir, "--", "sh", "-c", "echo through > /out; ls /")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, "out"))
	if err != nil || string(b) != "through\n" {
		t.Errorf("host %s/out: %q, %v", dir, b, err)
	}
	// Copy-on-write with the same root leaves the tree alone.
	r = e.run("", "run", "--root", dir, "--", "sh", "-c", "echo cow > /out2; cat /out")
	if r.code != 0 || r.stdout != "through\n" {
		t.Fatalf("exit %d, stdout %q, stderr: %s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out2")); err == nil {
		t.Errorf("copy-on-write run wrote into %s", dir)
	}
}

func TestExitStatus(t *testing.T) {
	e := newEnv(t, false)
	for _, c := range []struct {
		script string
		code   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"kill -TERM $$", 128 + 15},
		{"kill -KILL $$", 128 + 9},
	} {
		r := e.run("", "run", "--", "sh", "-c", c.script)
		if r.code != c.code {
			t.Errorf("%q: exit %d, want %d (stderr %q)", c.script, r.code, c.code, r.stderr)
		}
	}
}

func TestStdin(t *testing.T) {
	e := newEnv(t, true)
	in := strings.Repeat("line of input\n", 5000)
	r := e.run(in, "run", "--", "sh", "-c", "cat; echo done >&2")
	if r.code != 0 || r.stdout != in || r.stderr != "done\n" {
		t.Errorf("exit %d, stdout %d bytes (want %d), stderr %q", r.code, len(r.stdout), len(in), r.stderr)
	}
}

// A signal sent to subenv reaches the program, once.
func TestSignalForwarding(t *testing.T) {
	e := newEnv(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, "run", "--", "sh", "-c", `n=0; trap 'n=$((n+1)); echo int' INT; trap 'echo "int=$n"; exit 5' TERM; echo ready; while :; do sleep 0.05; done`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(out)
	if l, err := br.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("got %q, %v; stderr %s", l, err, stderr.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	if l, err := br.ReadString('\n'); err != nil || l != "int\n" {
		t.Fatalf("after SIGINT: got %q, %v; stderr %s", l, err, stderr.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	rest, _ := io.ReadAll(br)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 {
		t.Errorf("exit: %v, want status 5; stderr %s", err, stderr.String())
	}
	// One INT: forwarded once, not also delivered some other way.
	if string(rest) != "int=1\n" {
		t.Errorf("program saw %q, want int=1", rest)
	}
}

// --fs-socket: a server the user started themself.
func TestFSSocket(t *testing.T) {
	e := newEnv(t, false)
	fsBin := herdFS(t)
	sock := filepath.Join(e.base, "my.sock")
	upper := filepath.Join(e.base, "upper")
	os.Mkdir(upper, 0o700)
	srv := exec.Command(fsBin, "--socket", sock, "--upper", upper, "--hide-tmp")
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	// The server is ready when its socket answers.
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := proto.Dial(sock, proto.ClientOptions{})
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("herd-fs did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := e.run("", "run", "--fs-socket", sock, "--", "sh", "-c", "echo kept > /tmp/s; cat /tmp/s")
	if r.code != 0 || r.stdout != "kept\n" {
		t.Fatalf("exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	// The server is the user's: it goes on, with the write in its upper dir.
	if b, err := os.ReadFile(filepath.Join(upper, "tmp", "s")); err != nil || string(b) != "kept\n" {
		t.Errorf("upper/tmp/s: %q, %v", b, err)
	}
}

func TestMissingProgram(t *testing.T) {
	for _, asUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("user=%v", asUser), func(t *testing.T) {
			e := newEnv(t, asUser)
			r := e.run("", "run", "--", "no-such-program-herd")
			oneLine(t, r, "subenv: no-such-program-herd: no such file or directory")
			if r.code != 127 {
				t.Errorf("exit %d, want 127", r.code)
			}
			r = e.run("", "run", "--", "/etc/os-release")
			oneLine(t, r, "/etc/os-release: permission denied")
			if r.code != 126 {
				t.Errorf("exit %d, want 126", r.code)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, false)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("unknown flag", func(t *testing.T) {
		r := e.run("", "run", "--frobnicate", "--", "true")
		oneLine(t, r, "unknown flag: --frobnicate")
		if r.code != 2 {
			t.Errorf("exit %d, want 2", r.code)
		}
	})
	t.Run("no program", func(t *testing.T) {
		r := e.run("", "run")
		oneLine(t, r, "no program given")
	})
	t.Run("missing root", func(t *testing.T) {
		r := e.run("", "run", "--root", "/no/such/dir", "--", "true")
		oneLine(t, r, "--root /no/such/dir: no such file or directory")
	})
	t.Run("fs missing", func(t *testing.T) {
		r := e.run("", "run", "--fs", "/no/such/fs-server --flag", "--", "true")
		oneLine(t, r, "fs server /no/such/fs-server: no such file or directory")
	})
	t.Run("fs exits at start", func(t *testing.T) {
		r := e.run("", "run", "--fs", "/bin/false", "--", "true")
		oneLine(t, r, "fs server /bin/false exited at start (status 1)")
	})
	t.Run("fs speaks garbage", func(t *testing.T) {
		cmd := e.command(context.Background(), "run", "--fs", self, "--", "true")
		cmd.Env = append(cmd.Env, garbageEnv+"=1")
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		oneLine(t, result{out.String(), errb.String(), code}, "no herd protocol on its socket")
	})
	t.Run("socket of another user", func(t *testing.T) {
		uid, gid := testUser(t)
		sock := filepath.Join(e.base, "other.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		os.Chown(sock, int(uid), int(gid))
		r := e.run("", "run", "--fs-socket", sock, "--", "true")
		oneLine(t, r, "socket of another user")
	})
	t.Run("bad net", func(t *testing.T) {
		r := e.run("", "run", "--net", "carrier-pigeon", "--", "true")
		oneLine(t, r, "--net carrier-pigeon: unknown mode")
	})
}

func TestHelp(t *testing.T) {
	e := newEnv(t, false)
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"run", "-h"}, {"help", "run"}} {
		r := e.run("", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "subenv run") {
			t.Errorf("%q: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
	r := e.run("", "run", "--help")
	for _, flag := range []string{"--fs ", "--fs-arg", "--root", "--rw", "--keep", "--net", "-v"} {
		if !strings.Contains(r.stdout, flag) {
			t.Errorf("run --help does not explain %s", flag)
		}
	}
}

// herdFS builds cmd/herd-fs, which the tests with an external server use.
func herdFS(t *testing.T) string {
	t.Helper()
	p, err := testbin.Build("herd-fs")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExternalFS(t *testing.T) {
	for _, asUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("user=%v", asUser), func(t *testing.T) {
			e := newEnv(t, asUser)
			fsBin := herdFS(t)
			name := fmt.Sprintf("subenv-ext-%d", time.Now().UnixNano())
			r := e.run("", "run", "-v", "--fs", fsBin+" --hide-tmp", "--", "sh", "-c", fmt.Sprintf(acceptance, name, name))
			if r.code != 0 || !strings.HasPrefix(r.stdout, "hi\nPRETTY_NAME") {
				t.Fatalf("exit %d, stdout %q, stderr: %s", r.code, r.stdout, r.stderr)
			}
			if !regexp.MustCompile(`fs server .*herd-fs \(pid \d+\)`).MatchString(r.stderr) {
				t.Errorf("-v did not say which server started: %q", r.stderr)
			}
			if _, err := os.Lstat("/tmp/" + name); err == nil {
				os.Remove("/tmp/" + name)
				t.Errorf("/tmp/%s appeared on the host", name)
			}
		})
	}
}

// Killing the fs server during a read loop: the loop gets errors, subenv
// says the server died, exits non-zero and leaves nothing behind.
func TestServerKilled(t *testing.T) {
	e := newEnv(t, false)
	fsBin := herdFS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, "run", "-v", "--fs", fsBin+" --hide-tmp", "--", "sh", "-c",
		`i=0; while cat /etc/os-release > /dev/null; do i=$((i+1)); if [ $i = 20 ]; then echo looping; fi; done; echo "loop ended"; exit 3`)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	errLines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			errLines <- sc.Text()
		}
		close(errLines)
	}()
	pidRE := regexp.MustCompile(`fs server .*herd-fs \(pid (\d+)\)`)
	var all []string
	pid := 0
	for l := range errLines {
		all = append(all, l)
		if m := pidRE.FindStringSubmatch(l); m != nil {
			pid, _ = strconv.Atoi(m[1])
			break
		}
	}
	if pid == 0 {
		cmd.Wait()
		t.Fatalf("no server pid in -v output: %q", all)
	}
	br := bufio.NewReader(stdout)
	if l, err := br.ReadString('\n'); err != nil || l != "looping\n" {
		t.Fatalf("got %q, %v", l, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(br)
	for l := range errLines {
		all = append(all, l)
	}
	err := cmd.Wait()
	if ctx.Err() != nil {
		t.Fatal("subenv hung after its fs server was killed")
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code == 0 {
		t.Errorf("exit status 0 after the fs server died")
	}
	if !strings.Contains(string(rest), "loop ended") {
		t.Errorf("the read loop did not end with an error (stdout %q); exit %d", rest, code)
	}
	last := all[len(all)-1]
	if !strings.HasPrefix(last, "subenv: fs server died: ") || !strings.Contains(last, "killed by signal 9") {
		t.Errorf("last line %q, want subenv: fs server died: ... killed by signal 9 (all: %q)", last, all)
	}
}

// An interactive shell through a terminal: the shell gets the terminal as
// its controlling tty and runs what is typed.
func TestInteractivePTY(t *testing.T) {
	for _, asUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("user=%v", asUser), func(t *testing.T) {
			e := newEnv(t, asUser)
			ptm, pts := openPTY(t, e)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := e.command(ctx, "run", "--", "sh", "-i")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
			if cmd.SysProcAttr == nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{}
			}
			cmd.SysProcAttr.Setsid = true
			cmd.SysProcAttr.Setctty = true
			cmd.SysProcAttr.Ctty = 0
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pts.Close()
			seen := make(chan string, 1)
			go func() {
				var buf []byte
				b := make([]byte, 1024)
				for {
					n, err := ptm.Read(b)
					buf = append(buf, b[:n]...)
					if answered.MatchString(string(buf)) {
						seen <- string(buf)
						io.Copy(io.Discard, ptm)
						return
					}
					if err != nil {
						seen <- string(buf)
						return
					}
				}
			}()
			// Typed before the shell is up: the terminal buffers it.
			fmt.Fprintf(ptm, "echo $((6*7)); tty -s && echo tty=$(readlink /proc/self/fd/0)\n")
			select {
			case out := <-seen:
				if !answered.MatchString(out) {
					t.Errorf("no 42 in %q", out)
				}
			case <-ctx.Done():
				t.Fatal("no answer from the shell")
			}
			fmt.Fprintf(ptm, "exit 4\n")
			err := cmd.Wait()
			ptm.Close()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 {
				t.Errorf("exit: %v, want 4", err)
			}
		})
	}
}

// answered matches the shell's answers (not the terminal's echo of what
// was typed): 42, and the terminal as the shell's stdin.
var answered = regexp.MustCompile(`(?s)[^(]42\r?\n.*tty=/dev/pts/\d+`)

// openPTY opens a pseudo-terminal pair with /dev/ptmx (no dependency).
func openPTY(t *testing.T, e *env) (ptm, pts *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	name := "/dev/pts/" + strconv.Itoa(n)
	if e.cred != nil {
		os.Chown(name, int(e.cred.Uid), -1)
	}
	s, err := os.OpenFile(name, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// examples/confguard, a custom server written as a user would, run with
// --fs: writes to *.conf are refused inside, everything else works.
func TestConfguard(t *testing.T) {
	e := newEnv(t, false)
	dir, err := testbin.Dir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "confguard")
	if _, err := os.Stat(bin); err != nil {
		build := exec.Command("go", "build", "-o", bin, "herd/examples/confguard")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building examples/confguard: %v\n%s", err, out)
		}
	}
	r := e.run("", "run", "--fs", bin, "--", "sh", "-c",
		`if echo a > /tmp/x.conf; then echo written; else echo refused; fi; echo b > /tmp/y.txt && cat /tmp/y.txt; test -e /tmp/x.conf || echo "no x.conf"`)
	if r.code != 0 {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	if r.stdout != "refused\nb\nno x.conf\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "confguard: refused create of tmp/x.conf") || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("stderr %q", r.stderr)
	}
}

// A subenv killed with SIGKILL cannot clean up; its namespaces die with it
// (the init has a parent-death signal) and the next subenv removes its
// runtime dir.
func TestKilledLauncherSwept(t *testing.T) {
	e := newEnv(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, "run", "--", "sh", "-c", "echo up; exec sleep 1000")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if l, err := bufio.NewReader(out).ReadString('\n'); err != nil || l != "up\n" {
		t.Fatalf("got %q, %v", l, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	ents, _ := os.ReadDir(filepath.Join(e.runtime, "herd"))
	if len(ents) != 1 {
		t.Fatalf("want the killed subenv's runtime dir left, got %v", ents)
	}
	if r := e.run("", "run", "--", "true"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	// checkClean (at cleanup) finds no runtime dir and no process left.
}

// expecter reads a terminal's output and waits for patterns in it.
type expecter struct {
	t    *testing.T
	out  chan []byte
	buf  []byte
	done bool
}

func newExpecter(t *testing.T, ptm *os.File) *expecter {
	e := &expecter{t: t, out: make(chan []byte, 64)}
	go func() {
		for {
			b := make([]byte, 4096)
			n, err := ptm.Read(b)
			if n > 0 {
				e.out <- b[:n]
			}
			if err != nil {
				close(e.out)
				return
			}
		}
	}()
	return e
}

// expect waits until the output since the last match matches re.
func (e *expecter) expect(re string) {
	e.t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(time.Minute)
	for {
		if loc := rx.FindIndex(e.buf); loc != nil {
			e.buf = e.buf[loc[1]:]
			return
		}
		select {
		case b, ok := <-e.out:
			if !ok {
				e.t.Fatalf("terminal closed waiting for %q; output: %q", re, e.buf)
			}
			e.buf = append(e.buf, b...)
		case <-timeout:
			e.t.Fatalf("no %q in the terminal's output: %q", re, e.buf)
		}
	}
}

// ^Z on a program inside stops subenv as a job of the user's shell; fg
// continues the program with the terminal, bg without.
func TestJobControl(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is needed for the job control test")
	}
	e := newEnv(t, false)
	ptm, pts := openPTY(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sh := exec.CommandContext(ctx, bash, "--norc", "--noprofile", "-i")
	sh.Env = append(e.command(ctx).Env, "PS1=P$ ", "TERM=dumb", "SUBENV="+subenvBin)
	sh.Stdin, sh.Stdout, sh.Stderr = pts, pts, pts
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	x := newExpecter(t, ptm)
	x.expect(`P\$ `)
	fmt.Fprintf(ptm, "$SUBENV run -- sh -c 'echo started; read line; echo got=$line'\n")
	x.expect("\nstarted")
	ptm.Write([]byte{0x1a}) // ^Z
	x.expect(`Stopped\s+\$SUBENV run`)
	x.expect(`P\$ `)
	fmt.Fprintf(ptm, "fg\n")
	x.expect(`\$SUBENV run`)
	fmt.Fprintf(ptm, "hello\n")
	x.expect("got=hello")
	x.expect(`P\$ `)
	fmt.Fprintf(ptm, "$SUBENV run -- sh -c 'echo sleeping; exec sleep 1000'\n")
	x.expect("\nsleeping")
	ptm.Write([]byte{0x1a})
	x.expect(`Stopped\s+\$SUBENV run -- sh`)
	fmt.Fprintf(ptm, "bg; kill %%1; wait %%1; echo status=$?\n")
	x.expect("status=143")
	fmt.Fprintf(ptm, "exit\n")
	if err := sh.Wait(); err != nil {
		t.Errorf("bash: %v", err)
	}
}

// The fs server's socket in the runtime dir serves other clients
// (translators, tools) besides the bridge; a change made through it reaches
// the program's view (the server's invalidations go to every session).
func TestServerSocket(t *testing.T) {
	e := newEnv(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, "run", "--", "sh", "-c", `test -e /tmp/f || echo absent; read x; `+
		// The server's notice travels apart from the other client's
		// answer: the name shows within moments, not necessarily at once.
		`i=0; while [ ! -e /tmp/f ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done; cat /tmp/f`)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	br := bufio.NewReader(stdout)
	if l, err := br.ReadString('\n'); err != nil || l != "absent\n" {
		t.Fatalf("got %q, %v; stderr %s", l, err, stderr.String())
	}
	socks, _ := filepath.Glob(filepath.Join(e.runtime, "herd", "*", "fs.sock"))
	if len(socks) != 1 {
		t.Fatalf("want one fs.sock in the runtime dir, got %v", socks)
	}
	c, err := proto.Dial(socks[0], proto.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cctx := proto.WithCaller(ctx, proto.Caller{})
	root, err := c.Root(cctx)
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := c.Lookup(cctx, root.Node, "tmp")
	if err != nil {
		t.Fatal(err)
	}
	_, or, err := c.Create(cctx, tmp.Node, "f", uint32(os.O_WRONLY|os.O_CREATE), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if or.File != nil {
		or.File.Close()
	}
	if _, err := c.Write(cctx, or.Handle, 0, []byte("via socket\n")); err != nil {
		t.Fatal(err)
	}
	c.Release(cctx, or.Handle)
	fmt.Fprintln(stdin, "go")
	rest, _ := io.ReadAll(br)
	if string(rest) != "via socket\n" {
		t.Errorf("program saw %q after the change through the socket; stderr %s", rest, stderr.String())
	}
}

// A program that does not notice its fs server died (it touches no file)
// is ended after the grace period, with the whole pid namespace.
func TestServerKilledGrace(t *testing.T) {
	e := newEnv(t, false)
	fsBin := herdFS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, "run", "-v", "--fs", fsBin+" --hide-tmp", "--", "sh", "-c",
		`sleep 1000 & until [ "$(readlink /proc/$!/exe)" = "$(readlink -f "$(command -v sleep)")" ]; do :; done; echo up; wait`)
	stdout, _ := cmd.StdoutPipe()
	var stderr syncBuilder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if l, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || l != "up\n" {
		t.Fatalf("got %q, %v; stderr %s", l, err, stderr.String())
	}
	m := regexp.MustCompile(`herd-fs \(pid (\d+)\)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no server pid in %q", stderr.String())
	}
	pid, _ := strconv.Atoi(m[1])
	syscall.Kill(pid, syscall.SIGKILL)
	err := cmd.Wait()
	if ctx.Err() != nil {
		t.Fatal("subenv did not end the program after the grace period")
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 128+9 {
		t.Errorf("exit: %v, want 137 (the namespace was killed); stderr %s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "subenv: fs server died: ") {
		t.Errorf("stderr %q", stderr.String())
	}
}

// syncBuilder is a strings.Builder safe for a writer goroutine and a reader.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A plain user with an /etc/subuid range (useradd gives herdtest one) gets
// it inside, above root, so programs can switch users (the default,
// --subuid); with --no-subuid the user is mapped alone.
func TestSubIDs(t *testing.T) {
	e := newEnv(t, true)
	// The range is optional (DESIGN.md, rule 6): without the helpers or a
	// range there is nothing to test but the fallback, which every other
	// unprivileged test exercises.
	if _, err := exec.LookPath("newuidmap"); err != nil {
		t.Skip("newuidmap is not installed (Debian package uidmap)")
	}
	if _, _, ok := subIDRange("/etc/subuid", "herdtest", -1); !ok {
		t.Skip("herdtest has no /etc/subuid range")
	}
	r := e.run("", "run", "--subuid", "--", "sh", "-c", "wc -l < /proc/self/uid_map; setpriv --reuid=5 --regid=5 --clear-groups id -u")
	if r.code != 0 || r.stdout != "2\n5\n" {
		t.Errorf("with the range: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	r = e.run("", "run", "--no-subuid", "--", "sh", "-c", "wc -l < /proc/self/uid_map; id -u")
	if r.code != 0 || r.stdout != "1\n0\n" {
		t.Errorf("with --no-subuid: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
}

// TestClosedConn: the handshake errors of a server that exited at once are
// all taken as a closed connection, so that subenv says the server exited
// rather than that it speaks no protocol ("fs exits at start" above failed
// under load when the session ended before its first stream opened).
func TestClosedConn(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("proto: handshake: %w", yamux.ErrSessionShutdown),
		fmt.Errorf("proto: handshake failed: %w", io.EOF),
		fmt.Errorf("dial: %w", syscall.ECONNRESET),
	} {
		if !closedConn(err) {
			t.Errorf("closedConn(%v) = false", err)
		}
	}
	if closedConn(errors.New("proto: handshake: the peer does not speak herd's protocol")) {
		t.Errorf("a peer speaking garbage taken for a closed connection")
	}
}
