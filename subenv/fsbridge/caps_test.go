package fsbridge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"herd/proto"
	"herd/servers/fs"
)

// capTree puts files d/f0..d/f(n-1) (each naming itself) and a file top in
// dir.
func capTree(t *testing.T, dir string, n int) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, "d", fmt.Sprintf("f%d", i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("lower d/f%d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "top"), []byte("top\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readString(t *testing.T, p string) string {
	t.Helper()
	d, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(d)
}

// mountCaps mounts servers/fs (copy-on-write over lower) through proto.
func mountCaps(t *testing.T, pt bool) (*Bridge, string, string, string) {
	t.Helper()
	srv, lower, upper := cowServer(t)
	capTree(t, lower, 20)
	c, n, _ := pipe(t, srv, proto.ClientOptions{})
	b, dir := mount(t, c, Options{Notifier: n, Passthrough: pt})
	return b, dir, lower, upper
}

// TestCapRead: read-only opens of a lower directory's files go through the
// capability (one Open of the directory, none per file) and read what the
// server's own open reads.
func TestCapRead(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	for _, pt := range []bool{false, true} {
		t.Run(fmt.Sprintf("passthrough=%v", pt), func(t *testing.T) {
			b, dir, _, _ := mountCaps(t, pt)
			for pass := 0; pass < 2; pass++ {
				for i := 0; i < 20; i++ {
					if got, want := readString(t, filepath.Join(dir, "d", fmt.Sprintf("f%d", i))), fmt.Sprintf("lower d/f%d\n", i); got != want {
						t.Fatalf("d/f%d = %q, want %q", i, got, want)
					}
				}
			}
			if got := b.caps.opens.Load(); got != 40 {
				t.Errorf("%d opens through the capability, want 40", got)
			}
			if got := b.caps.fetches.Load(); got != 1 {
				t.Errorf("asked for %d capabilities, want 1 (one directory)", got)
			}
		})
	}
}

// TestCapChanges: after a change through the bridge (a copy-up by a write,
// a whiteout by unlink, a new file in its place, a rename over it, a
// chmod) the next open sees the new state, never the lower file the
// capability names.
//
// The server's notifications are held back meanwhile: the bridge must not
// need them for its own changes (they travel apart from the answers and
// may come late).
func TestCapChanges(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	srv, lower, _ := cowServer(t)
	// One lower directory per change, so that each change alone must
	// revoke its directory's capability.
	cases := []string{"write", "truncate", "unlink", "recreate", "rename", "chmod", "link", "xattr"}
	for _, c := range cases {
		if err := os.Mkdir(filepath.Join(lower, c), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"a", "b"} {
			if err := os.WriteFile(filepath.Join(lower, c, f), []byte(c+"/"+f+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	g := &gatedNotifier{n: NewNotifier()}
	c, closeFn, err := proto.Pipe(srv, proto.ServerOptions{Name: "test"}, proto.ClientOptions{Notifier: g})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	b, dir := mount(t, c, Options{Notifier: g.n})
	defer g.open()
	p := func(c, f string) string { return filepath.Join(dir, c, f) }
	for _, c := range cases {
		readString(t, p(c, "a")) // through the capability
		readString(t, p(c, "b"))
	}
	if got := b.caps.opens.Load(); got != int64(2*len(cases)) {
		t.Fatalf("%d opens through a capability, want %d", got, 2*len(cases))
	}
	check := func(c, f, want string) {
		t.Helper()
		for pass := 0; pass < 2; pass++ {
			if got := readString(t, p(c, f)); got != want {
				t.Errorf("%s/%s after the change (pass %d): %q, want %q", c, f, pass, got, want)
			}
		}
	}

	// Copy-up by a write.
	f, err := os.OpenFile(p("write", "a"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("appended\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	check("write", "a", "write/a\nappended\n")
	// Copy-up by truncation.
	if err := os.Truncate(p("truncate", "a"), 3); err != nil {
		t.Fatal(err)
	}
	check("truncate", "a", "tru")
	// Whiteout.
	if err := os.Remove(p("unlink", "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(p("unlink", "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read after unlink: %v, want ENOENT", err)
	}
	// A new file where a lower one was whited out.
	if err := os.Remove(p("recreate", "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("recreate", "a"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("recreate", "a", "new\n")
	// A rename over a lower file.
	if err := os.Rename(p("rename", "a"), p("rename", "b")); err != nil {
		t.Fatal(err)
	}
	check("rename", "b", "rename/a\n")
	// Copy-up by chmod, then a write through the upper file's new mode.
	if err := os.Chmod(p("chmod", "a"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("chmod", "a"), []byte("chmodded\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("chmod", "a", "chmodded\n")
	// Copy-up by a hard link, then a write through the link.
	if err := os.Link(p("link", "a"), p("link", "c")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("link", "c"), []byte("linked\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("link", "a", "linked\n")
	// Copy-up by an xattr, then a write.
	if err := unix.Setxattr(p("xattr", "a"), "user.test", []byte("v"), 0); err != nil && err != unix.ENOTSUP {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("xattr", "a"), []byte("xattr\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("xattr", "a", "xattr\n")
	// Files not touched still read.
	for _, c := range cases {
		if c != "rename" {
			check(c, "b", c+"/b\n")
		}
	}
	// The lower layer never changed.
	if got := readString(t, filepath.Join(lower, "write", "a")); got != "write/a\n" {
		t.Errorf("lower file changed: %q", got)
	}
}

// TestCapOtherClient: a change made by another client of the same server
// reaches this bridge as a notification, which revokes the capability: the
// next open reads the upper copy.
func TestCapOtherClient(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	srv, lower, _ := cowServer(t)
	capTree(t, lower, 3)
	c, n, _ := pipe(t, srv, proto.ClientOptions{})
	b, dir := mount(t, c, Options{Notifier: n})
	p := filepath.Join(dir, "d", "f0")
	readString(t, p)
	readString(t, filepath.Join(dir, "d", "f1"))
	if b.caps.opens.Load() == 0 {
		t.Fatal("no open went through a capability")
	}
	// The other client: the server itself, as another session would.
	ctx := context.Background()
	r, _ := srv.Root(ctx)
	d, err := srv.Lookup(ctx, r.Node, "d")
	if err != nil {
		t.Fatal(err)
	}
	e, err := srv.Lookup(ctx, d.Node, "f0")
	if err != nil {
		t.Fatal(err)
	}
	o, err := srv.Open(ctx, e.Node, syscall.O_WRONLY|syscall.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Write(ctx, o.Handle, 0, []byte("other\n")); err != nil {
		t.Fatal(err)
	}
	o.File.Close()
	srv.Release(ctx, o.Handle)
	var last string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last read %q; capability opens %d, asked %d", last, b.caps.opens.Load(), b.caps.fetches.Load())
		}
	})
	waitFor(t, "the other client's write", func() bool { last = readString(t, p); return last == "other\n" })
	// Still so on later opens (no capability brings the lower file back).
	for i := 0; i < 3; i++ {
		if got := readString(t, p); got != "other\n" {
			t.Fatalf("later open: %q", got)
		}
	}
}

// TestCapTranslator: a passive translator set on a child the bridge opened
// through a capability: the next open reaches the translator.
func TestCapTranslator(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	dir, lower := fsWithTranslators(t)
	if err := os.Mkdir(filepath.Join(lower, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"node", "other"} {
		if err := os.WriteFile(filepath.Join(lower, "d", name), []byte("underneath"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	node := filepath.Join(dir, "d", "node")
	for i := 0; i < 2; i++ {
		if got := readString(t, node); got != "underneath" {
			t.Fatalf("before: %q", got)
		}
	}
	if err := unix.Setxattr(node, "user.herd.translator", ctlArgv(t, "--contents=translated"), 0); err != nil {
		t.Fatalf("set the passive record: %v", err)
	}
	waitFor(t, "the passive translator", func() bool {
		d, err := os.ReadFile(node)
		return err == nil && string(d) == "translated"
	})
	if got := readString(t, filepath.Join(dir, "d", "other")); got != "underneath" {
		t.Errorf("sibling: %q", got)
	}
}

// TestCapNoEscape: a capability opens only the names the server looked
// up, as regular files, beneath the directory: a child replaced on the
// host by a symlink to a secret outside, or names such as "..", never
// reach anything else.
func TestCapNoEscape(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	tmp := t.TempDir()
	root, outside := filepath.Join(tmp, "root"), filepath.Join(tmp, "secret")
	if err := os.WriteFile(outside, []byte("SECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	capTree(t, root, 3)
	srv, err := fs.New(fs.Options{Root: root}) // write-through: every directory is capable
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c, n, _ := pipe(t, srv, proto.ClientOptions{})
	b, dir := mount(t, c, Options{Notifier: n})
	f0 := filepath.Join(dir, "d", "f0")
	readString(t, f0)
	readString(t, filepath.Join(dir, "d", "f1"))
	if b.caps.opens.Load() == 0 {
		t.Fatal("no open went through a capability")
	}
	// Behind the server's back (no notification): the kernel still has
	// d/f0 as a regular file.
	hostF0 := filepath.Join(root, "d", "f0")
	if err := os.Remove(hostF0); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, hostF0); err != nil {
		t.Fatal(err)
	}
	if d, err := os.ReadFile(f0); err == nil && string(d) == "SECRET" {
		t.Errorf("read the secret through a symlink put in place of a file")
	}
	// A hard link of the secret put under the name: a file the server
	// never looked up there (another st_ino) is not served either.
	if err := os.Remove(hostF0); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(outside, hostF0); err != nil {
		t.Fatal(err)
	}
	before := b.caps.opens.Load()
	d, err := os.ReadFile(f0)
	if b.caps.opens.Load() != before {
		t.Errorf("a file of another st_ino under a looked-up name was opened through the capability (%q, %v)", d, err)
	}

	// Names no lookup gives: a forged inode under the directory with a
	// capability.
	b.mu.Lock()
	var dNode, f1 *inode
	for _, in := range b.inodes {
		if in.name == "d" {
			dNode = in
		}
		if in.name == "f1" {
			f1 = in
		}
	}
	b.mu.Unlock()
	if dNode == nil || f1 == nil {
		t.Fatal("no inodes for d and d/f1")
	}
	var st unix.Stat_t
	if err := unix.Stat(outside, &st); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"..", "../secret", "../../secret", outside, ".", ""} {
		forged := &inode{id: 1 << 40, conn: f1.conn, mode: syscall.S_IFREG | 0o644, parent: dNode, name: name, ino: st.Ino}
		if f := b.directOpen(forged, syscall.O_RDONLY, &fuse.InHeader{}); f != nil {
			f.Close()
			t.Errorf("name %q opened through the capability", name)
		}
	}
}

// withoutCaps is servers/fs with the capability taken out of its answers:
// a server that does not offer the feature.
type withoutCaps struct{ *fs.Server }

func (w withoutCaps) Open(ctx context.Context, n proto.NodeID, flags uint32) (proto.OpenResult, error) {
	r, err := w.Server.Open(ctx, n, flags)
	r.Flags &^= proto.OpenDirCap
	return r, err
}

// TestCapServerWithout: a server that offers no capabilities works as
// before; the bridge asks once per directory and then stops asking.
func TestCapServerWithout(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	srv, lower, _ := cowServer(t)
	capTree(t, lower, 20)
	c, n, _ := pipe(t, withoutCaps{srv}, proto.ClientOptions{})
	b, dir := mount(t, c, Options{Notifier: n})
	for pass := 0; pass < 2; pass++ {
		for i := 0; i < 20; i++ {
			if got, want := readString(t, filepath.Join(dir, "d", fmt.Sprintf("f%d", i))), fmt.Sprintf("lower d/f%d\n", i); got != want {
				t.Fatalf("d/f%d = %q, want %q", i, got, want)
			}
		}
	}
	if got := b.caps.opens.Load(); got != 0 {
		t.Errorf("%d opens through a capability the server never gave", got)
	}
	if got := b.caps.fetches.Load(); got != 1 {
		t.Errorf("asked %d times for a capability, want once", got)
	}
}

// gatedNotifier holds a server's notifications back until open.
type gatedNotifier struct {
	n      *Notifier
	mu     sync.Mutex
	held   []func()
	opened bool
}

func (g *gatedNotifier) hold(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.opened {
		g.held = append(g.held, f)
		return
	}
	f()
}

func (g *gatedNotifier) InvalNode(node proto.NodeID, off, length int64) {
	g.hold(func() { g.n.InvalNode(node, off, length) })
}

func (g *gatedNotifier) InvalEntry(parent proto.NodeID, name string) {
	g.hold(func() { g.n.InvalEntry(parent, name) })
}

func (g *gatedNotifier) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.opened = true
	for _, f := range g.held {
		f()
	}
	g.held = nil
}

// TestDirCacheOtherClient: the kernel keeps directory listings
// (FOPEN_CACHE_DIR); a name another client creates (one this kernel never
// looked up) or removes shows in the next listing.
func TestDirCacheOtherClient(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	// Write-through: no copy-up, whose own notification would hide a
	// missing one.
	root := t.TempDir()
	capTree(t, root, 3)
	srv, err := fs.New(fs.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c, n, _ := pipe(t, srv, proto.ClientOptions{})
	_, dir := mount(t, c, Options{Notifier: n})
	list := func() map[string]bool {
		ents, err := os.ReadDir(filepath.Join(dir, "d"))
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, e := range ents {
			m[e.Name()] = true
		}
		return m
	}
	for i := 0; i < 2; i++ {
		if m := list(); len(m) != 3 || !m["f0"] {
			t.Fatalf("listing %v", m)
		}
	}
	ctx := context.Background()
	r, _ := srv.Root(ctx)
	d, err := srv.Lookup(ctx, r.Node, "d")
	if err != nil {
		t.Fatal(err)
	}
	_, o, err := srv.Create(ctx, d.Node, "new", syscall.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	o.File.Close()
	srv.Release(ctx, o.Handle)
	waitFor(t, "a name created elsewhere in the listing", func() bool { return list()["new"] })
	if err := srv.Unlink(ctx, d.Node, "f1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a name removed elsewhere gone from the listing", func() bool { return !list()["f1"] })
}

// TestCapPrefetch: while files are being opened, a directory's capability
// is asked for along with its listing (not at its first open), once; a
// walk that opens nothing asks for none.
func TestCapPrefetch(t *testing.T) {
	t.Cleanup(func() { noHerdMounts(t) })
	srv, lower, _ := cowServer(t)
	const dirs, files = 5, 10
	for d := 0; d < dirs; d++ {
		for f := 0; f < files; f++ {
			p := filepath.Join(lower, fmt.Sprintf("d%d", d), fmt.Sprintf("f%d", f))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	c, n, _ := pipe(t, srv, proto.ClientOptions{})
	b, dir := mount(t, c, Options{Notifier: n})
	// find: listings only.
	if err := filepath.WalkDir(dir, func(string, os.DirEntry, error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := b.caps.fetches.Load(); got != 0 {
		t.Errorf("a walk that opens nothing asked for %d capabilities", got)
	}
	b.refresh(b.root) // the kernel lists again
	// cat: listings and opens.
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err == nil && string(data) != filepath.Join(lower, strings.TrimPrefix(p, dir)) {
			t.Errorf("%s: %q", p, data)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.caps.fetches.Load(); got != dirs {
		t.Errorf("asked for %d capabilities, want %d (one per directory)", got, dirs)
	}
	if got := b.caps.prefetches.Load(); got < dirs-1 {
		t.Errorf("%d capabilities asked along with the listing, want at least %d (all but the first directory's)", got, dirs-1)
	}
	if got := b.caps.opens.Load(); got != dirs*files {
		t.Errorf("%d opens through capabilities, want %d", got, dirs*files)
	}
}
