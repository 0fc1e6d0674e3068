package fsbridge

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"herd/proto"
)

// drainNotes waits until the notifications queued so far reached the kernel.
func drainNotes(b *Bridge) {
	done := make(chan struct{})
	b.notes.push(func() { close(done) })
	<-done
}

// TestOwnChangeNoticeKeepsMount: the server's notice of a change this mount
// made itself (a mkdir), arriving after the mkdir's answer, must not drop
// the kernel's dentry of the new name: the kernel detaches whatever is
// mounted on a dentry it invalidates, and a mount(2) on the name in
// between fails with ENOENT (subenv's buildDev: "mounting /dev: no such
// file or directory"). Also with the parent listed (and its listing kept by
// the kernel) before, and with the name looked up (a negative entry) before
// the mkdir.
func TestOwnChangeNoticeKeepsMount(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	srv, _, _ := cowServer(t)
	n := NewNotifier()
	g := &gatedNotifier{n: n}
	c, closeFn, err := proto.Pipe(srv, proto.ServerOptions{Name: "test"}, proto.ClientOptions{Notifier: g})
	if err != nil {
		t.Fatalf("proto.Pipe: %v", err)
	}
	t.Cleanup(closeFn)
	b, dir := mount(t, c, Options{Notifier: n})
	if err := os.Mkdir(filepath.Join(dir, "staging"), 0o755); err != nil {
		t.Fatal(err)
	}
	drainNotes(b)
	for _, listFirst := range []bool{false, true} {
		for i := 0; i < 20; i++ {
			parent := filepath.Join(dir, "staging")
			if listFirst {
				if _, err := os.ReadDir(parent); err != nil {
					t.Fatal(err)
				}
			}
			p := filepath.Join(parent, "dev")
			g.mu.Lock()
			g.opened = false // hold the server's notices back
			g.mu.Unlock()
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Fatalf("stat before mkdir: %v", err)
			}
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tmpfs", p, "tmpfs", 0, "size=64k"); err != nil {
				t.Fatalf("listed %v, round %d: mount on the new directory: %v", listFirst, i, err)
			}
			if err := os.WriteFile(filepath.Join(p, "null"), nil, 0o644); err != nil {
				unix.Unmount(p, unix.MNT_DETACH)
				t.Fatal(err)
			}
			// The notices of the mkdir come now, late.
			g.open()
			drainNotes(b)
			_, err := os.Stat(filepath.Join(p, "null"))
			if uerr := unix.Unmount(p, 0); uerr != nil && uerr != syscall.EINVAL {
				t.Errorf("unmount %s: %v", p, uerr)
			}
			if err != nil {
				t.Fatalf("listed %v, round %d: the tmpfs on the new directory after the server's late notice: %v", listFirst, i, err)
			}
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			drainNotes(b)
		}
	}
	// A name another client removes still goes away in the kernel.
	if err := os.Mkdir(filepath.Join(dir, "staging", "other"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "staging", "other")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	root, err := srv.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := srv.Lookup(ctx, root.Node, "staging")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Rmdir(ctx, st.Node, "other"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a directory removed by another client goes away", func() bool {
		_, err := os.Stat(filepath.Join(dir, "staging", "other"))
		return os.IsNotExist(err)
	})
}

// TestLateNoticeOfOldName: the server's notice of an rmdir that reaches the
// kernel only after a mkdir of the same name (the bridge's notification
// queue was busy) must not drop the new directory's entry, nor detach what
// is mounted on it: the bridge judges the kernel's entry as it is when the
// notice is sent on, not as it was when the notice came.
func TestLateNoticeOfOldName(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	srv, _, _ := cowServer(t)
	c, n, _ := pipe(t, srv, proto.ClientOptions{})
	b, dir := mount(t, c, Options{Notifier: n})
	p := filepath.Join(dir, "dev")
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	drainNotes(b)
	queued := func() int {
		b.notes.mu.Lock()
		defer b.notes.mu.Unlock()
		return len(b.notes.items)
	}
	// Hold the queue, so the rmdir's notice waits in it.
	release := make(chan struct{})
	running := make(chan struct{})
	b.notes.push(func() { close(running); <-release })
	<-running
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rmdir's notice in the queue", func() bool { return queued() > 0 })
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", p, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount on the new directory: %v", err)
	}
	defer unix.Unmount(p, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(p, "null"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	close(release)
	drainNotes(b)
	if _, err := os.Stat(filepath.Join(p, "null")); err != nil {
		t.Fatalf("after the rmdir's late notice, the tmpfs on the new directory: %v", err)
	}
	if err := unix.Unmount(p, 0); err != nil {
		t.Errorf("unmount %s: %v", p, err)
	}
}
