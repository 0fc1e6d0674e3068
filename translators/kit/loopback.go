package kit

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"herd/proto"
)

// Loopback serves the host file or directory at path, read-write, as a
// tree of Nodes: what firmlink serves, and a start for translators that
// change a host tree as they pass it on. Each node holds an O_PATH
// descriptor of its host file, so a node follows its file through renames,
// and nodes are keyed by device and inode (Keyer), so hard links are one
// node. Files are created with the caller's ownership when the translator
// runs as root. path itself is followed if it is a symlink.
func Loopback(path string) (Node, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	n, errno := newHostNode(fd)
	if errno != 0 {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: path, Err: errno}
	}
	return n, nil
}

type devIno struct{ dev, ino uint64 }

// hostNode is one host file, held by an O_PATH descriptor until the client
// forgets it.
type hostNode struct {
	HostIO // its open files are HostFiles
	fd     int
	key    devIno
	mode   uint32 // type bits
	once   sync.Once
}

var (
	_ Keyer         = (*hostNode)(nil)
	_ Forgetter     = (*hostNode)(nil)
	_ Lookuper      = (*hostNode)(nil)
	_ Readdirer     = (*hostNode)(nil)
	_ Creater       = (*hostNode)(nil)
	_ Mkdirer       = (*hostNode)(nil)
	_ Mknoder       = (*hostNode)(nil)
	_ Symlinker     = (*hostNode)(nil)
	_ Linker        = (*hostNode)(nil)
	_ Unlinker      = (*hostNode)(nil)
	_ Rmdirer       = (*hostNode)(nil)
	_ Renamer       = (*hostNode)(nil)
	_ Setattrer     = (*hostNode)(nil)
	_ Readlinker    = (*hostNode)(nil)
	_ Getxattrer    = (*hostNode)(nil)
	_ Setxattrer    = (*hostNode)(nil)
	_ Listxattrer   = (*hostNode)(nil)
	_ Removexattrer = (*hostNode)(nil)
	_ Statfser      = (*hostNode)(nil)
	_ Opener        = (*hostNode)(nil)
	_ Reader        = (*hostNode)(nil)
	_ Writer        = (*hostNode)(nil)
	_ Fsyncer       = (*hostNode)(nil)
	_ Allocater     = (*hostNode)(nil)
	_ Lseeker       = (*hostNode)(nil)
	_ Releaser      = (*hostNode)(nil)
)

func newHostNode(fd int) (*hostNode, syscall.Errno) {
	var st unix.Stat_t
	if err := unix.Fstatat(fd, "", &st, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, errnoOf(err)
	}
	return &hostNode{fd: fd, key: devIno{st.Dev, st.Ino}, mode: st.Mode & syscall.S_IFMT}, 0
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return proto.ToErrno(err)
}

func (n *hostNode) Key() any { return n.key }

func (n *hostNode) Forget() { n.once.Do(func() { unix.Close(n.fd) }) }

func (n *hostNode) proc() string { return fmt.Sprintf("/proc/self/fd/%d", n.fd) }

func (n *hostNode) isLink() bool { return n.mode == syscall.S_IFLNK }

func (n *hostNode) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
	var st unix.Stat_t
	if err := unix.Fstatat(n.fd, "", &st, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return errnoOf(err)
	}
	*out = AttrOf(&st)
	return 0
}

func (n *hostNode) child(name string) (Node, syscall.Errno) {
	fd, err := unix.Openat(n.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errnoOf(err)
	}
	c, errno := newHostNode(fd)
	if errno != 0 {
		unix.Close(fd)
		return nil, errno
	}
	return c, 0
}

func (n *hostNode) Lookup(ctx context.Context, name string) (Node, syscall.Errno) {
	if n.mode != syscall.S_IFDIR {
		return nil, syscall.ENOTDIR
	}
	return n.child(name)
}

func (n *hostNode) Readdir(ctx context.Context) ([]proto.DirEntry, syscall.Errno) {
	if n.mode != syscall.S_IFDIR {
		return nil, syscall.ENOTDIR
	}
	fd, err := unix.Openat(n.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errnoOf(err)
	}
	defer unix.Close(fd)
	ents, err := ReadDirFD(fd)
	return ents, errnoOf(err)
}

// own gives a new file the caller's ownership when the translator may
// (it runs as root); otherwise files belong to the translator's user.
func own(ctx context.Context, dirfd int, name string) {
	c, ok := proto.CallerFrom(ctx)
	if !ok || os.Geteuid() != 0 {
		return
	}
	unix.Fchownat(dirfd, name, int(c.Uid), int(c.Gid), unix.AT_SYMLINK_NOFOLLOW)
}

func (n *hostNode) Create(ctx context.Context, name string, flags, mode uint32) (Node, Handle, uint32, syscall.Errno) {
	fd, err := unix.Openat(n.fd, name, int(flags&^unix.O_DIRECT)|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode&07777)
	if err != nil {
		return nil, nil, 0, errnoOf(err)
	}
	own(ctx, n.fd, name)
	c, errno := n.child(name)
	if errno != 0 {
		unix.Close(fd)
		return nil, nil, 0, errno
	}
	return c, &HostFile{FD: fd}, 0, 0
}

func (n *hostNode) Mkdir(ctx context.Context, name string, mode uint32) (Node, syscall.Errno) {
	if err := unix.Mkdirat(n.fd, name, mode&07777); err != nil {
		return nil, errnoOf(err)
	}
	own(ctx, n.fd, name)
	return n.child(name)
}

func (n *hostNode) Mknod(ctx context.Context, name string, mode uint32, rdev uint64) (Node, syscall.Errno) {
	if err := unix.Mknodat(n.fd, name, mode, int(rdev)); err != nil {
		return nil, errnoOf(err)
	}
	own(ctx, n.fd, name)
	return n.child(name)
}

func (n *hostNode) Symlink(ctx context.Context, target, name string) (Node, syscall.Errno) {
	if err := unix.Symlinkat(target, n.fd, name); err != nil {
		return nil, errnoOf(err)
	}
	own(ctx, n.fd, name)
	return n.child(name)
}

func (n *hostNode) Link(ctx context.Context, target Node, name string) (Node, syscall.Errno) {
	t, ok := target.(*hostNode)
	if !ok {
		return nil, syscall.EXDEV
	}
	// Through /proc, as linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH.
	if err := unix.Linkat(unix.AT_FDCWD, t.proc(), n.fd, name, unix.AT_SYMLINK_FOLLOW); err != nil {
		return nil, errnoOf(err)
	}
	return n.child(name)
}

func (n *hostNode) Unlink(ctx context.Context, name string) syscall.Errno {
	return errnoOf(unix.Unlinkat(n.fd, name, 0))
}

func (n *hostNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return errnoOf(unix.Unlinkat(n.fd, name, unix.AT_REMOVEDIR))
}

func (n *hostNode) Rename(ctx context.Context, name string, newParent Node, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*hostNode)
	if !ok {
		return syscall.EXDEV
	}
	return errnoOf(unix.Renameat2(n.fd, name, np.fd, newName, uint(flags)))
}

func (n *hostNode) Setattr(ctx context.Context, h Handle, in proto.SetAttrIn, out *proto.Attr) syscall.Errno {
	if in.Valid&proto.SetAttrSize != 0 {
		var err error
		if fd, errno := hostFD(h); errno == 0 {
			err = unix.Ftruncate(fd, int64(in.Size))
		} else {
			err = unix.Truncate(n.proc(), int64(in.Size))
		}
		if err != nil {
			return errnoOf(err)
		}
	}
	if in.Valid&proto.SetAttrMode != 0 && !n.isLink() {
		if err := unix.Fchmodat(unix.AT_FDCWD, n.proc(), in.Mode&07777, 0); err != nil {
			return errnoOf(err)
		}
	}
	if uid, gid, ok := SetAttrOwner(in); ok {
		if err := unix.Fchownat(n.fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errnoOf(err)
		}
	}
	if ts, ok := SetAttrTimes(in); ok {
		var err error
		if n.isLink() {
			err = unix.UtimesNanoAt(n.fd, "", ts, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		} else {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, n.proc(), ts, 0)
		}
		if err != nil {
			return errnoOf(err)
		}
	}
	return n.Getattr(ctx, out)
}

func (n *hostNode) Readlink(ctx context.Context) (string, syscall.Errno) {
	buf := make([]byte, 4096)
	k, err := unix.Readlinkat(n.fd, "", buf)
	if err != nil {
		return "", errnoOf(err)
	}
	return string(buf[:k]), 0
}

func (n *hostNode) Getxattr(ctx context.Context, name string) ([]byte, syscall.Errno) {
	if n.isLink() {
		return nil, syscall.ENODATA
	}
	for size := 4096; ; size *= 4 {
		buf := make([]byte, size)
		k, err := unix.Getxattr(n.proc(), name, buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, errnoOf(err)
		}
		return buf[:k], 0
	}
}

func (n *hostNode) Setxattr(ctx context.Context, name string, value []byte, flags uint32) syscall.Errno {
	if n.isLink() {
		return syscall.EPERM
	}
	return errnoOf(unix.Setxattr(n.proc(), name, value, int(flags)))
}

func (n *hostNode) Listxattr(ctx context.Context) ([]string, syscall.Errno) {
	if n.isLink() {
		return nil, 0
	}
	for size := 4096; ; size *= 4 {
		buf := make([]byte, size)
		k, err := unix.Listxattr(n.proc(), buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, errnoOf(err)
		}
		var out []string
		start := 0
		for i, c := range buf[:k] {
			if c == 0 {
				if i > start {
					out = append(out, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return out, 0
	}
}

func (n *hostNode) Removexattr(ctx context.Context, name string) syscall.Errno {
	if n.isLink() {
		return syscall.ENODATA
	}
	return errnoOf(unix.Removexattr(n.proc(), name))
}

func (n *hostNode) Statfs(ctx context.Context, out *proto.StatFS) syscall.Errno {
	var st unix.Statfs_t
	if err := unix.Fstatfs(n.fd, &st); err != nil {
		return errnoOf(err)
	}
	*out = StatFSOf(&st)
	return 0
}

func (n *hostNode) Open(ctx context.Context, flags uint32) (Handle, uint32, syscall.Errno) {
	if n.isLink() {
		return nil, 0, syscall.ELOOP
	}
	if n.mode == syscall.S_IFDIR {
		return nil, 0, 0 // listings go through Readdir
	}
	// O_DIRECT would demand aligned buffers of ours: the kernel asked us, not the disk.
	flags &^= unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_DIRECT
	fd, err := unix.Open(n.proc(), int(flags)|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, errnoOf(err)
	}
	return &HostFile{FD: fd}, 0, 0
}

func (n *hostNode) Release(ctx context.Context, h Handle) syscall.Errno {
	if f, ok := h.(*HostFile); ok {
		return f.Close()
	}
	return 0
}
