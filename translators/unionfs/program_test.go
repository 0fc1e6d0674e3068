package unionfs_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"

	"herd/translators/kit/kittest"
	"herd/translators/unionfs"
)

var posixExceptions = map[string]string{
	"FcntlFlockLocksFile": "POSIX locks are per process: the kernel's local locking lets the same process lock again, as on any local filesystem",
}

// TestPosix runs go-fuse's posixtest on a union of an empty writable
// branch over an empty read-only one.
func TestPosix(t *testing.T) {
	var names []string
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixExceptions[name]; ok {
				t.Skip(why)
			}
			m := kittest.MountTranslator(t, unionfs.Translator(), "-w", t.TempDir(), t.TempDir())
			posixtest.All[name](t, m.Dir)
		})
	}
}

// TestProgram runs cmd/unionfs as settrans -a does on the host.
func TestProgram(t *testing.T) {
	upper, l1, l2 := branches(t)
	mnt := filepath.Join(kittest.TempDir(t), "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	kittest.RunMount(t, bin, mnt, "-w", upper, l1, l2)
	if got := names(t, mnt); got != "a b dir gone shared" {
		t.Errorf("lists %q", got)
	}
	must(t, os.WriteFile(filepath.Join(mnt, "b"), []byte("changed\n"), 0o644))
	if read(t, filepath.Join(upper, "b")) != "changed\n" || read(t, filepath.Join(l2, "b")) != "b from lower2\n" {
		t.Error("write did not copy up")
	}
}

// TestProgramUnprivileged: a plain user unions their directories in a
// user namespace, writes, deletes, and the program leaves nothing behind.
func TestProgramUnprivileged(t *testing.T) {
	base := kittest.TempDir(t)
	uid, gid := kittest.User(t, "herdunion")
	must(t, os.Chown(base, int(uid), int(gid)))
	out, err := kittest.AsUser(t, "herdunion", true, fmt.Sprintf(`
set -e
cd %[2]s
mkdir -p mine/up mine/low mine/mnt
echo low > mine/low/f
echo keep > mine/low/g
%[1]s -w mine/up mine/low --mount mine/mnt & pid=$!
waitmount %[2]s/mine/mnt
echo up >> mine/mnt/f
rm mine/mnt/g
ls mine/mnt
cat mine/mnt/f
cat mine/low/f
ls -a mine/up
kill $pid
wait $pid
echo "exit $?"
grep -c mine/mnt /proc/self/mountinfo || true
`, kittest.Quote(bin), kittest.Quote(base)))
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := "f\nlow\nup\nlow\n.\n..\n.wh.g\nf\nexit 0\n0\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestBadInput(t *testing.T) {
	dir := kittest.TempDir(t)
	file := filepath.Join(dir, "file")
	must(t, os.WriteFile(file, nil, 0o644))
	for _, c := range []struct {
		args   []string
		status int
		want   string
	}{
		{[]string{"--mount", dir}, 2, "no branches"},
		{[]string{"/nonexistent/herd", "--mount", dir}, 1, "branch /nonexistent/herd: no such file"},
		{[]string{file, "--mount", dir}, 1, "not a directory"},
		{[]string{"-r", dir, dir, "--mount", dir}, 2, "no branches to remove"},
		{[]string{"-u", "--socket", filepath.Join(dir, "sock")}, 1, "no underlying node"},
	} {
		out, err := exec.Command(bin, c.args...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != c.status {
			t.Errorf("%q: %v, want exit %d", c.args, err, c.status)
		}
		if !strings.Contains(string(out), c.want) || strings.Count(string(out), "\n") != 1 || !strings.HasPrefix(string(out), "unionfs: ") {
			t.Errorf("%q: %q, want one line with %q", c.args, out, c.want)
		}
	}
	if kittest.IsMounted(dir) {
		t.Error("left mounted")
	}
	out, err := exec.Command(bin, "--help").Output()
	if err != nil || !strings.Contains(string(out), "--writable") || !strings.Contains(string(out), "--remove") {
		t.Errorf("--help: %v: %s", err, out)
	}
}

// TestUnderlying: unionfs -u -w UPPER mounted on a directory shows the
// directory's own contents beneath UPPER's, as the Hurd's --underlying.
func TestUnderlying(t *testing.T) {
	base := kittest.TempDir(t)
	node, upper := filepath.Join(base, "node"), filepath.Join(base, "upper")
	must(t, os.MkdirAll(filepath.Join(node, "d"), 0o755))
	must(t, os.Mkdir(upper, 0o755))
	must(t, os.WriteFile(filepath.Join(node, "d/own"), []byte("own\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(upper, "top"), []byte("top\n"), 0o644))
	p := kittest.RunMount(t, bin, node, "-u", "-w", upper)
	if got := names(t, node); got != "d top" {
		t.Errorf("lists %q", got)
	}
	must(t, os.WriteFile(filepath.Join(node, "d/own"), []byte("changed\n"), 0o644))
	if read(t, filepath.Join(upper, "d/own")) != "changed\n" {
		t.Error("write did not copy up")
	}
	must(t, syscall.Unmount(node, 0))
	if err := p.Wait(t); err != nil {
		t.Errorf("after umount: %v: %s", err, p.Stderr)
	}
	if read(t, filepath.Join(node, "d/own")) != "own\n" {
		t.Error("the underlying directory changed")
	}
}

// TestRedirect: the program serves its socket (as settrans and the fs
// server start it) and a client reaches it through a redirect, as inside
// a subenvironment.
func TestRedirect(t *testing.T) {
	upper, l1, l2 := branches(t)
	sock := filepath.Join(kittest.TempDir(t), "unionfs.sock")
	kittest.RunSocket(t, bin, sock, "-w", upper, l1, l2)
	m := kittest.Mount(t, kittest.NewRedirector(map[string]string{"u": sock}))
	if got := names(t, filepath.Join(m.Dir, "u")); got != "a b dir gone shared" {
		t.Errorf("lists %q", got)
	}
	must(t, os.WriteFile(filepath.Join(m.Dir, "u/a"), []byte("through a redirect\n"), 0o644))
	if read(t, filepath.Join(upper, "a")) != "through a redirect\n" || read(t, filepath.Join(l1, "a")) != "a from lower1\n" {
		t.Error("write through the redirect did not copy up")
	}
}
