package fs

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"herd/proto"
)

// The owner records' test user (U's), with an /etc/subuid range.
const ownerUser = "herdsub"

// subUser makes sure name exists and has /etc/subuid and /etc/subgid ranges
// (Debian's useradd adds them when /etc/subuid exists; else usermod does),
// and returns its uid, gid and the start of its ranges.
func subUser(t *testing.T, name string) (uid, gid uint32, subUID, subGID uint32) {
	t.Helper()
	if _, err := user.Lookup(name); err != nil {
		if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
			if _, err2 := user.Lookup(name); err2 != nil {
				t.Fatalf("useradd %s: %v: %s", name, err, out)
			}
		}
	}
	u, err := user.Lookup(name)
	must(t, err)
	for _, f := range []struct{ file, flag string }{{"/etc/subuid", "--add-subuids"}, {"/etc/subgid", "--add-subgids"}} {
		if rs := subRanges(f.file, name, -1); len(rs) > 0 {
			continue
		}
		// Past every range given so far.
		end := uint64(100000)
		b, _ := os.ReadFile(f.file)
		for _, line := range strings.Split(string(b), "\n") {
			p := strings.Split(line, ":")
			if len(p) == 3 {
				s, _ := strconv.ParseUint(p[1], 10, 32)
				c, _ := strconv.ParseUint(p[2], 10, 32)
				end = max(end, s+c)
			}
		}
		r := strconv.FormatUint(end, 10) + "-" + strconv.FormatUint(end+65535, 10)
		if out, err := exec.Command("usermod", f.flag, r, name).CombinedOutput(); err != nil {
			t.Fatalf("usermod %s %s %s: %v: %s", f.flag, r, name, err, out)
		}
	}
	us, gs := subRanges("/etc/subuid", name, -1), subRanges("/etc/subgid", name, -1)
	if len(us) == 0 || len(gs) == 0 {
		t.Fatalf("%s has no /etc/subuid or /etc/subgid range", name)
	}
	ui, _ := strconv.Atoi(u.Uid)
	gi, _ := strconv.Atoi(u.Gid)
	return uint32(ui), uint32(gi), us[0].start, gs[0].start
}

// TestOwnerRecords runs a copy-on-write server as the plain user herdsub:
// owners of the user's /etc/subuid range that it cannot set on the host are
// recorded and reported, survive a restart on the same layer, and cannot be
// seen or forged through xattrs; other owners are refused as before.
func TestOwnerRecords(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to the test user (CI runs as root)")
	}
	uid, gid, _, _ := subUser(t, ownerUser)
	base, err := os.MkdirTemp("", "herd-fs-owner-")
	must(t, err)
	defer os.RemoveAll(base)
	must(t, os.Chmod(base, 0o755))
	lower, upper := filepath.Join(base, "lower"), filepath.Join(base, "upper")
	must(t, os.Mkdir(lower, 0o755))
	must(t, os.Mkdir(upper, 0o755))
	writeHost(t, filepath.Join(lower, "f"), "lower")
	must(t, os.Mkdir(filepath.Join(lower, "d"), 0o755))
	filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			os.Lchown(p, int(uid), int(gid))
		}
		return nil
	})
	self, err := os.Executable()
	must(t, err)
	bin := filepath.Join(base, "fs.test")
	copyFile(t, self, bin)
	cmd := exec.Command(bin, "-test.run=^TestOwnerRecordsHelper$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "HERD_FS_OWNER_BASE="+base)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	cmd.Dir = base
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestOwnerRecordsHelper") {
		t.Fatalf("helper as %s: %v\n%s", ownerUser, err, out)
	}
	t.Logf("helper as %s:\n%s", ownerUser, out)
	// On the host every file stays the user's.
	filepath.Walk(upper, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Sys().(*syscall.Stat_t).Uid != uid {
			t.Errorf("%s is owned by %d on the host, want %d", p, fi.Sys().(*syscall.Stat_t).Uid, uid)
		}
		return nil
	})
}

// TestOwnerRecordsHelper is the part TestOwnerRecords runs as herdsub.
func TestOwnerRecordsHelper(t *testing.T) {
	base := os.Getenv("HERD_FS_OWNER_BASE")
	if base == "" {
		t.Skip("helper of TestOwnerRecords")
	}
	if os.Geteuid() == 0 {
		t.Fatal("helper runs as root")
	}
	me, mygid := uint32(os.Geteuid()), uint32(os.Getegid())
	u, err := user.Current()
	must(t, err)
	us, gs := subRanges("/etc/subuid", u.Username, -1), subRanges("/etc/subgid", u.Username, -1)
	if len(us) == 0 || len(gs) == 0 {
		t.Fatal("no range")
	}
	// Uid 1000 and gid 1000 inside.
	su, sg := us[0].start+999, gs[0].start+999
	lower, upper := filepath.Join(base, "lower"), filepath.Join(base, "upper")
	s, err := New(Options{Root: lower, Upper: upper})
	must(t, err)
	e := &env{t: t, s: s, lower: lower, upper: upper, cow: true}
	owner := func(p string) (uint32, uint32) {
		t.Helper()
		a, err := e.s.GetAttr(bg, e.node(p))
		must(t, err)
		en, err := e.walk(p)
		must(t, err)
		if en.Attr.Uid != a.Uid || en.Attr.Gid != a.Gid {
			t.Fatalf("%s: lookup says %d:%d, getattr %d:%d", p, en.Attr.Uid, en.Attr.Gid, a.Uid, a.Gid)
		}
		return a.Uid, a.Gid
	}
	want := func(p string, uid, gid uint32) {
		t.Helper()
		if u, g := owner(p); u != uid || g != gid {
			t.Fatalf("%s owned by %d:%d, want %d:%d", p, u, g, uid, gid)
		}
	}

	// chown of a lower file to the range: copied up, recorded.
	a, err := e.s.SetAttr(bg, e.node("f"), proto.SetAttrIn{Valid: proto.SetAttrUid | proto.SetAttrGid, Uid: su, Gid: sg})
	must(t, err)
	if a.Uid != su || a.Gid != sg {
		t.Fatalf("setattr answered %d:%d", a.Uid, a.Gid)
	}
	want("f", su, sg)
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(upper, "f"), &st))
	if st.Uid != me {
		t.Fatalf("upper f owned by %d on the host", st.Uid)
	}
	// chgrp alone keeps the recorded uid.
	_, err = e.s.SetAttr(bg, e.node("f"), proto.SetAttrIn{Valid: proto.SetAttrGid, Gid: mygid})
	must(t, err)
	want("f", su, mygid)

	// The records are nobody's business inside.
	if _, err := e.s.GetXattr(bg, e.node("f"), xattrOwner); err == nil {
		t.Fatal("user.herd.owner readable")
	}
	l, err := e.s.ListXattr(bg, e.node("f"))
	must(t, err)
	if slices.ContainsFunc(l, ownerXattr) {
		t.Fatalf("listed: %v", l)
	}
	wantErrno(t, e.s.SetXattr(bg, e.node("f"), xattrOwner, []byte("0:0"), 0), syscall.EPERM)
	wantErrno(t, e.s.RemoveXattr(bg, e.node("f"), xattrOwner), syscall.EPERM)

	// Ids the user could not map stay refused.
	_, err = e.s.SetAttr(bg, e.node("f"), proto.SetAttrIn{Valid: proto.SetAttrUid, Uid: 0})
	wantErrno(t, err, syscall.EPERM)
	_, err = e.s.SetAttr(bg, e.node("f"), proto.SetAttrIn{Valid: proto.SetAttrUid, Uid: us[0].start + us[0].count})
	wantErrno(t, err, syscall.EPERM)

	// Created by uid 1000: theirs.
	as := proto.WithCaller(context.Background(), proto.Caller{Uid: su, Gid: sg})
	_, err = e.s.Mkdir(as, e.node("d"), "sub", 0o755)
	must(t, err)
	en, r, err := e.s.Create(as, e.node("d"), "new", unix.O_WRONLY, 0o644)
	must(t, err)
	if en.Attr.Uid != su || en.Attr.Gid != sg {
		t.Fatalf("create answered %d:%d", en.Attr.Uid, en.Attr.Gid)
	}
	// Through the open handle too.
	a, err = e.s.SetAttr(bg, en.Node, proto.SetAttrIn{Valid: proto.SetAttrMode | proto.SetAttrHandle, Mode: 0o600, Handle: r.Handle})
	must(t, err)
	if a.Uid != su {
		t.Fatalf("setattr by handle answered uid %d", a.Uid)
	}
	if r.File != nil {
		r.File.Close()
	}
	must(t, e.s.Release(bg, r.Handle))
	want("d/sub", su, sg)
	want("d/new", su, sg)
	// A hard link is the same inode.
	_, err = e.s.Link(bg, e.node("d/new"), e.node(""), "link")
	must(t, err)
	want("link", su, sg)
	// Created by root inside (the user): no record.
	mine := proto.WithCaller(context.Background(), proto.Caller{Uid: me, Gid: mygid})
	_, r, err = e.s.Create(mine, e.node("d"), "root's", unix.O_WRONLY, 0o644)
	must(t, err)
	e.s.Release(bg, r.Handle)
	want("d/root's", me, mygid)
	// A set-group-ID directory of gid 1000 gives its group.
	_, err = e.s.SetAttr(bg, e.node("d/sub"), proto.SetAttrIn{Valid: proto.SetAttrMode, Mode: 0o2775})
	must(t, err)
	_, r, err = e.s.Create(mine, e.node("d/sub"), "g", unix.O_WRONLY, 0o644)
	must(t, err)
	e.s.Release(bg, r.Handle)
	want("d/sub/g", me, sg)
	// A symlink keeps its host owner, and the chown is not an error.
	_, err = e.s.Symlink(as, e.node("d"), "l", "new")
	must(t, err)
	_, err = e.s.SetAttr(bg, e.node("d/l"), proto.SetAttrIn{Valid: proto.SetAttrUid, Uid: su})
	must(t, err)
	want("d/l", me, mygid)
	// Once records exist, a chown of a symlink to ids the server can set
	// (cp -a, tar) still works.
	_, err = e.s.SetAttr(bg, e.node("d/l"), proto.SetAttrIn{Valid: proto.SetAttrUid | proto.SetAttrGid, Uid: me, Gid: mygid})
	must(t, err)
	// Back to the user: a real owner again, the record gone.
	_, err = e.s.SetAttr(bg, e.node("d/new"), proto.SetAttrIn{Valid: proto.SetAttrUid | proto.SetAttrGid, Uid: me, Gid: mygid})
	must(t, err)
	want("d/new", me, mygid)
	if _, err := unix.Lgetxattr(filepath.Join(upper, "d/new"), xattrOwner, make([]byte, 64)); err != unix.ENODATA {
		t.Fatalf("record left after chown back: %v", err)
	}

	// Permission bits that would lock the server out are recorded; the
	// real ones keep the owner's access, so root inside can still write.
	mode := func(p string) uint32 {
		t.Helper()
		a, err := e.s.GetAttr(bg, e.node(p))
		must(t, err)
		return a.Mode & 0o7777
	}
	realMode := func(p string) uint32 {
		t.Helper()
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(upper, p), &st))
		return st.Mode & 0o7777
	}
	_, err = e.s.SetAttr(bg, e.node("d/new"), proto.SetAttrIn{Valid: proto.SetAttrMode, Mode: 0o400})
	must(t, err)
	if m, rm := mode("d/new"), realMode("d/new"); m != 0o400 || rm != 0o600 {
		t.Fatalf("chmod 400: shows %o, real %o", m, rm)
	}
	e.writeFile("d/new", "root writes")
	_, err = e.s.SetAttr(bg, e.node("d/sub"), proto.SetAttrIn{Valid: proto.SetAttrMode, Mode: 0o500})
	must(t, err)
	if m, rm := mode("d/sub"), realMode("d/sub"); m != 0o500 || rm != 0o700 {
		t.Fatalf("chmod 500 dir: shows %o, real %o", m, rm)
	}
	want("d/sub", su, sg) // the owner stays
	e.writeFile("d/sub/in", "x")
	en, r, err = e.s.Create(mine, e.node("d"), "ro", unix.O_WRONLY, 0o444)
	must(t, err)
	e.s.Release(bg, r.Handle)
	if en.Attr.Mode&0o7777 != 0o444 || realMode("d/ro") != 0o644 {
		t.Fatalf("created 444: shows %o, real %o", en.Attr.Mode&0o7777, realMode("d/ro"))
	}
	// Opening up again: real bits, the record gone (the owner is real).
	_, err = e.s.SetAttr(bg, e.node("d/new"), proto.SetAttrIn{Valid: proto.SetAttrMode, Mode: 0o640})
	must(t, err)
	if m, rm := mode("d/new"), realMode("d/new"); m != 0o640 || rm != 0o640 {
		t.Fatalf("chmod 640: shows %o, real %o", m, rm)
	}
	if _, err := unix.Lgetxattr(filepath.Join(upper, "d/new"), xattrOwner, make([]byte, 64)); err != unix.ENODATA {
		t.Fatalf("record left after chmod 640: %v", err)
	}
	// A copy-up takes a lower owner of the range and a mode that would
	// shut the server out (copyMeta calls copiedUp).
	e.writeFile("cu", "x")
	lst := unix.Stat_t{Uid: su, Gid: sg, Mode: unix.S_IFREG | 0o444}
	e.s.copiedUp(e.s.upper, "cu", &lst)
	want("cu", su, sg)
	if m, rm := mode("cu"), realMode("cu"); m != 0o444 || rm&0o600 != 0o600 {
		t.Fatalf("copied up 444: shows %o, real %o", m, rm)
	}
	lst = unix.Stat_t{Uid: 0, Gid: 0, Mode: unix.S_IFREG | 0o644}
	e.writeFile("cu2", "x")
	e.s.copiedUp(e.s.upper, "cu2", &lst)
	want("cu2", me, mygid) // host root's: not the user's to map
	must(t, e.s.Close())

	// Write-through mode: the files are the user's own, a chmod is real.
	rw := filepath.Join(base, "rw")
	must(t, os.Mkdir(rw, 0o755))
	writeHost(t, filepath.Join(rw, "f"), "x")
	srw, err := New(Options{Root: rw})
	must(t, err)
	erw := &env{t: t, s: srw, lower: rw}
	_, err = srw.SetAttr(bg, erw.node("f"), proto.SetAttrIn{Valid: proto.SetAttrMode, Mode: 0o400})
	must(t, err)
	var rst unix.Stat_t
	must(t, unix.Lstat(filepath.Join(rw, "f"), &rst))
	if rst.Mode&0o7777 != 0o400 {
		t.Fatalf("--rw chmod 400: real %o", rst.Mode&0o7777)
	}
	must(t, srw.Close())

	// A kept layer: a new server reports the records.
	s2, err := New(Options{Root: lower, Upper: upper})
	must(t, err)
	defer s2.Close()
	e.s = s2
	want("f", su, mygid)
	want("d/sub", su, sg)
	want("d/new", me, mygid)
	if m := mode("d/sub"); m != 0o500 {
		t.Fatalf("kept d/sub mode %o", m)
	}
}

// A server that never recorded an owner reads no records: a fresh upper
// layer carries no marker, and chown to the server's own ids is real.
func TestOwnerNoRecords(t *testing.T) {
	e := newEnv(t, true, func(dir string) { writeHost(t, filepath.Join(dir, "f"), "x") })
	a, err := e.s.SetAttr(bg, e.node("f"), proto.SetAttrIn{Valid: proto.SetAttrUid | proto.SetAttrGid, Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())})
	must(t, err)
	if a.Uid != uint32(os.Geteuid()) {
		t.Fatalf("uid %d", a.Uid)
	}
	if e.s.ownersOn() {
		t.Fatal("records on without a record")
	}
	if _, err := unix.Lgetxattr(e.upper, xattrOwners, make([]byte, 8)); err != unix.ENODATA {
		t.Fatalf("marker: %v", err)
	}
}
