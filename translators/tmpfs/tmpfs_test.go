package tmpfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"herd/translators/internal/transtest"
	"herd/translators/kit/kittest"
	"herd/translators/tmpfs"
)

func TestMain(m *testing.M) {
	kittest.Main(m, map[string]*string{"tmpfs": &bin})
}

// TestPosix runs go-fuse's posixtest suite on tmpfs mounted through the kit
// and the fs bridge, each case on a fresh mount.
func TestPosix(t *testing.T) {
	kittest.Posix(t, func(t *testing.T) string {
		return kittest.MountTranslator(t, tmpfs.Translator()).Dir
	})
}

func TestSizeLimit(t *testing.T) {
	m := kittest.MountTranslator(t, tmpfs.Translator(), "--size", "64k")
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.Dir, &st); err != nil {
		t.Fatal(err)
	}
	if got := int64(st.Blocks) * int64(st.Bsize); got != 64<<10 {
		t.Errorf("statfs size = %d, want %d", got, 64<<10)
	}
	f, err := os.Create(filepath.Join(m.Dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = f.Write(make([]byte, 100<<10))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 100k into a 64k tmpfs: %v, want ENOSPC", err)
	}
	if err := syscall.Statfs(m.Dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Bfree != 0 {
		t.Errorf("full tmpfs has %d free blocks", st.Bfree)
	}
	// Removing the file gives the space back.
	f.Close()
	if err := os.Remove(filepath.Join(m.Dir, "big")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "small"), make([]byte, 60<<10), 0o644); err != nil {
		t.Fatalf("space not given back: %v", err)
	}
	// fsysopts --size grows it at run time.
	if err := m.Client.SetOptions(t.Context(), []string{"--size=1M"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "more"), make([]byte, 500<<10), 0o644); err != nil {
		t.Fatalf("after --size=1M: %v", err)
	}
	opts, err := m.Client.GetOptions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"tmpfs", "--size=1M"}; !equal(opts, want) {
		t.Errorf("options %q, want %q", opts, want)
	}
	if err := m.Client.SetOptions(t.Context(), []string{"--size=lots"}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("--size=lots: %v, want EINVAL", err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestHurdSize: the Hurd's spelling, tmpfs SIZE.
func TestHurdSize(t *testing.T) {
	m := kittest.MountTranslator(t, tmpfs.Translator(), "2M")
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.Dir, &st); err != nil {
		t.Fatal(err)
	}
	if got := int64(st.Blocks) * int64(st.Bsize); got != 2<<20 {
		t.Errorf("size %d, want 2M", got)
	}
}

func TestSparse(t *testing.T) {
	m := kittest.MountTranslator(t, tmpfs.Translator(), "--size=1M")
	p := filepath.Join(m.Dir, "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A terabyte-sized file in a megabyte tmpfs: holes take no room.
	if err := f.Truncate(1 << 40); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("end"), 1<<40-3); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := f.ReadAt(buf, 1<<30); err != nil || !bytes.Equal(buf, make([]byte, 8)) {
		t.Errorf("hole reads %q, %v", buf, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 1<<40 || st.Blocks > 16 {
		t.Errorf("size %d blocks %d, want 1T in at most 16 blocks", st.Size, st.Blocks)
	}
	off, err := f.Seek(0, 3 /* SEEK_DATA */)
	if err != nil || off != (1<<40-4096) {
		t.Errorf("SEEK_DATA = %d, %v; want %d", off, err, 1<<40-4096)
	}
}

func TestBadSize(t *testing.T) {
	for _, s := range []string{"x", "-1", "12q", "200%", "%"} {
		if _, err := tmpfs.ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) succeeded", s)
		}
	}
	for s, want := range map[string]int64{"": 0, "10": 10, "4k": 4096, "2M": 2 << 20, "1g": 1 << 30} {
		if got, err := tmpfs.ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	if got, err := tmpfs.ParseSize("50%"); err != nil || got <= 0 {
		t.Errorf("ParseSize(50%%) = %d, %v", got, err)
	}
}

var bin string

// TestProgram runs cmd/tmpfs with --mount as root and uses it from the
// shell: the tree, the size limit, statfs.
func TestProgram(t *testing.T) {
	dir := filepath.Join(kittest.TempDir(t), "mnt")
	os.Mkdir(dir, 0o755)
	kittest.RunMount(t, bin, dir, "--size=1M")
	if err := os.MkdirAll(filepath.Join(dir, "a/b"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", fmt.Sprintf(`cd %s && echo hi > a/b/f && ln a/b/f g && ln -s a/b/f s && cat s && stat -c '%%h %%s' g && df -B1 --output=size . | tail -1 && head -c 2000000 /dev/zero > big`, dir)).CombinedOutput()
	if err == nil {
		t.Fatalf("filling past --size succeeded: %s", out)
	}
	lines := strings.Split(string(out), "\n")
	if len(lines) < 4 || lines[0] != "hi" || lines[1] != "2 3" || strings.TrimSpace(lines[2]) != "1048576" || !strings.Contains(lines[3], "No space left") {
		t.Errorf("shell session: %q", out)
	}
	os.Remove(filepath.Join(dir, "big"))
	// Another user: owns what they create, is refused what root keeps.
	uid, _ := transtest.User(t, "herdkit")
	sout, err := kittest.AsUser(t, "herdkit", false, fmt.Sprintf(`cd %s
echo mine > mine && stat -c %%u mine
(echo no > a/b/f) 2>/dev/null || echo refused
rm g 2>/dev/null || echo refused`, dir))
	if err != nil || sout != fmt.Sprintf("%d\nrefused\nrefused\n", uid) {
		t.Errorf("as herdkit: %v: %q", err, sout)
	}
}

// TestProgramUnprivileged: a plain user runs tmpfs in a user namespace,
// owns the files created there, and gets ENOSPC at the limit.
func TestProgramUnprivileged(t *testing.T) {
	dir := filepath.Join(kittest.TempDir(t), "mnt")
	os.Mkdir(dir, 0o755)
	out, err := kittest.AsUser(t, "herdkit", true, fmt.Sprintf(`
%[1]s --mount %[2]s --size 64k & pid=$!
waitmount %[2]s
cd %[2]s
mkdir d && echo data > d/f && cat d/f
stat -c '%%u %%a' d/f .
head -c 100000 /dev/zero > big 2>/dev/null || echo ENOSPC
cd /
kill $pid
wait $pid
echo "exit $?"
`, kittest.Quote(bin), kittest.Quote(dir)))
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out != "data\n0 644\n0 1777\nENOSPC\nexit 0\n" {
		t.Errorf("output %q", out)
	}
}

func TestBadInput(t *testing.T) {
	dir := kittest.TempDir(t)
	kittest.Refuses(t, bin, "", dir, []kittest.Refusal{
		{Args: []string{"--size=lots", "--mount", dir}, Status: 2, Want: "--size"},
		{Args: []string{"--mode=999", "--mount", dir}, Status: 2, Want: "--mode"},
		{Args: []string{"1M", "2M", "--mount", dir}, Status: 2, Want: "one SIZE only"},
		{Args: []string{"1M", "--size=2M", "--mount", dir}, Status: 2, Want: "SIZE given twice"},
		{Args: []string{"lots", "--mount", dir}, Status: 2, Want: "--size"},
	})
}

// FuzzParseSize: ParseSize never panics and never gives a negative size.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"", "0", "10", "4k", "2M", "1g", "3T", "50%", "100%", "0.5%", "x", "-1", "9223372036854775807k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := tmpfs.ParseSize(s); err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}

// BenchmarkRead reads a 16 MiB file through the kit, proto and the bridge.
func BenchmarkRead(b *testing.B) {
	m := kittest.MountTranslator(b, tmpfs.Translator())
	p := filepath.Join(m.Dir, "f")
	data := bytes.Repeat([]byte("herd"), 4<<20)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		for {
			n, err := f.Read(buf)
			if n == 0 || err != nil {
				break
			}
		}
		f.Close()
	}
}

// BenchmarkCreateUnlink creates, stats and removes a file per iteration.
func BenchmarkCreateUnlink(b *testing.B) {
	m := kittest.MountTranslator(b, tmpfs.Translator())
	p := filepath.Join(m.Dir, "f")
	var st syscall.Stat_t
	start := time.Now()
	for b.Loop() {
		fd, err := syscall.Open(p, syscall.O_CREAT|syscall.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		syscall.Close(fd)
		syscall.Stat(p, &st)
		if err := syscall.Unlink(p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "files/s")
}
