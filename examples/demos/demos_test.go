// Package demos runs the scripted demos (examples/demos/*.sh) on the build
// machine, with herd's programs built from this tree on PATH, exactly as a
// person would run them; the live ISO runs the same scripts (make iso-test).
package demos

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"herd/internal/testbin"
	"herd/internal/testns"
)

// binDir holds the built programs; it is put first on the demos' PATH.
var binDir string

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && !testns.Inside() {
		// Re-run this binary in a mount namespace of its own (private
		// mounts), so a demo killed halfway leaves no mount on the host.
		testns.Main(m)
	}
	if testns.Inside() {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			fmt.Fprintf(os.Stderr, "demos: make / rprivate: %v\n", err)
			os.Exit(2)
		}
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// A subenvironment starts with an empty /tmp of its own, and the demos
	// run herd's programs inside subenvironments too: build them under
	// /var/tmp, which a subenvironment sees as the host has it.
	tmp, err := os.MkdirTemp("/var/tmp", "herd-demos-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, 0o755)
	os.Setenv("TMPDIR", tmp)
	defer testbin.Cleanup()
	if err := buildAll(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// buildAll builds every program the ISO ships: cmd/* (with testbin) and the
// example programs under examples/ (confguard, ...).
func buildAll() error {
	out, err := exec.Command("go", "list", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`,
		"herd/cmd/...", "herd/examples/...").Output()
	if err != nil {
		return fmt.Errorf("go list: %v", err)
	}
	var cmds, examples []string
	for _, p := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(p, "herd/cmd/"):
			cmds = append(cmds, strings.TrimPrefix(p, "herd/cmd/"))
		case strings.HasPrefix(p, "herd/examples/"):
			examples = append(examples, p)
		}
	}
	if len(cmds) == 0 {
		return fmt.Errorf("no programs under cmd/")
	}
	if _, err := testbin.Build(cmds...); err != nil {
		return err
	}
	dir, err := testbin.Dir()
	if err != nil {
		return err
	}
	for _, p := range examples {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(p)), p)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v\n%s", p, err, b)
		}
	}
	binDir = dir
	return nil
}

// demoNames lists the demos: every *.sh here.
func demoNames(t *testing.T) []string {
	files, err := filepath.Glob("*.sh")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimSuffix(f, ".sh"))
	}
	sort.Strings(names)
	if len(names) == 0 {
		t.Fatal("no demos in examples/demos")
	}
	return names
}

// TestDemos runs each demo as a person would (sh NAME.sh) and checks that it
// exits 0 with "DEMO NAME: PASSED" as its last line, and leaves no mount and
// no scratch directory behind.
func TestDemos(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the demos run as root, as on the live ISO (CI runs this as root)")
	}
	for _, name := range demoNames(t) {
		t.Run(name, func(t *testing.T) {
			before := demoMounts(t)
			dirsBefore, _ := filepath.Glob("/var/tmp/herd-demo-" + name + ".*")
			out, err := runDemo(t, name)
			last := lastLine(out)
			if err != nil || last != "DEMO "+name+": PASSED" {
				t.Fatalf("demo %s: %v, last line %q; its output:\n%s", name, err, last, out)
			}
			if after := demoMounts(t); len(after) > len(before) {
				t.Errorf("demo %s left mounts behind:\n%s", name, strings.Join(after, "\n"))
			}
			if left, _ := filepath.Glob("/var/tmp/herd-demo-" + name + ".*"); len(left) > len(dirsBefore) {
				t.Errorf("demo %s left its scratch directories: %v", name, left)
			}
		})
	}
}

func runDemo(t *testing.T, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", name+".sh")
	cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The demo gets a process group of its own, so a demo that overruns is
	// stopped with everything it started (a shell holds a TERM until its
	// running command ends, and that command may be what hangs).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A server that slipped out of the group would hold the output pipe open.
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out: %v", err)
	}
	// Whatever the demo left running in its group is a leak (servers get
	// a while to finish exiting).
	for end := time.Now().Add(15 * time.Second); syscall.Kill(-cmd.Process.Pid, 0) == nil && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(-cmd.Process.Pid, 0) == nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Errorf("demo %s left processes running (killed now)", name)
	}
	return out.Bytes(), err
}

// demoMounts lists this namespace's mounts under the demos' scratch dirs.
func demoMounts(t *testing.T) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "herd-demo-") {
			ms = append(ms, sc.Text())
		}
	}
	return ms
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return lines[len(lines)-1]
}

// TestDemoRunner checks the live ISO's `demo` command (examples/iso), whose
// summary line make iso-test reads: a demo passes only when it exits 0 and
// ends with its PASSED line.
func TestDemoRunner(t *testing.T) {
	dir := t.TempDir()
	scripts := map[string]string{
		"hello": "echo hi; echo 'DEMO hello: PASSED'",
		"bad":   "echo 'DEMO bad: PASSED'; exit 3",
		"liar":  "echo 'it went fine, honest'",
		"zeta":  "echo 'DEMO zeta: PASSED'",
	}
	for n, s := range scripts {
		if err := os.WriteFile(filepath.Join(dir, n+".sh"), []byte(s+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	demo := filepath.Join("..", "iso", "rootfs", "usr", "bin", "demo")
	cmd := exec.Command("sh", demo, "list")
	cmd.Env = append(os.Environ(), "HERD_DEMO_DIR="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("demo list: %v", err)
	}
	// hello comes first (the tutorial order), the rest alphabetically.
	if got, want := strings.Fields(string(out)), []string{"hello", "bad", "liar", "zeta"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("demo list = %v, want %v", got, want)
	}
	cmd = exec.Command("sh", demo, "all")
	cmd.Env = append(os.Environ(), "HERD_DEMO_DIR="+dir)
	out, err = cmd.CombinedOutput()
	if err == nil {
		t.Errorf("demo all succeeded with failing demos:\n%s", out)
	}
	for _, want := range []string{
		"DEMO bad: FAILED (exit status 3)",
		"DEMO liar: FAILED (it ended without its PASSED line)",
		"HERD-DEMOS-FAILED: bad liar",
		"HERD-DEMOS: 2 passed, 2 failed",
	} {
		if !bytes.Contains(out, []byte(want+"\n")) {
			t.Errorf("demo all output lacks %q:\n%s", want, out)
		}
	}
	cmd = exec.Command("sh", demo, "zeta")
	cmd.Env = append(os.Environ(), "HERD_DEMO_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("demo zeta: %v\n%s", err, out)
	}
}
