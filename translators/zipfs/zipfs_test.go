package zipfs_test

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"herd/translators/internal/transtest"
	"herd/translators/kit/kittest"
	"herd/translators/zipfs"
)

var bin string

func TestMain(m *testing.M) {
	kittest.Main(m, map[string]*string{"zipfs": &bin})
}

// tree is Go's archive/ and compress/ sources (test data included: big
// text files, binary files), a symlink, an empty directory, odd modes, and
// a zip of it made by real zip -r (-y: symlinks stored as such).
func tree(t testing.TB) string {
	t.Helper()
	dir := kittest.TempDir(t)
	transtest.Sh(t, dir, fmt.Sprintf(`mkdir tree && cp -a %[1]s/src/archive %[1]s/src/compress tree/ && cd tree &&
		ln -s archive/tar/reader.go link && mkdir empty && echo x > exec && chmod 754 exec &&
		zip -q -r -y ../a.zip . && cd .. && mkdir x && cd x && unzip -q ../a.zip`, transtest.GoRoot(t)))
	return dir
}

// TestTree: the mount is what unzip extracts, with modes and mtimes, and
// refuses changes.
func TestTree(t *testing.T) {
	dir := tree(t)
	m := kittest.MountTranslator(t, zipfs.Translator(), filepath.Join(dir, "a.zip"))
	transtest.SameTrees(t, filepath.Join(dir, "x"), m.Dir)
	for _, name := range []string{"exec", "link", "empty", "archive/zip/reader.go", "compress/testdata/e.txt"} {
		var want, got syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(dir, "x", name), &want); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Lstat(filepath.Join(m.Dir, name), &got); err != nil {
			t.Fatal(err)
		}
		if got.Mode != want.Mode || got.Size != want.Size || (want.Mode&syscall.S_IFMT != syscall.S_IFLNK && got.Mtim.Sec != want.Mtim.Sec) {
			t.Errorf("%s: mode %o size %d mtime %d, unzip gives %o %d %d", name, got.Mode, got.Size, got.Mtim.Sec, want.Mode, want.Size, want.Mtim.Sec)
		}
	}
	for what, err := range map[string]error{
		"create": os.WriteFile(filepath.Join(m.Dir, "new"), nil, 0o644),
		"write":  os.WriteFile(filepath.Join(m.Dir, "exec"), nil, 0o644),
		"remove": os.Remove(filepath.Join(m.Dir, "exec")),
		"mkdir":  os.Mkdir(filepath.Join(m.Dir, "d"), 0o755),
		"chmod":  os.Chmod(filepath.Join(m.Dir, "exec"), 0o777),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", what, err)
		}
	}
}

// TestProgram: the program with --mount, as root, and read by another user.
func TestProgram(t *testing.T) {
	dir := tree(t)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	kittest.RunMount(t, bin, mnt, filepath.Join(dir, "a.zip"))
	transtest.SameTrees(t, filepath.Join(dir, "x"), mnt)
	out, err := kittest.AsUser(t, "herdkit", false, fmt.Sprintf("cat %s/archive/zip/reader.go | wc -c", mnt))
	want, _ := os.ReadFile(filepath.Join(dir, "x/archive/zip/reader.go"))
	if err != nil || strings.TrimSpace(out) != fmt.Sprint(len(want)) {
		t.Errorf("read as herdkit: %v: %q", err, out)
	}
}

// TestUnprivileged: a plain user runs zipfs in a user namespace.
func TestUnprivileged(t *testing.T) {
	dir := tree(t)
	out, err := kittest.AsUser(t, "herdkit", true, fmt.Sprintf(`
mnt=$(mktemp -d)
%[2]s %[1]s/a.zip --mount $mnt & pid=$!
waitmount $mnt
diff -r --no-dereference %[1]s/x $mnt && echo same
touch $mnt/new 2>/dev/null || echo refused
kill $pid
wait $pid
echo "exit $?"
rmdir $mnt
`, dir, kittest.Quote(bin)))
	if err != nil || out != "same\nrefused\nexit 0\n" {
		t.Errorf("as herdkit: %v: %q", err, out)
	}
}

// corrupt flips bytes in the middle of name's data in the zip at p.
func corrupt(t testing.TB, p, name string) {
	t.Helper()
	zr, err := zip.OpenReader(p)
	if err != nil {
		t.Fatal(err)
	}
	var off, size int64 = -1, 0
	for _, f := range zr.File {
		if f.Name == name {
			off, _ = f.DataOffset()
			size = int64(f.CompressedSize64)
		}
	}
	zr.Close()
	if off < 0 || size < 16 {
		t.Fatalf("%s not in %s (or too small)", name, p)
	}
	b, _ := os.ReadFile(p)
	for i := off + size/2; i < off+size/2+8; i++ {
		b[i] ^= 0x5a
	}
	os.WriteFile(p, b, 0o644)
}

// TestCorrupt: a member with damaged data gives EIO, deflated or stored;
// the others read fine.
func TestCorrupt(t *testing.T) {
	for _, level := range []string{"-6", "-0"} {
		t.Run(level, func(t *testing.T) {
			dir := kittest.TempDir(t)
			transtest.Sh(t, dir, fmt.Sprintf(`mkdir t && cp %s/src/archive/tar/*.go t/ && cd t && zip -q %s ../a.zip *.go`, transtest.GoRoot(t), level))
			corrupt(t, filepath.Join(dir, "a.zip"), "reader.go")
			m := kittest.MountTranslator(t, zipfs.Translator(), filepath.Join(dir, "a.zip"))
			if _, err := os.ReadFile(filepath.Join(m.Dir, "reader.go")); !errors.Is(err, syscall.EIO) {
				t.Errorf("damaged reader.go: %v, want EIO", err)
			}
			names, _ := filepath.Glob(filepath.Join(dir, "t", "*.go"))
			for _, p := range names {
				if filepath.Base(p) == "reader.go" {
					continue
				}
				got, err := os.ReadFile(filepath.Join(m.Dir, filepath.Base(p)))
				want, _ := os.ReadFile(p)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: %v", filepath.Base(p), err)
				}
			}
		})
	}
}

// TestTruncated: with the central directory cut off, the members are
// found from the front; those before the cut read fine, the cut one gives
// EIO.
func TestTruncated(t *testing.T) {
	dir := kittest.TempDir(t)
	transtest.Sh(t, dir, `mkdir t && for i in 1 2 3; do head -c 100000 /dev/urandom > t/f$i; done && echo text > t/small && cd t && zip -q ../a.zip small f1 f2 f3`)
	st, _ := os.Stat(filepath.Join(dir, "a.zip"))
	os.Truncate(filepath.Join(dir, "a.zip"), st.Size()-50000)
	m := kittest.MountTranslator(t, zipfs.Translator(), filepath.Join(dir, "a.zip"))
	for _, name := range []string{"small", "f1", "f2"} {
		got, err := os.ReadFile(filepath.Join(m.Dir, name))
		want, _ := os.ReadFile(filepath.Join(dir, "t", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v (%d bytes, want %d)", name, err, len(got), len(want))
		}
	}
	if _, err := os.ReadFile(filepath.Join(m.Dir, "f3")); !errors.Is(err, syscall.EIO) {
		t.Errorf("cut f3: %v, want EIO", err)
	}
	var st2 syscall.Stat_t
	if err := syscall.Stat(filepath.Join(m.Dir, "f1"), &st2); err != nil || st2.Size != 100000 || st2.Mtim.Sec != mtime(t, filepath.Join(dir, "t/f1")) {
		t.Errorf("f1: %v, size %d mtime %d", err, st2.Size, st2.Mtim.Sec)
	}
}

func mtime(t testing.TB, p string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mtim.Sec
}

// TestBadInput: one line naming the cause, nothing mounted.
func TestBadInput(t *testing.T) {
	dir := kittest.TempDir(t)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	os.WriteFile(filepath.Join(dir, "text"), bytes.Repeat([]byte("not an archive\n"), 100), 0o644)
	kittest.Refuses(t, bin, dir, mnt, []kittest.Refusal{
		{Args: []string{"text", "--mount", mnt}, Status: 1, Want: "not a zip archive"},
		{Args: []string{"missing.zip", "--mount", mnt}, Status: 1, Want: "no such file"},
		{Args: []string{"a", "b", "--mount", mnt}, Status: 2, Want: "one ARCHIVE only"},
	})
}

// FuzzUnixOwner: the "ux" extra field decoder never panics.
func FuzzUnixOwner(f *testing.F) {
	ux := func(uid, gid uint32) []byte {
		b := binary.LittleEndian.AppendUint16(nil, 0x7875)
		b = binary.LittleEndian.AppendUint16(b, 11)
		b = append(b, 1, 4)
		b = binary.LittleEndian.AppendUint32(b, uid)
		b = append(b, 4)
		return binary.LittleEndian.AppendUint32(b, gid)
	}
	f.Add(ux(1000, 1000))
	f.Add(append([]byte{0x55, 0x54, 5, 0, 3, 1, 2, 3, 4}, ux(0, 0)...))
	f.Add([]byte{0x75, 0x78, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, extra []byte) {
		zipfs.UnixOwner(extra)
	})
}
