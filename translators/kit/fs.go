package kit

import (
	"context"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"herd/proto"
)

// FS turns a tree of Nodes into a proto.FileSystem: it hands out node
// numbers, counts lookups, keeps open handles, and dispatches every call to
// the optional interface the node implements.
//
// Invariants: a node has a number while its lookup count is above zero (the
// root always has one, RootID); numbers are never reused, so a stale number
// from a confused client gives ESTALE, never another node. Every Entry
// returned counts one lookup, given back by Forget.
//
// Locking: mu guards the tables only and is never held while calling into
// a node, so nodes may block (network translators) without stalling the
// rest of the tree.
type FS struct {
	root  Node
	start proto.Timespec
	uid   uint32
	gid   uint32

	mu       sync.Mutex
	byID     map[proto.NodeID]*inode
	byNode   map[any]*inode // by key(node)
	nextID   proto.NodeID
	handles  map[proto.HandleID]*handle
	nextH    proto.HandleID
	notifier proto.Notifier
}

// RootID is the root's node number.
const RootID proto.NodeID = 1

type inode struct {
	id      proto.NodeID
	node    Node
	lookups uint64
}

type handle struct {
	node Node
	h    Handle
}

// NewFS returns the adapter for the tree under root. Its fsys calls
// (GetOptions, SetOptions, Goaway) are Main's business: NewFS answers them
// as proto.Unimplemented does.
func NewFS(root Node) *FS {
	now := time.Now()
	fs := &FS{
		root:    root,
		start:   proto.Timespec{Sec: now.Unix(), Nsec: uint32(now.Nanosecond())},
		uid:     uint32(os.Geteuid()),
		gid:     uint32(os.Getegid()),
		byID:    map[proto.NodeID]*inode{},
		byNode:  map[any]*inode{},
		nextID:  RootID + 1,
		handles: map[proto.HandleID]*handle{},
		nextH:   1,
	}
	in := &inode{id: RootID, node: root}
	fs.byID[RootID] = in
	fs.byNode[key(root)] = in
	return fs
}

var _ proto.FileSystem = (*FS)(nil)
var _ proto.NotifierSetter = (*FS)(nil)

// SetNotifier is called by the proto server.
func (fs *FS) SetNotifier(n proto.Notifier) {
	fs.mu.Lock()
	fs.notifier = n
	fs.mu.Unlock()
}

// InvalidateNode tells clients that n's attributes and data are stale.
// Nodes whose contents change behind the client's back call it.
func (fs *FS) InvalidateNode(n Node) {
	fs.mu.Lock()
	in, nt := fs.byNode[key(n)], fs.notifier
	fs.mu.Unlock()
	if in != nil && nt != nil {
		nt.InvalNode(in.id, 0, 0)
	}
}

// InvalidateEntry tells clients that name in parent no longer means what it did.
func (fs *FS) InvalidateEntry(parent Node, name string) {
	fs.mu.Lock()
	in, nt := fs.byNode[key(parent)], fs.notifier
	fs.mu.Unlock()
	if in != nil && nt != nil {
		nt.InvalEntry(in.id, name)
	}
}

// InvalidateAll invalidates every node the clients know (after options
// changed at run time).
func (fs *FS) InvalidateAll() {
	fs.mu.Lock()
	nt := fs.notifier
	ids := make([]proto.NodeID, 0, len(fs.byID))
	for id := range fs.byID {
		ids = append(ids, id)
	}
	fs.mu.Unlock()
	if nt == nil {
		return
	}
	for _, id := range ids {
		nt.InvalNode(id, 0, 0)
	}
}

// OpenHandles is the number of open files, for a Goaway that refuses while busy.
func (fs *FS) OpenHandles() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.handles)
}

func (fs *FS) node(id proto.NodeID) (Node, error) {
	fs.mu.Lock()
	in := fs.byID[id]
	fs.mu.Unlock()
	if in == nil {
		return nil, syscall.ESTALE
	}
	return in.node, nil
}

func (fs *FS) handle(h proto.HandleID) (*handle, error) {
	fs.mu.Lock()
	hd := fs.handles[h]
	fs.mu.Unlock()
	if hd == nil {
		return nil, syscall.EBADF
	}
	return hd, nil
}

// Keyer is a node that knows which other nodes are the same node: two
// nodes with equal keys (for example a host file's device and inode) are
// one node to the client. When a lookup returns a node whose key is already
// known, the adapter keeps the known one and forgets the new one (its
// Forget is called, to release what it holds). Without Keyer a node is
// keyed by itself.
type Keyer interface {
	Key() any
}

func key(n Node) any {
	if k, ok := n.(Keyer); ok {
		return k.Key()
	}
	return n
}

// remember counts one lookup of n and returns its number and the node that
// stands for it (n, or the known node with n's key).
func (fs *FS) remember(n Node) (proto.NodeID, Node) {
	k := key(n)
	fs.mu.Lock()
	in := fs.byNode[k]
	if in == nil {
		in = &inode{id: fs.nextID, node: n}
		fs.nextID++
		fs.byID[in.id] = in
		fs.byNode[k] = in
	}
	in.lookups++
	fs.mu.Unlock()
	if in.node != n {
		if f, ok := n.(Forgetter); ok {
			f.Forget()
		}
	}
	return in.id, in.node
}

// entry registers n and answers with its attributes. When Getattr fails
// the lookup is given back, so a failed call counts nothing.
func (fs *FS) entry(ctx context.Context, n Node) (proto.Entry, error) {
	id, n := fs.remember(n)
	attr, errno := fs.getattr(ctx, id, n)
	if errno != 0 {
		fs.Forget(ctx, id, 1)
		return proto.Entry{}, errno
	}
	return proto.Entry{Node: id, Attr: attr}, nil
}

func (fs *FS) defaults(id proto.NodeID, n Node) proto.Attr {
	a := proto.Attr{
		Ino: uint64(id), Nlink: 1, Uid: fs.uid, Gid: fs.gid, Blksize: 4096,
		Atime: fs.start, Mtime: fs.start, Ctime: fs.start,
	}
	if _, ok := n.(Lookuper); ok {
		a.Mode = syscall.S_IFDIR | 0o755
		a.Nlink = 2
	}
	return a
}

func (fs *FS) getattr(ctx context.Context, id proto.NodeID, n Node) (proto.Attr, syscall.Errno) {
	a := fs.defaults(id, n)
	if errno := n.Getattr(ctx, &a); errno != 0 {
		return proto.Attr{}, errno
	}
	fixMode(&a, n)
	return a, 0
}

func fixMode(a *proto.Attr, n Node) {
	if a.Mode&syscall.S_IFMT == 0 {
		switch n.(type) {
		case Lookuper:
			a.Mode |= syscall.S_IFDIR
		case Readlinker:
			a.Mode |= syscall.S_IFLNK
		default:
			a.Mode |= syscall.S_IFREG
		}
	}
	if a.Blocks == 0 && a.Mode&syscall.S_IFMT == syscall.S_IFREG {
		a.Blocks = (a.Size + 511) / 512
	}
}

func errOf(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// fsys: Main wraps these.

func (fs *FS) Root(ctx context.Context) (proto.Entry, error) { return fs.entry(ctx, fs.root) }
func (fs *FS) GetOptions(context.Context) ([]string, error)  { return nil, nil }
func (fs *FS) SetOptions(context.Context, []string) error    { return syscall.ENOSYS }
func (fs *FS) Goaway(context.Context, uint32) error          { return nil }

// fs

func (fs *FS) Lookup(ctx context.Context, parent proto.NodeID, name string) (proto.Entry, error) {
	p, err := fs.node(parent)
	if err != nil {
		return proto.Entry{}, err
	}
	l, ok := p.(Lookuper)
	if !ok {
		return proto.Entry{}, syscall.ENOTDIR
	}
	child, errno := l.Lookup(ctx, name)
	if errno != 0 {
		return proto.Entry{}, errno
	}
	if child == nil {
		return proto.Entry{}, syscall.ENOENT
	}
	return fs.entry(ctx, child)
}

func (fs *FS) Forget(ctx context.Context, id proto.NodeID, nlookup uint64) {
	fs.mu.Lock()
	in := fs.byID[id]
	if in == nil {
		fs.mu.Unlock()
		return
	}
	if nlookup >= in.lookups {
		in.lookups = 0
	} else {
		in.lookups -= nlookup
	}
	gone := in.lookups == 0 && id != RootID
	if gone {
		delete(fs.byID, id)
		delete(fs.byNode, key(in.node))
	}
	fs.mu.Unlock()
	if gone {
		if f, ok := in.node.(Forgetter); ok {
			f.Forget()
		}
	}
}

func (fs *FS) GetAttr(ctx context.Context, id proto.NodeID) (proto.Attr, error) {
	n, err := fs.node(id)
	if err != nil {
		return proto.Attr{}, err
	}
	a, errno := fs.getattr(ctx, id, n)
	return a, errOf(errno)
}

func (fs *FS) SetAttr(ctx context.Context, id proto.NodeID, in proto.SetAttrIn) (proto.Attr, error) {
	n, err := fs.node(id)
	if err != nil {
		return proto.Attr{}, err
	}
	s, ok := n.(Setattrer)
	if !ok {
		return proto.Attr{}, syscall.EROFS
	}
	var h Handle
	if in.Valid&proto.SetAttrHandle != 0 {
		if hd, err := fs.handle(in.Handle); err == nil {
			h = hd.h
		}
	}
	out := fs.defaults(id, n)
	if errno := s.Setattr(ctx, h, in, &out); errno != 0 {
		return proto.Attr{}, errno
	}
	fixMode(&out, n)
	return out, nil
}

func (fs *FS) ReadDir(ctx context.Context, id proto.NodeID) ([]proto.DirEntry, error) {
	n, err := fs.node(id)
	if err != nil {
		return nil, err
	}
	r, ok := n.(Readdirer)
	if !ok {
		if _, dir := n.(Lookuper); dir {
			return nil, nil // a directory that cannot be listed looks empty
		}
		return nil, syscall.ENOTDIR
	}
	ents, errno := r.Readdir(ctx)
	return ents, errOf(errno)
}

func (fs *FS) Mkdir(ctx context.Context, parent proto.NodeID, name string, mode uint32) (proto.Entry, error) {
	p, err := fs.node(parent)
	if err != nil {
		return proto.Entry{}, err
	}
	m, ok := p.(Mkdirer)
	if !ok {
		return proto.Entry{}, dirErr(p)
	}
	child, errno := m.Mkdir(ctx, name, mode)
	if errno != 0 {
		return proto.Entry{}, errno
	}
	return fs.entry(ctx, child)
}

// dirErr is the answer of a node that cannot do a directory operation:
// ENOTDIR if it is no directory, EROFS if it is a read-only one.
func dirErr(n Node) error {
	if _, ok := n.(Lookuper); ok {
		return syscall.EROFS
	}
	return syscall.ENOTDIR
}

func (fs *FS) Mknod(ctx context.Context, parent proto.NodeID, name string, mode uint32, rdev uint64) (proto.Entry, error) {
	p, err := fs.node(parent)
	if err != nil {
		return proto.Entry{}, err
	}
	m, ok := p.(Mknoder)
	if !ok {
		return proto.Entry{}, dirErr(p)
	}
	child, errno := m.Mknod(ctx, name, mode, rdev)
	if errno != 0 {
		return proto.Entry{}, errno
	}
	return fs.entry(ctx, child)
}

func (fs *FS) Create(ctx context.Context, parent proto.NodeID, name string, flags, mode uint32) (proto.Entry, proto.OpenResult, error) {
	p, err := fs.node(parent)
	if err != nil {
		return proto.Entry{}, proto.OpenResult{}, err
	}
	c, ok := p.(Creater)
	if !ok {
		return proto.Entry{}, proto.OpenResult{}, dirErr(p)
	}
	child, h, oflags, errno := c.Create(ctx, name, flags, mode)
	if errno != 0 {
		return proto.Entry{}, proto.OpenResult{}, errno
	}
	id, node := fs.remember(child)
	attr, errno := fs.getattr(ctx, id, node)
	if errno != 0 {
		fs.release(ctx, child, h)
		fs.Forget(ctx, id, 1)
		return proto.Entry{}, proto.OpenResult{}, errno
	}
	e := proto.Entry{Node: id, Attr: attr}
	return e, proto.OpenResult{Handle: fs.addHandle(node, h), Flags: oflags, File: backing(h)}, nil
}

func (fs *FS) Unlink(ctx context.Context, parent proto.NodeID, name string) error {
	p, err := fs.node(parent)
	if err != nil {
		return err
	}
	u, ok := p.(Unlinker)
	if !ok {
		return dirErr(p)
	}
	return errOf(u.Unlink(ctx, name))
}

func (fs *FS) Rmdir(ctx context.Context, parent proto.NodeID, name string) error {
	p, err := fs.node(parent)
	if err != nil {
		return err
	}
	r, ok := p.(Rmdirer)
	if !ok {
		return dirErr(p)
	}
	return errOf(r.Rmdir(ctx, name))
}

func (fs *FS) Rename(ctx context.Context, oldParent proto.NodeID, oldName string, newParent proto.NodeID, newName string, flags uint32) error {
	p, err := fs.node(oldParent)
	if err != nil {
		return err
	}
	np, err := fs.node(newParent)
	if err != nil {
		return err
	}
	r, ok := p.(Renamer)
	if !ok {
		return dirErr(p)
	}
	return errOf(r.Rename(ctx, oldName, np, newName, flags))
}

func (fs *FS) Link(ctx context.Context, id proto.NodeID, newParent proto.NodeID, newName string) (proto.Entry, error) {
	n, err := fs.node(id)
	if err != nil {
		return proto.Entry{}, err
	}
	p, err := fs.node(newParent)
	if err != nil {
		return proto.Entry{}, err
	}
	l, ok := p.(Linker)
	if !ok {
		return proto.Entry{}, dirErr(p)
	}
	child, errno := l.Link(ctx, n, newName)
	if errno != 0 {
		return proto.Entry{}, errno
	}
	return fs.entry(ctx, child)
}

func (fs *FS) Symlink(ctx context.Context, parent proto.NodeID, name, target string) (proto.Entry, error) {
	p, err := fs.node(parent)
	if err != nil {
		return proto.Entry{}, err
	}
	s, ok := p.(Symlinker)
	if !ok {
		return proto.Entry{}, dirErr(p)
	}
	child, errno := s.Symlink(ctx, target, name)
	if errno != 0 {
		return proto.Entry{}, errno
	}
	return fs.entry(ctx, child)
}

func (fs *FS) Readlink(ctx context.Context, id proto.NodeID) (string, error) {
	n, err := fs.node(id)
	if err != nil {
		return "", err
	}
	r, ok := n.(Readlinker)
	if !ok {
		return "", syscall.EINVAL
	}
	s, errno := r.Readlink(ctx)
	return s, errOf(errno)
}

func (fs *FS) GetXattr(ctx context.Context, id proto.NodeID, name string) ([]byte, error) {
	n, err := fs.node(id)
	if err != nil {
		return nil, err
	}
	g, ok := n.(Getxattrer)
	if !ok {
		return nil, syscall.ENODATA
	}
	v, errno := g.Getxattr(ctx, name)
	return v, errOf(errno)
}

func (fs *FS) ListXattr(ctx context.Context, id proto.NodeID) ([]string, error) {
	n, err := fs.node(id)
	if err != nil {
		return nil, err
	}
	l, ok := n.(Listxattrer)
	if !ok {
		return nil, nil
	}
	v, errno := l.Listxattr(ctx)
	return v, errOf(errno)
}

func (fs *FS) SetXattr(ctx context.Context, id proto.NodeID, name string, value []byte, flags uint32) error {
	n, err := fs.node(id)
	if err != nil {
		return err
	}
	s, ok := n.(Setxattrer)
	if !ok {
		return syscall.ENOTSUP
	}
	return errOf(s.Setxattr(ctx, name, value, flags))
}

func (fs *FS) RemoveXattr(ctx context.Context, id proto.NodeID, name string) error {
	n, err := fs.node(id)
	if err != nil {
		return err
	}
	r, ok := n.(Removexattrer)
	if !ok {
		return syscall.ENOTSUP
	}
	return errOf(r.Removexattr(ctx, name))
}

func (fs *FS) StatFS(ctx context.Context, id proto.NodeID) (proto.StatFS, error) {
	n, err := fs.node(id)
	if err != nil {
		return proto.StatFS{}, err
	}
	out := proto.StatFS{Bsize: 4096, Frsize: 4096, NameLen: 255}
	s, ok := n.(Statfser)
	if !ok {
		s, ok = fs.root.(Statfser)
	}
	if ok {
		if errno := s.Statfs(ctx, &out); errno != 0 {
			return proto.StatFS{}, errno
		}
	}
	return out, nil
}

// io

func (fs *FS) addHandle(n Node, h Handle) proto.HandleID {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	id := proto.HandleID(fs.nextH)
	fs.nextH++
	fs.handles[id] = &handle{node: n, h: h}
	return id
}

func (fs *FS) Open(ctx context.Context, id proto.NodeID, flags uint32) (proto.OpenResult, error) {
	n, err := fs.node(id)
	if err != nil {
		return proto.OpenResult{}, err
	}
	var h Handle
	var oflags uint32
	if o, ok := n.(Opener); ok {
		var errno syscall.Errno
		h, oflags, errno = o.Open(ctx, flags)
		if errno != 0 {
			return proto.OpenResult{}, errno
		}
	} else if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if _, ok := n.(Writer); !ok {
			if _, dir := n.(Lookuper); dir {
				return proto.OpenResult{}, syscall.EISDIR
			}
			return proto.OpenResult{}, syscall.EROFS
		}
	}
	return proto.OpenResult{Handle: fs.addHandle(n, h), Flags: oflags, File: backing(h)}, nil
}

// backing is the host file behind h, if any, for the client to use
// directly; the client owns (closes) it.
func backing(h Handle) *os.File {
	if bf, ok := h.(BackingFiler); ok {
		if f, err := bf.BackingFile(); err == nil {
			return f
		}
	}
	return nil
}

func (fs *FS) Read(ctx context.Context, hid proto.HandleID, off int64, size int) ([]byte, error) {
	hd, err := fs.handle(hid)
	if err != nil {
		return nil, err
	}
	r, ok := hd.node.(Reader)
	if !ok {
		if _, dir := hd.node.(Lookuper); dir {
			return nil, syscall.EISDIR
		}
		return nil, nil // nothing to read: an empty file
	}
	b, errno := r.Read(ctx, hd.h, off, size)
	return b, errOf(errno)
}

func (fs *FS) Write(ctx context.Context, hid proto.HandleID, off int64, data []byte) (int, error) {
	hd, err := fs.handle(hid)
	if err != nil {
		return 0, err
	}
	w, ok := hd.node.(Writer)
	if !ok {
		return 0, syscall.EBADF
	}
	n, errno := w.Write(ctx, hd.h, off, data)
	return n, errOf(errno)
}

func (fs *FS) Fsync(ctx context.Context, hid proto.HandleID, datasync bool) error {
	hd, err := fs.handle(hid)
	if err != nil {
		return err
	}
	if f, ok := hd.node.(Fsyncer); ok {
		return errOf(f.Fsync(ctx, hd.h, datasync))
	}
	return nil
}

func (fs *FS) Fallocate(ctx context.Context, hid proto.HandleID, mode uint32, off, length int64) error {
	hd, err := fs.handle(hid)
	if err != nil {
		return err
	}
	if a, ok := hd.node.(Allocater); ok {
		return errOf(a.Allocate(ctx, hd.h, mode, off, length))
	}
	return syscall.EOPNOTSUPP
}

func (fs *FS) Lseek(ctx context.Context, hid proto.HandleID, off int64, whence int) (int64, error) {
	hd, err := fs.handle(hid)
	if err != nil {
		return 0, err
	}
	if l, ok := hd.node.(Lseeker); ok {
		o, errno := l.Lseek(ctx, hd.h, off, whence)
		return o, errOf(errno)
	}
	// The whole file is data, with the implicit hole at its end.
	var a proto.Attr
	if errno := hd.node.Getattr(ctx, &a); errno != 0 {
		return 0, errno
	}
	size := int64(a.Size)
	if off < 0 || off >= size {
		return 0, syscall.ENXIO
	}
	switch whence {
	case unix.SEEK_DATA:
		return off, nil
	case unix.SEEK_HOLE:
		return size, nil
	}
	return 0, syscall.EINVAL
}

func (fs *FS) Release(ctx context.Context, hid proto.HandleID) error {
	fs.mu.Lock()
	hd := fs.handles[hid]
	delete(fs.handles, hid)
	fs.mu.Unlock()
	if hd == nil {
		return syscall.EBADF
	}
	return fs.release(ctx, hd.node, hd.h)
}

func (fs *FS) release(ctx context.Context, n Node, h Handle) error {
	if r, ok := n.(Releaser); ok {
		return errOf(r.Release(ctx, h))
	}
	if c, ok := h.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

var _ proto.DirPlusReader = (*FS)(nil)

// ReadDirPlus lists a directory with every name looked up (READDIRPLUS):
// each entry counts one lookup. Names that vanish between the listing and
// their lookup are left out.
func (fs *FS) ReadDirPlus(ctx context.Context, id proto.NodeID) ([]proto.DirEntryPlus, error) {
	ents, err := fs.ReadDir(ctx, id)
	if err != nil {
		return nil, err
	}
	n, err := fs.node(id)
	if err != nil {
		return nil, err
	}
	l, ok := n.(Lookuper)
	if !ok {
		return nil, syscall.ENOTDIR
	}
	out := make([]proto.DirEntryPlus, 0, len(ents))
	for _, de := range ents {
		child, errno := l.Lookup(ctx, de.Name)
		if errno != 0 || child == nil {
			continue
		}
		e, err := fs.entry(ctx, child)
		if err != nil {
			continue
		}
		if de.Ino == 0 {
			de.Ino = e.Attr.Ino
		}
		if de.Mode&syscall.S_IFMT == 0 {
			de.Mode = e.Attr.Mode & syscall.S_IFMT
		}
		out = append(out, proto.DirEntryPlus{DirEntry: de, Entry: e})
	}
	return out, nil
}
