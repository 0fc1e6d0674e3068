package symlink_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"herd/translators/internal/transtest"
	"herd/translators/kit/kittest"
	"herd/translators/symlink"
)

var bin string

func TestMain(m *testing.M) {
	kittest.Main(m, map[string]*string{"symlink": &bin})
}

// TestThroughRedirect: the symlink program (on --socket) reached through
// the fs bridge by a redirect, as a passive translator's node is inside a
// subenvironment: the node is a symlink the kernel follows.
func TestThroughRedirect(t *testing.T) {
	dir := kittest.TempDir(t)
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("pointed at\n"), 0o644)
	sock := filepath.Join(dir, "symlink.sock")
	kittest.RunSocket(t, bin, sock, target)
	m := kittest.Mount(t, kittest.NewRedirector(map[string]string{"link": sock}))
	node := filepath.Join(m.Dir, "link")
	got, err := os.Readlink(node)
	if err != nil || got != target {
		t.Fatalf("readlink %q, %v", got, err)
	}
	fi, err := os.Lstat(node)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("lstat %v, %v", fi, err)
	}
	b, err := os.ReadFile(node)
	if err != nil || string(b) != "pointed at\n" {
		t.Errorf("reading through the link: %q, %v", b, err)
	}
}

// TestUnprivileged: the symlink program run by a plain user, reached
// through a redirect.
func TestUnprivileged(t *testing.T) {
	uid, gid := transtest.User(t, "herdkit")
	dir := kittest.TempDir(t)
	os.Chown(dir, int(uid), int(gid))
	sock := filepath.Join(dir, "symlink.sock")
	kittest.RunSocketAs(t, &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}, bin, sock, "/target/of/herdkit")
	m := kittest.Mount(t, kittest.NewRedirector(map[string]string{"link": sock}))
	if got, err := os.Readlink(filepath.Join(m.Dir, "link")); err != nil || got != "/target/of/herdkit" {
		t.Errorf("readlink %q, %v", got, err)
	}
}

func TestRootOverProto(t *testing.T) {
	c, p := kittest.RunListening(t, nil, bin, "/some/where")
	e, err := c.Root(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if e.Attr.Mode != syscall.S_IFLNK|0o777 || e.Attr.Size != uint64(len("/some/where")) {
		t.Errorf("root attr mode %o size %d", e.Attr.Mode, e.Attr.Size)
	}
	target, err := c.Readlink(t.Context(), e.Node)
	if err != nil || target != "/some/where" {
		t.Errorf("readlink %q %v", target, err)
	}
	opts, _ := c.GetOptions(t.Context())
	if strings.Join(opts, " ") != "symlink /some/where" {
		t.Errorf("options %q", opts)
	}
	if err := c.Goaway(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := p.Wait(t); err != nil {
		t.Errorf("exit: %v: %s", err, p.Stderr)
	}
}

func TestBadInput(t *testing.T) {
	node := filepath.Join(kittest.TempDir(t), "n")
	os.WriteFile(node, nil, 0o644)
	kittest.Refuses(t, bin, "", node, []kittest.Refusal{
		{Args: []string{"--mount", node}, Status: 2, Want: "missing TARGET"},
		{Args: []string{"a", "b", "--mount", node}, Status: 2, Want: "one TARGET only"},
		{Args: []string{"--bogus", "a", "--mount", node}, Status: 2, Want: "unknown flag: --bogus"},
		{Args: []string{"/etc", "--mount", node}, Status: 1, Want: "Linux cannot mount"},
	})
}

func TestStart(t *testing.T) {
	if _, err := symlink.Translator().Start(nil); err == nil {
		t.Error("no TARGET accepted")
	}
	in, err := symlink.Translator().Start([]string{"t"})
	if err != nil {
		t.Fatal(err)
	}
	e, err := in.FileSystem().Root(t.Context())
	if err != nil || e.Attr.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Errorf("root %v %v", e, err)
	}
}
