package fs

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"herd/proto"
)

// cowEnv is a copy-on-write server whose lower tree must never change.
func cowEnv(t *testing.T, fill func(string)) *env {
	e := newEnv(t, true, fill)
	before := snapshot(t, e.lower)
	t.Cleanup(func() {
		if after := snapshot(t, e.lower); after != before {
			t.Errorf("lower layer changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
	return e
}

func TestWhiteouts(t *testing.T) {
	e := cowEnv(t, fillBasic)
	must(t, e.s.Unlink(bg, e.node("d"), "f"))
	if _, err := os.Lstat(filepath.Join(e.upper, "d/.wh.f")); err != nil {
		t.Fatalf("no AUFS whiteout: %v", err)
	}
	_, err := e.walk("d/f")
	wantErrno(t, err, syscall.ENOENT)
	if got := e.list("d"); !reflect.DeepEqual(got, []string{"sub"}) {
		t.Fatalf("listing shows %v", got)
	}
	// Whiteout names are not reachable through the server.
	_, err = e.walk("d/.wh.f")
	wantErrno(t, err, syscall.ENOENT)
	_, _, err = e.s.Create(bg, e.node("d"), ".wh.x", unix.O_WRONLY, 0o644)
	wantErrno(t, err, syscall.EPERM)
	// Re-create after delete.
	e.writeFile("d/f", "reborn")
	if got, _ := e.readFile("d/f"); got != "reborn" {
		t.Fatalf("re-created: %q", got)
	}
	if _, err := os.Lstat(filepath.Join(e.upper, "d/.wh.f")); err == nil {
		t.Fatal("whiteout left next to the re-created file")
	}
	// A directory that has only whiteouts left is empty and can go.
	must(t, e.s.Unlink(bg, e.node("d/sub"), "g"))
	if got := e.list("d/sub"); len(got) != 0 {
		t.Fatalf("d/sub shows %v", got)
	}
	must(t, e.s.Rmdir(bg, e.node("d"), "sub"))
	_, err = e.walk("d/sub")
	wantErrno(t, err, syscall.ENOENT)
	// Opaque: a directory re-created over a deleted lower one starts empty.
	_, err = e.s.Mkdir(bg, e.node("d"), "sub", 0o755)
	must(t, err)
	if got := e.list("d/sub"); len(got) != 0 {
		t.Fatalf("re-created d/sub shows %v", got)
	}
	if _, err := os.Lstat(filepath.Join(e.upper, "d/sub/.wh..wh..opq")); err != nil {
		t.Fatalf("no opaque marker: %v", err)
	}
	_, err = e.walk("d/sub/g")
	wantErrno(t, err, syscall.ENOENT)
	// A file replacing a lower directory, then a directory again.
	must(t, e.s.Rmdir(bg, e.node("d"), "sub"))
	e.writeFile("d/sub", "now a file")
	must(t, e.s.Unlink(bg, e.node("d"), "sub"))
	_, err = e.s.Mkdir(bg, e.node("d"), "sub", 0o755)
	must(t, err)
	if got := e.list("d/sub"); len(got) != 0 {
		t.Fatalf("d/sub shows %v", got)
	}
}

func TestRenameLowerDir(t *testing.T) {
	e := cowEnv(t, func(d string) {
		writeHost(t, filepath.Join(d, "a/b/c/deep"), "deep")
		writeHost(t, filepath.Join(d, "a/top"), "top")
		writeHost(t, filepath.Join(d, "z/b/other"), "other lower")
	})
	must(t, e.s.Unlink(bg, e.node("a"), "top")) // a whiteout inside the moved tree
	must(t, e.s.Rename(bg, e.node(""), "a", e.node(""), "moved", 0))
	_, err := e.walk("a")
	wantErrno(t, err, syscall.ENOENT)
	if got, _ := e.readFile("moved/b/c/deep"); got != "deep" {
		t.Fatalf("moved/b/c/deep = %q", got)
	}
	_, err = e.walk("moved/top")
	wantErrno(t, err, syscall.ENOENT)
	// Move a directory onto a name the lower layer has as a directory: the
	// moved one must not merge with it.
	must(t, e.s.Unlink(bg, e.node("z/b"), "other"))
	must(t, e.s.Rename(bg, e.node("moved"), "b", e.node("z"), "b", 0))
	if got := e.list("z/b"); !reflect.DeepEqual(got, []string{"c"}) {
		t.Fatalf("z/b = %v", got)
	}
	if got := e.list("moved"); len(got) != 0 {
		t.Fatalf("moved = %v", got)
	}
	// And back again, with the name free.
	must(t, e.s.Rename(bg, e.node(""), "z", e.node(""), "a", 0))
	if got, _ := e.readFile("a/b/c/deep"); got != "deep" {
		t.Fatalf("a/b/c/deep = %q", got)
	}
	// Exchange two lower directories.
	must(t, e.s.Rename(bg, e.node(""), "a", e.node(""), "moved", unix.RENAME_EXCHANGE))
	if got, _ := e.readFile("moved/b/c/deep"); got != "deep" {
		t.Fatalf("after exchange = %q", got)
	}
}

func TestCopyUpKeepsMetadata(t *testing.T) {
	var want unix.Stat_t
	e := cowEnv(t, func(d string) {
		p := filepath.Join(d, "dir/file")
		writeHost(t, p, "data")
		os.Chmod(p, 0o4750)
		if os.Geteuid() == 0 {
			os.Lchown(p, 1111, 2222)
		}
		unix.Lsetxattr(p, "user.keep", []byte("me"), 0)
		unix.UtimesNano(p, []unix.Timespec{{Sec: 100, Nsec: 5}, {Sec: 200, Nsec: 7}})
		unix.Lstat(p, &want)
	})
	a0, _ := e.s.GetAttr(bg, e.node("dir"))
	must(t, e.s.SetXattr(bg, e.node("dir/file"), "user.new", []byte("x"), 0))
	st, err := os.Lstat(filepath.Join(e.upper, "dir/file"))
	must(t, err)
	got := st.Sys().(*syscall.Stat_t)
	if got.Mode != want.Mode || got.Uid != want.Uid || got.Gid != want.Gid || got.Mtim != syscall.Timespec(want.Mtim) {
		t.Fatalf("copy-up lost metadata: %+v vs %+v", got, want)
	}
	v, err := e.s.GetXattr(bg, e.node("dir/file"), "user.keep")
	must(t, err)
	if string(v) != "me" {
		t.Fatalf("xattr after copy-up %q", v)
	}
	if a1, _ := e.s.GetAttr(bg, e.node("dir")); a1.Mtime != a0.Mtime {
		t.Fatalf("copy-up changed the parent's mtime: %v -> %v", a0.Mtime, a1.Mtime)
	}
}

func TestSparseCopyUp(t *testing.T) {
	const size = 6 << 30
	e := cowEnv(t, func(d string) {
		f, err := os.Create(filepath.Join(d, "sparse"))
		must(t, err)
		f.WriteAt([]byte("head"), 0)
		f.WriteAt([]byte("tail"), size-4)
		f.Close()
	})
	// Writing in the middle copies up; the copy must stay sparse.
	r, err := e.s.Open(bg, e.node("sparse"), unix.O_WRONLY)
	must(t, err)
	r.File.Close()
	_, err = e.s.Write(bg, r.Handle, 5<<30, []byte("mid"))
	must(t, err)
	must(t, e.s.Release(bg, r.Handle))
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(e.upper, "sparse"), &st))
	if st.Size != size {
		t.Fatalf("size %d", st.Size)
	}
	if st.Blocks*512 > 4<<20 {
		t.Fatalf("copy-up is not sparse: %d bytes allocated", st.Blocks*512)
	}
	r, err = e.s.Open(bg, e.node("sparse"), unix.O_RDONLY)
	must(t, err)
	r.File.Close()
	defer e.s.Release(bg, r.Handle)
	for off, want := range map[int64]string{0: "head", 5 << 30: "mid", size - 4: "tail", 1 << 30: "\x00\x00\x00"} {
		b, err := e.s.Read(bg, r.Handle, off, len(want))
		must(t, err)
		if string(b) != want {
			t.Fatalf("at %d: %q want %q", off, b, want)
		}
	}
}

func TestHardLinkLowerFile(t *testing.T) {
	e := cowEnv(t, fillBasic)
	en, err := e.s.Link(bg, e.node("top"), e.node("d"), "t2")
	must(t, err)
	if en.Attr.Nlink != 2 {
		t.Fatalf("nlink %d", en.Attr.Nlink)
	}
	e.writeFile("d/t2", "shared")
	if got, _ := e.readFile("top"); got != "shared" {
		t.Fatalf("top = %q", got)
	}
	must(t, e.s.Unlink(bg, e.node(""), "top"))
	_, err = e.walk("top")
	wantErrno(t, err, syscall.ENOENT)
	a, _ := e.s.GetAttr(bg, e.node("d/t2"))
	if a.Nlink != 1 {
		t.Fatalf("nlink after unlink %d", a.Nlink)
	}
}

// TestManyDirs walks more directories than the directory cache holds, in
// both layers, changing things on the way.
func TestManyDirs(t *testing.T) {
	e := cowEnv(t, func(d string) {
		for i := 0; i < dirCacheMax+200; i++ {
			writeHost(t, filepath.Join(d, "many", strconv.Itoa(i), "f"), strconv.Itoa(i))
		}
	})
	for round := 0; round < 2; round++ {
		for i := 0; i < dirCacheMax+200; i++ {
			p := "many/" + strconv.Itoa(i) + "/f"
			got, err := e.readFile(p)
			must(t, err)
			want := strconv.Itoa(i)
			if round == 1 && i%3 == 0 {
				want = "changed"
			}
			if got != want {
				t.Fatalf("round %d: %s = %q, want %q", round, p, got, want)
			}
			if round == 0 && i%3 == 0 {
				e.writeFile(p, "changed")
			}
			if round == 0 && i%7 == 0 {
				must(t, e.s.Rename(bg, e.node("many"), strconv.Itoa(i), e.node("many"), "x"+strconv.Itoa(i), 0))
				must(t, e.s.Rename(bg, e.node("many"), "x"+strconv.Itoa(i), e.node("many"), strconv.Itoa(i), 0))
			}
		}
	}
}

// TestTruncatingOpenCopiesNoData: O_TRUNC on a lower file copies it up
// without its contents but with its metadata.
func TestTruncatingOpenCopiesNoData(t *testing.T) {
	e := cowEnv(t, func(d string) {
		writeHost(t, filepath.Join(d, "f"), "old contents")
		os.Chmod(filepath.Join(d, "f"), 0o640)
	})
	r, err := e.s.Open(bg, e.node("f"), unix.O_WRONLY|unix.O_TRUNC)
	must(t, err)
	r.File.Close()
	must(t, e.s.Release(bg, r.Handle))
	a, err := e.s.GetAttr(bg, e.node("f"))
	must(t, err)
	if a.Size != 0 || a.Mode != unix.S_IFREG|0o640 {
		t.Fatalf("after O_TRUNC: size %d mode %o", a.Size, a.Mode)
	}
}

// TestRootAttrs: in copy-on-write mode the root shows the lower root's
// attributes until they are changed, then the change, kept in the upper
// layer (also for a later server on the same upper layer).
func TestRootAttrs(t *testing.T) {
	e := newEnv(t, true, nil)
	must(t, os.Chmod(e.lower, 0o751))
	must(t, os.Chmod(e.upper, 0o700))
	before := snapshot(t, e.lower)
	a, err := e.s.GetAttr(bg, e.node(""))
	must(t, err)
	if a.Mode != unix.S_IFDIR|0o751 {
		t.Fatalf("root mode %o, want the lower root's 751", a.Mode)
	}
	a, err = e.s.SetAttr(bg, e.node(""), proto.SetAttrIn{Valid: proto.SetAttrMode, Mode: 0o755})
	must(t, err)
	if a.Mode != unix.S_IFDIR|0o755 {
		t.Fatalf("after chmod %o", a.Mode)
	}
	if a, _ = e.s.GetAttr(bg, e.node("")); a.Mode != unix.S_IFDIR|0o755 {
		t.Fatalf("getattr after chmod %o", a.Mode)
	}
	if got := e.list(""); len(got) != 0 {
		t.Fatalf("root lists %v", got)
	}
	s2, err := New(Options{Root: e.lower, Upper: e.upper})
	must(t, err)
	defer s2.Close()
	r, _ := s2.Root(bg)
	if r.Attr.Mode != unix.S_IFDIR|0o755 {
		t.Fatalf("second server's root %o", r.Attr.Mode)
	}
	if after := snapshot(t, e.lower); after != before {
		t.Fatal("lower root changed")
	}
}
