package unionfs_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"herd/translators/internal/transtest"
	"herd/translators/kit/kittest"
	"herd/translators/unionfs"
)

// TestPosix runs go-fuse's posixtest on a union of an empty writable
// branch over an empty read-only one.
func TestPosix(t *testing.T) {
	kittest.Posix(t, func(t *testing.T) string {
		return kittest.MountTranslator(t, unionfs.Translator(), "-w", t.TempDir(), t.TempDir()).Dir
	})
}

// TestProgram runs cmd/unionfs as settrans -a does on the host.
func TestProgram(t *testing.T) {
	upper, l1, l2 := branches(t)
	mnt := filepath.Join(kittest.TempDir(t), "mnt")
	transtest.Must(t, os.Mkdir(mnt, 0o755))
	kittest.RunMount(t, bin, mnt, "-w", upper, l1, l2)
	if got := transtest.Names(t, mnt); got != "a,b,dir/,gone/,shared" {
		t.Errorf("lists %q", got)
	}
	transtest.Must(t, os.WriteFile(filepath.Join(mnt, "b"), []byte("changed\n"), 0o644))
	if read(t, filepath.Join(upper, "b")) != "changed\n" || read(t, filepath.Join(l2, "b")) != "b from lower2\n" {
		t.Error("write did not copy up")
	}
}

// TestProgramUnprivileged: a plain user unions their directories in a
// user namespace, writes, deletes, and the program leaves nothing behind.
func TestProgramUnprivileged(t *testing.T) {
	base := kittest.TempDir(t)
	uid, gid := transtest.User(t, "herdkit")
	transtest.Must(t, os.Chown(base, int(uid), int(gid)))
	out, err := kittest.AsUser(t, "herdkit", true, fmt.Sprintf(`
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
	transtest.Must(t, os.WriteFile(file, nil, 0o644))
	kittest.Refuses(t, bin, "", dir, []kittest.Refusal{
		{Args: []string{"--mount", dir}, Status: 2, Want: "no branches"},
		{Args: []string{"/nonexistent/herd", "--mount", dir}, Status: 1, Want: "branch /nonexistent/herd: no such file"},
		{Args: []string{file, "--mount", dir}, Status: 1, Want: "not a directory"},
		{Args: []string{"-r", dir, dir, "--mount", dir}, Status: 2, Want: "no branches to remove"},
		{Args: []string{"-u", "--socket", filepath.Join(dir, "sock")}, Status: 1, Want: "no underlying node"},
	})
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
	transtest.Must(t, os.MkdirAll(filepath.Join(node, "d"), 0o755))
	transtest.Must(t, os.Mkdir(upper, 0o755))
	transtest.Must(t, os.WriteFile(filepath.Join(node, "d/own"), []byte("own\n"), 0o644))
	transtest.Must(t, os.WriteFile(filepath.Join(upper, "top"), []byte("top\n"), 0o644))
	p := kittest.RunMount(t, bin, node, "-u", "-w", upper)
	if got := transtest.Names(t, node); got != "d/,top" {
		t.Errorf("lists %q", got)
	}
	transtest.Must(t, os.WriteFile(filepath.Join(node, "d/own"), []byte("changed\n"), 0o644))
	if read(t, filepath.Join(upper, "d/own")) != "changed\n" {
		t.Error("write did not copy up")
	}
	transtest.Must(t, syscall.Unmount(node, 0))
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
	if got := transtest.Names(t, filepath.Join(m.Dir, "u")); got != "a,b,dir/,gone/,shared" {
		t.Errorf("lists %q", got)
	}
	transtest.Must(t, os.WriteFile(filepath.Join(m.Dir, "u/a"), []byte("through a redirect\n"), 0o644))
	if read(t, filepath.Join(upper, "a")) != "through a redirect\n" || read(t, filepath.Join(l1, "a")) != "a from lower1\n" {
		t.Error("write through the redirect did not copy up")
	}
}
