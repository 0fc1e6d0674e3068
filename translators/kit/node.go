package kit

import (
	"context"
	"os"
	"syscall"

	"herd/proto"
)

// Node is one file, directory or symlink of a translator's tree. Getattr is
// the only method every node has; what else a node can do is told by the
// optional interfaces below, one method each, which the adapter (FS) asks
// for with a type assertion. A node that does not implement one answers as
// a read-only node would (ENOENT, EROFS, ENOTSUP, ...).
//
// Nodes are compared by identity (they are map keys), so they must be
// pointers. The same Node returned by two lookups is the same node to the
// client (same node number, same inode): that is how hard links work.
//
// Getattr fills in what it knows. The adapter has already filled out with
// defaults: Ino (the node number), Nlink 1, the translator's own uid and
// gid, the translator's start time, Blksize 4096, and a mode of 0755
// directory for nodes that implement Lookuper, 0644 regular file otherwise.
//
// Every method may be called concurrently with any other: a node that keeps
// mutable state locks it.
type Node interface {
	Getattr(ctx context.Context, out *proto.Attr) syscall.Errno
}

// Handle is what Opener.Open returns and what the file methods receive back:
// any value the node wants to keep per open file (an *os.File, a snapshot of
// contents, a cursor), or nil.
type Handle any

// Directory operations.

// Lookuper is a directory: Lookup returns the child called name, or ENOENT.
type Lookuper interface {
	Lookup(ctx context.Context, name string) (Node, syscall.Errno)
}

// Readdirer lists a directory. Entries need Name and the type bits of Mode;
// Ino may be 0. "." and ".." are added by the kernel and must not be listed.
type Readdirer interface {
	Readdir(ctx context.Context) ([]proto.DirEntry, syscall.Errno)
}

// Creater creates and opens a regular file called name.
type Creater interface {
	Create(ctx context.Context, name string, flags, mode uint32) (Node, Handle, uint32, syscall.Errno)
}

// Mkdirer creates a directory.
type Mkdirer interface {
	Mkdir(ctx context.Context, name string, mode uint32) (Node, syscall.Errno)
}

// Mknoder creates a device, fifo, socket or regular file node.
type Mknoder interface {
	Mknod(ctx context.Context, name string, mode uint32, rdev uint64) (Node, syscall.Errno)
}

// Symlinker creates a symbolic link called name pointing to target.
type Symlinker interface {
	Symlink(ctx context.Context, target, name string) (Node, syscall.Errno)
}

// Linker makes a new name for an existing node (a hard link).
type Linker interface {
	Link(ctx context.Context, target Node, name string) (Node, syscall.Errno)
}

// Unlinker removes a name that is not a directory.
type Unlinker interface {
	Unlink(ctx context.Context, name string) syscall.Errno
}

// Rmdirer removes an empty directory.
type Rmdirer interface {
	Rmdir(ctx context.Context, name string) syscall.Errno
}

// Renamer moves name to newName in newParent (which may be the receiver).
// flags are renameat2's (RENAME_NOREPLACE, RENAME_EXCHANGE).
type Renamer interface {
	Rename(ctx context.Context, name string, newParent Node, newName string, flags uint32) syscall.Errno
}

// Node metadata.

// Setattrer changes attributes (chmod, chown, truncate, utimes) and fills
// out with the result. h is the open file when the change is made through
// one (ftruncate), else nil.
type Setattrer interface {
	Setattr(ctx context.Context, h Handle, in proto.SetAttrIn, out *proto.Attr) syscall.Errno
}

// Readlinker is a symbolic link.
type Readlinker interface {
	Readlink(ctx context.Context) (string, syscall.Errno)
}

// Getxattrer, Setxattrer, Listxattrer and Removexattrer serve extended
// attributes.
type Getxattrer interface {
	Getxattr(ctx context.Context, name string) ([]byte, syscall.Errno)
}
type Setxattrer interface {
	Setxattr(ctx context.Context, name string, value []byte, flags uint32) syscall.Errno
}
type Listxattrer interface {
	Listxattr(ctx context.Context) ([]string, syscall.Errno)
}
type Removexattrer interface {
	Removexattr(ctx context.Context, name string) syscall.Errno
}

// Statfser answers statfs. The adapter asks the node, else the root, else
// reports an empty filesystem.
type Statfser interface {
	Statfs(ctx context.Context, out *proto.StatFS) syscall.Errno
}

// Forgetter is told when the client has forgotten the node (its lookup
// count dropped to zero), so a node cache can drop it.
type Forgetter interface {
	Forget()
}

// File operations. h is what Open (or Create) returned.

// Opener opens the node. flags are open(2)'s; the returned flags are
// proto.OpenKeepCache / proto.OpenDirectIO. A node without Opener opens
// with a nil Handle, read-only unless it is a Writer.
type Opener interface {
	Open(ctx context.Context, flags uint32) (Handle, uint32, syscall.Errno)
}

// BackingFiler is a Handle backed by a host file (Loopback's). The
// adapter passes a duplicate of it to the client (proto.OpenResult.File),
// which may then read and write the file itself, or hand it to the kernel
// (FUSE passthrough), without a round trip to the translator per call.
type BackingFiler interface {
	BackingFile() (*os.File, error)
}

// Reader reads up to size bytes at off; fewer at the end of the file.
type Reader interface {
	Read(ctx context.Context, h Handle, off int64, size int) ([]byte, syscall.Errno)
}

// Writer writes data at off and returns how much it wrote.
type Writer interface {
	Write(ctx context.Context, h Handle, off int64, data []byte) (int, syscall.Errno)
}

// Fsyncer flushes the file.
type Fsyncer interface {
	Fsync(ctx context.Context, h Handle, datasync bool) syscall.Errno
}

// Allocater serves fallocate(2).
type Allocater interface {
	Allocate(ctx context.Context, h Handle, mode uint32, off, length int64) syscall.Errno
}

// Lseeker answers SEEK_DATA and SEEK_HOLE. Without it the whole file is
// data (one hole at its end).
type Lseeker interface {
	Lseek(ctx context.Context, h Handle, off int64, whence int) (int64, syscall.Errno)
}

// Releaser is told that an open file was closed for good. Without it, a
// Handle that is an io.Closer is closed.
type Releaser interface {
	Release(ctx context.Context, h Handle) syscall.Errno
}
