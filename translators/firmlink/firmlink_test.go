package firmlink_test

import (
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"

	"herd/internal/testns"
	"herd/translators/firmlink"
	"herd/translators/kit/kittest"
)

func TestMain(m *testing.M) { testns.Main(m) }

var posixExceptions = map[string]string{
	"FcntlFlockLocksFile": "POSIX locks are per process: the kernel's local locking lets the same process lock again, as on any local filesystem",
}

// TestPosix runs go-fuse's posixtest on a firmlink to a fresh host directory.
func TestPosix(t *testing.T) {
	var names []string
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixExceptions[name]; ok {
				t.Skip(why)
			}
			m := kittest.MountTranslator(t, firmlink.Translator(), t.TempDir())
			posixtest.All[name](t, m.Dir)
		})
	}
}

func TestDirectory(t *testing.T) {
	target := t.TempDir()
	if err := os.WriteFile(filepath.Join(target, "old"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := kittest.MountTranslator(t, firmlink.Translator(), target)
	got, err := os.ReadFile(filepath.Join(m.Dir, "old"))
	if err != nil || string(got) != "from the host\n" {
		t.Fatalf("reading through the firmlink: %q, %v", got, err)
	}
	// Writes go to the target.
	if err := os.WriteFile(filepath.Join(m.Dir, "new"), []byte("through the link\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = os.ReadFile(filepath.Join(target, "new"))
	if err != nil || string(got) != "through the link\n" {
		t.Fatalf("the target got %q, %v", got, err)
	}
	// The node is not a link: lstat says directory, readlink fails.
	fi, err := os.Lstat(m.Dir)
	if err != nil || !fi.IsDir() {
		t.Fatalf("lstat of the node: %v, %v", fi, err)
	}
	if _, err := os.Readlink(m.Dir); err == nil {
		t.Error("readlink of a firmlink succeeded")
	}
	var a, b syscall.Stat_t
	syscall.Stat(filepath.Join(target, "new"), &a)
	syscall.Stat(filepath.Join(m.Dir, "new"), &b)
	if a.Ino != b.Ino {
		t.Errorf("inode through the link %d, on the host %d", b.Ino, a.Ino)
	}
}

func TestFile(t *testing.T) {
	target := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(target, []byte("one file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := kittest.MountTranslator(t, firmlink.Translator(), target)
	got, err := os.ReadFile(m.Dir)
	if err != nil || string(got) != "one file\n" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := os.WriteFile(m.Dir, []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(target)
	if string(got) != "changed\n" {
		t.Errorf("target holds %q after writing through the firmlink", got)
	}
}

func TestBadTarget(t *testing.T) {
	if _, err := firmlink.Translator().Start([]string{"/nonexistent/herd"}); err == nil {
		t.Error("a missing target was accepted")
	}
	if _, err := firmlink.Translator().Start(nil); err == nil {
		t.Error("no target was accepted")
	}
}
