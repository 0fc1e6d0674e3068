package acceptance_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"herd/internal/testbin"
	"herd/internal/testns"
)

// programs are the binaries under test.
var programs = []string{"subenv", "herd-fs", "herd-net", "settrans", "showtrans", "fsysopts",
	"hello", "symlink", "firmlink", "tmpfs", "tarfs", "zipfs", "unionfs", "hostmux", "usermux",
	"ftpfs", "httpfs"}

// binDir holds the programs: a copy under /var/tmp, because a
// subenvironment starts with an empty /tmp (where testbin builds) and the
// programs must run inside too.
var binDir string

// fx is what every test reads: a small tree, its tar and zip archives made
// by the real tar and zip, and the FTP and HTTP servers serving it.
var fx struct {
	dir      string // world-readable, under /var/tmp
	tree     string // a.txt, sub/b.txt
	tar, zip string
	ftpPort  int
	httpPort int
}

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && !testns.Inside() {
		// Re-run in a mount namespace of our own: a test killed while
		// something is mounted leaves nothing on the host.
		testns.Main(m)
		return
	}
	if testns.Inside() {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			fmt.Fprintln(os.Stderr, "make / rprivate:", err)
			os.Exit(2)
		}
	}
	code, err := setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if code == 0 {
		code = m.Run()
		if leaks := globalLeftovers(); len(leaks) > 0 {
			fmt.Fprintln(os.Stderr, "left behind after the tests:\n  "+strings.Join(leaks, "\n  "))
			code = 1
		}
	}
	teardown()
	os.Exit(code)
}

var stopPeers []func()

func setup() (int, error) {
	if _, err := testbin.Build(programs...); err != nil {
		return 1, err
	}
	built, _ := testbin.Dir()
	var err error
	if binDir, err = os.MkdirTemp("/var/tmp", "herd-accept-bin-"); err != nil {
		return 1, err
	}
	os.Chmod(binDir, 0o755)
	for _, n := range programs {
		b, err := os.ReadFile(filepath.Join(built, n))
		if err == nil {
			err = os.WriteFile(filepath.Join(binDir, n), b, 0o755)
		}
		if err != nil {
			return 1, err
		}
	}
	if fx.dir, err = os.MkdirTemp("/var/tmp", "herd-accept-data-"); err != nil {
		return 1, err
	}
	os.Chmod(fx.dir, 0o755)
	fx.tree = filepath.Join(fx.dir, "tree")
	for _, d := range []string{fx.tree, filepath.Join(fx.tree, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return 1, err
		}
	}
	if err := os.WriteFile(filepath.Join(fx.tree, "a.txt"), []byte("aaa\n"), 0o644); err != nil {
		return 1, err
	}
	if err := os.WriteFile(filepath.Join(fx.tree, "sub", "b.txt"), []byte("bbb\n"), 0o644); err != nil {
		return 1, err
	}
	fx.tar = filepath.Join(fx.dir, "tree.tar")
	fx.zip = filepath.Join(fx.dir, "tree.zip")
	if out, err := exec.Command("tar", "-cf", fx.tar, "-C", fx.tree, "a.txt", "sub").CombinedOutput(); err != nil {
		return 1, fmt.Errorf("tar: %v: %s", err, out)
	}
	zip := exec.Command("zip", "-qr", fx.zip, "a.txt", "sub")
	zip.Dir = fx.tree
	if out, err := zip.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("zip (apt-get install zip): %v: %s", err, out)
	}
	if fx.ftpPort, err = startPeer("-m", "pyftpdlib", "-i", "127.0.0.1", "-d", fx.tree, "-p"); err != nil {
		return 1, fmt.Errorf("FTP server (apt-get install python3-pyftpdlib): %v", err)
	}
	if fx.httpPort, err = startPeer("-m", "http.server", "--bind", "127.0.0.1", "--directory", fx.tree); err != nil {
		return 1, fmt.Errorf("HTTP server: %v", err)
	}
	return 0, nil
}

// startPeer runs Debian's python3 with args and a free port (appended),
// and waits until the port answers.
func startPeer(args ...string) (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("/usr/bin/python3", append(args, strconv.Itoa(port))...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stopPeers = append(stopPeers, func() { cmd.Process.Kill(); <-done })
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return port, nil
		}
		select {
		case <-done:
			return 0, fmt.Errorf("python3 %v exited: %s", args, out.String())
		default:
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("python3 %v does not answer on port %d", args, port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func teardown() {
	for _, stop := range stopPeers {
		stop()
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if fx.dir != "" {
		os.RemoveAll(fx.dir)
	}
	testbin.Cleanup()
}

// globalLeftovers lists processes still running one of our programs and
// FUSE mounts still there, once all tests are done.
func globalLeftovers() []string {
	var out []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		out = out[:0]
		built, _ := testbin.Dir()
		for _, p := range processes() {
			if strings.HasPrefix(p.exe, binDir+"/") || strings.HasPrefix(p.exe, built+"/") {
				out = append(out, fmt.Sprintf("process %d: %s", p.pid, p.cmdline))
			}
		}
		for _, m := range fuseMounts() {
			if strings.HasPrefix(m, "/var/tmp/herd-accept-") || strings.HasPrefix(m, os.TempDir()+"/herd-accept-") {
				out = append(out, "mount "+m)
			}
		}
		if len(out) == 0 || time.Now().After(deadline) {
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}
