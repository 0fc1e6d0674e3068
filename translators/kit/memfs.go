package kit

import (
	"context"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"herd/proto"
)

// MemFS is an in-memory POSIX tree: directories, regular files, symlinks,
// device nodes, fifos and sockets, hard links, modes, owners, times,
// extended attributes and renameat2's flags. Files are stored in pages that
// are allocated when written, so a file truncated to a large size takes no
// memory (and SEEK_DATA/SEEK_HOLE tell the holes). tmpfs is MemFS with a
// size limit; archive translators fill a MemFS from the archive, with file
// contents read lazily (SetSource) and written back by walking it (Walk).
//
// Locking: one mutex, mu, guards the whole tree (names, attributes, data).
// A rename moves nodes between directories, and one lock makes that and the
// loop check trivially atomic; calls are short and never block while holding
// it (except lazy sources, which are read outside it).
type MemFS struct {
	mu        sync.Mutex
	root      *MemNode
	nextIno   uint64
	maxBytes  int64 // 0: no limit
	maxInodes uint64
	used      int64 // bytes in allocated pages
	inodes    uint64
	gen       uint64 // bumped by every change, for write-back
	uid, gid  uint32
}

// MemOptions configure a MemFS.
type MemOptions struct {
	MaxBytes  int64  // size limit of file data; 0 = none. Writes beyond it give ENOSPC.
	MaxInodes uint64 // limit of nodes; 0 = none
	RootMode  uint32 // permission bits of the root (default 0755; tmpfs uses 01777)
	Uid, Gid  uint32 // owner of the root and of nodes created without a proto.Caller
}

// NewMemFS returns an empty tree. Its Root is the Node to serve.
func NewMemFS(opts MemOptions) *MemFS {
	m := &MemFS{maxBytes: opts.MaxBytes, maxInodes: opts.MaxInodes, uid: opts.Uid, gid: opts.Gid}
	mode := opts.RootMode
	if mode == 0 {
		mode = 0o755
	}
	m.root = m.newNode(syscall.S_IFDIR|mode, opts.Uid, opts.Gid)
	m.root.nlink = 2
	m.root.parent = m.root
	return m
}

// NewMemFSOwned is NewMemFS with the process's own uid and gid as owner.
func NewMemFSOwned(opts MemOptions) *MemFS {
	opts.Uid, opts.Gid = uint32(os.Geteuid()), uint32(os.Getegid())
	return NewMemFS(opts)
}

// Root is the root directory.
func (m *MemFS) Root() *MemNode { return m.root }

// Generation changes whenever anything in the tree changes: an archive
// translator compares it with the one it wrote back to know if it must
// write again.
func (m *MemFS) Generation() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen
}

// SetMaxBytes changes the size limit at run time (fsysopts --size).
func (m *MemFS) SetMaxBytes(n int64) {
	m.mu.Lock()
	m.maxBytes = n
	m.mu.Unlock()
}

// Used is the number of bytes of file data held.
func (m *MemFS) Used() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used
}

const pageSize = 4096

// MemNode is one node of a MemFS. Its methods implement the kit's optional
// interfaces; the exported helpers (Add*, SetSource, Walk, ...) build and
// inspect the tree from Go.
type MemNode struct {
	fs *MemFS

	ino                 uint64
	mode                uint32
	nlink               uint32
	uid, gid            uint32
	rdev                uint64
	atime, mtime, ctime proto.Timespec
	size                int64
	pages               map[int64][]byte // regular files: page index -> pageSize bytes
	src                 io.ReaderAt      // lazy contents until first change
	target              string           // symlinks
	children            map[string]*MemNode
	parent              *MemNode // directories only (they have one name)
	xattrs              map[string][]byte
	opens               int
}

var (
	_ Lookuper      = (*MemNode)(nil)
	_ Readdirer     = (*MemNode)(nil)
	_ Creater       = (*MemNode)(nil)
	_ Mkdirer       = (*MemNode)(nil)
	_ Mknoder       = (*MemNode)(nil)
	_ Symlinker     = (*MemNode)(nil)
	_ Linker        = (*MemNode)(nil)
	_ Unlinker      = (*MemNode)(nil)
	_ Rmdirer       = (*MemNode)(nil)
	_ Renamer       = (*MemNode)(nil)
	_ Setattrer     = (*MemNode)(nil)
	_ Readlinker    = (*MemNode)(nil)
	_ Getxattrer    = (*MemNode)(nil)
	_ Setxattrer    = (*MemNode)(nil)
	_ Listxattrer   = (*MemNode)(nil)
	_ Removexattrer = (*MemNode)(nil)
	_ Statfser      = (*MemNode)(nil)
	_ Opener        = (*MemNode)(nil)
	_ Reader        = (*MemNode)(nil)
	_ Writer        = (*MemNode)(nil)
	_ Allocater     = (*MemNode)(nil)
	_ Lseeker       = (*MemNode)(nil)
	_ Releaser      = (*MemNode)(nil)
)

func nowTS() proto.Timespec {
	t := time.Now()
	return proto.Timespec{Sec: t.Unix(), Nsec: uint32(t.Nanosecond())}
}

func (m *MemFS) newNode(mode, uid, gid uint32) *MemNode {
	m.nextIno++
	m.inodes++
	now := nowTS()
	n := &MemNode{fs: m, ino: m.nextIno, mode: mode, nlink: 1, uid: uid, gid: gid, atime: now, mtime: now, ctime: now}
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		n.children = map[string]*MemNode{}
		n.nlink = 2
	}
	return n
}

func (n *MemNode) isDir() bool { return n.mode&syscall.S_IFMT == syscall.S_IFDIR }

// The Lookuper/Readdirer answer of a non-directory: MemNode implements every
// interface, so it checks its own type.

func (n *MemNode) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	n.fill(out)
	return 0
}

func (n *MemNode) fill(out *proto.Attr) {
	*out = proto.Attr{
		Ino: n.ino, Size: uint64(n.size), Mode: n.mode, Nlink: n.nlink, Uid: n.uid, Gid: n.gid,
		Rdev: n.rdev, Blksize: pageSize, Atime: n.atime, Mtime: n.mtime, Ctime: n.ctime,
		Blocks: uint64(len(n.pages)) * (pageSize / 512),
	}
	switch n.mode & syscall.S_IFMT {
	case syscall.S_IFLNK:
		out.Size = uint64(len(n.target))
	case syscall.S_IFDIR:
		out.Size = pageSize
	}
	if n.src != nil {
		out.Blocks = (uint64(n.size) + 511) / 512
	}
}

// caller is the owner of what ctx's caller creates in n.
func (n *MemNode) owner(ctx context.Context) (uint32, uint32) {
	uid, gid := n.fs.uid, n.fs.gid
	if c, ok := proto.CallerFrom(ctx); ok {
		uid, gid = c.Uid, c.Gid
	}
	if n.mode&syscall.S_ISGID != 0 {
		gid = n.gid
	}
	return uid, gid
}

func (n *MemNode) Lookup(ctx context.Context, name string) (Node, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if !n.isDir() {
		return nil, syscall.ENOTDIR
	}
	c := n.children[name]
	if c == nil {
		return nil, syscall.ENOENT
	}
	return c, 0
}

func (n *MemNode) Readdir(ctx context.Context) ([]proto.DirEntry, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if !n.isDir() {
		return nil, syscall.ENOTDIR
	}
	out := make([]proto.DirEntry, 0, len(n.children))
	for name, c := range n.children {
		out = append(out, proto.DirEntry{Name: name, Ino: c.ino, Mode: c.mode & syscall.S_IFMT})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, 0
}

// addChild checks name can be created in n and creates a node for it.
// Called with mu held.
func (n *MemNode) addChild(ctx context.Context, name string, mode uint32) (*MemNode, syscall.Errno) {
	if !n.isDir() {
		return nil, syscall.ENOTDIR
	}
	if n.nlink == 0 {
		return nil, syscall.ENOENT // a removed directory
	}
	if len(name) > 255 {
		return nil, syscall.ENAMETOOLONG
	}
	if name == "" || name == "." || name == ".." {
		return nil, syscall.EEXIST
	}
	if n.children[name] != nil {
		return nil, syscall.EEXIST
	}
	if n.fs.maxInodes != 0 && n.fs.inodes >= n.fs.maxInodes {
		return nil, syscall.ENOSPC
	}
	uid, gid := n.owner(ctx)
	if mode&syscall.S_IFMT == syscall.S_IFDIR && n.mode&syscall.S_ISGID != 0 {
		mode |= syscall.S_ISGID
	}
	c := n.fs.newNode(mode, uid, gid)
	n.children[name] = c
	if c.isDir() {
		c.parent = n
		n.nlink++
	}
	n.touch()
	return c, 0
}

// touch records a change of n's contents. Called with mu held.
func (n *MemNode) touch() {
	now := nowTS()
	n.mtime, n.ctime = now, now
	n.fs.gen++
}

func (n *MemNode) Create(ctx context.Context, name string, flags, mode uint32) (Node, Handle, uint32, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	c, errno := n.addChild(ctx, name, syscall.S_IFREG|mode&07777)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	c.opens++
	return c, &memHandle{flags: flags}, 0, 0
}

func (n *MemNode) Mkdir(ctx context.Context, name string, mode uint32) (Node, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	c, errno := n.addChild(ctx, name, syscall.S_IFDIR|mode&07777)
	if errno != 0 {
		return nil, errno
	}
	return c, 0
}

func (n *MemNode) Mknod(ctx context.Context, name string, mode uint32, rdev uint64) (Node, syscall.Errno) {
	switch mode & syscall.S_IFMT {
	case 0:
		mode |= syscall.S_IFREG
	case syscall.S_IFREG, syscall.S_IFCHR, syscall.S_IFBLK, syscall.S_IFIFO, syscall.S_IFSOCK:
	default:
		return nil, syscall.EINVAL
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	c, errno := n.addChild(ctx, name, mode&(syscall.S_IFMT|07777))
	if errno != 0 {
		return nil, errno
	}
	c.rdev = rdev
	return c, 0
}

func (n *MemNode) Symlink(ctx context.Context, target, name string) (Node, syscall.Errno) {
	if len(target) >= 4096 {
		return nil, syscall.ENAMETOOLONG
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	c, errno := n.addChild(ctx, name, syscall.S_IFLNK|0o777)
	if errno != 0 {
		return nil, errno
	}
	c.target = target
	return c, 0
}

func (n *MemNode) Link(ctx context.Context, target Node, name string) (Node, syscall.Errno) {
	t, ok := target.(*MemNode)
	if !ok || t.fs != n.fs {
		return nil, syscall.EXDEV
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if !n.isDir() {
		return nil, syscall.ENOTDIR
	}
	if t.isDir() {
		return nil, syscall.EPERM
	}
	if t.nlink == 0 {
		return nil, syscall.ENOENT
	}
	if len(name) > 255 {
		return nil, syscall.ENAMETOOLONG
	}
	if n.children[name] != nil {
		return nil, syscall.EEXIST
	}
	n.children[name] = t
	t.nlink++
	t.ctime = nowTS()
	n.touch()
	return t, 0
}

func (n *MemNode) Unlink(ctx context.Context, name string) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if !n.isDir() {
		return syscall.ENOTDIR
	}
	c := n.children[name]
	if c == nil {
		return syscall.ENOENT
	}
	if c.isDir() {
		return syscall.EISDIR
	}
	delete(n.children, name)
	c.dropLink()
	n.touch()
	return 0
}

// dropLink removes one name of c. Called with mu held.
func (c *MemNode) dropLink() {
	c.ctime = nowTS()
	if c.isDir() {
		c.nlink = 0
		c.parent.nlink--
		c.fs.inodes--
		return
	}
	c.nlink--
	if c.nlink == 0 {
		c.fs.inodes--
		c.maybeFree()
	}
}

// maybeFree gives back the pages of a file that has no name and is not
// open. Called with mu held.
func (c *MemNode) maybeFree() {
	if c.nlink == 0 && c.opens == 0 && c.pages != nil {
		c.fs.used -= int64(len(c.pages)) * pageSize
		c.pages = nil
	}
}

func (n *MemNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if !n.isDir() {
		return syscall.ENOTDIR
	}
	if name == "." {
		return syscall.EINVAL
	}
	c := n.children[name]
	if c == nil {
		return syscall.ENOENT
	}
	if !c.isDir() {
		return syscall.ENOTDIR
	}
	if len(c.children) > 0 {
		return syscall.ENOTEMPTY
	}
	delete(n.children, name)
	c.dropLink()
	n.touch()
	return 0
}

func (n *MemNode) Rename(ctx context.Context, name string, newParent Node, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*MemNode)
	if !ok || np.fs != n.fs {
		return syscall.EXDEV
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 ||
		flags == unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE {
		return syscall.EINVAL
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if !n.isDir() || !np.isDir() {
		return syscall.ENOTDIR
	}
	if len(newName) > 255 {
		return syscall.ENAMETOOLONG
	}
	src := n.children[name]
	if src == nil {
		return syscall.ENOENT
	}
	dst := np.children[newName]
	if flags&unix.RENAME_NOREPLACE != 0 && dst != nil {
		return syscall.EEXIST
	}
	if flags&unix.RENAME_EXCHANGE != 0 && dst == nil {
		return syscall.ENOENT
	}
	if src == dst {
		return 0 // two names of one file, or the same name: nothing to do
	}
	// A directory cannot move beneath itself.
	if src.isDir() && np.isBeneath(src) {
		return syscall.EINVAL
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		if dst.isDir() && n.isBeneath(dst) {
			return syscall.EINVAL
		}
		n.children[name], np.children[newName] = dst, src
		if src.isDir() != dst.isDir() && n != np {
			if src.isDir() {
				n.nlink--
				np.nlink++
			} else {
				n.nlink++
				np.nlink--
			}
		}
		if src.isDir() {
			src.parent = np
		}
		if dst.isDir() {
			dst.parent = n
		}
		now := nowTS()
		src.ctime, dst.ctime = now, now
		n.touch()
		np.touch()
		return 0
	}
	if dst != nil {
		switch {
		case src.isDir() && !dst.isDir():
			return syscall.ENOTDIR
		case !src.isDir() && dst.isDir():
			return syscall.EISDIR
		case dst.isDir() && len(dst.children) > 0:
			return syscall.ENOTEMPTY
		}
		dst.dropLink()
	}
	delete(n.children, name)
	np.children[newName] = src
	if src.isDir() && n != np {
		n.nlink--
		np.nlink++
		src.parent = np
	}
	src.ctime = nowTS()
	n.touch()
	np.touch()
	return 0
}

// isBeneath says whether n is d or inside it. Called with mu held.
func (n *MemNode) isBeneath(d *MemNode) bool {
	for p := n; ; p = p.parent {
		if p == d {
			return true
		}
		if p == p.parent || p.parent == nil {
			return false
		}
	}
}

func (n *MemNode) Setattr(ctx context.Context, h Handle, in proto.SetAttrIn, out *proto.Attr) syscall.Errno {
	if in.Valid&proto.SetAttrSize != 0 {
		if n.mode&syscall.S_IFMT == syscall.S_IFDIR {
			return syscall.EISDIR
		}
		if errno := n.materialize(); errno != 0 {
			return errno
		}
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	now := nowTS()
	if in.Valid&proto.SetAttrSize != 0 {
		if n.mode&syscall.S_IFMT != syscall.S_IFREG {
			return syscall.EINVAL
		}
		if errno := n.truncate(int64(in.Size)); errno != 0 {
			return errno
		}
		n.mtime = now
		n.fs.gen++
	}
	if in.Valid&proto.SetAttrMode != 0 {
		n.mode = n.mode&syscall.S_IFMT | in.Mode&07777
	}
	if in.Valid&proto.SetAttrUid != 0 {
		n.uid = in.Uid
	}
	if in.Valid&proto.SetAttrGid != 0 {
		n.gid = in.Gid
	}
	switch {
	case in.Valid&proto.SetAttrAtimeNow != 0:
		n.atime = now
	case in.Valid&proto.SetAttrAtime != 0:
		n.atime = in.Atime
	}
	switch {
	case in.Valid&proto.SetAttrMtimeNow != 0:
		n.mtime = now
	case in.Valid&proto.SetAttrMtime != 0:
		n.mtime = in.Mtime
	}
	n.ctime = now
	n.fs.gen++
	n.fill(out)
	return 0
}

// truncate sets the size of a materialized file. Called with mu held.
func (n *MemNode) truncate(size int64) syscall.Errno {
	if size < 0 {
		return syscall.EINVAL
	}
	if size < n.size {
		for idx := range n.pages {
			if idx*pageSize >= size {
				delete(n.pages, idx)
				n.fs.used -= pageSize
			}
		}
		if off := size % pageSize; off != 0 {
			if p := n.pages[size/pageSize]; p != nil {
				clear(p[off:])
			}
		}
	}
	n.size = size
	return 0
}

func (n *MemNode) Readlink(ctx context.Context) (string, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if n.mode&syscall.S_IFMT != syscall.S_IFLNK {
		return "", syscall.EINVAL
	}
	return n.target, 0
}

func (n *MemNode) Getxattr(ctx context.Context, name string) ([]byte, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	v, ok := n.xattrs[name]
	if !ok {
		return nil, syscall.ENODATA
	}
	return append([]byte{}, v...), 0
}

func (n *MemNode) Setxattr(ctx context.Context, name string, value []byte, flags uint32) syscall.Errno {
	if len(name) > 255 {
		return syscall.ERANGE
	}
	if len(value) > 64<<10 {
		return syscall.E2BIG
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	_, exists := n.xattrs[name]
	if flags&unix.XATTR_CREATE != 0 && exists {
		return syscall.EEXIST
	}
	if flags&unix.XATTR_REPLACE != 0 && !exists {
		return syscall.ENODATA
	}
	if n.xattrs == nil {
		n.xattrs = map[string][]byte{}
	}
	n.xattrs[name] = append([]byte{}, value...)
	n.ctime = nowTS()
	n.fs.gen++
	return 0
}

func (n *MemNode) Listxattr(ctx context.Context) ([]string, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	out := make([]string, 0, len(n.xattrs))
	for k := range n.xattrs {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, 0
}

func (n *MemNode) Removexattr(ctx context.Context, name string) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if _, ok := n.xattrs[name]; !ok {
		return syscall.ENODATA
	}
	delete(n.xattrs, name)
	n.ctime = nowTS()
	n.fs.gen++
	return 0
}

func (n *MemNode) Statfs(ctx context.Context, out *proto.StatFS) syscall.Errno {
	m := n.fs
	m.mu.Lock()
	defer m.mu.Unlock()
	out.Bsize, out.Frsize, out.NameLen = pageSize, pageSize, 255
	total := uint64(1) << 40 // no limit: report a terabyte, as tmpfs reports half the RAM
	if m.maxBytes > 0 {
		total = uint64(m.maxBytes)
	}
	out.Blocks = total / pageSize
	used := uint64(m.used) / pageSize
	out.Bfree = 0
	if used < out.Blocks {
		out.Bfree = out.Blocks - used
	}
	out.Bavail = out.Bfree
	files := m.maxInodes
	if files == 0 {
		files = 1 << 32
	}
	out.Files = files
	out.Ffree = 0
	if m.inodes < files {
		out.Ffree = files - m.inodes
	}
	return 0
}

// memHandle is an open MemFS file.
type memHandle struct{ flags uint32 }

func (n *MemNode) Open(ctx context.Context, flags uint32) (Handle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY && n.mode&syscall.S_IFMT == syscall.S_IFREG {
		n.fs.mu.Lock()
		n.src = nil
		if n.size != 0 || len(n.pages) != 0 {
			n.truncate(0)
			n.touch()
		}
		n.fs.mu.Unlock()
	}
	n.fs.mu.Lock()
	n.opens++
	n.fs.mu.Unlock()
	return &memHandle{flags: flags}, 0, 0
}

func (n *MemNode) Release(ctx context.Context, h Handle) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	n.opens--
	n.maybeFree()
	return 0
}

func (n *MemNode) Read(ctx context.Context, h Handle, off int64, size int) ([]byte, syscall.Errno) {
	n.fs.mu.Lock()
	if n.isDir() {
		n.fs.mu.Unlock()
		return nil, syscall.EISDIR
	}
	if off >= n.size || size <= 0 {
		n.fs.mu.Unlock()
		return nil, 0
	}
	if rest := n.size - off; int64(size) > rest {
		size = int(rest)
	}
	if src := n.src; src != nil {
		n.fs.mu.Unlock()
		buf := make([]byte, size)
		k, err := src.ReadAt(buf, off)
		if k < size && err != nil {
			return nil, syscall.EIO // a corrupt archive: EIO for this file, not the tree
		}
		return buf, 0
	}
	defer n.fs.mu.Unlock()
	buf := make([]byte, size)
	for done := 0; done < size; {
		pos := off + int64(done)
		idx, po := pos/pageSize, int(pos%pageSize)
		k := min(pageSize-po, size-done)
		if p := n.pages[idx]; p != nil {
			copy(buf[done:done+k], p[po:])
		}
		done += k
	}
	return buf, 0
}

// materialize copies lazy contents into pages before a change.
func (n *MemNode) materialize() syscall.Errno {
	n.fs.mu.Lock()
	src, size := n.src, n.size
	n.fs.mu.Unlock()
	if src == nil {
		return 0
	}
	data := make([]byte, size)
	if k, err := src.ReadAt(data, 0); int64(k) < size && err != nil {
		return syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if n.src != src { // changed meanwhile
		return 0
	}
	n.src = nil
	n.size = 0
	_, errno := n.writeLocked(0, data)
	return errno
}

func (n *MemNode) Write(ctx context.Context, h Handle, off int64, data []byte) (int, syscall.Errno) {
	if errno := n.materialize(); errno != 0 {
		return 0, errno
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if mh, ok := h.(*memHandle); ok && mh.flags&syscall.O_APPEND != 0 {
		off = n.size
	}
	k, errno := n.writeLocked(off, data)
	if k > 0 {
		n.touch()
		// Writing kills setuid, and setgid of group-executable files, as the kernel does.
		n.mode &^= syscall.S_ISUID
		if n.mode&0o010 != 0 {
			n.mode &^= syscall.S_ISGID
		}
	}
	return k, errno
}

// writeLocked stores data at off, allocating pages; short with ENOSPC at
// the size limit. Called with mu held.
func (n *MemNode) writeLocked(off int64, data []byte) (int, syscall.Errno) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if n.pages == nil {
		n.pages = map[int64][]byte{}
	}
	done := 0
	for done < len(data) {
		pos := off + int64(done)
		idx, po := pos/pageSize, int(pos%pageSize)
		p := n.pages[idx]
		if p == nil {
			if n.fs.maxBytes > 0 && n.fs.used+pageSize > n.fs.maxBytes {
				break
			}
			p = make([]byte, pageSize)
			n.pages[idx] = p
			n.fs.used += pageSize
		}
		done += copy(p[po:], data[done:])
	}
	if end := off + int64(done); done > 0 && end > n.size {
		n.size = end
	}
	if done < len(data) && done == 0 {
		return 0, syscall.ENOSPC
	}
	return done, 0
}

func (n *MemNode) Allocate(ctx context.Context, h Handle, mode uint32, off, length int64) syscall.Errno {
	if off < 0 || length <= 0 {
		return syscall.EINVAL
	}
	if errno := n.materialize(); errno != 0 {
		return errno
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if n.pages == nil {
		n.pages = map[int64][]byte{}
	}
	end := off + length
	switch mode {
	case 0, unix.FALLOC_FL_KEEP_SIZE:
		need := int64(0)
		for idx := off / pageSize; idx*pageSize < end; idx++ {
			if n.pages[idx] == nil {
				need += pageSize
			}
		}
		if n.fs.maxBytes > 0 && n.fs.used+need > n.fs.maxBytes {
			return syscall.ENOSPC
		}
		for idx := off / pageSize; idx*pageSize < end; idx++ {
			if n.pages[idx] == nil {
				n.pages[idx] = make([]byte, pageSize)
				n.fs.used += pageSize
			}
		}
		if mode == 0 && end > n.size {
			n.size = end
		}
	case unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE:
		for idx := off / pageSize; idx*pageSize < end; idx++ {
			p := n.pages[idx]
			if p == nil {
				continue
			}
			ps := idx * pageSize
			lo, hi := max(off, ps)-ps, min(end, ps+pageSize)-ps
			if lo == 0 && hi == pageSize {
				delete(n.pages, idx)
				n.fs.used -= pageSize
			} else {
				clear(p[lo:hi])
			}
		}
	default:
		return syscall.EOPNOTSUPP
	}
	n.touch()
	return 0
}

func (n *MemNode) Lseek(ctx context.Context, h Handle, off int64, whence int) (int64, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if off < 0 || off >= n.size {
		return 0, syscall.ENXIO
	}
	if n.src != nil {
		if whence == unix.SEEK_DATA {
			return off, 0
		}
		return n.size, 0
	}
	idx := off / pageSize
	switch whence {
	case unix.SEEK_DATA:
		for ; idx*pageSize < n.size; idx++ {
			if n.pages[idx] != nil {
				return max(off, idx*pageSize), 0
			}
		}
		return 0, syscall.ENXIO
	case unix.SEEK_HOLE:
		for ; idx*pageSize < n.size; idx++ {
			if n.pages[idx] == nil {
				return max(off, idx*pageSize), 0
			}
		}
		return n.size, 0
	}
	return 0, syscall.EINVAL
}

// Building and inspecting the tree from Go (archive translators).

// Attrs are what Add* set on a new node; zero times mean now.
type Attrs struct {
	Mode                uint32 // permission bits (type bits are the Add* method's)
	Uid, Gid            uint32
	Rdev                uint64
	Atime, Mtime, Ctime time.Time
}

func (n *MemNode) add(name string, mode uint32, a Attrs) (*MemNode, error) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	c, errno := n.addChild(context.Background(), name, mode|a.Mode&07777)
	if errno != 0 {
		return nil, &os.PathError{Op: "add", Path: name, Err: errno}
	}
	c.uid, c.gid, c.rdev = a.Uid, a.Gid, a.Rdev
	set := func(ts *proto.Timespec, t time.Time) {
		if !t.IsZero() {
			*ts = proto.Timespec{Sec: t.Unix(), Nsec: uint32(t.Nanosecond())}
		}
	}
	set(&c.atime, a.Atime)
	set(&c.mtime, a.Mtime)
	set(&c.ctime, a.Ctime)
	return c, nil
}

// AddDir adds a directory called name to the directory n.
func (n *MemNode) AddDir(name string, a Attrs) (*MemNode, error) {
	return n.add(name, syscall.S_IFDIR, a)
}

// AddFile adds a regular file with data (counted against the size limit).
func (n *MemNode) AddFile(name string, data []byte, a Attrs) (*MemNode, error) {
	c, err := n.add(name, syscall.S_IFREG, a)
	if err != nil {
		return nil, err
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if _, errno := c.writeLocked(0, data); errno != 0 || c.size != int64(len(data)) {
		return c, &os.PathError{Op: "add", Path: name, Err: syscall.ENOSPC}
	}
	return c, nil
}

// AddLazyFile adds a regular file of size bytes read from src when read:
// nothing is copied until the file is changed. A read error from src gives
// EIO on this file only.
func (n *MemNode) AddLazyFile(name string, src io.ReaderAt, size int64, a Attrs) (*MemNode, error) {
	c, err := n.add(name, syscall.S_IFREG, a)
	if err != nil {
		return nil, err
	}
	n.fs.mu.Lock()
	c.src, c.size = src, size
	n.fs.mu.Unlock()
	return c, nil
}

// AddSymlink adds a symbolic link to target.
func (n *MemNode) AddSymlink(name, target string, a Attrs) (*MemNode, error) {
	if a.Mode == 0 {
		a.Mode = 0o777
	}
	c, err := n.add(name, syscall.S_IFLNK, a)
	if err != nil {
		return nil, err
	}
	n.fs.mu.Lock()
	c.target = target
	n.fs.mu.Unlock()
	return c, nil
}

// AddNode adds a device, fifo or socket: mode carries the type bits.
func (n *MemNode) AddNode(name string, mode uint32, a Attrs) (*MemNode, error) {
	return n.add(name, mode&syscall.S_IFMT, a)
}

// AddLink adds a second name for target (a hard link).
func (n *MemNode) AddLink(name string, target *MemNode) error {
	_, errno := n.Link(context.Background(), target, name)
	if errno != 0 {
		return &os.PathError{Op: "link", Path: name, Err: errno}
	}
	return nil
}

// SetXattrs replaces n's extended attributes.
func (n *MemNode) SetXattrs(x map[string][]byte) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	n.xattrs = map[string][]byte{}
	for k, v := range x {
		n.xattrs[k] = append([]byte{}, v...)
	}
}

// Child returns the child called name, or nil.
func (n *MemNode) Child(name string) *MemNode {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	return n.children[name]
}

// MkdirAll returns the directory rel (slash-separated; "" or "." is n)
// beneath n, adding the missing ones with attributes a, as an archive's
// member implies its parents. It fails with ENOTDIR where something else
// is in the way.
func (n *MemNode) MkdirAll(rel string, a Attrs) (*MemNode, error) {
	d := n
	for _, name := range strings.Split(path.Clean(rel), "/") {
		if name == "." || name == "" {
			continue
		}
		c := d.Child(name)
		if c == nil {
			var err error
			if c, err = d.AddDir(name, a); err != nil {
				return nil, err
			}
		} else if c.Attr().Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return nil, &os.PathError{Op: "mkdir", Path: rel, Err: syscall.ENOTDIR}
		}
		d = c
	}
	return d, nil
}

// Attr returns n's attributes.
func (n *MemNode) Attr() proto.Attr {
	var a proto.Attr
	n.Getattr(context.Background(), &a)
	return a
}

// Target is a symlink's target.
func (n *MemNode) Target() string {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	return n.target
}

// Xattrs returns a copy of n's extended attributes.
func (n *MemNode) Xattrs() map[string][]byte {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range n.xattrs {
		out[k] = append([]byte{}, v...)
	}
	return out
}

// Contents returns a regular file's data.
func (n *MemNode) Contents() ([]byte, error) {
	n.fs.mu.Lock()
	size := n.size
	n.fs.mu.Unlock()
	b, errno := n.Read(context.Background(), nil, 0, int(size))
	if errno != 0 {
		return nil, errno
	}
	return b, nil
}

// Walk calls fn for n and every node beneath it, parents before children,
// names in order; p is the path relative to n ("." for n). A node with
// several names (hard links) is visited once per name.
func (n *MemNode) Walk(fn func(p string, node *MemNode) error) error {
	return n.walk(".", fn)
}

func (n *MemNode) walk(p string, fn func(string, *MemNode) error) error {
	if err := fn(p, n); err != nil {
		return err
	}
	if !n.isDir() {
		return nil
	}
	n.fs.mu.Lock()
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	kids := make(map[string]*MemNode, len(names))
	for _, name := range names {
		kids[name] = n.children[name]
	}
	n.fs.mu.Unlock()
	sort.Strings(names)
	for _, name := range names {
		if err := kids[name].walk(path.Join(p, name), fn); err != nil {
			return err
		}
	}
	return nil
}
