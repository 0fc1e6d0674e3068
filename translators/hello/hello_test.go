package hello_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"herd/translators/hello"
	"herd/translators/kit/kittest"
)

var bin string

func TestMain(m *testing.M) {
	kittest.Main(m, map[string]*string{"hello": &bin})
}

func TestHello(t *testing.T) {
	m := kittest.MountTranslator(t, hello.Translator())
	b, err := os.ReadFile(m.Dir)
	if err != nil || string(b) != "Hello, world!\n" {
		t.Fatalf("read %q, %v", b, err)
	}
	fi, err := os.Stat(m.Dir)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != 14 {
		t.Fatalf("stat %v, %v", fi, err)
	}
	if err := os.WriteFile(m.Dir, []byte("no"), 0o644); err == nil {
		t.Error("hello is writable")
	}
	// fsysopts: show and change the contents at run time.
	opts, err := m.Client.GetOptions(t.Context())
	if err != nil || fmt.Sprint(opts) != "[hello]" {
		t.Errorf("options %q, %v", opts, err)
	}
	if err := m.Client.SetOptions(t.Context(), []string{"--contents=Goodbye!\n"}); err != nil {
		t.Fatal(err)
	}
	// The translator's invalidation travels on its own connection, racing
	// this answer; fsysopts has the mount drop its copy, and so do we.
	if _, err := unix.Getxattr(m.Dir, "user.herd.refresh", nil); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if b, _ := os.ReadFile(m.Dir); string(b) != "Goodbye!\n" {
		t.Errorf("after fsysopts: %q", b)
	}
	opts, _ = m.Client.GetOptions(t.Context())
	if fmt.Sprint(opts) != "[hello --contents=Goodbye!\n]" {
		t.Errorf("options %q", opts)
	}
	if err := m.Client.SetOptions(t.Context(), []string{"--colour=red"}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("unknown option: %v, want EINVAL", err)
	}
}

func TestContentsFlag(t *testing.T) {
	m := kittest.MountTranslator(t, hello.Translator(), "--contents", "custom\n")
	if b, _ := os.ReadFile(m.Dir); string(b) != "custom\n" {
		t.Errorf("read %q", b)
	}
}

// TestProgram runs cmd/hello as settrans -a does on the host: --mount on a
// file, read it, stop it with SIGTERM.
func TestProgram(t *testing.T) {
	node := filepath.Join(kittest.TempDir(t), "hello")
	os.WriteFile(node, nil, 0o644)
	kittest.RunMount(t, bin, node, "--contents", "from the program\n")
	if b, err := os.ReadFile(node); err != nil || string(b) != "from the program\n" {
		t.Errorf("read %q, %v", b, err)
	}
}

// TestProgramUnmount: unmounting the node ends the program cleanly.
func TestProgramUnmount(t *testing.T) {
	node := filepath.Join(kittest.TempDir(t), "hello")
	os.WriteFile(node, nil, 0o644)
	p := kittest.RunMount(t, bin, node)
	if err := syscall.Unmount(node, 0); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t); err != nil {
		t.Errorf("after umount: %v: %s", err, p.Stderr)
	}
}

// TestProgramUnprivileged: a plain user mounts hello in a user namespace.
func TestProgramUnprivileged(t *testing.T) {
	dir := kittest.TempDir(t)
	node := filepath.Join(dir, "hello")
	os.WriteFile(node, nil, 0o644)
	out, err := kittest.AsUser(t, "herdkit", true, fmt.Sprintf(`
%[1]s --mount %[2]s --contents 'unprivileged hello
' & pid=$!
waitmount %[2]s
cat %[2]s
kill $pid
wait $pid
echo "exit $?"
grep -c " %[2]s " /proc/self/mountinfo || true
`, kittest.Quote(bin), kittest.Quote(node)))
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out != "unprivileged hello\nexit 0\n0\n" {
		t.Errorf("output %q", out)
	}
}

// TestProgramUnprivilegedNoNamespace: without root and without a user
// namespace (and no fusermount3), the error says what to do.
func TestProgramUnprivilegedNoNamespace(t *testing.T) {
	if _, err := exec.LookPath("fusermount3"); err == nil {
		t.Skip("fusermount3 is installed: a plain user can mount without a namespace")
	}
	dir := kittest.TempDir(t)
	node := filepath.Join(dir, "hello")
	os.WriteFile(node, nil, 0o644)
	out, err := kittest.AsUser(t, "herdkit", false, fmt.Sprintf("%s --mount %s", kittest.Quote(bin), kittest.Quote(node)))
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("exit: %v", err)
	}
	if !strings.Contains(out, "user namespace") || strings.Count(out, "\n") != 1 {
		t.Errorf("error %q: want one line pointing at user namespaces", out)
	}
}

func TestBadInput(t *testing.T) {
	kittest.Refuses(t, bin, "", "/tmp", []kittest.Refusal{
		{Args: []string{"--colour=red", "--mount", "/tmp"}, Status: 2, Want: "unknown flag: --colour"},
		{Args: []string{"extra", "--mount", "/tmp"}, Status: 2, Want: `unexpected argument "extra"`},
		{Args: []string{}, Status: 2, Want: "nowhere to serve"},
		{Args: []string{"--mount", "/nonexistent/herd"}, Status: 1, Want: "no such file"},
		{Args: []string{"--mount", "/tmp"}, Status: 1, Want: "mount it on a file"},
	})
	out, err := exec.Command(bin, "--help").Output()
	if err != nil || !strings.Contains(string(out), "--contents") || !strings.Contains(string(out), "--mount") {
		t.Errorf("--help: %v: %s", err, out)
	}
}
