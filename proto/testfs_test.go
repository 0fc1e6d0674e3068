package proto

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// testFS is the FileSystem on the far side of the protocol in these tests.
// It records the arguments of every call, answers with fixed, rich values
// (so a round trip can be compared field by field), and counts lookups,
// forgets, opens and releases the way a real server would have to.
type testFS struct {
	dir string // backing files for Open (descriptor passing)

	mu        sync.Mutex
	last      map[string][]any // op -> arguments of its last call
	callers   map[string]Caller
	forgotten map[NodeID]uint64
	released  map[HandleID]int
	nextH     HandleID
	notifier  Notifier

	fast []byte        // when set, Read answers slices of it (benchmarks)
	gone chan struct{} // when set, a successful Goaway closes it

	hang chan struct{} // calls on hangNode block until this closes
	// entered is told when a call reaches a hang.
	entered chan string
}

const (
	hangNode NodeID = 666
	rootNode NodeID = 1
)

var (
	_ FileSystem     = (*testFS)(nil)
	_ DirPlusReader  = (*testFS)(nil)
	_ NotifierSetter = (*testFS)(nil)
)

func newTestFS(t testing.TB) *testFS {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("hello through a descriptor\n"), 0644); err != nil {
		t.Fatal(err)
	}
	fs := &testFS{
		dir:       dir,
		last:      make(map[string][]any),
		callers:   make(map[string]Caller),
		forgotten: make(map[NodeID]uint64),
		released:  make(map[HandleID]int),
		hang:      make(chan struct{}),
		entered:   make(chan string, 16),
	}
	t.Cleanup(fs.unhang)
	return fs
}

func (f *testFS) unhang() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.hang:
	default:
		close(f.hang)
	}
}

func (f *testFS) record(ctx context.Context, op string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last[op] = args
	if c, ok := CallerFrom(ctx); ok {
		f.callers[op] = c
	}
}

func (f *testFS) lastArgs(op string) []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last[op]
}

func (f *testFS) callerOf(op string) (Caller, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.callers[op]
	return c, ok
}

// maybeHang blocks forever (until the test ends) on hangNode, ignoring the
// context: the worst server there is.
func (f *testFS) maybeHang(op string, n NodeID) {
	if n == hangNode {
		f.entered <- op
		<-f.hang
	}
}

// errFor maps magic names to errors, for the errno tests.
func errFor(name string) error {
	switch name {
	case "enoent":
		return fmt.Errorf("testfs: %q: %w", name, syscall.ENOENT)
	case "eacces":
		return syscall.EACCES
	case "plain":
		return fmt.Errorf("an error without errno")
	case "panic":
		panic("testfs: asked to panic")
	}
	return nil
}

var fixtureAttr = Attr{
	Ino: 0x0102030405060708, Size: 1 << 40, Blocks: 77, Mode: syscall.S_IFREG | 0o4755,
	Nlink: 3, Uid: 1000, Gid: 100, Rdev: 0x0a0b, Blksize: 4096,
	Atime: Timespec{Sec: -5, Nsec: 999999999}, Mtime: Timespec{Sec: 1 << 33, Nsec: 1},
	Ctime: Timespec{Sec: 1700000000, Nsec: 123456789},
}

// entryFor is a deterministic Entry for a name; "redirect" names get a
// redirect.
func entryFor(name string) Entry {
	var n NodeID = 1000
	for _, c := range []byte(name) {
		n = n*31 + NodeID(c)
	}
	e := Entry{Node: n, Attr: fixtureAttr}
	e.Attr.Ino = uint64(n)
	if name == "redirect" {
		e.Redirect = &Redirect{Socket: "/run/herd/1/tr.sock"}
	}
	return e
}

func (f *testFS) SetNotifier(n Notifier) {
	f.mu.Lock()
	f.notifier = n
	f.mu.Unlock()
}

func (f *testFS) Root(ctx context.Context) (Entry, error) {
	f.record(ctx, "root")
	e := entryFor("/")
	e.Node = rootNode
	return e, nil
}

func (f *testFS) GetOptions(ctx context.Context) ([]string, error) {
	f.record(ctx, "getoptions")
	return []string{"--readonly", "", "--root=/srv"}, nil
}

func (f *testFS) SetOptions(ctx context.Context, opts []string) error {
	f.record(ctx, "setoptions", opts)
	return nil
}

func (f *testFS) Goaway(ctx context.Context, flags uint32) error {
	f.record(ctx, "goaway", flags)
	if flags == 0 {
		return syscall.EBUSY
	}
	f.mu.Lock()
	gone := f.gone
	f.mu.Unlock()
	if gone != nil {
		close(gone)
	}
	return nil
}

func (f *testFS) Lookup(ctx context.Context, parent NodeID, name string) (Entry, error) {
	f.record(ctx, "lookup", parent, name)
	f.maybeHang("lookup", parent)
	if err := errFor(name); err != nil {
		return Entry{}, err
	}
	return entryFor(name), nil
}

func (f *testFS) Forget(ctx context.Context, node NodeID, nlookup uint64) {
	f.mu.Lock()
	f.forgotten[node] += nlookup
	f.mu.Unlock()
}

func (f *testFS) forgottenOf(n NodeID) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.forgotten[n]
}

func (f *testFS) releasedOf(h HandleID) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.released[h]
}

func (f *testFS) GetAttr(ctx context.Context, node NodeID) (Attr, error) {
	f.record(ctx, "getattr", node)
	f.maybeHang("getattr", node)
	a := fixtureAttr
	a.Ino = uint64(node)
	return a, nil
}

func (f *testFS) SetAttr(ctx context.Context, node NodeID, in SetAttrIn) (Attr, error) {
	f.record(ctx, "setattr", node, in)
	a := fixtureAttr
	a.Mode = in.Mode
	return a, nil
}

var fixtureDir = []DirEntry{
	{Name: "a", Ino: 1, Mode: syscall.S_IFREG},
	{Name: "", Ino: 0, Mode: 0},
	{Name: "ünïcode name", Ino: 1 << 63, Mode: syscall.S_IFDIR},
}

func (f *testFS) ReadDir(ctx context.Context, dir NodeID) ([]DirEntry, error) {
	f.record(ctx, "readdir", dir)
	if dir == 2 { // a big directory, more than one frame
		return bigDir(), nil
	}
	return fixtureDir, nil
}

func bigDir() []DirEntry {
	l := make([]DirEntry, 100000)
	for i := range l {
		l[i] = DirEntry{Name: fmt.Sprintf("file-%08d-with-a-longish-name", i), Ino: uint64(i), Mode: syscall.S_IFREG}
	}
	return l
}

func (f *testFS) ReadDirPlus(ctx context.Context, dir NodeID) ([]DirEntryPlus, error) {
	f.record(ctx, "readdirplus", dir)
	var l []DirEntryPlus
	for _, d := range fixtureDir {
		l = append(l, DirEntryPlus{DirEntry: d, Entry: entryFor(d.Name)})
	}
	return l, nil
}

func (f *testFS) Mkdir(ctx context.Context, parent NodeID, name string, mode uint32) (Entry, error) {
	f.record(ctx, "mkdir", parent, name, mode)
	return entryFor(name), nil
}

func (f *testFS) Mknod(ctx context.Context, parent NodeID, name string, mode uint32, rdev uint64) (Entry, error) {
	f.record(ctx, "mknod", parent, name, mode, rdev)
	return entryFor(name), nil
}

func (f *testFS) newHandle() HandleID {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextH++
	return 500 + f.nextH
}

func (f *testFS) openFile(flags uint32) (*os.File, error) {
	return os.OpenFile(filepath.Join(f.dir, "data"), int(flags&syscall.O_ACCMODE), 0)
}

func (f *testFS) Create(ctx context.Context, parent NodeID, name string, flags, mode uint32) (Entry, OpenResult, error) {
	f.record(ctx, "create", parent, name, flags, mode)
	file, err := f.openFile(flags)
	if err != nil {
		return Entry{}, OpenResult{}, err
	}
	return entryFor(name), OpenResult{Handle: f.newHandle(), Flags: OpenKeepCache, File: file}, nil
}

func (f *testFS) Unlink(ctx context.Context, parent NodeID, name string) error {
	f.record(ctx, "unlink", parent, name)
	return errFor(name)
}

func (f *testFS) Rmdir(ctx context.Context, parent NodeID, name string) error {
	f.record(ctx, "rmdir", parent, name)
	return errFor(name)
}

func (f *testFS) Rename(ctx context.Context, oldParent NodeID, oldName string, newParent NodeID, newName string, flags uint32) error {
	f.record(ctx, "rename", oldParent, oldName, newParent, newName, flags)
	return nil
}

func (f *testFS) Link(ctx context.Context, node NodeID, newParent NodeID, newName string) (Entry, error) {
	f.record(ctx, "link", node, newParent, newName)
	return entryFor(newName), nil
}

func (f *testFS) Symlink(ctx context.Context, parent NodeID, name, target string) (Entry, error) {
	f.record(ctx, "symlink", parent, name, target)
	return entryFor(name), nil
}

func (f *testFS) Readlink(ctx context.Context, node NodeID) (string, error) {
	f.record(ctx, "readlink", node)
	return "../target/of/the link", nil
}

func (f *testFS) GetXattr(ctx context.Context, node NodeID, name string) ([]byte, error) {
	f.record(ctx, "getxattr", node, name)
	if name == "user.missing" {
		return nil, syscall.ENODATA
	}
	return []byte{0, 1, 2, 255}, nil
}

func (f *testFS) ListXattr(ctx context.Context, node NodeID) ([]string, error) {
	f.record(ctx, "listxattr", node)
	return []string{"user.a", "trusted.herd.translator"}, nil
}

func (f *testFS) SetXattr(ctx context.Context, node NodeID, name string, value []byte, flags uint32) error {
	f.record(ctx, "setxattr", node, name, append([]byte(nil), value...), flags)
	return nil
}

func (f *testFS) RemoveXattr(ctx context.Context, node NodeID, name string) error {
	f.record(ctx, "removexattr", node, name)
	return nil
}

var fixtureStatFS = StatFS{Blocks: 1, Bfree: 2, Bavail: 3, Files: 4, Ffree: 5, Bsize: 6, Frsize: 7, NameLen: 255}

func (f *testFS) StatFS(ctx context.Context, node NodeID) (StatFS, error) {
	f.record(ctx, "statfs", node)
	return fixtureStatFS, nil
}

func (f *testFS) Open(ctx context.Context, node NodeID, flags uint32) (OpenResult, error) {
	f.record(ctx, "open", node, flags)
	f.maybeHang("open", node)
	file, err := f.openFile(flags)
	if err != nil {
		return OpenResult{}, err
	}
	return OpenResult{Handle: f.newHandle(), Flags: OpenDirectIO, File: file}, nil
}

// payload is what Read answers: size bytes of a pattern that depends on off.
func payload(off int64, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(off + int64(i)*7)
	}
	return b
}

func (f *testFS) Read(ctx context.Context, h HandleID, off int64, size int) ([]byte, error) {
	if len(f.fast) >= size {
		return f.fast[:size], nil
	}
	f.record(ctx, "read", h, off, size)
	return payload(off, size), nil
}

func (f *testFS) Write(ctx context.Context, h HandleID, off int64, data []byte) (int, error) {
	f.record(ctx, "write", h, off, len(data), sum(data))
	return len(data), nil
}

func sum(b []byte) uint64 {
	var s uint64
	for i, c := range b {
		s += uint64(c) * uint64(i+1)
	}
	return s
}

func (f *testFS) Fsync(ctx context.Context, h HandleID, datasync bool) error {
	f.record(ctx, "fsync", h, datasync)
	return nil
}

func (f *testFS) Fallocate(ctx context.Context, h HandleID, mode uint32, off, length int64) error {
	f.record(ctx, "fallocate", h, mode, off, length)
	return nil
}

func (f *testFS) Lseek(ctx context.Context, h HandleID, off int64, whence int) (int64, error) {
	f.record(ctx, "lseek", h, off, whence)
	return off + 4096, nil
}

func (f *testFS) Release(ctx context.Context, h HandleID) error {
	f.mu.Lock()
	f.released[h]++
	f.mu.Unlock()
	return nil
}
