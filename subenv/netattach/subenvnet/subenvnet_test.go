package subenvnet_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"herd/internal/testbin"
)

var subenvBin string

// TestMain builds subenv with these modes linked in (testdata/subenv) next
// to herd-net, where netattach looks for it.
func TestMain(m *testing.M) {
	testbin.MustBuild("herd-net")
	dir, _ := testbin.Dir()
	subenvBin = filepath.Join(dir, "subenv")
	cmd := exec.Command("go", "build", "-o", subenvBin, "./testdata/subenv")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building subenv: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

func TestSubenvRunNAT(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is required (Debian package curl)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "from the host") })}
	go hs.Serve(ln)
	defer hs.Close()
	url := fmt.Sprintf("http://10.0.2.2:%d/", ln.Addr().(*net.TCPAddr).Port)
	out, err := exec.Command(subenvBin, "run", "--net", "nat", "--", curl, "-sS", url).CombinedOutput()
	if err != nil || string(out) != "from the host\n" {
		t.Fatalf("subenv run --net nat -- curl: %v\n%s", err, out)
	}
}

func TestSubenvRunLAN(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox is required (Debian package busybox)")
	}
	t.Setenv("XDG_RUNTIME_DIR", runtimeDir(t))
	// Not under /tmp: a subenvironment's /tmp starts empty.
	www, err := os.MkdirTemp("/var/tmp", "herd-lan-www-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(www)
	os.Chmod(www, 0o755)
	os.WriteFile(filepath.Join(www, "index.html"), []byte("lan page\n"), 0o644)

	// The server says its address first: members get the first free one,
	// so it is not known in advance.
	server := exec.Command(subenvBin, "run", "--net", "lan:t1", "--", "sh", "-c",
		fmt.Sprintf("%s ip -4 -o addr show eth0; exec %s httpd -f -p 80 -h %s", bb, bb, www))
	server.Stderr = os.Stderr
	stdout, err := server.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- server.Wait() }()
	xdg := os.Getenv("XDG_RUNTIME_DIR")
	defer func() {
		server.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			server.Process.Kill()
			<-done
		}
		// The keeper leaves with its last member.
		join := filepath.Join(xdg, "herd", "lan", "t1.join")
		deadline := time.Now().Add(60 * time.Second)
		for {
			if _, err := os.Stat(join); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Error("lan t1's keeper still there after its last member left")
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("server subenvironment: %v", err)
	}
	m := regexp.MustCompile(`inet (10\.0\.3\.[0-9]+)/`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("server subenvironment's address: %q", line)
	}
	addr := m[1]
	var out []byte
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err = exec.Command(subenvBin, "run", "--net", "lan:t1", "--", bb, "wget", "-q", "-O", "-", "http://"+addr+"/index.html").CombinedOutput()
		if err == nil && string(out) == "lan page\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second member of lan:t1 could not fetch from the first: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Another lan cannot reach it.
	out, err = exec.Command(subenvBin, "run", "--net", "lan:t2", "--", bb, "wget", "-q", "-T", "5", "-O", "-", "http://"+addr+"/index.html").CombinedOutput()
	if err == nil || strings.Contains(string(out), "lan page") {
		t.Fatalf("lan:t2 reached lan:t1: %s", out)
	}
}

// runtimeDir is a private XDG_RUNTIME_DIR for a test, not under /tmp (where
// the launcher's init cannot see it, see netattach.LANDir).
func runtimeDir(t *testing.T) string {
	d, err := os.MkdirTemp("/dev/shm", "herd-xdg-")
	if err != nil {
		d, err = os.MkdirTemp("/var/tmp", "herd-xdg-")
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o700)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
