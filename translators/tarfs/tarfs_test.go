package tarfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"herd/translators/internal/transtest"
	"herd/translators/kit/kittest"
	"herd/translators/tarfs"
)

var bin string

func TestMain(m *testing.M) {
	kittest.Main(m, map[string]*string{"tarfs": &bin})
}

// smallTree makes a tree with what tar has to get right: Go's
// archive/ sources (with their test archives), a symlink, a hard link, an
// empty directory, a name past ustar's 100 bytes, odd modes.
func smallTree(t testing.TB, dir string) {
	t.Helper()
	transtest.Sh(t, dir, fmt.Sprintf(`mkdir tree && cp -a %s/src/archive tree/ && cd tree &&
		ln -s archive/tar/reader.go link && ln archive/zip/reader.go hard &&
		mkdir -p empty deep/$(printf 'd%%.0s' $(seq 60))/$(printf 'e%%.0s' $(seq 60)) &&
		echo long > deep/$(printf 'd%%.0s' $(seq 60))/$(printf 'e%%.0s' $(seq 60))/file &&
		echo x > exec && chmod 4755 exec && chmod 700 empty && touch -d '2001-02-03 04:05:06' hard`, transtest.GoRoot(t)))
}

var tvLine = regexp.MustCompile(`^(\S+) (\d+)/(\d+) +(\S+) (\S+ \S+) (.*)$`)

// lsMode is a mode as ls -l (and tar tv) writes it.
func lsMode(st *syscall.Stat_t) string {
	m := st.Mode
	typ := map[uint32]byte{syscall.S_IFDIR: 'd', syscall.S_IFLNK: 'l', syscall.S_IFREG: '-', syscall.S_IFCHR: 'c', syscall.S_IFBLK: 'b', syscall.S_IFIFO: 'p'}[m&syscall.S_IFMT]
	b := []byte{typ}
	for i, c := range "rwxrwxrwx" {
		if m&(1<<(8-i)) != 0 {
			b = append(b, byte(c))
		} else {
			b = append(b, '-')
		}
	}
	for _, s := range []struct {
		bit   uint32
		pos   int
		on    byte
		noexe byte
	}{{syscall.S_ISUID, 3, 's', 'S'}, {syscall.S_ISGID, 6, 's', 'S'}, {syscall.S_ISVTX, 9, 't', 'T'}} {
		if m&s.bit != 0 {
			if b[s.pos] == 'x' {
				b[s.pos] = s.on
			} else {
				b[s.pos] = s.noexe
			}
		}
	}
	return string(b)
}

// checkListing compares `tar tvf` with the mount: every member's type,
// mode, owner, size, mtime and link target, and no names beyond them.
func checkListing(t testing.TB, archive, mnt string) {
	t.Helper()
	out := transtest.Sh(t, "", "tar --numeric-owner --full-time --quoting-style=literal -tvf "+kittest.Quote(archive))
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		f := tvLine.FindStringSubmatch(line)
		if f == nil {
			t.Fatalf("tar tv line %q", line)
		}
		name, target := f[6], ""
		if f[1][0] == 'l' {
			name, target, _ = strings.Cut(name, " -> ")
		} else if n, tgt, ok := strings.Cut(name, " link to "); ok {
			name, target = n, strings.TrimPrefix(tgt, "./")
		}
		name = strings.TrimSuffix(strings.TrimPrefix(name, "./"), "/")
		if name == "." || name == "" {
			continue
		}
		listed[name] = true
		p := filepath.Join(mnt, name)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Errorf("%s: listed by tar, %v in the mount", name, err)
			continue
		}
		mt := time.Unix(st.Mtim.Sec, 0).Local().Format("2006-01-02 15:04:05")
		got := fmt.Sprintf("%s %d/%d %s", lsMode(&st), st.Uid, st.Gid, mt)
		if want := fmt.Sprintf("%s %s/%s %s", f[1], f[2], f[3], f[5]); got != want && !(f[1][0] == 'h' || strings.Contains(line, " link to ")) {
			t.Errorf("%s: mount has %q, tar tv %q", name, got, want)
		}
		if f[1][0] == '-' && !strings.Contains(line, " link to ") && strconv.FormatInt(st.Size, 10) != f[4] {
			t.Errorf("%s: size %d, tar tv %s", name, st.Size, f[4])
		}
		switch {
		case f[1][0] == 'l':
			if got, _ := os.Readlink(p); got != target {
				t.Errorf("%s: symlink to %q, tar tv %q", name, got, target)
			}
		case target != "":
			var tst syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(mnt, target), &tst); err != nil || tst.Ino != st.Ino {
				t.Errorf("%s: not the same inode as %s (hard link)", name, target)
			}
		}
	}
	n := 0
	filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("walk %s: %v", p, err)
			return nil
		}
		rel, _ := filepath.Rel(mnt, p)
		if rel != "." && !listed[rel] {
			t.Errorf("%s in the mount, not listed by tar tv", rel)
		}
		n++
		return nil
	})
	if n-1 != len(listed) {
		t.Errorf("mount has %d names, tar tv lists %d", n-1, len(listed))
	}
}

// change makes the same changes under root: a new file, a changed file, a
// removed file, a new directory, a renamed file.
func change(t testing.TB, root string) {
	t.Helper()
	transtest.Sh(t, root, `echo new > newfile && echo appended >> `+changedFile+` && rm `+removedFile+` &&
		mkdir -p newdir/sub && echo deep > newdir/sub/f && mv `+movedFile+` newdir/moved`)
}

const (
	changedFile = "archive/tar/common.go"
	removedFile = "archive/zip/writer.go"
	movedFile   = "archive/tar/format.go"
)

// TestGoSource: tarfs on the Go toolchain's source tree (about 10k
// members) tarred by real tar shows what tar tvf lists and what tar xf
// extracts, in-process and as the program; a change written back on
// SIGTERM is in the archive real tar reads.
func TestGoSource(t *testing.T) {
	dir := kittest.TempDir(t)
	archive := filepath.Join(dir, "src.tar")
	transtest.Sh(t, dir, fmt.Sprintf(`tar cf src.tar -C %s src && mkdir x && tar xf src.tar -C x`, kittest.Quote(transtest.GoRoot(t))))
	t.Run("in-process", func(t *testing.T) {
		m := kittest.MountTranslator(t, tarfs.Translator(), archive)
		transtest.SameTrees(t, filepath.Join(dir, "x/src"), filepath.Join(m.Dir, "src"))
		checkListing(t, archive, m.Dir)
	})
	t.Run("program", func(t *testing.T) {
		mnt := filepath.Join(dir, "mnt")
		os.Mkdir(mnt, 0o755)
		p := kittest.RunMount(t, bin, mnt, archive)
		transtest.SameTrees(t, filepath.Join(dir, "x/src"), filepath.Join(mnt, "src"))
		change(t, filepath.Join(mnt, "src"))
		change(t, filepath.Join(dir, "x/src"))
		// Reading what did not change still works while it is changed.
		transtest.SameTrees(t, filepath.Join(dir, "x/src"), filepath.Join(mnt, "src"))
		p.Cmd.Process.Signal(syscall.SIGTERM)
		if err := p.Wait(t); err != nil {
			t.Fatalf("tarfs on SIGTERM: %v: %s", err, p.Stderr)
		}
		transtest.Sh(t, dir, "mkdir y && tar xf src.tar -C y")
		transtest.SameTrees(t, filepath.Join(dir, "x/src"), filepath.Join(dir, "y/src"))
	})
}

// TestCompressed: -z, -j, -J and autodetection, on archives made by real
// tar; a change and a goaway write the archive back compressed the same way.
func TestCompressed(t *testing.T) {
	for _, c := range []struct {
		name, tarFlag, flag string
		magic               []byte
	}{
		{"plain", "", "", nil},
		{"gzip", "z", "-z", []byte{0x1f, 0x8b}},
		{"bzip2", "j", "-j", []byte("BZh")},
		{"xz", "J", "-J", []byte{0xfd, '7', 'z', 'X', 'Z'}},
		{"gzip-auto", "z", "", []byte{0x1f, 0x8b}},
		{"xz-auto", "J", "", []byte{0xfd, '7', 'z', 'X', 'Z'}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := kittest.TempDir(t)
			smallTree(t, dir)
			archive := filepath.Join(dir, "a.tar")
			transtest.Sh(t, dir, fmt.Sprintf("tar c%sf a.tar -C tree .", c.tarFlag))
			var args []string
			if c.flag != "" {
				args = append(args, c.flag)
			}
			m := kittest.MountTranslator(t, tarfs.Translator(), append(args, archive)...)
			transtest.SameTrees(t, filepath.Join(dir, "tree"), m.Dir)
			checkListing(t, archive, m.Dir)
			change(t, m.Dir)
			change(t, filepath.Join(dir, "tree"))
			if err := m.Client.Goaway(t.Context(), 0); err != nil {
				t.Fatalf("goaway: %v", err)
			}
			data, err := os.ReadFile(archive)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(data, c.magic) {
				t.Errorf("written back as %q..., want %q", data[:8], c.magic)
			}
			transtest.Sh(t, dir, "mkdir back && tar xf a.tar -C back")
			transtest.SameTrees(t, filepath.Join(dir, "tree"), filepath.Join(dir, "back"))
			checkListing(t, archive, m.Dir)
		})
	}
}

// TestSyncInPlace: an archive given as a descriptor (the node beneath,
// fd 4) is rewritten in place, and the members that did not change read
// from the new archive afterwards, again and again.
func TestSyncInPlace(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			dir := kittest.TempDir(t)
			smallTree(t, dir)
			z := ""
			if gz {
				z = "z"
			}
			transtest.Sh(t, dir, "tar c"+z+"f a.tar -C tree .")
			f, err := os.OpenFile(filepath.Join(dir, "a.tar"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			a, err := tarfs.Open(tarfs.Options{File: f, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			m := kittest.MountNode(t, a.Mem.Root())
			for i := range 3 {
				transtest.Sh(t, "", fmt.Sprintf("echo %d >> %s/%s && echo %d >> %s/tree/%s", i, m.Dir, changedFile, i, dir, changedFile))
				if err := a.Sync(); err != nil {
					t.Fatal(err)
				}
				transtest.SameTrees(t, filepath.Join(dir, "tree"), m.Dir)
				os.RemoveAll(filepath.Join(dir, "back"))
				transtest.Sh(t, dir, "mkdir back && tar xf a.tar -C back")
				transtest.SameTrees(t, filepath.Join(dir, "tree"), filepath.Join(dir, "back"))
			}
		})
	}
}

// TestUnderlying: the program started as settrans and the fs server start
// it, with the archive as the node beneath (fd 4), goes away on request
// and leaves the change in the archive.
func TestUnderlying(t *testing.T) {
	dir := kittest.TempDir(t)
	smallTree(t, dir)
	transtest.Sh(t, dir, "tar cJf a.tar.xz -C tree .")
	f, err := os.OpenFile(filepath.Join(dir, "a.tar.xz"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, p := kittest.RunListening(t, f, bin)
	f.Close()
	m := kittest.Mount(t, c)
	transtest.SameTrees(t, filepath.Join(dir, "tree"), m.Dir)
	change(t, m.Dir)
	change(t, filepath.Join(dir, "tree"))
	if err := c.Goaway(t.Context(), 0); err != nil {
		t.Fatalf("goaway: %v", err)
	}
	if err := p.Wait(t); err != nil {
		t.Fatalf("tarfs after goaway: %v: %s", err, p.Stderr)
	}
	transtest.Sh(t, dir, "mkdir back && tar xJf a.tar.xz -C back")
	transtest.SameTrees(t, filepath.Join(dir, "tree"), filepath.Join(dir, "back"))
}

// TestReadOnlyUnderlying: an archive handed over read-only is served, and
// writing it back fails with a clear error, leaving it as it was.
func TestReadOnlyUnderlying(t *testing.T) {
	dir, _ := damagedTree(t)
	before, _ := os.ReadFile(filepath.Join(dir, "a.tar"))
	f, err := os.Open(filepath.Join(dir, "a.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, err := tarfs.Open(tarfs.Options{File: f})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	m := kittest.MountNode(t, a.Mem.Root())
	os.WriteFile(filepath.Join(m.Dir, "new"), []byte("x"), 0o644)
	if err := a.Sync(); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("sync of a read-only archive: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "a.tar")); !bytes.Equal(before, after) {
		t.Error("the archive changed")
	}
}

// damagedTree is three files of 100 kB each, tarred in order.
func damagedTree(t testing.TB) (dir string, data map[string][]byte) {
	dir = kittest.TempDir(t)
	os.Mkdir(filepath.Join(dir, "t"), 0o755)
	data = map[string][]byte{}
	for i, name := range []string{"f1", "f2", "f3"} {
		b := bytes.Repeat([]byte{byte('a' + i)}, 100<<10)
		data[name] = b
		os.WriteFile(filepath.Join(dir, "t", name), b, 0o644)
	}
	transtest.Sh(t, dir, "tar cf a.tar -C t f1 f2 f3")
	return dir, data
}

func readable(t testing.TB, mnt string, data map[string][]byte, want map[string]error) {
	t.Helper()
	for name, werr := range want {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		switch {
		case werr == nil && err != nil:
			t.Errorf("%s: %v", name, err)
		case werr == nil && !bytes.Equal(got, data[name]):
			t.Errorf("%s: wrong contents", name)
		case werr != nil && !errors.Is(err, werr):
			t.Errorf("%s: %v, want %v", name, err, werr)
		}
	}
}

// TestDamaged: a truncated archive lists the member it cuts and gives
// EIO for it alone; a corrupt header loses that member only; a truncated
// .tar.gz serves what precedes the cut.
func TestDamaged(t *testing.T) {
	t.Run("truncated", func(t *testing.T) {
		dir, data := damagedTree(t)
		os.Truncate(filepath.Join(dir, "a.tar"), 2*(512+100<<10)+512+50<<10)
		m := kittest.MountTranslator(t, tarfs.Translator(), filepath.Join(dir, "a.tar"))
		readable(t, m.Dir, data, map[string]error{"f1": nil, "f2": nil, "f3": syscall.EIO})
		if st, err := os.Stat(filepath.Join(m.Dir, "f3")); err != nil || st.Size() != 100<<10 {
			t.Errorf("f3: %v, %v", st, err)
		}
	})
	t.Run("bad-header", func(t *testing.T) {
		dir, data := damagedTree(t)
		b, _ := os.ReadFile(filepath.Join(dir, "a.tar"))
		copy(b[512+100<<10+148:], "garbage!") // f2's checksum
		os.WriteFile(filepath.Join(dir, "a.tar"), b, 0o644)
		m := kittest.MountTranslator(t, tarfs.Translator(), filepath.Join(dir, "a.tar"))
		readable(t, m.Dir, data, map[string]error{"f1": nil, "f2": syscall.ENOENT, "f3": nil})
	})
	t.Run("truncated-gzip", func(t *testing.T) {
		dir, data := damagedTree(t)
		// Incompressible data, so the cut lands in f3 as in the plain case.
		for _, name := range []string{"f1", "f2", "f3"} {
			transtest.Sh(t, dir, "head -c 102400 /dev/urandom > t/"+name)
			data[name], _ = os.ReadFile(filepath.Join(dir, "t", name))
		}
		transtest.Sh(t, dir, "tar czf a.tgz -C t f1 f2 f3")
		st, _ := os.Stat(filepath.Join(dir, "a.tgz"))
		os.Truncate(filepath.Join(dir, "a.tgz"), st.Size()-30<<10)
		m := kittest.MountTranslator(t, tarfs.Translator(), filepath.Join(dir, "a.tgz"))
		readable(t, m.Dir, data, map[string]error{"f1": nil, "f2": nil, "f3": syscall.EIO})
	})
	t.Run("write-back", func(t *testing.T) {
		// A damaged member blocks writing back until it is removed.
		dir, data := damagedTree(t)
		os.Truncate(filepath.Join(dir, "a.tar"), 2*(512+100<<10)+512+50<<10)
		m := kittest.MountTranslator(t, tarfs.Translator(), filepath.Join(dir, "a.tar"))
		os.WriteFile(filepath.Join(m.Dir, "f4"), []byte("new"), 0o644)
		if err := m.Client.Goaway(t.Context(), 0); err == nil || !strings.Contains(err.Error(), "f3") {
			t.Errorf("goaway with a damaged member: %v, want an error naming f3", err)
		}
		os.Remove(filepath.Join(m.Dir, "f3"))
		if err := m.Client.Goaway(t.Context(), 0); err != nil {
			t.Fatal(err)
		}
		if out := transtest.Sh(t, dir, "tar tf a.tar"); out != "f1\nf2\nf4\n" {
			t.Errorf("written back: %q", out)
		}
		readable(t, m.Dir, data, map[string]error{"f1": nil, "f2": nil})
	})
}

// TestBadInput: one line naming the cause, exit status 1 or 2, nothing
// mounted.
func TestBadInput(t *testing.T) {
	dir := kittest.TempDir(t)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	os.WriteFile(filepath.Join(dir, "text"), bytes.Repeat([]byte("not an archive\n"), 100), 0o644)
	os.WriteFile(filepath.Join(dir, "short"), []byte("tiny"), 0o644)
	transtest.Sh(t, dir, "head -c 10000 /dev/urandom | gzip > junk.gz && tar cf plain.tar text")
	kittest.Refuses(t, bin, dir, mnt, []kittest.Refusal{
		{Args: []string{"text", "--mount", mnt}, Status: 1, Want: "not a tar archive"},
		{Args: []string{"short", "--mount", mnt}, Status: 1, Want: "not a tar archive"},
		{Args: []string{"junk.gz", "--mount", mnt}, Status: 1, Want: "gzip-compressed but not a tar archive"},
		{Args: []string{"-z", "plain.tar", "--mount", mnt}, Status: 1, Want: "not gzip"},
		{Args: []string{"missing.tar", "--mount", mnt}, Status: 1, Want: "no such file"},
		{Args: []string{"-z", "-J", "plain.tar", "--mount", mnt}, Status: 2, Want: "one of -z, -j, -J"},
		{Args: []string{"a", "b", "--mount", mnt}, Status: 2, Want: "one ARCHIVE only"},
		{Args: []string{"--mount", mnt}, Status: 2, Want: "no ARCHIVE"},
	})
	// --create makes a new archive, written when something is added.
	m := kittest.MountTranslator(t, tarfs.Translator(), "-c", filepath.Join(dir, "new.tar"))
	os.WriteFile(filepath.Join(m.Dir, "hello"), []byte("hi\n"), 0o644)
	if err := m.Client.Goaway(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	if out := transtest.Sh(t, dir, "tar xOf new.tar hello"); out != "hi\n" {
		t.Errorf("new archive holds %q", out)
	}
}

// TestUnprivileged: a plain user runs tarfs in a user namespace on their
// own archive, reads it, changes it, and finds the change in the archive
// after SIGTERM.
func TestUnprivileged(t *testing.T) {
	dir := kittest.TempDir(t)
	smallTree(t, dir)
	uid, gid := transtest.User(t, "herdkit")
	transtest.Sh(t, dir, fmt.Sprintf("chown -R %d:%d . && chmod 0777 .", uid, gid))
	out, err := kittest.AsUser(t, "herdkit", true, fmt.Sprintf(`
cd %[1]s
tar cjf a.tbz -C tree .
mkdir mnt
%[2]s a.tbz --mount mnt & pid=$!
waitmount %[1]s/mnt
diff -r --no-dereference tree mnt && echo same
echo from-user > mnt/newfile && rm mnt/hard && mkdir mnt/userdir
kill $pid
wait $pid
echo "exit $?"
tar xjOf a.tbz ./newfile
tar tjf a.tbz | grep -c -e '^./hard$' -e '^./userdir/$'
`, dir, kittest.Quote(bin)))
	if err != nil || out != "same\nexit 0\nfrom-user\n1\n" {
		t.Errorf("as herdkit: %v: %q", err, out)
	}
}
