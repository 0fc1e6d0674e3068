package ftpfs_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// python finds Debian's python3 with pyftpdlib (apt-get install
// python3-pyftpdlib): /usr/bin/python3 first, as a python3 earlier in
// PATH (pyenv) may not see Debian's packages.
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import pyftpdlib").Run() == nil {
			return p
		}
	}
	t.Fatal("no python3 with pyftpdlib: apt-get install python3-pyftpdlib")
	return ""
}

// server is a real FTP server (pyftpdlib) serving dir on 127.0.0.1.
type server struct {
	Addr   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan struct{}
}

// startServer starts the server; throttle (bytes/s, 0 = none) slows
// downloads. The test's cleanup kills it.
func startServer(t *testing.T, dir string, throttle int) *server {
	t.Helper()
	s := &server{done: make(chan struct{})}
	cmd := exec.Command(python(t), "testdata/server.py", dir, strconv.Itoa(throttle))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.stderr.Write(p)
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd = cmd
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(s.Kill)
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "PORT "); ok {
				port <- p
			}
		}
	}()
	select {
	case p := <-port:
		s.Addr = "127.0.0.1:" + p
	case <-s.done:
		t.Fatalf("FTP server exited: %s", s.Stderr())
	case <-time.After(60 * time.Second):
		t.Fatalf("FTP server did not start: %s", s.Stderr())
	}
	return s
}

func (s *server) Stderr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// Kill stops the server at once (SIGKILL) and waits for it.
func (s *server) Kill() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
	}
	<-s.done
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
