package firmlink_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"herd/translators/firmlink"
	"herd/translators/internal/transtest"
	"herd/translators/kit/kittest"
)

var bin string

func TestMain(m *testing.M) { kittest.Main(m, map[string]*string{"firmlink": &bin}) }

// TestPosix runs go-fuse's posixtest on a firmlink to a fresh host directory.
func TestPosix(t *testing.T) {
	kittest.Posix(t, func(t *testing.T) string {
		return kittest.MountTranslator(t, firmlink.Translator(), t.TempDir()).Dir
	})
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

// TestProgram runs cmd/firmlink with --mount on a directory and on a file.
func TestProgram(t *testing.T) {
	base := kittest.TempDir(t)
	target := filepath.Join(base, "target")
	os.Mkdir(target, 0o755)
	os.WriteFile(filepath.Join(target, "f"), []byte("host file\n"), 0o644)
	node := filepath.Join(base, "node")
	os.Mkdir(node, 0o755)
	kittest.RunMount(t, bin, node, target)
	out, err := exec.Command("sh", "-c", fmt.Sprintf(`cd %s && cat f && echo new > g && mkdir d && mv g d/h && ls`, node)).CombinedOutput()
	if err != nil || string(out) != "host file\nd\nf\n" {
		t.Fatalf("shell: %v: %q", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(target, "d", "h")); string(b) != "new\n" {
		t.Errorf("target d/h holds %q", b)
	}

	fileTarget := filepath.Join(base, "target-file")
	os.WriteFile(fileTarget, []byte("one\n"), 0o644)
	fileNode := filepath.Join(base, "file-node")
	os.WriteFile(fileNode, nil, 0o644)
	kittest.RunMount(t, bin, fileNode, fileTarget)
	if b, err := os.ReadFile(fileNode); err != nil || string(b) != "one\n" {
		t.Errorf("file firmlink reads %q, %v", b, err)
	}
}

// TestProgramUnprivileged: a plain user firmlinks their own directory.
func TestProgramUnprivileged(t *testing.T) {
	uid, gid := transtest.User(t, "herdkit")
	base := kittest.TempDir(t)
	target := filepath.Join(base, "target")
	node := filepath.Join(base, "node")
	for _, d := range []string{target, node} {
		os.Mkdir(d, 0o755)
		os.Chown(d, int(uid), int(gid))
	}
	out, err := kittest.AsUser(t, "herdkit", true, fmt.Sprintf(`
%[1]s --mount %[2]s %[3]s & pid=$!
waitmount %[2]s
echo written > %[2]s/mine && cat %[3]s/mine
kill $pid
wait $pid
echo "exit $?"
`, kittest.Quote(bin), kittest.Quote(node), kittest.Quote(target)))
	if err != nil || out != "written\nexit 0\n" {
		t.Fatalf("%v: %q", err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(target, "mine"), &st); err != nil || st.Uid != uid {
		t.Errorf("the file made through the firmlink: uid %d, %v; want %d", st.Uid, err, uid)
	}
}

func TestBadInput(t *testing.T) {
	node := kittest.TempDir(t)
	kittest.Refuses(t, bin, "", node, []kittest.Refusal{
		{Args: []string{"--mount", node}, Status: 2, Want: "missing TARGET"},
		{Args: []string{"a", "b", "--mount", node}, Status: 2, Want: "one TARGET only"},
		{Args: []string{"/nonexistent/herd", "--mount", node}, Status: 1, Want: "no such file"},
		{Args: []string{"/etc/hostname", "--mount", node}, Status: 1, Want: "mount it on a file"},
	})
}
