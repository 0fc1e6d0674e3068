package kittest

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"herd/internal/testbin"
	"herd/internal/testns"
)

// Main is TestMain for translator tests: as root it runs the tests in a
// private mount namespace (testns), so a crashed test leaves no mount on
// the host; it builds the herd programs named by bins' keys (herd/cmd/NAME),
// stores their paths in bins' values, and removes them when the tests end.
// A fuzzer's workers (-test.fuzz*) need neither programs nor a namespace:
// they run the tests at once.
func Main(m *testing.M, bins map[string]*string) {
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.fuzz") {
			os.Exit(m.Run())
		}
	}
	if os.Geteuid() == 0 && !testns.Inside() {
		testns.Main(m) // runs this binary again inside; does not return
	}
	if testns.Inside() && os.Geteuid() == 0 {
		// What testns.Main does inside, before the tests: nothing
		// mounted here may propagate back to the host.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			fmt.Fprintf(os.Stderr, "kittest: make / rprivate: %v\n", err)
			os.Exit(2)
		}
	}
	for name, path := range bins {
		p, err := testbin.Build(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			testbin.Cleanup()
			os.Exit(1)
		}
		*path = p
	}
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}
