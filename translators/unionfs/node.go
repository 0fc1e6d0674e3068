package unionfs

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"herd/proto"
	"herd/translators/kit"
)

// node is a name in the union: a path relative to every branch's root,
// looked up anew in the branches at every call, so branches added or
// removed at run time take effect at once. A node the client knows keeps
// its number across renames, and a hard link is one node with two paths.
type node struct {
	kit.HostIO // I/O on its open files (a file embeds a HostFile)
	u          *union
	typ        uint32 // type bits when looked up: a name that becomes another type is another node

	// guarded by u.nmu
	rels  []string       // its paths; none when it was deleted
	files map[*file]bool // open files, for fstat of a deleted file
}

type nodeKey struct {
	rel string
	typ uint32
}

// path is where the node is now ("" with gone when deleted).
func (n *node) path() string {
	rel, _ := n.where()
	return rel
}

func (n *node) where() (rel string, gone bool) {
	n.u.nmu.Lock()
	defer n.u.nmu.Unlock()
	if len(n.rels) == 0 {
		return "", true
	}
	return n.rels[0], false
}

// fstat answers for a node whose name is gone, from one of its open files.
func (n *node) fstat() (unix.Stat_t, syscall.Errno) {
	n.u.nmu.Lock()
	defer n.u.nmu.Unlock()
	for f := range n.files {
		var st unix.Stat_t
		return st, errnoOf(unix.Fstat(f.FD, &st))
	}
	return unix.Stat_t{}, syscall.ENOENT
}

func (n *node) opened(f *file, open bool) {
	n.u.nmu.Lock()
	defer n.u.nmu.Unlock()
	if open {
		if n.files == nil {
			n.files = map[*file]bool{}
		}
		n.files[f] = true
	} else {
		delete(n.files, f)
	}
}

// Forget drops the node from the union's table when the client forgot it.
func (n *node) Forget() {
	n.u.nmu.Lock()
	defer n.u.nmu.Unlock()
	for _, rel := range n.rels {
		if k := (nodeKey{rel, n.typ}); n.u.nodes[k] == n {
			delete(n.u.nodes, k)
		}
	}
}

// nodeAt returns the node for rel: the one the client knows, if any, so a
// name is one node however often it is looked up.
func (u *union) nodeAt(rel string, typ uint32) *node {
	u.nmu.Lock()
	defer u.nmu.Unlock()
	k := nodeKey{rel, typ}
	if n := u.nodes[k]; n != nil {
		return n
	}
	n := &node{u: u, rels: []string{rel}, typ: typ}
	u.nodes[k] = n
	return n
}

// linked records a new path of n (a hard link).
func (u *union) linked(n *node, rel string) {
	u.nmu.Lock()
	defer u.nmu.Unlock()
	n.rels = append(n.rels, rel)
	u.nodes[nodeKey{rel, n.typ}] = n
}

// removed forgets the path rel (and those beneath it) of the nodes that
// have it; a node without paths is deleted, known only to its open files.
func (u *union) removed(rel string) {
	u.nmu.Lock()
	defer u.nmu.Unlock()
	u.removedLocked(rel)
}

func beneath(rel, dir string) bool { return rel == dir || strings.HasPrefix(rel, dir+"/") }

func (u *union) removedLocked(rel string) {
	for k, n := range u.nodes {
		if beneath(k.rel, rel) {
			delete(u.nodes, k)
			n.rels = slices.DeleteFunc(n.rels, func(r string) bool { return r == k.rel })
		}
	}
}

// looked remembers that the client asked for name in dir, so a change of
// branches can tell it that the answer (found or not) may have changed.
func (u *union) looked(dir, name string) {
	u.nmu.Lock()
	defer u.nmu.Unlock()
	if len(u.lookedUp) >= 1<<16 {
		clear(u.lookedUp) // bounded; the kernel's entries time out anyway
	}
	u.lookedUp[[2]string{dir, name}] = true
}

// invalidate tells the client that every name it looked up may now mean
// something else (branches were added or removed).
func (u *union) invalidate(fs *kit.FS) {
	u.nmu.Lock()
	type ent struct {
		dir  *node
		name string
	}
	var ents []ent
	for k := range u.lookedUp {
		if d := u.nodes[nodeKey{k[0], syscall.S_IFDIR}]; d != nil {
			ents = append(ents, ent{d, k[1]})
		}
	}
	clear(u.lookedUp)
	u.nmu.Unlock()
	for _, e := range ents {
		fs.InvalidateEntry(e.dir, e.name)
	}
}

// moved follows a rename: the nodes at from and beneath it are now at to,
// as the client (which keeps their numbers across a rename) expects; what
// was at to is gone.
func (u *union) moved(from, to string) {
	u.nmu.Lock()
	defer u.nmu.Unlock()
	u.removedLocked(to)
	type move struct {
		n        *node
		from, to string
	}
	var moves []move
	for k, n := range u.nodes {
		if beneath(k.rel, from) {
			delete(u.nodes, k)
			moves = append(moves, move{n, k.rel, to + k.rel[len(from):]})
		}
	}
	for _, m := range moves {
		for i, r := range m.n.rels {
			if r == m.from {
				m.n.rels[i] = m.to
			}
		}
		u.nodes[nodeKey{m.to, m.n.typ}] = m.n
	}
}

var (
	_ kit.Forgetter     = (*node)(nil)
	_ kit.Lookuper      = (*node)(nil)
	_ kit.Readdirer     = (*node)(nil)
	_ kit.Creater       = (*node)(nil)
	_ kit.Mkdirer       = (*node)(nil)
	_ kit.Mknoder       = (*node)(nil)
	_ kit.Symlinker     = (*node)(nil)
	_ kit.Linker        = (*node)(nil)
	_ kit.Unlinker      = (*node)(nil)
	_ kit.Rmdirer       = (*node)(nil)
	_ kit.Renamer       = (*node)(nil)
	_ kit.Setattrer     = (*node)(nil)
	_ kit.Readlinker    = (*node)(nil)
	_ kit.Getxattrer    = (*node)(nil)
	_ kit.Listxattrer   = (*node)(nil)
	_ kit.Setxattrer    = (*node)(nil)
	_ kit.Removexattrer = (*node)(nil)
	_ kit.Statfser      = (*node)(nil)
	_ kit.Opener        = (*node)(nil)
	_ kit.Reader        = (*node)(nil)
	_ kit.Writer        = (*node)(nil)
	_ kit.Fsyncer       = (*node)(nil)
	_ kit.Allocater     = (*node)(nil)
	_ kit.Lseeker       = (*node)(nil)
	_ kit.Releaser      = (*node)(nil)
)

func (n *node) child(name string) string { return join(n.path(), name) }

func (n *node) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
	var st unix.Stat_t
	var errno syscall.Errno = syscall.ENOENT
	if rel, gone := n.where(); !gone {
		_, st, errno = visible(n.u.snapshot(), rel)
	}
	if errno == syscall.ENOENT {
		st, errno = n.fstat() // unlinked while open
	}
	if errno != 0 {
		return errno
	}
	ino := out.Ino // the node number: branches' inode numbers may collide
	*out = kit.AttrOf(&st)
	out.Ino = ino
	return 0
}

// hidden names are the union's own bookkeeping.
func hidden(name string) bool { return strings.HasPrefix(name, whPrefix) }

func (n *node) Lookup(ctx context.Context, name string) (kit.Node, syscall.Errno) {
	if hidden(name) {
		return nil, syscall.ENOENT
	}
	rel := n.child(name)
	n.u.looked(n.path(), name)
	_, st, errno := visible(n.u.snapshot(), rel)
	if errno != 0 {
		return nil, errno
	}
	return n.u.nodeAt(rel, st.Mode&syscall.S_IFMT), 0
}

func (n *node) Readdir(ctx context.Context) ([]proto.DirEntry, syscall.Errno) {
	ents, errno := readdir(n.u.snapshot(), n.path())
	if errno != 0 {
		return nil, errno
	}
	out := make([]proto.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = proto.DirEntry{Name: e.Name, Mode: e.Mode} // not the branch's inode number
	}
	return out, 0
}

// prepare readies the writable branch for a new name in n: n exists there,
// the name is not a union's own, and the name is free in the union.
func (n *node) prepare(ctx context.Context, name string) ([]*branch, int, syscall.Errno) {
	if hidden(name) {
		return nil, -1, syscall.EPERM // would be taken for a whiteout
	}
	bs := n.u.snapshot()
	w, errno := writable(bs)
	if errno != 0 {
		return nil, -1, errno
	}
	if _, _, errno := visible(bs, n.child(name)); errno == 0 {
		return nil, -1, syscall.EEXIST
	}
	if i, _, errno := visible(bs, n.path()); errno == 0 && i < w {
		return nil, -1, syscall.EROFS
	}
	if errno := ensureDir(ctx, bs, w, n.path()); errno != 0 {
		return nil, -1, errno
	}
	return bs, w, 0
}

// made finishes a creation in the writable branch: the caller owns the
// new name, a whiteout it replaces goes, and the new node is returned.
func (n *node) made(ctx context.Context, b *branch, name string) (kit.Node, syscall.Errno) {
	rel := n.child(name)
	b.at(rel, func(dirfd int, base string) error { owned(ctx, dirfd, base); return nil })
	unwhiteout(b, rel)
	st, err := b.lstat(rel)
	if err != nil {
		return nil, errnoOf(err)
	}
	return n.u.nodeAt(rel, st.Mode&syscall.S_IFMT), 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32) (kit.Node, kit.Handle, uint32, syscall.Errno) {
	bs, w, errno := n.prepare(ctx, name)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	fd, err := openMode(bs[w], n.child(name), int(flags&^unix.O_DIRECT)|unix.O_CREAT, mode&07777)
	if err != nil {
		return nil, nil, 0, errnoOf(err)
	}
	c, errno := n.made(ctx, bs[w], name)
	if errno != 0 {
		unix.Close(fd)
		return nil, nil, 0, errno
	}
	f := &file{HostFile: kit.HostFile{FD: fd}, n: c.(*node)}
	f.n.opened(f, true)
	return c, f, 0, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32) (kit.Node, syscall.Errno) {
	bs, w, errno := n.prepare(ctx, name)
	if errno != 0 {
		return nil, errno
	}
	rel := n.child(name)
	// A directory made where a deleted one was must not show the old
	// one's contents from the branches below: mark it opaque.
	wasDeleted := bs[w].exists(whiteoutOf(rel))
	err := bs[w].at(rel, func(dirfd int, base string) error { return unix.Mkdirat(dirfd, base, mode&07777) })
	if err != nil {
		return nil, errnoOf(err)
	}
	if wasDeleted {
		bs[w].at(join(rel, opaque), func(dirfd int, base string) error {
			fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		})
	}
	return n.made(ctx, bs[w], name)
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, rdev uint64) (kit.Node, syscall.Errno) {
	bs, w, errno := n.prepare(ctx, name)
	if errno != 0 {
		return nil, errno
	}
	if err := bs[w].at(n.child(name), func(dirfd int, base string) error { return unix.Mknodat(dirfd, base, mode, int(rdev)) }); err != nil {
		return nil, errnoOf(err)
	}
	return n.made(ctx, bs[w], name)
}

func (n *node) Symlink(ctx context.Context, target, name string) (kit.Node, syscall.Errno) {
	bs, w, errno := n.prepare(ctx, name)
	if errno != 0 {
		return nil, errno
	}
	if err := bs[w].at(n.child(name), func(dirfd int, base string) error { return unix.Symlinkat(target, dirfd, base) }); err != nil {
		return nil, errnoOf(err)
	}
	return n.made(ctx, bs[w], name)
}

func (n *node) Link(ctx context.Context, target kit.Node, name string) (kit.Node, syscall.Errno) {
	t, ok := target.(*node)
	if !ok || t.u != n.u {
		return nil, syscall.EXDEV
	}
	bs, w, errno := n.prepare(ctx, name)
	if errno != 0 {
		return nil, errno
	}
	if _, errno := copyUp(ctx, bs, t.path()); errno != 0 {
		return nil, errno
	}
	err := bs[w].at(t.path(), func(tdir int, tbase string) error {
		return bs[w].at(n.child(name), func(dirfd int, base string) error {
			return unix.Linkat(tdir, tbase, dirfd, base, 0)
		})
	})
	if err != nil {
		return nil, errnoOf(err)
	}
	unwhiteout(bs[w], n.child(name))
	n.u.linked(t, n.child(name))
	// The same node: the client counts the link on the inode it knows.
	return t, 0
}

// remove deletes name (a directory when dir) from the writable branch and
// hides it in the branches below.
func (n *node) remove(ctx context.Context, name string, dir bool) syscall.Errno {
	if hidden(name) {
		return syscall.ENOENT
	}
	bs := n.u.snapshot()
	rel := n.child(name)
	i, st, errno := visible(bs, rel)
	if errno != 0 {
		return errno
	}
	switch {
	case dir && !isDir(&st):
		return syscall.ENOTDIR
	case !dir && isDir(&st):
		return syscall.EISDIR
	}
	w, errno := writable(bs)
	if errno != 0 {
		return errno
	}
	if i < w {
		return syscall.EROFS
	}
	if dir {
		if ents, errno := readdir(bs, rel); errno != 0 {
			return errno
		} else if len(ents) > 0 {
			return syscall.ENOTEMPTY
		}
	}
	if errno := ensureDir(ctx, bs, w, n.path()); errno != 0 {
		return errno
	}
	if i == w {
		if dir {
			// Only whiteouts and the opaque mark can be left in it.
			ents, err := bs[w].readdir(rel)
			if err != nil {
				return errnoOf(err)
			}
			for _, e := range ents {
				if hidden(e.Name) {
					bs[w].at(join(rel, e.Name), func(dirfd int, base string) error { return unix.Unlinkat(dirfd, base, 0) })
				}
			}
		}
		flags := 0
		if dir {
			flags = unix.AT_REMOVEDIR
		}
		if err := bs[w].at(rel, func(dirfd int, base string) error { return unix.Unlinkat(dirfd, base, flags) }); err != nil {
			return errnoOf(err)
		}
	}
	n.u.removed(rel)
	return whiteout(bs, w, rel)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, false)
}
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, true)
}

func (n *node) Rename(ctx context.Context, name string, newParent kit.Node, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok || np.u != n.u {
		return syscall.EXDEV
	}
	if hidden(name) || hidden(newName) {
		return syscall.ENOENT
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		return syscall.EINVAL
	}
	bs := n.u.snapshot()
	w, errno := writable(bs)
	if errno != 0 {
		return errno
	}
	src, dst := n.child(name), np.child(newName)
	i, sst, errno := visible(bs, src)
	if errno != 0 {
		return errno
	}
	j, dst_st, derr := visible(bs, dst)
	if derr == 0 {
		switch {
		case flags&unix.RENAME_NOREPLACE != 0:
			return syscall.EEXIST
		case j < w:
			return syscall.EROFS
		case isDir(&sst) && !isDir(&dst_st):
			return syscall.ENOTDIR
		case !isDir(&sst) && isDir(&dst_st):
			return syscall.EISDIR
		case isDir(&dst_st):
			if ents, errno := readdir(bs, dst); errno != 0 {
				return errno
			} else if len(ents) > 0 {
				return syscall.ENOTEMPTY
			}
			if j != w || lowerHas(bs, w, dst) {
				return syscall.EXDEV // an empty directory of a lower branch: mv copies
			}
		}
	}
	if isDir(&sst) && (i != w || lowerHas(bs, w, src)) {
		// A directory with contents below the writable branch would have
		// to be copied up whole: answer as overlayfs does, and mv copies.
		return syscall.EXDEV
	}
	if _, errno := copyUp(ctx, bs, src); errno != 0 {
		return errno
	}
	if errno := ensureDir(ctx, bs, w, np.path()); errno != 0 {
		return errno
	}
	err := bs[w].at(src, func(sdir int, sbase string) error {
		return bs[w].at(dst, func(ddir int, dbase string) error {
			return unix.Renameat2(sdir, sbase, ddir, dbase, uint(flags))
		})
	})
	if err != nil {
		return errnoOf(err)
	}
	unwhiteout(bs[w], dst)
	n.u.moved(src, dst)
	return whiteout(bs, w, src)
}

// lowerHas reports whether a branch after w has rel.
func lowerHas(bs []*branch, w int, rel string) bool {
	if w+1 >= len(bs) {
		return false
	}
	_, _, errno := visible(bs[w+1:], rel)
	return errno == 0
}

func (n *node) Setattr(ctx context.Context, h kit.Handle, in proto.SetAttrIn, out *proto.Attr) syscall.Errno {
	bs := n.u.snapshot()
	w, errno := copyUp(ctx, bs, n.path())
	if errno != 0 {
		return errno
	}
	b := bs[w]
	rel := n.path()
	err := b.at(rel, func(dirfd int, base string) error {
		if rel == "" {
			dirfd, base = b.fd, ""
		}
		return setattr(dirfd, base, n.typ, h, in)
	})
	if err != nil {
		return errnoOf(err)
	}
	return n.Getattr(ctx, out)
}

// setattr applies in to base in dirfd ("" for dirfd itself).
func setattr(dirfd int, base string, typ uint32, h kit.Handle, in proto.SetAttrIn) error {
	empty := 0
	if base == "" {
		empty = unix.AT_EMPTY_PATH
	}
	proc := func() (string, func(), error) {
		fd, err := unix.Openat(dirfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if base == "" {
			fd, err = unix.Dup(dirfd)
		}
		if err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("/proc/self/fd/%d", fd), func() { unix.Close(fd) }, nil
	}
	if in.Valid&proto.SetAttrSize != 0 {
		if f, ok := h.(*file); ok {
			if err := unix.Ftruncate(f.FD, int64(in.Size)); err != nil {
				return err
			}
		} else {
			fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = unix.Ftruncate(fd, int64(in.Size))
			unix.Close(fd)
			if err != nil {
				return err
			}
		}
	}
	if in.Valid&proto.SetAttrMode != 0 && typ != syscall.S_IFLNK {
		p, done, err := proc()
		if err != nil {
			return err
		}
		err = unix.Chmod(p, in.Mode&07777)
		done()
		if err != nil {
			return err
		}
	}
	if uid, gid, ok := kit.SetAttrOwner(in); ok {
		if err := unix.Fchownat(dirfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW|empty); err != nil {
			return err
		}
	}
	if ts, ok := kit.SetAttrTimes(in); ok {
		if base == "" {
			p, done, err := proc()
			if err != nil {
				return err
			}
			defer done()
			return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, 0)
		}
		return unix.UtimesNanoAt(dirfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

func (n *node) Readlink(ctx context.Context) (string, syscall.Errno) {
	bs := n.u.snapshot()
	i, _, errno := visible(bs, n.path())
	if errno != 0 {
		return "", errno
	}
	s, err := readlink(bs[i], n.path())
	return s, errnoOf(err)
}

// xattr runs fn on the /proc path of rel in branch b (not for symlinks:
// the path would follow them).
func (n *node) xattr(b *branch, fn func(p string) error) error {
	if n.typ == syscall.S_IFLNK {
		return unix.ENODATA
	}
	fd, err := unix.Dup(b.fd)
	if n.path() != "" {
		fd, err = openIn(b, n.path(), unix.O_PATH)
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return fn(fmt.Sprintf("/proc/self/fd/%d", fd))
}

func (n *node) shown() (*branch, syscall.Errno) {
	bs := n.u.snapshot()
	i, _, errno := visible(bs, n.path())
	if errno != 0 {
		return nil, errno
	}
	return bs[i], 0
}

func (n *node) upper(ctx context.Context) (*branch, syscall.Errno) {
	bs := n.u.snapshot()
	w, errno := copyUp(ctx, bs, n.path())
	if errno != 0 {
		return nil, errno
	}
	return bs[w], 0
}

func (n *node) Getxattr(ctx context.Context, name string) ([]byte, syscall.Errno) {
	b, errno := n.shown()
	if errno != 0 {
		return nil, errno
	}
	var out []byte
	err := n.xattr(b, func(p string) error {
		buf := make([]byte, 64<<10)
		k, err := unix.Getxattr(p, name, buf)
		out = buf[:max(k, 0)]
		return err
	})
	return out, errnoOf(err)
}

func (n *node) Listxattr(ctx context.Context) ([]string, syscall.Errno) {
	b, errno := n.shown()
	if errno != 0 {
		return nil, errno
	}
	var out []string
	err := n.xattr(b, func(p string) error {
		buf := make([]byte, 64<<10)
		k, err := unix.Listxattr(p, buf)
		for _, s := range strings.Split(string(buf[:max(k, 0)]), "\x00") {
			if s != "" {
				out = append(out, s)
			}
		}
		return err
	})
	if err == unix.ENODATA {
		err = nil
	}
	return out, errnoOf(err)
}

func (n *node) Setxattr(ctx context.Context, name string, value []byte, flags uint32) syscall.Errno {
	b, errno := n.upper(ctx)
	if errno != 0 {
		return errno
	}
	return errnoOf(n.xattr(b, func(p string) error { return unix.Setxattr(p, name, value, int(flags)) }))
}

func (n *node) Removexattr(ctx context.Context, name string) syscall.Errno {
	b, errno := n.upper(ctx)
	if errno != 0 {
		return errno
	}
	return errnoOf(n.xattr(b, func(p string) error { return unix.Removexattr(p, name) }))
}

// Statfs reports the writable branch (where new data goes), else the first.
func (n *node) Statfs(ctx context.Context, out *proto.StatFS) syscall.Errno {
	bs := n.u.snapshot()
	if len(bs) == 0 {
		return syscall.ENOENT
	}
	b := bs[0]
	if w, errno := writable(bs); errno == 0 {
		b = bs[w]
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(b.fd, &st); err != nil {
		return errnoOf(err)
	}
	*out = kit.StatFSOf(&st)
	return 0
}

// file is an open file: a descriptor of the branch file that showed it
// (read-only opens) or of its copy in the writable branch (writes).
type file struct {
	kit.HostFile
	n *node
}

func (n *node) Open(ctx context.Context, flags uint32) (kit.Handle, uint32, syscall.Errno) {
	switch n.typ {
	case syscall.S_IFDIR:
		return nil, 0, 0 // listings go through Readdir
	case syscall.S_IFLNK:
		return nil, 0, syscall.ELOOP
	}
	flags &^= unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_DIRECT
	bs := n.u.snapshot()
	var i int
	var errno syscall.Errno
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
		i, errno = copyUp(ctx, bs, n.path())
	} else {
		i, _, errno = visible(bs, n.path())
	}
	if errno != 0 {
		return nil, 0, errno
	}
	fd, err := openIn(bs[i], n.path(), int(flags))
	if err != nil {
		return nil, 0, errnoOf(err)
	}
	f := &file{HostFile: kit.HostFile{FD: fd}, n: n}
	n.opened(f, true)
	return f, 0, 0
}

func (n *node) Release(ctx context.Context, h kit.Handle) syscall.Errno {
	if f, ok := h.(*file); ok {
		f.n.opened(f, false)
		return f.Close()
	}
	return 0
}
