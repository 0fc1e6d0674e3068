package kit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"herd/internal/testns"
	"herd/proto"
	"herd/translators/kit"
	"herd/translators/kit/kittest"
)

func TestMain(m *testing.M) {
	if os.Getenv("KIT_TEST_PROGRAM") == "underlying" {
		underlyingProgram()
	}
	testns.Main(m)
}

// underlyingProgram is a translator program (this test binary run again)
// serving the contents of the node beneath it, as tarfs reads its archive.
func underlyingProgram() {
	flags := pflag.NewFlagSet("under", pflag.ContinueOnError)
	upper := flags.Bool("upper", false, "upper-case")
	kit.Main(kit.Translator{
		Name:  "under",
		Flags: flags,
		Root: func([]string) (kit.Node, error) {
			u := kit.Underlying()
			if u == nil {
				return nil, errors.New("no underlying node")
			}
			data, err := io.ReadAll(u)
			if err != nil {
				return nil, err
			}
			return kit.File(func() []byte {
				if *upper {
					return bytes.ToUpper(data)
				}
				return data
			}), nil
		},
		Sync: func() error { return os.WriteFile(os.Getenv("KIT_TEST_SYNCED"), []byte("synced"), 0o644) },
	})
}

// TestProgramMountUnderlying: with --mount, the node mounted over is the
// underlying node.
func TestProgramMountUnderlying(t *testing.T) {
	node := filepath.Join(kittest.TempDir(t), "node")
	os.WriteFile(node, []byte("covered\n"), 0o644)
	t.Setenv("KIT_TEST_PROGRAM", "underlying")
	t.Setenv("KIT_TEST_SYNCED", filepath.Join(t.TempDir(), "synced"))
	kittest.RunMount(t, os.Args[0], node, "--upper")
	if b, err := os.ReadFile(node); err != nil || string(b) != "COVERED\n" {
		t.Errorf("read %q, %v", b, err)
	}
}

// TestProgramFD3 runs a translator program as the fs server starts one:
// socket on fd 3, underlying node on fd 4; fsysopts and goaway end to end.
func TestProgramFD3(t *testing.T) {
	dir := t.TempDir()
	under := filepath.Join(dir, "node")
	os.WriteFile(under, []byte("beneath\n"), 0o644)
	f, err := os.Open(under)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	synced := filepath.Join(dir, "synced")
	t.Setenv("KIT_TEST_PROGRAM", "underlying")
	t.Setenv("KIT_TEST_SYNCED", synced)
	c, p := kittest.RunListening(t, f, os.Args[0])
	read := func() string {
		e, err := c.Root(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Forget(ctx, e.Node, 1)
		h, err := c.Open(ctx, e.Node, syscall.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release(ctx, h.Handle)
		b, err := c.Read(ctx, h.Handle, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(); got != "beneath\n" {
		t.Errorf("read %q", got)
	}
	if err := c.SetOptions(ctx, []string{"--upper"}); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "BENEATH\n" {
		t.Errorf("after --upper: %q", got)
	}
	if opts, err := c.GetOptions(ctx); err != nil || fmt.Sprint(opts) != "[under --upper]" {
		t.Errorf("options %q %v", opts, err)
	}
	if err := c.Goaway(ctx, 0); err != nil {
		t.Fatal(err)
	}
	c.Close() // as settrans -g hangs up once answered
	if err := p.Wait(t); err != nil {
		t.Errorf("exit after goaway: %v: %s", err, p.Stderr)
	}
	if b, _ := os.ReadFile(synced); string(b) != "synced" {
		t.Error("goaway did not sync")
	}
}

var ctx = context.Background()

func mustLookup(t *testing.T, fs proto.FileSystem, parent proto.NodeID, name string) proto.Entry {
	t.Helper()
	e, err := fs.Lookup(ctx, parent, name)
	if err != nil {
		t.Fatalf("lookup %s: %v", name, err)
	}
	return e
}

func TestLookupCounting(t *testing.T) {
	m := kit.NewMemFSOwned(kit.MemOptions{})
	if _, err := m.Root().AddFile("f", []byte("x"), kit.Attrs{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	fs := kit.NewFS(m.Root())
	root, err := fs.Root(ctx)
	if err != nil || root.Node != kit.RootID {
		t.Fatalf("root %v, %v", root, err)
	}
	a := mustLookup(t, fs, root.Node, "f")
	b := mustLookup(t, fs, root.Node, "f")
	if a.Node != b.Node {
		t.Fatalf("two lookups of one node gave %d and %d", a.Node, b.Node)
	}
	if fs.Known() != 2 {
		t.Fatalf("known %d, want 2", fs.Known())
	}
	fs.Forget(ctx, a.Node, 1)
	if _, err := fs.GetAttr(ctx, a.Node); err != nil {
		t.Fatalf("node forgotten while one lookup remains: %v", err)
	}
	fs.Forget(ctx, a.Node, 1)
	if _, err := fs.GetAttr(ctx, a.Node); !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("forgotten node: %v, want ESTALE", err)
	}
	c := mustLookup(t, fs, root.Node, "f")
	if c.Node == a.Node {
		t.Errorf("node number %d reused", c.Node)
	}
	// The root is never forgotten.
	fs.Forget(ctx, kit.RootID, 100)
	if _, err := fs.GetAttr(ctx, kit.RootID); err != nil {
		t.Errorf("root after forget: %v", err)
	}
	// A failed lookup counts nothing.
	if _, err := fs.Lookup(ctx, root.Node, "missing"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("missing: %v", err)
	}
	fs.Forget(ctx, c.Node, 1)
	if fs.Known() != 1 {
		t.Errorf("known %d after forgetting all, want 1", fs.Known())
	}
}

// TestLookupCountingConcurrent races lookups against forgets of the same
// node: at the end, with every lookup given back, only the root is known,
// and a node was never unknown while a lookup of it was outstanding.
func TestLookupCountingConcurrent(t *testing.T) {
	m := kit.NewMemFSOwned(kit.MemOptions{})
	for i := range 4 {
		m.Root().AddFile(fmt.Sprint(i), nil, kit.Attrs{Mode: 0o644})
	}
	fs := kit.NewFS(m.Root())
	var wg sync.WaitGroup
	var bad atomic.Int32
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				e, err := fs.Lookup(ctx, kit.RootID, fmt.Sprint((g+i)%4))
				if err != nil {
					bad.Add(1)
					continue
				}
				if _, err := fs.GetAttr(ctx, e.Node); err != nil {
					bad.Add(1)
				}
				fs.Forget(ctx, e.Node, 1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d calls failed on a node with an outstanding lookup", bad.Load())
	}
	if fs.Known() != 1 {
		t.Errorf("known %d, want 1 (root)", fs.Known())
	}
}

// keyed nodes with equal keys are one node.
type keyed struct {
	k         int
	forgotten *atomic.Int32
}

func (k *keyed) Getattr(context.Context, *proto.Attr) syscall.Errno { return 0 }
func (k *keyed) Key() any                                           { return k.k }
func (k *keyed) Forget()                                            { k.forgotten.Add(1) }

type keyedDir struct{ forgotten *atomic.Int32 }

func (d *keyedDir) Getattr(context.Context, *proto.Attr) syscall.Errno { return 0 }
func (d *keyedDir) Lookup(_ context.Context, name string) (kit.Node, syscall.Errno) {
	return &keyed{k: len(name), forgotten: d.forgotten}, 0
}

func TestKeyer(t *testing.T) {
	var forgotten atomic.Int32
	fs := kit.NewFS(&keyedDir{&forgotten})
	a := mustLookup(t, fs, kit.RootID, "ab")
	b := mustLookup(t, fs, kit.RootID, "cd") // same key: same node
	c := mustLookup(t, fs, kit.RootID, "xyz")
	if a.Node != b.Node || a.Node == c.Node {
		t.Fatalf("nodes %d %d %d", a.Node, b.Node, c.Node)
	}
	if forgotten.Load() != 1 {
		t.Errorf("the duplicate was forgotten %d times, want 1", forgotten.Load())
	}
	fs.Forget(ctx, a.Node, 2)
	if forgotten.Load() != 2 {
		t.Errorf("forgotten %d, want 2", forgotten.Load())
	}
	if a.Attr.Mode&syscall.S_IFMT != syscall.S_IFREG {
		t.Errorf("default mode %o, want a regular file", a.Attr.Mode)
	}
}

func TestFileAndDir(t *testing.T) {
	var mu sync.Mutex
	var saved []byte
	w := kit.File(func() []byte { return []byte("start") })
	w.Save = func(b []byte) error { mu.Lock(); saved = b; mu.Unlock(); return nil }
	root := kit.Dir(map[string]kit.Node{
		"greeting": kit.StaticFile([]byte("hi\n")),
		"sub":      kit.Dir(map[string]kit.Node{"deep": kit.StaticFile(nil)}),
		"w":        w,
	})
	m := kittest.MountNode(t, root)
	got, err := os.ReadFile(filepath.Join(m.Dir, "greeting"))
	if err != nil || string(got) != "hi\n" {
		t.Fatalf("greeting: %q, %v", got, err)
	}
	ents, err := os.ReadDir(m.Dir)
	if err != nil || len(ents) != 3 || ents[0].Name() != "greeting" || !ents[1].IsDir() {
		t.Fatalf("listing %v, %v", ents, err)
	}
	if _, err := os.Stat(filepath.Join(m.Dir, "sub", "deep")); err != nil {
		t.Error(err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "greeting"), []byte("x"), 0o644); err == nil {
		t.Error("wrote a read-only file")
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("create in a fixed dir: %v, want EROFS", err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "w"), []byte("replaced"), 0o644); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if string(saved) != "replaced" {
		t.Errorf("saved %q", saved)
	}
}

func TestMemFS(t *testing.T) {
	m := kittest.MountNode(t, kit.NewMemFSOwned(kit.MemOptions{RootMode: 0o755}).Root())
	p := func(s string) string { return filepath.Join(m.Dir, s) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(p("a/b/c"), 0o750))
	must(os.WriteFile(p("a/f"), []byte("data"), 0o640))
	must(os.Link(p("a/f"), p("a/b/g")))
	var st syscall.Stat_t
	must(syscall.Stat(p("a/b/g"), &st))
	if st.Nlink != 2 || st.Mode != syscall.S_IFREG|0o640 {
		t.Errorf("hard link: nlink %d mode %o", st.Nlink, st.Mode)
	}
	must(syscall.Stat(p("a"), &st))
	if st.Nlink != 3 {
		t.Errorf("dir a nlink %d, want 3", st.Nlink)
	}
	// A directory cannot move beneath itself, nor replace a non-empty one.
	if err := os.Rename(p("a"), p("a/b/c/a")); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("rename into itself: %v", err)
	}
	must(os.Mkdir(p("e"), 0o755))
	if err := os.Rename(p("e"), p("a")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		t.Errorf("rename over non-empty: %v", err)
	}
	// renameat2 flags.
	must(os.WriteFile(p("x"), []byte("X"), 0o644))
	must(os.WriteFile(p("y"), []byte("Y"), 0o644))
	if err := unix.Renameat2(unix.AT_FDCWD, p("x"), unix.AT_FDCWD, p("y"), unix.RENAME_NOREPLACE); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("RENAME_NOREPLACE: %v", err)
	}
	must(unix.Renameat2(unix.AT_FDCWD, p("x"), unix.AT_FDCWD, p("y"), unix.RENAME_EXCHANGE))
	if b, _ := os.ReadFile(p("x")); string(b) != "Y" {
		t.Errorf("after exchange x holds %q", b)
	}
	var e1, c1 syscall.Stat_t
	must(syscall.Stat(p("e"), &e1))
	must(syscall.Stat(p("a/b/c"), &c1))
	must(unix.Renameat2(unix.AT_FDCWD, p("e"), unix.AT_FDCWD, p("a/b/c"), unix.RENAME_EXCHANGE))
	must(syscall.Stat(p("e"), &st))
	if st.Ino != c1.Ino {
		t.Errorf("exchange of directories: e is inode %d, want %d", st.Ino, c1.Ino)
	}
	// Owners, modes, times, xattrs, symlinks, fifos.
	must(os.Chown(p("x"), 1234, 5678))
	must(syscall.Chmod(p("x"), 0o4711))
	must(syscall.Stat(p("x"), &st))
	if st.Uid != 1234 || st.Gid != 5678 || st.Mode&07777 != 0o4711 {
		t.Errorf("chown/chmod: %d:%d %o", st.Uid, st.Gid, st.Mode)
	}
	must(unix.UtimesNano(p("x"), []unix.Timespec{{Sec: 100, Nsec: 5}, {Sec: 200, Nsec: 7}}))
	must(syscall.Stat(p("x"), &st))
	if st.Atim.Sec != 100 || st.Mtim.Sec != 200 || st.Mtim.Nsec != 7 {
		t.Errorf("times %v %v", st.Atim, st.Mtim)
	}
	must(unix.Setxattr(p("x"), "user.k", []byte("v"), 0))
	if err := unix.Setxattr(p("x"), "user.k", []byte("w"), unix.XATTR_CREATE); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("XATTR_CREATE on existing: %v", err)
	}
	buf := make([]byte, 10)
	if n, err := unix.Getxattr(p("x"), "user.k", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("getxattr %q %v", buf[:n], err)
	}
	must(os.Symlink("a/f", p("s")))
	if b, err := os.ReadFile(p("s")); err != nil || string(b) != "data" {
		t.Errorf("through symlink: %q %v", b, err)
	}
	must(syscall.Mkfifo(p("fifo"), 0o600))
	must(syscall.Lstat(p("fifo"), &st))
	if st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		t.Errorf("fifo mode %o", st.Mode)
	}
	// An open file outlives its name.
	f, err := os.OpenFile(p("a/f"), os.O_RDWR, 0)
	must(err)
	defer f.Close()
	must(os.Remove(p("a/f")))
	must(os.Remove(p("a/b/g")))
	if _, err := f.WriteAt([]byte("DATA"), 0); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := f.ReadAt(b, 0); err != nil || !bytes.Equal(b, []byte("DATA")) {
		t.Errorf("unlinked open file reads %q %v", b, err)
	}
	if err := os.Remove(p("a")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EISDIR) {
		t.Errorf("remove non-empty dir: %v", err)
	}
	var sfs syscall.Statfs_t
	must(syscall.Statfs(m.Dir, &sfs))
	if sfs.Bsize != 4096 || sfs.Namelen != 255 {
		t.Errorf("statfs %+v", sfs)
	}
}

// TestAllForgotten: when the client goes, the proto server forgets what it
// held, and the adapter is back to the root alone.
func TestAllForgotten(t *testing.T) {
	mem := kit.NewMemFSOwned(kit.MemOptions{})
	fs := kit.NewFS(mem.Root())
	t.Run("use", func(t *testing.T) {
		m := kittest.Mount(t, fs)
		os.MkdirAll(filepath.Join(m.Dir, "d/e/f"), 0o755)
		for i := range 50 {
			os.WriteFile(filepath.Join(m.Dir, "d", fmt.Sprint(i)), nil, 0o644)
		}
		os.ReadDir(filepath.Join(m.Dir, "d"))
		if fs.Known() < 50 {
			t.Errorf("known %d while mounted", fs.Known())
		}
	})
	// The server forgets for the gone client as its session ends, which
	// may finish after the unmount returned: wait for it.
	deadline := time.Now().Add(30 * time.Second)
	for fs.Known() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if fs.Known() != 1 {
		t.Errorf("known %d after unmount, want 1", fs.Known())
	}
}

func TestSparseMemFS(t *testing.T) {
	mem := kit.NewMemFSOwned(kit.MemOptions{MaxBytes: 8192})
	n, err := mem.Root().AddFile("f", nil, kit.Attrs{Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	var out proto.Attr
	if e := n.Setattr(ctx, nil, proto.SetAttrIn{Valid: proto.SetAttrSize, Size: 1 << 30}, &out); e != 0 {
		t.Fatal(e)
	}
	if out.Size != 1<<30 || out.Blocks != 0 || mem.Used() != 0 {
		t.Errorf("sparse file: size %d blocks %d used %d", out.Size, out.Blocks, mem.Used())
	}
	if k, e := n.Write(ctx, nil, 0, make([]byte, 10000)); e != 0 || k != 8192 {
		t.Errorf("write at the limit: %d, %v; want a short write of 8192", k, e)
	}
	if _, e := n.Write(ctx, nil, 1<<20, []byte("x")); e != syscall.ENOSPC {
		t.Errorf("write past the limit: %v", e)
	}
}

func TestLazyFile(t *testing.T) {
	mem := kit.NewMemFSOwned(kit.MemOptions{})
	mem.Root().AddLazyFile("good", bytes.NewReader([]byte("lazy contents")), 13, kit.Attrs{Mode: 0o644})
	mem.Root().AddLazyFile("bad", bytes.NewReader([]byte("short")), 100, kit.Attrs{Mode: 0o644})
	g0 := mem.Generation()
	m := kittest.MountNode(t, mem.Root())
	if b, err := os.ReadFile(filepath.Join(m.Dir, "good")); err != nil || string(b) != "lazy contents" {
		t.Errorf("lazy read %q %v", b, err)
	}
	if _, err := os.ReadFile(filepath.Join(m.Dir, "bad")); !errors.Is(err, syscall.EIO) {
		t.Errorf("corrupt source: %v, want EIO", err)
	}
	if mem.Generation() != g0 {
		t.Error("reading changed the generation")
	}
	f, err := os.OpenFile(filepath.Join(m.Dir, "good"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("LAZY"), 0)
	f.Close()
	if b, _ := os.ReadFile(filepath.Join(m.Dir, "good")); string(b) != "LAZY contents" {
		t.Errorf("after write %q", b)
	}
	if mem.Generation() == g0 {
		t.Error("a write did not change the generation")
	}
	var names []string
	mem.Root().Walk(func(p string, n *kit.MemNode) error { names = append(names, p); return nil })
	if fmt.Sprint(names) != "[. bad good]" {
		t.Errorf("walk %v", names)
	}
}

// A translator's options: parsed at start, changed and reported at run
// time, goaway syncs.
func testTranslator(synced *atomic.Int32) kit.Translator {
	flags := pflag.NewFlagSet("greet", pflag.ContinueOnError)
	word := flags.String("word", "hello", "the word")
	loud := flags.Bool("loud", false, "shout")
	return kit.Translator{
		Name:  "greet",
		Flags: flags,
		Args:  "NAME",
		Root: func(args []string) (kit.Node, error) {
			if len(args) != 1 {
				return nil, kit.Usagef("want one NAME")
			}
			return kit.File(func() []byte {
				s := *word + " " + args[0]
				if *loud {
					s += "!"
				}
				return []byte(s)
			}), nil
		},
		Sync: func() error { synced.Add(1); return nil },
	}
}

func TestTranslatorOptions(t *testing.T) {
	var synced atomic.Int32
	tr := testTranslator(&synced)
	if _, err := tr.Start([]string{"--bogus", "x"}); !kit.IsUsage(err) {
		t.Errorf("unknown flag: %v", err)
	}
	if _, err := testTranslator(&synced).Start(nil); !kit.IsUsage(err) {
		t.Errorf("missing argument: %v", err)
	}
	in, err := testTranslator(&synced).Start([]string{"--word=hi", "world"})
	if err != nil {
		t.Fatal(err)
	}
	m := kittest.Mount(t, in.FileSystem())
	read := func() string {
		b, err := os.ReadFile(m.Dir)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(); got != "hi world" {
		t.Fatalf("read %q", got)
	}
	opts, err := m.Client.GetOptions(ctx)
	if err != nil || fmt.Sprint(opts) != "[greet --word=hi world]" {
		t.Errorf("options %q %v", opts, err)
	}
	if err := m.Client.SetOptions(ctx, []string{"--loud", "--word=bye"}); err != nil {
		t.Fatal(err)
	}
	// The translator's invalidation reaches the mount on a connection of
	// its own, racing this answer: have the mount drop its copy now, as
	// fsysopts does.
	if _, err := unix.Getxattr(m.Dir, "user.herd.refresh", nil); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if got := read(); got != "bye world!" {
		t.Errorf("after fsysopts: %q", got)
	}
	opts, _ = m.Client.GetOptions(ctx)
	if fmt.Sprint(opts) != "[greet --loud --word=bye world]" {
		t.Errorf("options %q", opts)
	}
	for _, bad := range [][]string{{"--nope"}, {"other"}, {"--loud=maybe"}, {"--word=half", "--nope"}} {
		err := m.Client.SetOptions(ctx, bad)
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("SetOptions(%q) = %v, want EINVAL", bad, err)
		}
	}
	// A refused change changes nothing; what GetOptions says can be set
	// back as it is (fsysopts NODE $(fsysopts NODE)).
	if got := read(); got != "bye world!" {
		t.Errorf("after refused changes: %q", got)
	}
	if err := m.Client.SetOptions(ctx, opts); err != nil {
		t.Errorf("setting back %q: %v", opts, err)
	}
	if err := m.Client.Goaway(ctx, 0); err != nil {
		t.Fatal(err)
	}
	<-in.Done()
	if synced.Load() == 0 {
		t.Error("goaway did not sync")
	}
}

// TestConcurrentTree hammers one MemFS through FUSE from many goroutines
// (create, link, rename, unlink, mkdir, rmdir, stat, list), then checks the
// tree is consistent and that, once unmounted, every lookup was given back.
func TestConcurrentTree(t *testing.T) {
	mem := kit.NewMemFSOwned(kit.MemOptions{})
	fs := kit.NewFS(mem.Root())
	t.Run("hammer", func(t *testing.T) {
		m := kittest.Mount(t, fs)
		var wg sync.WaitGroup
		for g := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := func(i int) string { return filepath.Join(m.Dir, fmt.Sprint("n", i%7)) }
				for i := range 300 {
					switch (g + i) % 7 {
					case 0:
						os.WriteFile(p(i), []byte("x"), 0o644)
					case 1:
						os.Link(p(i), p(i+1))
					case 2:
						os.Rename(p(i), p(i+3))
					case 3:
						os.Remove(p(i))
					case 4:
						os.Mkdir(p(i), 0o755)
					case 5:
						os.Stat(p(i))
						os.ReadDir(m.Dir)
					case 6:
						os.Remove(p(i + 2))
					}
				}
			}()
		}
		wg.Wait()
		// What the kernel sees matches what MemFS holds.
		ents, err := os.ReadDir(m.Dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		mem.Root().Walk(func(p string, n *kit.MemNode) error {
			if filepath.Dir(p) == "." && p != "." {
				names = append(names, p)
			}
			return nil
		})
		if len(ents) != len(names) {
			t.Errorf("listing has %d names, the tree %d", len(ents), len(names))
		}
		for _, e := range ents {
			n := mem.Root().Child(e.Name())
			if n == nil {
				t.Errorf("%s listed but not in the tree", e.Name())
				continue
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(m.Dir, e.Name()), &st); err != nil {
				t.Errorf("lstat %s: %v", e.Name(), err)
			} else if a := n.Attr(); a.Ino != st.Ino || a.Nlink != uint32(st.Nlink) {
				t.Errorf("%s: kernel ino %d nlink %d, tree %d %d", e.Name(), st.Ino, st.Nlink, a.Ino, a.Nlink)
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for fs.Known() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if fs.Known() != 1 {
		t.Errorf("known %d after unmount, want 1", fs.Known())
	}
}

// recorder is a Notifier that remembers what it was told.
type recorder struct {
	mu    sync.Mutex
	nodes []proto.NodeID
	got   chan struct{}
}

func (r *recorder) InvalNode(node proto.NodeID, off, length int64) {
	r.mu.Lock()
	r.nodes = append(r.nodes, node)
	r.mu.Unlock()
	select {
	case r.got <- struct{}{}:
	default:
	}
}
func (r *recorder) InvalEntry(proto.NodeID, string) {}

// TestSetOptionsNotifies: a run-time option change tells the clients that
// the translator's nodes changed, the root of a one-file translator among
// them (fsysopts NODE --contents=... on hello), so no client keeps reading
// its cached copy.
func TestSetOptionsNotifies(t *testing.T) {
	flags := pflag.NewFlagSet("one", pflag.ContinueOnError)
	contents := flags.String("contents", "old", "")
	in, err := kit.Translator{
		Name:  "one",
		Flags: flags,
		Root:  func([]string) (kit.Node, error) { return kit.File(func() []byte { return []byte(*contents) }), nil },
	}.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{got: make(chan struct{}, 1)}
	c, closeFn, err := proto.Pipe(in.FileSystem(), proto.ServerOptions{Name: "one"}, proto.ClientOptions{Notifier: r})
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	root, err := c.Root(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetOptions(t.Context(), []string{"--contents=new"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		r.mu.Lock()
		found := false
		for _, n := range r.nodes {
			found = found || n == root.Node
		}
		r.mu.Unlock()
		if found {
			break
		}
		select {
		case <-r.got:
		case <-deadline:
			t.Fatal("no invalidation of the root after SetOptions")
		}
	}
	if a, err := c.GetAttr(t.Context(), root.Node); err != nil || a.Size != 3 {
		t.Errorf("root after SetOptions: size %d, %v", a.Size, err)
	}
}

// TestMkdirAll: missing parents are made once, a file in the way is an
// error.
func TestMkdirAll(t *testing.T) {
	mem := kit.NewMemFSOwned(kit.MemOptions{})
	root := mem.Root()
	d, err := root.MkdirAll("a/b/c", kit.Attrs{Mode: 0o750})
	if err != nil || d.Attr().Mode != syscall.S_IFDIR|0o750 {
		t.Fatalf("MkdirAll: %v, %v", d, err)
	}
	if root.Child("a").Child("b").Child("c") != d {
		t.Error("a/b/c is not the directory returned")
	}
	if again, err := root.MkdirAll("a/b/c", kit.Attrs{}); again != d || err != nil {
		t.Errorf("again: %v, %v; want the same directory", again, err)
	}
	if r, err := root.MkdirAll(".", kit.Attrs{}); r != root || err != nil {
		t.Errorf(`".": %v, %v; want the root`, r, err)
	}
	if _, err := root.Child("a").AddFile("f", nil, kit.Attrs{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.MkdirAll("a/f/x", kit.Attrs{}); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("through a file: %v; want ENOTDIR", err)
	}
}
