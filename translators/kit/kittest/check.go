package kittest

import (
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkips are the posixtest cases no translator passes, and why.
var posixSkips = map[string]string{
	// The test takes a POSIX (process-owned) write lock and expects a read
	// lock from the same process on a second descriptor to fail. POSIX
	// locks belong to the process, so on a local filesystem (Linux's own
	// tmpfs, ext4) that second lock succeeds too; it fails only where the
	// FUSE server keeps locks per open file. The bridge leaves locking to
	// the kernel, which gives local-filesystem semantics.
	"FcntlFlockLocksFile": "POSIX locks are per process: the kernel's local locking (as on Linux tmpfs) lets the same process lock again",
}

// Posix runs go-fuse's posixtest suite, each case in a subtest on a fresh
// mount that mount makes.
func Posix(t *testing.T, mount func(t *testing.T) string) {
	var names []string
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixSkips[name]; ok {
				t.Skip(why)
			}
			posixtest.All[name](t, mount(t))
		})
	}
}

// Refusal is a command line a translator program must refuse: with exit
// status Status and one line of message containing Want.
type Refusal struct {
	Args   []string
	Status int
	Want   string
}

// Refuses runs bin in dir ("": ours) with each refusal's arguments and
// checks that it refuses them in one line, naming itself, and that mnt is
// not left mounted.
func Refuses(t *testing.T, bin, dir, mnt string, refusals []Refusal) {
	t.Helper()
	for _, c := range refusals {
		cmd := exec.Command(bin, c.Args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != c.Status {
			t.Errorf("%q: %v, want exit %d", c.Args, err, c.Status)
		}
		if !strings.Contains(string(out), c.Want) || strings.Count(string(out), "\n") != 1 ||
			!strings.HasPrefix(string(out), filepath.Base(bin)+": ") {
			t.Errorf("%q: %q, want one line from %s with %q", c.Args, out, filepath.Base(bin), c.Want)
		}
	}
	if IsMounted(mnt) {
		t.Errorf("%s left mounted", mnt)
	}
}
