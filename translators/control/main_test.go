package control_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"herd/internal/testbin"
	"herd/internal/testns"
)

// binDir holds the programs under test, built once per test binary;
// visibleBinDir a copy that subenvironments see.
var binDir, visibleBinDir string

func copyPrograms(from string, names []string) (string, error) {
	dir, err := os.MkdirTemp("/var/tmp", "herd-control-bin-")
	if err != nil {
		return "", err
	}
	os.Chmod(dir, 0o755)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(from, n))
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, n), b, 0o755)
		}
		if err != nil {
			os.RemoveAll(dir)
			return "", err
		}
	}
	return dir, nil
}

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run()) // fuzzing the decoders needs no programs
	}
	if os.Geteuid() == 0 && !testns.Inside() {
		// Re-run this binary in a mount namespace of its own, so that a
		// test killed while something is mounted leaves no mount behind.
		testns.Main(m)
		return
	}
	if testns.Inside() {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			fmt.Fprintf(os.Stderr, "make / rprivate: %v\n", err)
			os.Exit(2)
		}
	}
	programs := []string{"settrans", "showtrans", "fsysopts", "hello", "hostmux", "usermux", "subenv", "herd-fs", "firmlink", "symlink", "tarfs"}
	if _, err := testbin.Build(programs...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir, _ = testbin.Dir()
	// A subenvironment starts with an empty /tmp, where testbin builds:
	// the programs run inside from a copy in /var/tmp.
	var err error
	if visibleBinDir, err = copyPrograms(binDir, programs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(visibleBinDir)
	testbin.Cleanup()
	os.Exit(code)
}
