package subenv

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The default fs server (no --fs) is a process of its own, herd-fs run
// from the subenv binary, reached over the protocol on its socket like any
// --fs program: the launcher serves no file itself. Killed with SIGKILL, it
// takes the program's file access with it (EIO), and subenv names it.
func TestDefaultServerProcess(t *testing.T) {
	for _, asUser := range []bool{false, true} {
		t.Run(fmt.Sprintf("user=%v", asUser), func(t *testing.T) {
			e := newEnv(t, asUser)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := e.command(ctx, "run", "-v", "--net", "none", "--", "sh", "-c",
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
			br := bufio.NewReader(stdout)
			if l, err := br.ReadString('\n'); err != nil || l != "looping\n" {
				stop(cmd)
				t.Fatalf("got %q, %v; stderr %q", l, err, drain(errLines))
			}
			// -v said which server started where before the program ran
			// (before the line about the root).
			var all []string
			re := regexp.MustCompile(`^subenv: fs server herd-fs \(pid (\d+)\) serving / on (\S+) `)
			pid, sock := 0, ""
			for l := range errLines {
				all = append(all, l)
				if m := re.FindStringSubmatch(l); m != nil {
					pid, _ = strconv.Atoi(m[1])
					sock = m[2]
					break
				}
				if strings.HasPrefix(l, "subenv: root mounted") {
					break
				}
			}
			if pid == 0 {
				stop(cmd)
				t.Fatalf("-v did not say which fs server started where: %q", all)
			}
			if !checkServerProcess(t, cmd.Process.Pid, pid, sock) {
				stop(cmd)
				return
			}

			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(br)
			all = append(all, drain(errLines)...)
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
			if !strings.Contains(strings.Join(all, "\n"), "Input/output error") {
				t.Errorf("the program saw no EIO: %q", all)
			}
			last := all[len(all)-1]
			want := fmt.Sprintf("subenv: fs server died: herd-fs (pid %d) killed by signal 9", pid)
			if !strings.HasPrefix(last, want) {
				t.Errorf("last line %q, want %q... (all: %q)", last, want, all)
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				t.Errorf("server process %d still there after subenv ended", pid)
			}
		})
	}
}

// checkServerProcess checks that the fs server with pid is a process of
// its own, the subenv binary as `subenv herd-fs`, a child of the launcher,
// and that it, not the launcher, holds the server's side of the socket and
// the tree it serves (the upper layer).
func checkServerProcess(t *testing.T, launcher, pid int, sock string) bool {
	t.Helper()
	if pid == launcher {
		t.Errorf("the fs server is the launcher (pid %d)", pid)
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Error(err)
		return false
	}
	// pid (comm) state ppid ...
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if ppid, _ := strconv.Atoi(f[1]); ppid != launcher {
		t.Errorf("fs server %d: parent %d, want the launcher %d", pid, ppid, launcher)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if args := strings.Split(string(cmdline), "\x00"); len(args) < 2 || args[0] != "subenv" || args[1] != "herd-fs" {
		t.Errorf("fs server %d: command line %q, want subenv herd-fs ...", pid, args)
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(comm) != "herd-fs\n" {
		t.Errorf("fs server %d: comm %q, want herd-fs", pid, comm)
	}
	exe, _ := os.Stat(fmt.Sprintf("/proc/%d/exe", pid))
	bin, _ := os.Stat(subenvBin)
	if exe == nil || bin == nil || !os.SameFile(exe, bin) {
		t.Errorf("fs server %d does not run the subenv binary %s", pid, subenvBin)
	}

	// The server's end of the socket: the listener and accepted
	// connections are the sockets /proc/net/unix lists with its path.
	serverSocks := map[string]bool{}
	nu, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Error(err)
		return false
	}
	for _, l := range strings.Split(string(nu), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) == 8 && f[7] == sock {
			serverSocks["socket:["+f[6]+"]"] = true
		}
	}
	if len(serverSocks) == 0 {
		t.Errorf("no socket at %s in /proc/net/unix", sock)
		return false
	}
	upper := filepath.Join(filepath.Dir(sock), "upper")
	holds := func(p int) (socks, uppers int) {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		if err != nil {
			t.Error(err)
		}
		for _, ent := range ents {
			target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p, ent.Name()))
			if serverSocks[target] {
				socks++
			}
			if target == upper || strings.HasPrefix(target, upper+"/") {
				uppers++
			}
		}
		return
	}
	if s, u := holds(pid); s == 0 || u == 0 {
		t.Errorf("fs server %d holds %d of the server sockets at %s and %d fds in %s, want both > 0", pid, s, sock, u, upper)
	}
	if s, u := holds(launcher); s != 0 || u != 0 {
		t.Errorf("the launcher %d holds %d server sockets at %s and %d fds in %s: it serves files itself", launcher, s, sock, u, upper)
	}
	return !t.Failed()
}

// stop ends a subenv whose test failed, as a user would (SIGTERM goes to
// the program; subenv cleans up), so that the failure leaves nothing behind.
func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

func drain(c <-chan string) []string {
	var out []string
	for l := range c {
		out = append(out, l)
	}
	return out
}

// A server that takes longer than a call's deadline (5 s) to start, as on
// a loaded machine, is still waited for: the launcher gives a server it
// started the whole handshake timeout.
func TestSlowServerStart(t *testing.T) {
	e := newEnv(t, false)
	fsBin := herdFS(t)
	r := e.run("", "run", "--net", "none", "--fs", "sh", "--fs-arg=-c", "--fs-arg=sleep 6; exec "+fsBin+" --hide-tmp",
		"--", "sh", "-c", "echo hi > /tmp/x; cat /tmp/x")
	if r.code != 0 || r.stdout != "hi\n" {
		t.Errorf("exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
}
