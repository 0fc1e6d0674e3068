package control_test

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"herd/internal/testbin"
	"herd/internal/testns"
)

// binDir holds the programs under test, built once per test binary.
var binDir string

func TestMain(m *testing.M) {
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
	if _, err := testbin.Build("settrans", "showtrans", "fsysopts", "hello", "hostmux", "usermux"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir, _ = testbin.Dir()
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}
