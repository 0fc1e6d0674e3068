// Package testns runs a test binary inside its own mount namespace, so that a
// test which crashes (or is killed by a timeout) while something is mounted
// never leaves that mount on the host: the mounts die with the namespace.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { testns.Main(m) }
package testns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// envMarker tells the re-executed binary that it already runs inside the new
// namespace.
const envMarker = "HERD_TESTNS_INSIDE"

// Inside reports whether this process is the re-executed copy running in the
// private mount namespace.
func Inside() bool { return os.Getenv(envMarker) == "1" }

// Main runs the tests and exits with their status. As root (and not yet
// inside), it re-executes the test binary with the same arguments in a new
// mount namespace whose mounts are all private, and exits with the child's
// status. As a plain user, or already inside, it just runs m.Run().
func Main(m *testing.M) {
	if Inside() {
		// Make every mount private before any test runs, so nothing
		// mounted here propagates back to the host.
		if os.Geteuid() == 0 {
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				fmt.Fprintf(os.Stderr, "testns: make / rprivate: %v\n", err)
				os.Exit(2)
			}
		}
		os.Exit(m.Run())
	}
	if os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	os.Exit(reexec())
}

func reexec() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testns: cannot find the test binary: %v\n", err)
		return 2
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envMarker+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS,
		// If the parent dies (go test's timeout kills it), the child dies
		// too, and its mounts with it.
		Pdeathsig: syscall.SIGKILL,
	}
	// Forward the signals go test uses to stop a test binary.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "testns: cannot start the test binary in a new mount namespace: %v\n", err)
		return 2
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	signal.Stop(sigs)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			fmt.Fprintf(os.Stderr, "testns: test binary killed by %v\n", st.Signal())
			return 128 + int(st.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testns: %v\n", err)
		return 2
	}
	return 0
}
