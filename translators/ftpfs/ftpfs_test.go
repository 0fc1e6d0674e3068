package ftpfs_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"herd/translators/ftpfs"
	"herd/translators/internal/transtest"
	"herd/translators/kit/kittest"
)

var bin string

func TestMain(m *testing.M) { kittest.Main(m, map[string]*string{"ftpfs": &bin}) }

// serverDir makes the tree the server serves:
//
//	hello.txt, "name with space", sub/data.bin (random, 300 KiB), sub/deeper/, empty/
func serverDir(t *testing.T) (dir string, data []byte) {
	dir = kittest.TempDir(t)
	data = make([]byte, 300<<10)
	rand.Read(data)
	transtest.Must(t, os.MkdirAll(filepath.Join(dir, "sub/deeper"), 0o755))
	transtest.Must(t, os.Mkdir(filepath.Join(dir, "empty"), 0o755))
	transtest.Must(t, os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello over ftp\n"), 0o644))
	transtest.Must(t, os.WriteFile(filepath.Join(dir, "name with space"), []byte("spaced\n"), 0o600))
	transtest.Must(t, os.WriteFile(filepath.Join(dir, "sub/data.bin"), data, 0o644))
	return dir, data
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestReadWrite: list, read (checksum), write and see the file in the
// server's directory, append, truncate, rm, mkdir, rmdir, rename.
func TestReadWrite(t *testing.T) {
	for _, listing := range []string{"mlsd", "list"} {
		t.Run(listing, func(t *testing.T) {
			dir, data := serverDir(t)
			srv := startServer(t, dir, 0)
			m := kittest.MountTranslator(t, ftpfs.Translator(), "--listing="+listing, "--cache-timeout=0", srv.Addr)
			mnt := func(p string) string { return filepath.Join(m.Dir, p) }

			if got, want := transtest.Names(t, m.Dir), "empty/,hello.txt,name with space,sub/"; got != want {
				t.Errorf("root lists %q, want %q", got, want)
			}
			if got := transtest.Names(t, mnt("sub")); got != "data.bin,deeper/" {
				t.Errorf("sub lists %q", got)
			}
			fi, err := os.Stat(mnt("sub/data.bin"))
			if err != nil || fi.Size() != int64(len(data)) || !fi.Mode().IsRegular() {
				t.Fatalf("stat data.bin: %v, %v", fi, err)
			}
			if fi, _ := os.Stat(mnt("name with space")); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode of 'name with space': %v", fi.Mode())
			}
			got, err := os.ReadFile(mnt("sub/data.bin"))
			if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
				t.Fatalf("data.bin read back wrong (%d bytes, %v)", len(got), err)
			}
			if s := readFile(mnt("name with space")); s != "spaced\n" {
				t.Errorf("name with space: %q", s)
			}

			// A new file reaches the server when it is closed.
			transtest.Must(t, os.WriteFile(mnt("sub/new.txt"), []byte("written through ftpfs\n"), 0o644))
			transtest.Eventually(t, "new.txt on the server", func() bool {
				return readFile(filepath.Join(dir, "sub/new.txt")) == "written through ftpfs\n"
			})
			// fsync sends it at once.
			f, err := os.OpenFile(mnt("hello.txt"), os.O_WRONLY|os.O_APPEND, 0)
			transtest.Must(t, err)
			_, err = f.WriteString("and more\n")
			transtest.Must(t, err)
			transtest.Must(t, f.Sync())
			if s := readFile(filepath.Join(dir, "hello.txt")); s != "hello over ftp\nand more\n" {
				t.Errorf("after append and fsync the server has %q", s)
			}
			transtest.Must(t, f.Close())
			transtest.Must(t, os.Truncate(mnt("hello.txt"), 5))
			if s := readFile(filepath.Join(dir, "hello.txt")); s != "hello" {
				t.Errorf("after truncate the server has %q", s)
			}

			transtest.Must(t, os.Mkdir(mnt("made"), 0o755))
			if fi, err := os.Stat(filepath.Join(dir, "made")); err != nil || !fi.IsDir() {
				t.Errorf("mkdir on the server: %v", err)
			}
			transtest.Must(t, os.Rename(mnt("sub/new.txt"), mnt("made/moved.txt")))
			if readFile(filepath.Join(dir, "made/moved.txt")) != "written through ftpfs\n" {
				t.Error("rename on the server")
			}
			if _, err := os.Stat(mnt("sub/new.txt")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("old name after rename: %v", err)
			}
			if s := readFile(mnt("made/moved.txt")); s != "written through ftpfs\n" {
				t.Errorf("moved file reads %q", s)
			}
			transtest.Must(t, os.Rename(mnt("made"), mnt("made2")))
			if readFile(mnt("made2/moved.txt")) != "written through ftpfs\n" {
				t.Error("file in a renamed directory")
			}
			if err := os.Remove(mnt("made2")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EIO) {
				t.Errorf("rmdir of a non-empty dir: %v", err)
			}
			transtest.Must(t, os.Remove(mnt("made2/moved.txt")))
			transtest.Must(t, os.Remove(mnt("made2")))
			if _, err := os.Stat(filepath.Join(dir, "made2")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("rmdir on the server: %v", err)
			}
			transtest.Must(t, os.Chmod(mnt("sub/data.bin"), 0o600))
			if fi, _ := os.Stat(filepath.Join(dir, "sub/data.bin")); fi.Mode().Perm() != 0o600 {
				t.Errorf("chmod on the server: %v", fi.Mode())
			}
			if _, err := os.ReadFile(mnt("missing")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("missing file: %v", err)
			}
			// Changes made on the server show after the cache timeout (0 here).
			transtest.Must(t, os.WriteFile(filepath.Join(dir, "from-server"), []byte("x"), 0o644))
			transtest.Eventually(t, "a file made on the server shows", func() bool { _, err := os.Stat(mnt("from-server")); return err == nil })
		})
	}
}

// TestPath: HOST/PATH serves a subdirectory; user:pass@ logs in.
func TestPath(t *testing.T) {
	dir, data := serverDir(t)
	srv := startServer(t, dir, 0)
	m := kittest.MountTranslator(t, ftpfs.Translator(), "user:secret@"+srv.Addr+"/sub")
	if got := transtest.Names(t, m.Dir); got != "data.bin,deeper/" {
		t.Errorf("lists %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(m.Dir, "data.bin")); err != nil || !bytes.Equal(b, data) {
		t.Errorf("read: %v", err)
	}
	opts, err := m.Client.GetOptions(t.Context())
	if want := fmt.Sprint([]string{"ftpfs", "user@" + srv.Addr + "/sub"}); err != nil || fmt.Sprint(opts) != want {
		t.Errorf("options %q, want %s (no password)", opts, want)
	}
}

// TestServerKilledMidRead: the server dies while a file is coming: the
// reader gets EIO, not a hang, and later calls fail at once.
func TestServerKilledMidRead(t *testing.T) {
	dir := kittest.TempDir(t)
	big := make([]byte, 4<<20)
	rand.Read(big)
	transtest.Must(t, os.WriteFile(filepath.Join(dir, "big"), big, 0o644))
	srv := startServer(t, dir, 256<<10) // 16 s for the whole file
	m := kittest.MountTranslator(t, ftpfs.Translator(), srv.Addr)
	res := make(chan error, 1)
	go func() {
		_, err := os.ReadFile(filepath.Join(m.Dir, "big"))
		res <- err
	}()
	transtest.Eventually(t, "the server starts sending", func() bool { return strings.Contains(srv.Stderr(), "RETR-STARTED") })
	srv.Kill()
	select {
	case err := <-res:
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("read while the server died: %v, want EIO", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("read hangs after the server died")
	}
	if _, err := os.ReadDir(filepath.Join(m.Dir, "newdir-never-listed")); err == nil {
		t.Error("listing works without a server")
	}
}

func TestBadInput(t *testing.T) {
	dir, _ := serverDir(t)
	srv := startServer(t, dir, 0)
	mnt := kittest.TempDir(t)
	// A port where nothing listens.
	down := startServer(t, kittest.TempDir(t), 0)
	down.Kill()
	kittest.Refuses(t, bin, "", mnt, []kittest.Refusal{
		{Args: []string{"user:wrong@" + srv.Addr, "--mount", mnt}, Status: 1, Want: "login as user refused: 530"},
		{Args: []string{down.Addr, "--mount", mnt}, Status: 1, Want: "connection refused"},
		{Args: []string{srv.Addr + "/nonexistent", "--mount", mnt}, Status: 1, Want: "/nonexistent: 550"},
		{Args: []string{"http://example.com/", "--mount", mnt}, Status: 2, Want: "only ftp://"},
		{Args: []string{"--mount", mnt}, Status: 2, Want: "want one HOST"},
		{Args: []string{"--listing=dos", srv.Addr, "--mount", mnt}, Status: 2, Want: "--listing"},
	})
}

// TestProgram runs cmd/ftpfs as settrans -a does on the host.
func TestProgram(t *testing.T) {
	dir, data := serverDir(t)
	srv := startServer(t, dir, 0)
	mnt := kittest.TempDir(t)
	kittest.RunMount(t, bin, mnt, srv.Addr)
	if b, err := os.ReadFile(filepath.Join(mnt, "sub/data.bin")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read: %v", err)
	}
	transtest.Must(t, os.WriteFile(filepath.Join(mnt, "w"), []byte("w\n"), 0o644))
	transtest.Eventually(t, "w on the server", func() bool { return readFile(filepath.Join(dir, "w")) == "w\n" })
}

// TestProgramUnprivileged: a plain user mounts an FTP server in a user
// namespace; the program leaves nothing behind.
func TestProgramUnprivileged(t *testing.T) {
	dir, data := serverDir(t)
	srv := startServer(t, dir, 0)
	mnt := kittest.TempDir(t)
	uid, gid := transtest.User(t, "herdkit")
	transtest.Must(t, os.Chown(mnt, int(uid), int(gid)))
	out, err := kittest.AsUser(t, "herdkit", true, fmt.Sprintf(`
%[1]s %[3]s --mount %[2]s & pid=$!
waitmount %[2]s
ls %[2]s
sha256sum < %[2]s/sub/data.bin
echo from-user > %[2]s/empty/u
kill $pid
wait $pid
echo "exit $?"
grep -c " %[2]s " /proc/self/mountinfo || true
`, kittest.Quote(bin), kittest.Quote(mnt), srv.Addr))
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := fmt.Sprintf("empty\nhello.txt\nname with space\nsub\n%x  -\nexit 0\n0\n", sha256.Sum256(data))
	if out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	// Written back at close or, at the latest, when the program stopped.
	if s := readFile(filepath.Join(dir, "empty/u")); s != "from-user\n" {
		t.Errorf("the server has %q", s)
	}
}

// TestRedirect: the program serves its socket (as settrans and the fs
// server start it) and a client reaches it through a redirect, as inside
// a subenvironment; the Hurd's "PATH HOST" arguments.
func TestRedirect(t *testing.T) {
	dir, data := serverDir(t)
	srv := startServer(t, dir, 0)
	sock := filepath.Join(kittest.TempDir(t), "ftpfs.sock")
	kittest.RunSocket(t, bin, sock, "/sub", srv.Addr)
	m := kittest.Mount(t, kittest.NewRedirector(map[string]string{"ftp": sock}))
	if b, err := os.ReadFile(filepath.Join(m.Dir, "ftp/data.bin")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read through the redirect: %v", err)
	}
}
