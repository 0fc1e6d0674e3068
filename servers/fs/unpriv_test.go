package fs

import (
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"herd/proto"
)

const testUser = "herdfs"

// lookupTestUser returns herdfs's ids, creating the user if missing.
func lookupTestUser(t *testing.T) (uint32, uint32) {
	u, err := user.Lookup(testUser)
	if err != nil {
		if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", testUser).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v: %s", testUser, err, out)
		}
		if u, err = user.Lookup(testUser); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uint32(uid), uint32(gid)
}

// TestUnprivileged runs a copy-on-write server as the plain user herdfs
// (the test binary re-executed with that identity) over a tree the user owns.
func TestUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to the test user (CI runs as root)")
	}
	uid, gid := lookupTestUser(t)
	base, err := os.MkdirTemp("", "herd-fs-unpriv-")
	must(t, err)
	defer os.RemoveAll(base)
	must(t, os.Chmod(base, 0o755))
	lower, upper := filepath.Join(base, "lower"), filepath.Join(base, "upper")
	fillBasic(lower)
	must(t, os.Mkdir(upper, 0o755))
	// A root-owned file the user may read but not change.
	writeHost(t, filepath.Join(lower, "rootfile"), "root's")
	filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
		if err == nil && filepath.Base(p) != "rootfile" {
			os.Lchown(p, int(uid), int(gid))
		}
		return nil
	})
	// The test binary may sit in a directory only root can enter.
	self, err := os.Executable()
	must(t, err)
	bin := filepath.Join(base, "fs.test")
	copyFile(t, self, bin)
	before := snapshot(t, lower)
	cmd := exec.Command(bin, "-test.run=^TestUnprivilegedHelper$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "HERD_FS_UNPRIV_BASE="+base)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	cmd.Dir = base
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestUnprivilegedHelper") {
		t.Fatalf("helper as %s: %v\n%s", testUser, err, out)
	}
	t.Logf("helper as %s:\n%s", testUser, out)
	if after := snapshot(t, lower); after != before {
		t.Fatalf("lower changed:\n%s\n%s", before, after)
	}
	// What the user created is theirs.
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(upper, "d/made"), &st))
	if st.Uid != uid {
		t.Fatalf("created file owned by %d, want %d", st.Uid, uid)
	}
}

func copyFile(t *testing.T, from, to string) {
	in, err := os.Open(from)
	must(t, err)
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	must(t, err)
	_, err = io.Copy(out, in)
	must(t, err)
	must(t, out.Close())
}

// TestUnprivilegedHelper is the part TestUnprivileged runs as herdfs.
func TestUnprivilegedHelper(t *testing.T) {
	base := os.Getenv("HERD_FS_UNPRIV_BASE")
	if base == "" {
		t.Skip("helper of TestUnprivileged")
	}
	if os.Geteuid() == 0 {
		t.Fatal("helper runs as root")
	}
	rt, err := os.MkdirTemp(base, "run-")
	must(t, err)
	s, err := New(Options{Root: filepath.Join(base, "lower"), Upper: filepath.Join(base, "upper"), HideTmp: true, RuntimeDir: rt})
	must(t, err)
	defer s.Close()
	e := &env{t: t, s: s, lower: filepath.Join(base, "lower"), upper: filepath.Join(base, "upper"), cow: true}
	e.writeFile("d/f", "mine now")
	e.writeFile("d/made", "new")
	if got, _ := e.readFile("d/f"); got != "mine now" {
		t.Fatalf("d/f = %q", got)
	}
	must(t, e.s.Unlink(bg, e.node("d"), "f"))
	must(t, e.s.Rename(bg, e.node(""), "d", e.node(""), "d2", 0))
	must(t, e.s.Rename(bg, e.node(""), "d2", e.node(""), "d", 0))
	if got := e.list("d"); !reflect.DeepEqual(got, []string{"made", "sub"}) {
		t.Fatalf("d = %v", got)
	}
	must(t, e.s.SetXattr(bg, e.node("d/made"), "user.x", []byte("y"), 0))
	wantErrno(t, e.s.SetXattr(bg, e.node("d/made"), "trusted.x", []byte("y"), 0), syscall.EPERM)
	_, err = e.s.SetAttr(bg, e.node("d/made"), proto.SetAttrIn{Valid: proto.SetAttrUid, Uid: 0})
	wantErrno(t, err, syscall.EPERM)
	// A root-owned lower file read-only to us: reading works; copy-up on
	// write makes our own copy (the upper layer is ours), as overlayfs
	// would for the mounter.
	if got, _ := e.readFile("rootfile"); got != "root's" {
		t.Fatalf("rootfile = %q", got)
	}
	if got := e.list("tmp"); len(got) != 0 {
		t.Fatalf("/tmp shows %v", got)
	}
	e.writeFile("tmp/t", "x")
	// A passive translator on the user's own file, started as the user.
	must(t, e.s.SetXattr(bg, e.node("d/made"), xattrTranslator, nul(filepath.Join(base, "fs.test"), transFlag, "plain"), 0))
	en, err := e.s.Lookup(bg, e.node("d"), "made")
	must(t, err)
	got, c := through(t, en, "under")
	if got != "100000:new" {
		t.Fatalf("under = %q", got)
	}
	c.Close()
	if o := optsOf(t, e.s, en.Node); o["uid"] != strconv.Itoa(os.Getuid()) {
		t.Fatalf("translator uid %s", o["uid"])
	}
	e.s.Close()
	if ents, _ := os.ReadDir(rt); len(ents) != 0 {
		t.Fatalf("sockets left: %v", ents)
	}
}
