// Package kittest serves translators in tests the way they are served for
// real: over a proto connection (proto.Pipe, a unix socketpair) and mounted
// by FUSE through the fs bridge on a temporary directory, so a test uses
// plain os calls on the mount point.
package kittest

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"herd/proto"
	"herd/subenv/fsbridge"
	"herd/translators/kit"
)

// Mounted is a translator mounted for a test.
type Mounted struct {
	Dir    string        // the mount point
	Client *proto.Client // the client the bridge uses: call GetOptions, SetOptions, Goaway on it
	m      *kit.Mounted
}

// Mount serves fs over proto.Pipe and mounts it on a fresh temporary
// directory (or a file in one, when fs's root is not a directory). The
// test's cleanup unmounts it and checks the mount is gone.
func Mount(t testing.TB, fs proto.FileSystem) *Mounted {
	t.Helper()
	notifier := fsbridge.NewNotifier()
	c, closePipe, err := proto.Pipe(fs, proto.ServerOptions{Name: "kittest"}, proto.ClientOptions{Timeout: 60 * time.Second, Notifier: notifier})
	if err != nil {
		t.Fatalf("kittest: pipe: %v", err)
	}
	e, err := c.Root(t.Context())
	if err != nil {
		closePipe()
		t.Fatalf("kittest: root: %v", err)
	}
	c.Forget(t.Context(), e.Node, 1)
	base, err := os.MkdirTemp("", "kittest-")
	if err != nil {
		closePipe()
		t.Fatal(err)
	}
	os.Chmod(base, 0o755) // reachable by the test's unprivileged users
	dir := filepath.Join(base, "mnt")
	if e.Attr.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		err = os.Mkdir(dir, 0o755)
	} else {
		err = os.WriteFile(dir, nil, 0o644)
	}
	if err != nil {
		closePipe()
		os.RemoveAll(base)
		t.Fatal(err)
	}
	m, err := kit.Mount(dir, c, kit.MountOptions{Name: "kittest", Notifier: notifier, Debug: os.Getenv("KITTEST_DEBUG") != ""})
	if err != nil {
		closePipe()
		os.RemoveAll(base)
		t.Fatalf("kittest: %v", err)
	}
	mt := &Mounted{Dir: dir, Client: c, m: m}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("kittest: %v", err)
		}
		closePipe()
		if IsMounted(dir) {
			t.Errorf("kittest: %s still mounted", dir)
		}
		os.RemoveAll(base)
	})
	return mt
}

// MountNode mounts the tree under root (through kit.NewFS).
func MountNode(t testing.TB, root kit.Node) *Mounted {
	t.Helper()
	return Mount(t, kit.NewFS(root))
}

// MountTranslator starts tr with args, as its program would, and mounts it;
// Client answers fsysopts calls through the kit as the program does.
func MountTranslator(t testing.TB, tr kit.Translator, args ...string) *Mounted {
	t.Helper()
	in, err := tr.Start(args)
	if err != nil {
		t.Fatalf("kittest: start %s: %v", tr.Name, err)
	}
	return Mount(t, in.FileSystem())
}

// IsMounted reports whether path is a mount point in this mount namespace.
func IsMounted(path string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescape(f[4]) == path {
			return true
		}
	}
	return false
}

func unescape(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}
