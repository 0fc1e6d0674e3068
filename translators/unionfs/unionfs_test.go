package unionfs_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"herd/translators/internal/transtest"
	"herd/translators/kit/kittest"
	"herd/translators/unionfs"
)

var bin string

func TestMain(m *testing.M) { kittest.Main(m, map[string]*string{"unionfs": &bin}) }

// branches makes an upper (writable) and two lower directories:
//
//	lower1: a ("a from lower1"), shared ("lower1"), dir/x, dir/sub/deep, gone/old
//	lower2: b, shared ("lower2"), dir/y
func branches(t *testing.T) (upper, lower1, lower2 string) {
	base := kittest.TempDir(t)
	upper, lower1, lower2 = filepath.Join(base, "upper"), filepath.Join(base, "lower1"), filepath.Join(base, "lower2")
	for path, data := range map[string]string{
		"lower1/a": "a from lower1\n", "lower1/shared": "lower1\n", "lower1/dir/x": "x\n",
		"lower1/dir/sub/deep": "deep\n", "lower1/gone/old": "old\n",
		"lower2/b": "b from lower2\n", "lower2/shared": "lower2\n", "lower2/dir/y": "y\n",
	} {
		p := filepath.Join(base, path)
		transtest.Must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		transtest.Must(t, os.WriteFile(p, []byte(data), 0o644))
	}
	transtest.Must(t, os.Mkdir(upper, 0o755))
	return
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}

func exists(path string) bool { _, err := os.Lstat(path); return err == nil }

func TestMerge(t *testing.T) {
	upper, l1, l2 := branches(t)
	m := kittest.MountTranslator(t, unionfs.Translator(), "-w", upper, l1, l2)
	if got := transtest.Names(t, m.Dir); got != "a,b,dir/,gone/,shared" {
		t.Errorf("root lists %q", got)
	}
	if got := transtest.Names(t, filepath.Join(m.Dir, "dir")); got != "sub/,x,y" {
		t.Errorf("dir lists %q", got)
	}
	if got := read(t, filepath.Join(m.Dir, "shared")); got != "lower1\n" {
		t.Errorf("shared says %q: the first branch must win", got)
	}
	if got := read(t, filepath.Join(m.Dir, "dir/sub/deep")); got != "deep\n" {
		t.Errorf("deep says %q", got)
	}
	opts, err := m.Client.GetOptions(t.Context())
	if want := fmt.Sprint([]string{"unionfs", "--writable=" + upper, l1, l2}); err != nil || fmt.Sprint(opts) != want {
		t.Errorf("options %q, %v; want %s", opts, err, want)
	}
}

func TestCopyUpAndWhiteouts(t *testing.T) {
	upper, l1, l2 := branches(t)
	m := kittest.MountTranslator(t, unionfs.Translator(), "-w", upper, l1, l2)
	mnt := func(p string) string { return filepath.Join(m.Dir, p) }

	// Writing a lower file copies it up; the lower branch is untouched.
	f, err := os.OpenFile(mnt("dir/x"), os.O_WRONLY|os.O_APPEND, 0)
	transtest.Must(t, err)
	_, err = f.WriteString("more\n")
	transtest.Must(t, err)
	transtest.Must(t, f.Close())
	if got := read(t, mnt("dir/x")); got != "x\nmore\n" {
		t.Errorf("after append: %q", got)
	}
	if got := read(t, filepath.Join(upper, "dir/x")); got != "x\nmore\n" {
		t.Errorf("upper copy: %q", got)
	}
	if got := read(t, filepath.Join(l1, "dir/x")); got != "x\n" {
		t.Errorf("lower changed: %q", got)
	}
	// chmod copies up too.
	transtest.Must(t, os.Chmod(mnt("b"), 0o600))
	if fi, err := os.Stat(filepath.Join(upper, "b")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("chmod copy-up: %v, %v", fi, err)
	}
	if fi, _ := os.Stat(filepath.Join(l2, "b")); fi.Mode().Perm() != 0o644 {
		t.Errorf("lower mode changed: %v", fi.Mode())
	}

	// New files go to the writable branch.
	transtest.Must(t, os.WriteFile(mnt("dir/sub/new"), []byte("new\n"), 0o644))
	if got := read(t, filepath.Join(upper, "dir/sub/new")); got != "new\n" {
		t.Errorf("new file in upper: %q", got)
	}

	// Deleting a lower file leaves a whiteout and hides it.
	transtest.Must(t, os.Remove(mnt("shared")))
	if exists(mnt("shared")) {
		t.Error("shared still visible after rm (lower2 has one too)")
	}
	if got := transtest.Names(t, m.Dir); got != "a,b,dir/,gone/" {
		t.Errorf("root lists %q after rm", got)
	}
	if !exists(filepath.Join(upper, ".wh.shared")) || !exists(filepath.Join(l1, "shared")) || !exists(filepath.Join(l2, "shared")) {
		t.Error("want a whiteout in upper and both lower files kept")
	}
	if _, err := os.Stat(mnt(".wh.shared")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whiteout visible: %v", err)
	}
	if err := os.WriteFile(mnt(".wh.x"), nil, 0o644); !errors.Is(err, syscall.EPERM) {
		t.Errorf("creating a whiteout name: %v, want EPERM", err)
	}
	// A name made again replaces the whiteout.
	transtest.Must(t, os.WriteFile(mnt("shared"), []byte("again\n"), 0o644))
	if got := read(t, mnt("shared")); got != "again\n" || exists(filepath.Join(upper, ".wh.shared")) {
		t.Errorf("recreated: %q (whiteout left: %v)", got, exists(filepath.Join(upper, ".wh.shared")))
	}

	// rm -r of a lower directory, then mkdir: the old contents stay hidden.
	transtest.Must(t, os.RemoveAll(mnt("gone")))
	if exists(mnt("gone")) || !exists(filepath.Join(l1, "gone/old")) {
		t.Fatal("rm -r gone")
	}
	transtest.Must(t, os.Mkdir(mnt("gone"), 0o755))
	if got := transtest.Names(t, mnt("gone")); got != "" {
		t.Errorf("remade directory lists %q, want empty (opaque)", got)
	}
	if err := os.Remove(mnt("dir")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir of a merged non-empty dir: %v", err)
	}

	// Rename a lower file: copied up, old name whited out.
	transtest.Must(t, os.Rename(mnt("a"), mnt("dir/a2")))
	if exists(mnt("a")) || read(t, mnt("dir/a2")) != "a from lower1\n" || !exists(filepath.Join(l1, "a")) {
		t.Error("rename of a lower file")
	}
	// A lower directory cannot be renamed (mv copies instead).
	if err := os.Rename(mnt("dir"), mnt("dir2")); !errors.Is(err, syscall.EXDEV) {
		t.Errorf("rename of a merged dir: %v, want EXDEV", err)
	}
	// A directory of the upper branch alone can.
	transtest.Must(t, os.Mkdir(mnt("mine"), 0o755))
	transtest.Must(t, os.Rename(mnt("mine"), mnt("mine2")))
	// Symlinks and hard links.
	transtest.Must(t, os.Symlink("b", mnt("link")))
	if got := read(t, mnt("link")); got != "b from lower2\n" {
		t.Errorf("through symlink %q", got)
	}
	transtest.Must(t, os.Link(mnt("dir/y"), mnt("y-link")))
	if got := read(t, mnt("y-link")); got != "y\n" {
		t.Errorf("hard link %q", got)
	}
	// truncate a lower file.
	transtest.Must(t, os.Truncate(mnt("dir/sub/deep"), 2))
	if got := read(t, mnt("dir/sub/deep")); got != "de" || read(t, filepath.Join(l1, "dir/sub/deep")) != "deep\n" {
		t.Errorf("truncate %q", got)
	}
}

func TestReadOnly(t *testing.T) {
	_, l1, l2 := branches(t)
	m := kittest.MountTranslator(t, unionfs.Translator(), l1, l2)
	if err := os.WriteFile(filepath.Join(m.Dir, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("create in a read-only union: %v", err)
	}
	if err := os.Remove(filepath.Join(m.Dir, "a")); !errors.Is(err, syscall.EROFS) {
		t.Errorf("rm in a read-only union: %v", err)
	}
	if _, err := os.OpenFile(filepath.Join(m.Dir, "a"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("open for writing: %v", err)
	}
}

// TestBranchesAtRunTime: fsysopts adds and removes branches.
func TestBranchesAtRunTime(t *testing.T) {
	upper, l1, l2 := branches(t)
	m := kittest.MountTranslator(t, unionfs.Translator(), "-w", upper, l1)
	if exists(filepath.Join(m.Dir, "b")) {
		t.Fatal("b before lower2 is added")
	}
	transtest.Must(t, m.Client.SetOptions(t.Context(), []string{"--add=" + l2}))
	// The kernel forgets its negative entry for b when the invalidation
	// (sent from a queue) arrives.
	transtest.Eventually(t, "b shows", func() bool { return exists(filepath.Join(m.Dir, "b")) })
	if got := read(t, filepath.Join(m.Dir, "b")); got != "b from lower2\n" {
		t.Errorf("b after --add: %q", got)
	}
	if got := transtest.Names(t, filepath.Join(m.Dir, "dir")); got != "sub/,x,y" {
		t.Errorf("dir after --add: %q", got)
	}
	transtest.Must(t, m.Client.SetOptions(t.Context(), []string{"-r", l1}))
	opts, _ := m.Client.GetOptions(t.Context())
	if want := fmt.Sprint([]string{"unionfs", "--writable=" + upper, l2}); fmt.Sprint(opts) != want {
		t.Errorf("options %q, want %s", opts, want)
	}
	if got := transtest.Names(t, m.Dir); got != "b,dir/,shared" {
		t.Errorf("after --remove: %q", got)
	}
	if got := read(t, filepath.Join(m.Dir, "shared")); got != "lower2\n" {
		t.Errorf("shared after removing lower1: %q", got)
	}
	for _, bad := range [][]string{{"--remove=/nonexistent"}, {"--add=/nonexistent"}, {"--add=" + l2}, {"-r", upper, "-r", l2}} {
		if err := m.Client.SetOptions(t.Context(), bad); !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			t.Errorf("fsysopts %q: %v", bad, err)
		}
	}
}
