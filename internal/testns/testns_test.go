package testns

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// TestPrivateNamespace: as root, the tests run in a mount namespace of
// their own (not the parent's) whose root mount propagates nothing.
func TestPrivateNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the namespace is made only as root (CI runs as root)")
	}
	if !Inside() {
		t.Fatal("running as root but not re-executed inside a new mount namespace")
	}
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	parent, err := os.Readlink("/proc/" + strconv.Itoa(os.Getppid()) + "/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	if self == parent {
		t.Fatalf("same mount namespace as the parent: %s", self)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) > 6 && f[4] == "/" {
			if strings.Contains(l, "shared:") {
				t.Errorf("/ still propagates: %s", l)
			}
		}
	}
}
