package fs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"herd/proto"
)

func fillBasic(dir string) {
	os.MkdirAll(filepath.Join(dir, "d/sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "d/f"), []byte("lower f"), 0o644)
	os.WriteFile(filepath.Join(dir, "d/sub/g"), []byte("lower g"), 0o600)
	os.WriteFile(filepath.Join(dir, "top"), []byte("top"), 0o644)
	os.Symlink("d/f", filepath.Join(dir, "link"))
}

// bothModes runs f in write-through and copy-on-write mode; in
// copy-on-write mode it checks afterwards that the lower tree is untouched.
func bothModes(t *testing.T, f func(t *testing.T, e *env)) {
	for _, cow := range []bool{false, true} {
		name := "rw"
		if cow {
			name = "cow"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, cow, fillBasic)
			before := snapshot(t, e.lower)
			f(t, e)
			if cow {
				if after := snapshot(t, e.lower); after != before {
					t.Fatalf("lower layer changed:\nbefore:\n%s\nafter:\n%s", before, after)
				}
			}
		})
	}
}

func TestReadWriteCreate(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		got, err := e.readFile("d/f")
		must(t, err)
		if got != "lower f" {
			t.Fatalf("read %q", got)
		}
		e.writeFile("d/f", "changed")
		if got, _ := e.readFile("d/f"); got != "changed" {
			t.Fatalf("after write: %q", got)
		}
		e.writeFile("d/new", "new file")
		if got, _ := e.readFile("d/new"); got != "new file" {
			t.Fatalf("new: %q", got)
		}
		if got := e.list("d"); !reflect.DeepEqual(got, []string{"f", "new", "sub"}) {
			t.Fatalf("list: %v", got)
		}
		// Where did the write land?
		host := e.lower
		if e.cow {
			host = e.upper
		}
		b, err := os.ReadFile(filepath.Join(host, "d/new"))
		must(t, err)
		if string(b) != "new file" {
			t.Fatalf("host copy %q", b)
		}
		// O_EXCL create of an existing name.
		_, _, err = e.s.Create(bg, e.node("d"), "f", unix.O_WRONLY|unix.O_EXCL, 0o644)
		wantErrno(t, err, syscall.EEXIST)
		// Open returns a usable descriptor of the backing file.
		r, err := e.s.Open(bg, e.node("d/f"), unix.O_RDONLY)
		must(t, err)
		if r.File == nil {
			t.Fatal("Open returned no File")
		}
		b = make([]byte, 7)
		n, _ := r.File.ReadAt(b, 0)
		r.File.Close()
		if string(b[:n]) != "changed" {
			t.Fatalf("File read %q", b[:n])
		}
		must(t, e.s.Release(bg, r.Handle))
	})
}

func TestAppendAndTruncate(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		r, err := e.s.Open(bg, e.node("top"), unix.O_WRONLY|unix.O_APPEND)
		must(t, err)
		r.File.Close()
		_, err = e.s.Write(bg, r.Handle, 0, []byte("+more"))
		must(t, err)
		must(t, e.s.Release(bg, r.Handle))
		if got, _ := e.readFile("top"); got != "top+more" {
			t.Fatalf("append: %q", got)
		}
		a, err := e.s.SetAttr(bg, e.node("top"), proto.SetAttrIn{Valid: proto.SetAttrSize, Size: 2})
		must(t, err)
		if a.Size != 2 {
			t.Fatalf("size %d", a.Size)
		}
		if got, _ := e.readFile("top"); got != "to" {
			t.Fatalf("truncate: %q", got)
		}
	})
}

func TestMkdirRmdirUnlink(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		en, err := e.s.Mkdir(bg, e.node(""), "nd", 0o750)
		must(t, err)
		if en.Attr.Mode != unix.S_IFDIR|0o750 {
			t.Fatalf("mode %o", en.Attr.Mode)
		}
		_, err = e.s.Mkdir(bg, e.node(""), "nd", 0o750)
		wantErrno(t, err, syscall.EEXIST)
		wantErrno(t, e.s.Rmdir(bg, e.node(""), "d"), syscall.ENOTEMPTY)
		wantErrno(t, e.s.Unlink(bg, e.node(""), "d"), syscall.EISDIR)
		wantErrno(t, e.s.Rmdir(bg, e.node(""), "top"), syscall.ENOTDIR)
		must(t, e.s.Unlink(bg, e.node("d/sub"), "g"))
		must(t, e.s.Rmdir(bg, e.node("d"), "sub"))
		must(t, e.s.Unlink(bg, e.node("d"), "f"))
		if got := e.list("d"); len(got) != 0 {
			t.Fatalf("d not empty: %v", got)
		}
		must(t, e.s.Rmdir(bg, e.node(""), "d"))
		must(t, e.s.Rmdir(bg, e.node(""), "nd"))
		_, err = e.walk("d")
		wantErrno(t, err, syscall.ENOENT)
		if got := e.list(""); !reflect.DeepEqual(got, []string{"link", "top"}) {
			t.Fatalf("root: %v", got)
		}
		// Re-create after delete: a fresh, empty directory.
		_, err = e.s.Mkdir(bg, e.node(""), "d", 0o755)
		must(t, err)
		if got := e.list("d"); len(got) != 0 {
			t.Fatalf("re-created d shows %v", got)
		}
		e.writeFile("d/f", "again")
		if got, _ := e.readFile("d/f"); got != "again" {
			t.Fatalf("re-created f: %q", got)
		}
	})
}

func TestSymlinkLinkMknod(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		l, err := e.s.Readlink(bg, e.node("link"))
		must(t, err)
		if l != "d/f" {
			t.Fatalf("readlink %q", l)
		}
		en, err := e.s.Symlink(bg, e.node(""), "abs", "/etc/passwd")
		must(t, err)
		if en.Attr.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Fatalf("symlink mode %o", en.Attr.Mode)
		}
		l, _ = e.s.Readlink(bg, en.Node)
		if l != "/etc/passwd" {
			t.Fatalf("readlink %q", l)
		}
		// Hard link of a (lower) file.
		en, err = e.s.Link(bg, e.node("d/f"), e.node(""), "hard")
		must(t, err)
		if en.Attr.Nlink != 2 {
			t.Fatalf("nlink after link = %d", en.Attr.Nlink)
		}
		a, _ := e.s.GetAttr(bg, e.node("d/f"))
		if a.Nlink != 2 || a.Ino != en.Attr.Ino {
			t.Fatalf("source nlink %d ino %d vs %d", a.Nlink, a.Ino, en.Attr.Ino)
		}
		e.writeFile("hard", "via hard")
		if got, _ := e.readFile("d/f"); got != "via hard" {
			t.Fatalf("link does not share data: %q", got)
		}
		must(t, e.s.Unlink(bg, e.node(""), "hard"))
		a, _ = e.s.GetAttr(bg, e.node("d/f"))
		if a.Nlink != 1 {
			t.Fatalf("nlink after unlink = %d", a.Nlink)
		}
		en, err = e.s.Mknod(bg, e.node(""), "fifo", unix.S_IFIFO|0o640, 0)
		must(t, err)
		if en.Attr.Mode != unix.S_IFIFO|0o640 {
			t.Fatalf("fifo mode %o", en.Attr.Mode)
		}
		// Opening a fifo must not hang the server.
		r, err := e.s.Open(bg, en.Node, unix.O_RDONLY)
		must(t, err)
		r.File.Close()
		e.s.Release(bg, r.Handle)
	})
}

func TestSetAttr(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		n := e.node("d/f")
		a, err := e.s.SetAttr(bg, n, proto.SetAttrIn{Valid: proto.SetAttrMode, Mode: 0o4751})
		must(t, err)
		if a.Mode != unix.S_IFREG|0o4751 {
			t.Fatalf("mode %o", a.Mode)
		}
		a, err = e.s.SetAttr(bg, n, proto.SetAttrIn{Valid: proto.SetAttrUid | proto.SetAttrGid, Uid: 1234, Gid: 5678})
		if os.Geteuid() == 0 {
			must(t, err)
			if a.Uid != 1234 || a.Gid != 5678 {
				t.Fatalf("owner %d:%d", a.Uid, a.Gid)
			}
		}
		in := proto.SetAttrIn{Valid: proto.SetAttrAtime | proto.SetAttrMtime,
			Atime: proto.Timespec{Sec: 1000, Nsec: 123456789}, Mtime: proto.Timespec{Sec: 2000, Nsec: 987654321}}
		a, err = e.s.SetAttr(bg, n, in)
		must(t, err)
		if a.Atime != in.Atime || a.Mtime != in.Mtime {
			t.Fatalf("times %v %v", a.Atime, a.Mtime)
		}
		a, err = e.s.SetAttr(bg, n, proto.SetAttrIn{Valid: proto.SetAttrMtimeNow})
		must(t, err)
		if a.Mtime.Sec < 1e9 || a.Atime != in.Atime {
			t.Fatalf("UTIME_NOW: %v, atime %v", a.Mtime, a.Atime)
		}
		// Times of a symlink itself.
		a, err = e.s.SetAttr(bg, e.node("link"), in)
		must(t, err)
		if a.Mtime != in.Mtime || a.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Fatalf("symlink times %v mode %o", a.Mtime, a.Mode)
		}
		// The directory root's attributes.
		_, err = e.s.GetAttr(bg, e.node(""))
		must(t, err)
	})
}

func TestCreateOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CI runs as root)")
	}
	bothModes(t, func(t *testing.T, e *env) {
		ctx := proto.WithCaller(bg, proto.Caller{Uid: 4321, Gid: 8765})
		en, r, err := e.s.Create(ctx, e.node("d"), "mine", unix.O_RDWR, 0o640)
		must(t, err)
		r.File.Close()
		e.s.Release(bg, r.Handle)
		if en.Attr.Uid != 4321 || en.Attr.Gid != 8765 || en.Attr.Mode != unix.S_IFREG|0o640 {
			t.Fatalf("created %d:%d %o", en.Attr.Uid, en.Attr.Gid, en.Attr.Mode)
		}
		en, err = e.s.Mkdir(ctx, e.node("d"), "mydir", 0o700)
		must(t, err)
		if en.Attr.Uid != 4321 {
			t.Fatalf("mkdir owner %d", en.Attr.Uid)
		}
		en, err = e.s.Symlink(ctx, e.node("d"), "mylink", "x")
		must(t, err)
		if en.Attr.Uid != 4321 {
			t.Fatalf("symlink owner %d", en.Attr.Uid)
		}
	})
}

func TestXattrs(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		n := e.node("d/f")
		_, err := e.s.GetXattr(bg, n, "user.none")
		wantErrno(t, err, syscall.ENODATA)
		must(t, e.s.SetXattr(bg, n, "user.k", []byte("v1"), 0))
		v, err := e.s.GetXattr(bg, n, "user.k")
		must(t, err)
		if string(v) != "v1" {
			t.Fatalf("xattr %q", v)
		}
		wantErrno(t, e.s.SetXattr(bg, n, "user.k", []byte("v2"), unix.XATTR_CREATE), syscall.EEXIST)
		wantErrno(t, e.s.SetXattr(bg, n, "user.none", []byte("v2"), unix.XATTR_REPLACE), syscall.ENODATA)
		if os.Geteuid() == 0 {
			must(t, e.s.SetXattr(bg, n, "trusted.t", []byte("tv"), 0))
		}
		l, err := e.s.ListXattr(bg, n)
		must(t, err)
		found := false
		for _, x := range l {
			found = found || x == "user.k"
		}
		if !found {
			t.Fatalf("list %v", l)
		}
		must(t, e.s.RemoveXattr(bg, n, "user.k"))
		wantErrno(t, e.s.RemoveXattr(bg, n, "user.k"), syscall.ENODATA)
		// user.* on a symlink: the host refuses (EPERM), and we say so.
		wantErrno(t, e.s.SetXattr(bg, e.node("link"), "user.k", []byte("v"), 0), syscall.EPERM)
		wantErrno(t, e.s.SetXattr(bg, n, "bogus.k", []byte("v"), 0), syscall.EOPNOTSUPP)
	})
}

func TestRenameFlags(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		root := e.node("")
		wantErrno(t, e.s.Rename(bg, root, "top", e.node("d"), "f", unix.RENAME_NOREPLACE), syscall.EEXIST)
		must(t, e.s.Rename(bg, root, "top", e.node("d"), "f", unix.RENAME_EXCHANGE))
		if got, _ := e.readFile("d/f"); got != "top" {
			t.Fatalf("exchanged d/f = %q", got)
		}
		if got, _ := e.readFile("top"); got != "lower f" {
			t.Fatalf("exchanged top = %q", got)
		}
		must(t, e.s.Rename(bg, root, "top", root, "moved", unix.RENAME_NOREPLACE))
		_, err := e.walk("top")
		wantErrno(t, err, syscall.ENOENT)
		if got, _ := e.readFile("moved"); got != "lower f" {
			t.Fatalf("moved = %q", got)
		}
		// Replace an existing file.
		must(t, e.s.Rename(bg, root, "moved", e.node("d"), "f", 0))
		if got, _ := e.readFile("d/f"); got != "lower f" {
			t.Fatalf("replaced = %q", got)
		}
		wantErrno(t, e.s.Rename(bg, root, "d", e.node("d"), "x", 0), syscall.EINVAL)
		wantErrno(t, e.s.Rename(bg, root, "nonesuch", root, "x", 0), syscall.ENOENT)
		// A node keeps its identity across a rename: its descendants follow.
		sub := e.node("d/sub")
		must(t, e.s.Rename(bg, root, "d", root, "e", 0))
		ents, err := e.s.ReadDir(bg, sub)
		must(t, err)
		if len(ents) != 1 || ents[0].Name != "g" {
			t.Fatalf("renamed dir's child lists %v", ents)
		}
		if got, _ := e.readFile("e/sub/g"); got != "lower g" {
			t.Fatalf("e/sub/g = %q", got)
		}
		if got := e.list(""); !reflect.DeepEqual(got, []string{"e", "link"}) {
			t.Fatalf("root after renames: %v", got)
		}
	})
}

func TestUnlinkedOpenFile(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		n := e.node("d/f")
		r, err := e.s.Open(bg, n, unix.O_RDWR)
		must(t, err)
		r.File.Close()
		must(t, e.s.Unlink(bg, e.node("d"), "f"))
		a, err := e.s.GetAttr(bg, n)
		must(t, err)
		if a.Nlink != 0 {
			t.Fatalf("nlink of unlinked file %d", a.Nlink)
		}
		a, err = e.s.SetAttr(bg, n, proto.SetAttrIn{Valid: proto.SetAttrSize | proto.SetAttrHandle | proto.SetAttrMode, Size: 3, Mode: 0o600, Handle: r.Handle})
		must(t, err)
		if a.Size != 3 || a.Mode&0o777 != 0o600 {
			t.Fatalf("ftruncate/fchmod through handle: size %d mode %o", a.Size, a.Mode)
		}
		b, err := e.s.Read(bg, r.Handle, 0, 100)
		must(t, err)
		if string(b) != "low" {
			t.Fatalf("read unlinked %q", b)
		}
		must(t, e.s.Release(bg, r.Handle))
	})
}

func TestSparseLargeFallocateSeek(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		_, r, err := e.s.Create(bg, e.node(""), "big", unix.O_RDWR, 0o644)
		must(t, err)
		r.File.Close()
		const off = 5 << 30
		_, err = e.s.Write(bg, r.Handle, off, []byte("far away"))
		must(t, err)
		b, err := e.s.Read(bg, r.Handle, off, 8)
		must(t, err)
		if string(b) != "far away" {
			t.Fatalf("read at 5 GiB: %q", b)
		}
		a, _ := e.s.GetAttr(bg, e.node("big"))
		if a.Size != off+8 {
			t.Fatalf("size %d", a.Size)
		}
		if a.Blocks*512 > 1<<20 {
			t.Fatalf("not sparse: %d blocks", a.Blocks)
		}
		d, err := e.s.Lseek(bg, r.Handle, 0, unix.SEEK_DATA)
		must(t, err)
		if d < off-1<<20 || d > off {
			t.Fatalf("SEEK_DATA = %d", d)
		}
		h, err := e.s.Lseek(bg, r.Handle, 0, unix.SEEK_HOLE)
		must(t, err)
		if h != 0 {
			t.Fatalf("SEEK_HOLE = %d", h)
		}
		must(t, e.s.Fallocate(bg, r.Handle, 0, 0, 1<<20))
		a, _ = e.s.GetAttr(bg, e.node("big"))
		if a.Blocks*512 < 1<<20 {
			t.Fatalf("fallocate did not allocate: %d blocks", a.Blocks)
		}
		must(t, e.s.Fallocate(bg, r.Handle, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20))
		must(t, e.s.Fsync(bg, r.Handle, false))
		must(t, e.s.Fsync(bg, r.Handle, true))
		must(t, e.s.Release(bg, r.Handle))
		st, err := e.s.StatFS(bg, e.node(""))
		must(t, err)
		if st.Blocks == 0 || st.Bsize == 0 || st.NameLen == 0 {
			t.Fatalf("statfs %+v", st)
		}
	})
}

func TestReadDirPlusAndForget(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		d := e.node("d")
		ents, err := e.s.ReadDirPlus(bg, d)
		must(t, err)
		if len(ents) != 2 {
			t.Fatalf("readdirplus %v", ents)
		}
		for _, x := range ents {
			if x.Entry.Node == 0 || x.Entry.Attr.Mode&unix.S_IFMT != x.Mode {
				t.Fatalf("entry %+v", x)
			}
			if x.Name == "f" && x.Entry.Attr.Size != 7 {
				t.Fatalf("attr of f %+v", x.Entry.Attr)
			}
			e.s.Forget(bg, x.Entry.Node, 1)
		}
		// Forget everything: the table shrinks back to the nodes still looked up.
		before := len(e.s.nodes)
		en, _ := e.walk("d/sub/g")
		e.s.Forget(bg, en.Node, 1)
		if len(e.s.nodes) != before+2 { // sub and g... g freed, sub still looked up by walk
			// walk counts lookups of d and sub; g is freed.
			if _, ok := e.s.nodes[en.Node]; ok {
				t.Fatalf("forgotten node still in the table")
			}
		}
	})
}

func TestHideTmp(t *testing.T) {
	base := t.TempDir()
	lower, upper := filepath.Join(base, "l"), filepath.Join(base, "u")
	writeHost(t, filepath.Join(lower, "tmp/secret"), "host tmp")
	must(t, os.Mkdir(upper, 0o755))
	s, err := New(Options{Root: lower, Upper: upper, HideTmp: true})
	must(t, err)
	defer s.Close()
	e := &env{t: t, s: s, lower: lower, upper: upper, cow: true}
	if got := e.list("tmp"); len(got) != 0 {
		t.Fatalf("/tmp shows %v", got)
	}
	a, _ := s.GetAttr(bg, e.node("tmp"))
	if a.Mode != unix.S_IFDIR|0o1777 {
		t.Fatalf("/tmp mode %o", a.Mode)
	}
	e.writeFile("tmp/x", "hi")
	if got, _ := e.readFile("tmp/x"); got != "hi" {
		t.Fatal(got)
	}
	if _, err := os.Stat(filepath.Join(lower, "tmp/x")); err == nil {
		t.Fatal("host /tmp/x appeared")
	}
}

func TestReadOnly(t *testing.T) {
	base := t.TempDir()
	writeHost(t, filepath.Join(base, "f"), "x")
	s, err := New(Options{Root: base, ReadOnly: true})
	must(t, err)
	defer s.Close()
	e := &env{t: t, s: s, lower: base}
	_, err = s.Open(bg, e.node("f"), unix.O_WRONLY)
	wantErrno(t, err, syscall.EROFS)
	_, _, err = s.Create(bg, e.node(""), "g", unix.O_WRONLY, 0o644)
	wantErrno(t, err, syscall.EROFS)
	wantErrno(t, s.Unlink(bg, e.node(""), "f"), syscall.EROFS)
	_, err = s.SetAttr(bg, e.node("f"), proto.SetAttrIn{Valid: proto.SetAttrMode, Mode: 0o600})
	wantErrno(t, err, syscall.EROFS)
	if got, _ := e.readFile("f"); got != "x" {
		t.Fatal(got)
	}
	must(t, s.SetOptions(bg, []string{"--writable"}))
	e.writeFile("f", "y")
	if b, _ := os.ReadFile(filepath.Join(base, "f")); !bytes.Equal(b, []byte("y")) {
		t.Fatalf("after --writable: %q", b)
	}
}

// TestNotifications: changes reach other clients' caches through the notifier.
func TestNotifications(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		n := &recNotifier{}
		e.s.SetNotifier(n)
		e.writeFile("d/new", "x")
		if n.count("new") == 0 {
			t.Fatal("no InvalEntry for a create")
		}
		must(t, e.s.Rename(bg, e.node("d"), "new", e.node("d"), "renamed", 0))
		if n.count("new") < 2 || n.count("renamed") == 0 {
			t.Fatalf("rename notified %v", n.entries)
		}
		must(t, e.s.Unlink(bg, e.node("d"), "renamed"))
		if n.count("renamed") < 2 {
			t.Fatalf("unlink notified %v", n.entries)
		}
		_, err := e.s.Mkdir(bg, e.node(""), "m", 0o755)
		must(t, err)
		if n.count("m") == 0 {
			t.Fatal("no InvalEntry for mkdir")
		}
	})
}

// TestXattrsProcFallback: the same through /proc/self/fd, as on kernels
// before the *xattrat calls.
func TestXattrsProcFallback(t *testing.T) {
	noXattrAt.Store(true)
	defer noXattrAt.Store(false)
	TestXattrs(t)
	TestCopyUpKeepsMetadata(t)
}

// TestCloseWhileBusy: calls racing with Close fail cleanly, never touch a
// reused descriptor, and the race detector sees no unguarded access.
func TestCloseWhileBusy(t *testing.T) {
	e := newEnv(t, true, fillBasic)
	r, err := e.s.Open(bg, e.node("d/f"), unix.O_RDONLY)
	must(t, err)
	r.File.Close()
	d := e.node("d")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 2000; i++ {
			e.s.Read(bg, r.Handle, 0, 10)
			e.s.Lookup(bg, d, "f")
			e.s.GetAttr(bg, d)
			e.s.StatFS(bg, d)
		}
	}()
	e.s.Close()
	<-done
	_, err = e.s.Read(bg, r.Handle, 0, 10)
	wantErrno(t, err, syscall.EBADF)
	if _, err := e.s.Lookup(bg, d, "f"); err == nil {
		t.Fatal("lookup after Close worked")
	}
}

// nodeNotifier records which nodes were said to be stale.
type nodeNotifier struct {
	mu    sync.Mutex
	nodes []proto.NodeID
}

func (r *nodeNotifier) InvalNode(n proto.NodeID, _, _ int64) {
	r.mu.Lock()
	r.nodes = append(r.nodes, n)
	r.mu.Unlock()
}
func (r *nodeNotifier) InvalEntry(proto.NodeID, string) {}
func (r *nodeNotifier) count(n proto.NodeID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := 0
	for _, x := range r.nodes {
		if x == n {
			k++
		}
	}
	return k
}

// TestWriteHandleReleaseNotifies: a client that writes through the
// descriptor it was handed never tells the server; the release of its
// handle must tell the other clients, or they keep stale pages (regular
// files are opened with OpenKeepCache). A read-only release tells no one.
func TestWriteHandleReleaseNotifies(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		n := &nodeNotifier{}
		e.s.SetNotifier(n)
		f := e.node("d/f")
		r, err := e.s.Open(bg, f, unix.O_RDONLY)
		must(t, err)
		if r.Flags&proto.OpenKeepCache == 0 {
			t.Error("regular file opened without OpenKeepCache")
		}
		r.File.Close()
		before := n.count(f)
		must(t, e.s.Release(bg, r.Handle))
		if n.count(f) != before {
			t.Error("a read-only release invalidated the node")
		}
		w, err := e.s.Open(bg, e.node("d/f"), unix.O_WRONLY)
		must(t, err)
		if _, err := w.File.WriteAt([]byte("changed"), 0); err != nil {
			t.Fatal(err)
		}
		w.File.Close()
		f = e.node("d/f") // copy-up may have given the name a fresh look
		before = n.count(f)
		must(t, e.s.Release(bg, w.Handle))
		if n.count(f) == before {
			t.Fatal("releasing a write handle did not invalidate the node")
		}
	})
}

// TestRootXattrs: the root's xattrs (getfattr -d / inside a subenvironment):
// the layers' root descriptors are O_PATH, which the *xattrat calls refuse
// with AT_EMPTY_PATH.
func TestRootXattrs(t *testing.T) {
	bothModes(t, func(t *testing.T, e *env) {
		r, err := e.s.Root(bg)
		must(t, err)
		_, err = e.s.ListXattr(bg, r.Node)
		must(t, err)
		_, err = e.s.GetXattr(bg, r.Node, "user.none")
		wantErrno(t, err, syscall.ENODATA)
		must(t, e.s.SetXattr(bg, r.Node, "user.rootk", []byte("rv"), 0))
		v, err := e.s.GetXattr(bg, r.Node, "user.rootk")
		must(t, err)
		if string(v) != "rv" {
			t.Fatalf("root xattr %q", v)
		}
		must(t, e.s.RemoveXattr(bg, r.Node, "user.rootk"))
	})
}

// A long listing is stat-ed by several threads: every entry must still
// come back once, with its own attributes, whiteouts hiding lower names and
// upper copies taking their place.
func TestReadDirPlusLong(t *testing.T) {
	const n = 300
	for _, cow := range []bool{false, true} {
		e := newEnv(t, cow, func(dir string) {
			for i := 0; i < n; i++ {
				writeHost(t, filepath.Join(dir, "long", fmt.Sprintf("f%03d", i)), strings.Repeat("x", i))
			}
		})
		// Through the server: some removed (whiteouts in cow), some rewritten.
		for i := 0; i < n; i += 7 {
			d, name := e.split(fmt.Sprintf("long/f%03d", i))
			must(t, e.s.Unlink(bg, d, name))
		}
		for i := 3; i < n; i += 11 {
			if i%7 == 0 {
				continue
			}
			e.writeFile(fmt.Sprintf("long/f%03d", i), strings.Repeat("y", 1000+i))
		}
		d := e.node("long")
		ents, err := e.s.ReadDirPlus(bg, d)
		must(t, err)
		seen := map[string]bool{}
		for _, x := range ents {
			if seen[x.Name] {
				t.Fatalf("%s listed twice", x.Name)
			}
			seen[x.Name] = true
			var i int
			if _, err := fmt.Sscanf(x.Name, "f%03d", &i); err != nil || i%7 == 0 {
				t.Fatalf("unexpected entry %q", x.Name)
			}
			want := uint64(i)
			if i%11 == 3 && i%7 != 0 {
				want = uint64(1000 + i)
			}
			if x.Entry.Attr.Size != want || x.Entry.Node == 0 || x.Entry.Attr.Mode&unix.S_IFMT != unix.S_IFREG {
				t.Fatalf("%s: size %d, want %d (%+v)", x.Name, x.Entry.Attr.Size, want, x.Entry)
			}
			en, err := e.s.Lookup(bg, d, x.Name)
			must(t, err)
			if en.Node != x.Entry.Node || en.Attr.Ino != x.Entry.Attr.Ino {
				t.Fatalf("%s: lookup %+v, listing %+v", x.Name, en, x.Entry)
			}
			e.s.Forget(bg, en.Node, 2)
		}
		if len(seen) != n-(n+6)/7 {
			t.Fatalf("%d entries, want %d", len(seen), n-(n+6)/7)
		}
	}
}
