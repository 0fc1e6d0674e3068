// Package testbin builds herd's programs for tests that run them as real
// processes (subenv, servers, translators), once per test binary.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

var (
	mu    sync.Mutex
	dir   string
	built = map[string]string{}
)

// Dir is the directory the programs are built into. It is made readable and
// searchable by everyone, so tests that run a program as an unprivileged
// user can reach it.
func Dir() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	return dirLocked()
}

func dirLocked() (string, error) {
	if dir != "" {
		return dir, nil
	}
	d, err := os.MkdirTemp("", "herd-testbin-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(d, 0o755); err != nil {
		return "", err
	}
	dir = d
	return dir, nil
}

// Build builds herd/cmd/NAME for each name (static, as shipped) and returns
// the path of the first. A program already built by this test binary is not
// built again.
func Build(names ...string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	d, err := dirLocked()
	if err != nil {
		return "", err
	}
	var first string
	for _, name := range names {
		out := built[name]
		if out == "" {
			out = filepath.Join(d, name)
			cmd := exec.Command("go", "build", "-o", out, "herd/cmd/"+name)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			cmd.Dir = moduleRoot()
			if b, err := cmd.CombinedOutput(); err != nil {
				return "", fmt.Errorf("building %s: %v\n%s", name, err, b)
			}
			built[name] = out
		}
		if first == "" {
			first = out
		}
	}
	return first, nil
}

// MustBuild is Build for TestMain: it exits the test binary on failure.
func MustBuild(names ...string) string {
	p, err := Build(names...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return p
}

// Cleanup removes the built programs. Call it at the end of TestMain.
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
		dir = ""
		built = map[string]string{}
	}
}

// moduleRoot is the directory holding go.mod, found from this source file.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}
