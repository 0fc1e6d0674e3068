package control_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"herd/translators/control"
	"herd/translators/internal/transtest"
)

// TestActiveHello is the translator primer on the host: settrans -a hello,
// read it, show it, change its options, and make it go away.
func TestActiveHello(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			node := e.file("hello", "underneath\n")
			e.ok("settrans", "-a", node, "hello", "--contents", "Hello, primer!\n")
			if !mounted(t, node) {
				t.Fatal("no mount on the node after settrans -a")
			}
			if got := e.ok("cat", node); got != "Hello, primer!\n" {
				t.Fatalf("cat = %q", got)
			}
			if got := e.ok("showtrans", "-a", node); got != "hello --contents $'Hello, primer!\\n'\n" {
				t.Fatalf("showtrans -a = %q", got)
			}
			if got := e.ok("fsysopts", node); !strings.Contains(got, "--contents") || !strings.Contains(got, "primer") {
				t.Fatalf("fsysopts = %q", got)
			}
			e.ok("fsysopts", node, "--contents=changed\n")
			if got := e.ok("fsysopts", node); got != "hello $'--contents=changed\\n'\n" {
				t.Fatalf("fsysopts after the change = %q", got)
			}
			// Read at once, through the kernel's page cache: fsysopts
			// returns once the mount dropped its cached copy.
			if got := e.ok("cat", node); got != "changed\n" {
				t.Fatalf("cat right after fsysopts = %q", got)
			}
			e.freshReads(node)
			st := e.state(node)
			if st == nil {
				t.Fatal("no state file for the running translator")
			}
			e.ok("settrans", "-g", node)
			if mounted(t, node) {
				t.Fatal("still mounted after settrans -g")
			}
			waitGone(t, st.HolderPid)
			waitGone(t, st.TranslatorPid)
			if got := e.ok("cat", node); got != "underneath\n" {
				t.Fatalf("after -g, cat = %q; want the file underneath", got)
			}
			if r := e.run("showtrans", "-a", node); r.Code != 1 || r.Stdout != "" {
				t.Fatalf("showtrans -a after -g: %+v", r)
			}
		})
	}
}

// TestPassiveHost stores, shows and clears a passive record on a host file.
func TestPassiveHost(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			node := e.file("p", "data\n")
			e.ok("settrans", "-p", node, "hello", "--contents", "x y")
			buf := make([]byte, 256)
			n, err := unix.Getxattr(node, control.XattrPassive, buf)
			if err != nil {
				t.Fatalf("xattr: %v", err)
			}
			if got := string(buf[:n]); got != "hello\x00--contents\x00x y" {
				t.Fatalf("xattr = %q", got)
			}
			if got := e.ok("showtrans", node); got != "hello --contents 'x y'\n" {
				t.Fatalf("showtrans = %q", got)
			}
			if got := e.ok("showtrans", "-p", node, node); got != node+": hello --contents 'x y'\n"+node+": hello --contents 'x y'\n" {
				t.Fatalf("showtrans -p (two nodes) = %q", got)
			}
			// The default is passive.
			e.ok("settrans", node, "hello")
			if got := e.ok("showtrans", node); got != "hello\n" {
				t.Fatalf("after replacing, showtrans = %q", got)
			}
			e.fails("already has a passive translator", "settrans", "-x", node, "hello")
			// No translator: clear.
			e.ok("settrans", node)
			if _, err := unix.Getxattr(node, control.XattrPassive, buf); err != unix.ENODATA {
				t.Fatalf("xattr after clearing: %v", err)
			}
			if r := e.run("showtrans", node); r.Code != 1 || r.Stdout != "" {
				t.Fatalf("showtrans of an untranslated node: %+v", r)
			}
			if r := e.run("showtrans", "-t", node); r.Code != 1 || r.Stdout != "" {
				t.Fatalf("showtrans -t: %+v", r)
			}
			if b, _ := os.ReadFile(node); string(b) != "data\n" {
				t.Fatalf("node contents changed: %q", b)
			}
			// -c creates the node for the record.
			created := filepath.Join(e.dir, "new")
			e.ok("settrans", "-c", created, "hello")
			if got := e.ok("showtrans", created); got != "hello\n" {
				t.Fatalf("showtrans of created node = %q", got)
			}
		})
	}
}

// TestPassiveWhileActive: setting the passive record under a running
// translator needs -k (keep) or -g (stop it), as on the Hurd.
func TestPassiveWhileActive(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			node := e.file("n", "under\n")
			e.ok("settrans", "-a", node, "hello", "--contents", "active\n")
			e.fails("has an active translator", "settrans", "-p", node, "hello", "--contents", "passive")
			e.ok("settrans", "-pk", node, "hello", "--contents", "passive")
			if got := e.ok("cat", node); got != "active\n" {
				t.Fatalf("-k did not keep the active one: cat = %q", got)
			}
			if got := e.ok("showtrans", node); got != "hello --contents passive\n" {
				t.Fatalf("showtrans = %q", got)
			}
			st := e.state(node)
			e.ok("settrans", "-g", "-p", node, "hello", "--contents", "second")
			if mounted(t, node) {
				t.Fatal("-g left the active translator mounted")
			}
			waitGone(t, st.TranslatorPid)
			if got := e.ok("showtrans", node); got != "hello --contents second\n" {
				t.Fatalf("showtrans after -g -p = %q", got)
			}
			// -a and -p together: run it and record it.
			e.ok("settrans", "-ap", node, "hello", "--contents", "both\n")
			if got := e.ok("cat", node); got != "both\n" {
				t.Fatalf("cat = %q", got)
			}
			if got := e.ok("showtrans", "-p", node); got != "hello --contents $'both\\n'\n" {
				t.Fatalf("showtrans -p = %q", got)
			}
			// settrans -g NODE clears the passive record and stops the active one.
			e.ok("settrans", "-g", node)
			if mounted(t, node) {
				t.Fatal("still mounted")
			}
			if r := e.run("showtrans", node); r.Code != 1 {
				t.Fatalf("passive record left after settrans -g: %+v", r)
			}
		})
	}
}

// TestBadInput: clear one-line errors, the node unchanged, nothing left
// running.
func TestBadInput(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			node := e.file("f", "same\n")
			unchanged := func() {
				t.Helper()
				if mounted(t, node) {
					t.Fatal("node left mounted")
				}
				if b, err := os.ReadFile(node); err != nil || string(b) != "same\n" {
					t.Fatalf("node changed: %q %v", b, err)
				}
				if n, _ := unix.Getxattr(node, control.XattrPassive, make([]byte, 64)); n > 0 {
					t.Fatal("node got a passive record")
				}
			}
			e.fails("translator no-such-translator not found (looked in", "settrans", "-a", node, "no-such-translator")
			unchanged()
			e.fails("translator no-such-translator not found", "settrans", "-p", node, "no-such-translator")
			unchanged()
			e.fails("exited at start", "settrans", "-a", node, "hello", "--no-such-flag")
			unchanged()
			// A translator that never answers its start-up handshake.
			e.fails("did not answer within 1s", "settrans", "-a", "-t", "1", node, "/bin/sleep", "600")
			unchanged()
			// A directory translator on a file, a file translator on a directory.
			d := filepath.Join(e.dir, "d")
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if e.cred != nil {
				os.Chown(d, int(e.cred.Uid), int(e.cred.Gid))
			}
			e.fails("is a directory but translator hello serves a regular file", "settrans", "-a", d, "hello")
			if mounted(t, d) {
				t.Fatal("directory left mounted")
			}
			// A missing node without -c.
			missing := filepath.Join(e.dir, "missing")
			e.fails("no such file or directory", "settrans", "-a", missing, "hello")
			e.fails("no such file or directory", "settrans", missing, "hello")
			if _, err := os.Lstat(missing); !os.IsNotExist(err) {
				t.Fatal("missing node was created")
			}
			e.fails("no such file or directory", "showtrans", missing)
			e.fails("no active translator", "fsysopts", node)
			// An active translator already there.
			e.ok("settrans", "-a", node, "hello", "--contents", "first\n")
			e.fails("already has an active translator", "settrans", "-a", node, "hello", "--contents", "second\n")
			e.fails("already has an active translator", "settrans", "-ax", node, "hello")
			if got := e.ok("cat", node); got != "first\n" {
				t.Fatalf("cat = %q", got)
			}
			old := e.state(node)
			e.ok("settrans", "-af", node, "hello", "--contents", "second\n")
			if got := e.ok("cat", node); got != "second\n" {
				t.Fatalf("after -f, cat = %q", got)
			}
			waitGone(t, old.TranslatorPid)
			e.ok("settrans", "-a", node) // no translator: make it go away
			unchanged()
			// Usage errors.
			e.fails("missing NODE", "settrans")
			e.fails("missing NODE", "showtrans")
			e.fails("missing NODE", "fsysopts")
		})
	}
	// A node another user owns.
	t.Run("not-owner", func(t *testing.T) {
		e := newEnv(t, "user")
		node := filepath.Join(e.dir, "roots")
		if err := os.WriteFile(node, []byte("root's\n"), 0o666); err != nil {
			t.Fatal(err)
		}
		e.fails("not the owner", "settrans", "-a", node, "hello")
		e.fails("not the owner", "settrans", "-p", node, "hello")
		if mounted(t, node) {
			t.Fatal("mounted on another user's node")
		}
		if n, _ := unix.Getxattr(node, control.XattrPassive, make([]byte, 64)); n > 0 {
			t.Fatal("record set on another user's node")
		}
	})
}

// TestCreateActive: -c makes a missing node of the translator's type, and
// a failed start removes it again.
func TestCreateActive(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			node := filepath.Join(e.dir, "made")
			e.ok("settrans", "-ac", node, "hello", "--contents", "made\n")
			if got := e.ok("cat", node); got != "made\n" {
				t.Fatalf("cat = %q", got)
			}
			e.ok("settrans", "-ga", node)
			if fi, err := os.Stat(node); err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("created node: %v %v", fi, err)
			}
			os.Remove(node)
			e.fails("exited at start", "settrans", "-ac", node, "hello", "--bad")
			if _, err := os.Lstat(node); !os.IsNotExist(err) {
				t.Fatal("failed start left the node it created")
			}
		})
	}
}

// TestPassiveSideTable: where the file refuses user xattrs (a fifo), the
// record goes to the directory's side table, in servers/fs's format.
func TestPassiveSideTable(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			fifo := filepath.Join(e.dir, "fifo")
			e.ok("mkfifo", fifo)
			e.ok("settrans", fifo, "hello", "--contents", "z")
			b, err := os.ReadFile(filepath.Join(e.dir, control.SideTable))
			if err != nil || string(b) != `{"fifo":"hello\u0000--contents\u0000z"}` {
				t.Fatalf("side table: %q %v", b, err)
			}
			if got := e.ok("showtrans", fifo); got != "hello --contents z\n" {
				t.Fatalf("showtrans = %q", got)
			}
			e.ok("settrans", fifo)
			if _, err := os.Stat(filepath.Join(e.dir, control.SideTable)); !os.IsNotExist(err) {
				t.Fatalf("side table left after clearing: %v", err)
			}
		})
	}
}

// TestActiveEnds: a translator that dies, or a mount someone else
// unmounts, takes the rest with it: no mount, no process, no runtime file.
func TestActiveEnds(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			node := e.file("k", "under\n")
			e.ok("settrans", "-a", node, "hello", "--contents", "doomed\n")
			st := e.state(node)
			if st == nil {
				t.Fatal("no state")
			}
			if err := syscall.Kill(st.TranslatorPid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitGone(t, st.HolderPid)
			if mounted(t, node) {
				t.Fatal("still mounted after the translator died")
			}
			if got := e.ok("cat", node); got != "under\n" {
				t.Fatalf("cat = %q", got)
			}

			e.ok("settrans", "-a", node, "hello", "--contents", "again\n")
			st = e.state(node)
			umount := []string{"fusermount3", "-u", node}
			if who == "root" {
				umount = []string{"umount", node}
			}
			e.ok(umount[0], umount[1:]...)
			waitGone(t, st.HolderPid)
			waitGone(t, st.TranslatorPid)
			if got := e.ok("cat", node); got != "under\n" {
				t.Fatalf("cat = %q", got)
			}
		})
	}
}

// TestChrootUsage: -C takes a command up to `--`.
func TestChrootUsage(t *testing.T) {
	e := newEnv(t, "root")
	node := e.file("c", "")
	e.fails("--chroot command must be terminated", "settrans", "-C", "ls", node, "hello")
	e.fails("--chroot must be followed by a command", "settrans", "-C", "--", node, "hello")
}

// TestChroot: settrans -C runs a command chroot'd to the translated node
// (here herd-fs serving a small tree with a static busybox), then the
// translator goes away.
func TestChroot(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox (Debian's busybox-static) is needed: ", err)
	}
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			tree := filepath.Join(e.dir, "tree")
			mnt := filepath.Join(e.dir, "mnt")
			for _, d := range []string{tree, filepath.Join(tree, "bin"), mnt} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(busybox)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(tree, "bin", "busybox"), b, 0o755)
			os.WriteFile(filepath.Join(tree, "greeting"), []byte("chrooted\n"), 0o644)
			if e.cred != nil {
				exec.Command("chown", "-R", fmt.Sprintf("%d:%d", e.cred.Uid, e.cred.Gid), tree, mnt).Run()
			}
			got := e.ok("settrans", "-C", "/bin/busybox", "cat", "/greeting", "--", mnt, "herd-fs", "--root", tree)
			if got != "chrooted\n" {
				t.Fatalf("settrans -C = %q", got)
			}
			if mounted(t, mnt) {
				t.Fatal("translator left mounted after -C")
			}
		})
	}
}

// TestHelp: --help explains on stdout; a bad flag is a one-line error.
func TestHelp(t *testing.T) {
	e := newEnv(t, "root")
	for _, prog := range []string{"settrans", "showtrans", "fsysopts"} {
		if got := e.ok(prog, "--help"); !strings.HasPrefix(got, "Usage: "+prog) {
			t.Errorf("%s --help = %q", prog, got)
		}
		e.fails("unknown flag: --no-such-flag (see "+prog+" --help)", prog, "--no-such-flag", "x")
	}
}

// TestOrphan: -o puts a new translator on the node without asking the old
// one to go away; the old one serves what it has open until closed, then
// goes, leaving the new one's socket and state alone. -F writes the pid.
func TestOrphan(t *testing.T) {
	e := newEnv(t, "root")
	node := e.file("o", "")
	e.ok("settrans", "-a", node, "hello", "--contents", "old\n")
	old := e.state(node)
	f, err := os.Open(node)
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(e.dir, "pid")
	e.ok("settrans", "-ao", "-F", pidFile, node, "hello", "--contents", "new\n")
	if got := e.ok("cat", node); got != "new\n" {
		t.Fatalf("cat = %q", got)
	}
	buf := make([]byte, 16)
	n, _ := f.ReadAt(buf, 0)
	if string(buf[:n]) != "old\n" {
		t.Fatalf("the open file reads %q", buf[:n])
	}
	f.Close()
	waitGone(t, old.HolderPid)
	waitGone(t, old.TranslatorPid)
	st := e.state(node)
	if st == nil || st.HolderPid == old.HolderPid {
		t.Fatalf("state after the old holder left: %+v", st)
	}
	if b, _ := os.ReadFile(pidFile); strings.TrimSpace(string(b)) != strconv.Itoa(st.TranslatorPid) {
		t.Fatalf("pid file %q, translator %d", b, st.TranslatorPid)
	}
	if got := e.ok("fsysopts", node); !strings.Contains(got, "new") {
		t.Fatalf("fsysopts = %q", got)
	}
	e.ok("settrans", "-g", node)
	waitGone(t, st.HolderPid)
}

// TestSymlinkRootRefused: a translator whose root is a symlink cannot be
// mounted on the host (the kernel refuses such a FUSE root): settrans -a
// says so in one line and leaves nothing behind.
func TestSymlinkRootRefused(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			node := filepath.Join(e.dir, "link")
			r := e.run("settrans", "-ac", node, "symlink", "/etc/hostname")
			if r.Code == 0 || !strings.Contains(r.Stderr, "root is a symlink") || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
				t.Fatalf("settrans -ac of a symlink translator: %+v; want a one-line refusal", r)
			}
			if _, err := os.Lstat(node); !os.IsNotExist(err) {
				t.Fatalf("refused settrans -ac left %s behind (%v)", node, err)
			}
		})
	}
}

// TestUnderlying: -U hands the translator another file as the node
// underneath it: tarfs, given no archive, serves the one -U names.
func TestUnderlying(t *testing.T) {
	for _, who := range identities {
		t.Run(who, func(t *testing.T) {
			e := newEnv(t, who)
			e.file("a.txt", "aaa\n")
			e.ok("tar", "-cf", "a.tar", "a.txt")
			node := filepath.Join(e.dir, "view")
			e.fails("--underlying goes with --active", "settrans", "-U", "a.tar", node, "tarfs")
			e.fails("underlying node: open "+filepath.Join(e.dir, "missing.tar")+": no such file", "settrans", "-ac", "-U", "missing.tar", node, "tarfs")
			if _, err := os.Lstat(node); !os.IsNotExist(err) {
				t.Fatalf("a refused settrans -ac left %s behind (%v)", node, err)
			}
			e.ok("settrans", "-ac", "-U", "a.tar", node, "tarfs") // relative to settrans's directory
			if got := e.ok("cat", filepath.Join(node, "a.txt")); got != "aaa\n" {
				t.Fatalf("cat view/a.txt = %q", got)
			}
			if got := e.ok("showtrans", "-a", node); got != "tarfs\n" {
				t.Errorf("showtrans -a = %q", got)
			}
			e.ok("settrans", "-g", node)
		})
	}
}

// TestPause: -P shows the translator's pid and waits for a newline on
// stdin before connecting to it and mounting it; end of input instead
// gives up, leaving nothing behind.
func TestPause(t *testing.T) {
	e := newEnv(t, "root")
	node := e.file("p", "")
	settrans := func(stdin io.Reader) *exec.Cmd {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		t.Cleanup(cancel)
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "settrans"), "-aP", node, "hello", "--contents", "paused\n")
		cmd.Env = append(transtest.WithoutEnv(os.Environ(), "XDG_RUNTIME_DIR", "HERD_TRANSLATORS"), "XDG_RUNTIME_DIR="+e.runtime)
		cmd.Dir = e.dir
		cmd.Stdin = stdin
		cmd.WaitDelay = 5 * time.Second
		return cmd
	}

	cmd := settrans(nil)
	goOn, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	msg := bufio.NewReader(stderr)
	line, err := msg.ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "Translator pid: "))
	if err != nil || perr != nil {
		t.Fatalf("settrans -P said %q (%v)", line, err)
	}
	pausing := make([]byte, len("Pausing..."))
	if _, err := io.ReadFull(msg, pausing); err != nil || string(pausing) != "Pausing..." {
		t.Fatalf("then %q (%v)", pausing, err)
	}
	if !controlAlive(pid) || mounted(t, node) {
		t.Fatalf("while paused: translator alive %v, node mounted %v; want alive, not mounted", controlAlive(pid), mounted(t, node))
	}
	goOn.Write([]byte("\n"))
	goOn.Close()
	rest, _ := io.ReadAll(msg)
	if err := cmd.Wait(); err != nil || len(rest) > 0 {
		t.Fatalf("settrans -P after the newline: %v: %s", err, rest)
	}
	if got := e.ok("cat", node); got != "paused\n" {
		t.Errorf("cat = %q", got)
	}
	if st := e.state(node); st == nil || st.TranslatorPid != pid {
		t.Errorf("state %+v; want translator pid %d", st, pid)
	}
	e.ok("settrans", "-g", node)

	out, err := settrans(strings.NewReader("")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no newline on stdin") {
		t.Fatalf("settrans -P with no input: %v: %s", err, out)
	}
	if mounted(t, node) {
		t.Error("mounted after the pause was refused")
	}
}
