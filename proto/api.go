// Package proto is herd's wire protocol and its runtime.
//
// This file is the contract every part of herd codes against: the
// FileSystem interface that servers implement and that the client stub
// (Client) also implements, so a bridge or a test can talk to a server in
// the same process or across a socket without knowing which.
//
// Node and handle numbers are chosen by the server. A node number names a
// node for as long as its lookup count is above zero: every Entry a call
// returns counts one lookup, and Forget gives counts back (FUSE's and the
// Hurd's netfs rule). A handle number names an open file or directory until
// Release. The proto server keeps, per session, the lookups and handles it
// handed out, and when the session ends it forgets and releases whatever the
// client did not (Mach's no-senders), so implementations need no per-client
// bookkeeping of their own.
package proto

import (
	"context"
	"os"
	"syscall"
)

// NodeID names a node on one server. The root's number is what Root returns.
type NodeID uint64

// HandleID names an open file or directory on one server.
type HandleID uint64

// Timespec is a point in time as the kernel keeps it.
type Timespec struct {
	Sec  int64
	Nsec uint32
}

// Attr is a node's metadata, in the server's (host) terms: uid and gid are
// host ids; the bridge maps them into the subenvironment's user namespace.
type Attr struct {
	Ino     uint64
	Size    uint64
	Blocks  uint64 // 512-byte blocks
	Mode    uint32 // type and permission bits, as st_mode
	Nlink   uint32
	Uid     uint32
	Gid     uint32
	Rdev    uint64
	Blksize uint32
	Atime   Timespec
	Mtime   Timespec
	Ctime   Timespec
}

// Redirect says a node is translated: the client continues at the translator
// listening on Socket (the Hurd's FS_RETRY), asking it for its root. The
// parent server never relays the translator's traffic.
type Redirect struct {
	Socket string // absolute path of the translator's unix socket
}

// Entry is the answer to a lookup or a creation. It counts one lookup of Node.
// When Redirect is set, Attr is the translator's root as far as the server
// knows it (at least its type), and Node is still the underlying node, which
// the client must Forget like any other.
type Entry struct {
	Node     NodeID
	Attr     Attr
	Redirect *Redirect
}

// DirEntry is one name in a directory listing.
type DirEntry struct {
	Name string
	Ino  uint64
	Mode uint32 // only the type bits (S_IFMT) are meaningful
}

// DirEntryPlus is a listing entry with its lookup already done: Entry counts
// one lookup, as if the client had called Lookup on Name.
type DirEntryPlus struct {
	DirEntry
	Entry Entry
}

// SetAttrIn says which attributes to change (Valid is a mask of the SetAttr*
// bits) and their new values.
type SetAttrIn struct {
	Valid  uint32
	Mode   uint32
	Uid    uint32
	Gid    uint32
	Size   uint64
	Atime  Timespec
	Mtime  Timespec
	Handle HandleID // when SetAttrHandle is set: the open file to act on (ftruncate on an unlinked file)
}

// Bits of SetAttrIn.Valid. AtimeNow/MtimeNow mean "the server's current time".
const (
	SetAttrMode uint32 = 1 << iota
	SetAttrUid
	SetAttrGid
	SetAttrSize
	SetAttrAtime
	SetAttrMtime
	SetAttrAtimeNow
	SetAttrMtimeNow
	SetAttrHandle
)

// StatFS is what statfs(2) reports.
type StatFS struct {
	Blocks, Bfree, Bavail uint64
	Files, Ffree          uint64
	Bsize, Frsize         uint32
	NameLen               uint32
}

// Open flags beyond the O_* ones the client passes through.
const (
	// OpenKeepCache: the client may keep cached pages of this file.
	OpenKeepCache uint32 = 1 << 0
	// OpenDirectIO: the client must not cache; every read goes to the server.
	OpenDirectIO uint32 = 1 << 1
	// OpenDirCap (an addition; see PROTOCOL.md "Directory capabilities"):
	// set on the answer to Open of a directory (O_RDONLY|O_DIRECTORY) when
	// File is a read-only capability on it. Until the server revokes it (an
	// InvalNode of the directory or of a child, an InvalEntry in it), a
	// client may serve a read-only open of a regular child it looked up (a
	// plain Entry, no redirect) by openat(File, name, O_RDONLY|O_NOFOLLOW),
	// without asking the server, provided the file it gets has the child's
	// Attr.Ino: the server promises that file is what its own Open would
	// give. Servers that never set it lose nothing; clients that ignore it
	// release the handle as for any open.
	OpenDirCap uint32 = 1 << 2
)

// OpenResult is the answer to Open or Create.
type OpenResult struct {
	Handle HandleID
	Flags  uint32 // OpenKeepCache, OpenDirectIO
	// File, when not nil, is a descriptor of the backing file opened with the
	// same access mode. The receiver owns it (closes it). A bridge can hand it
	// to the kernel for FUSE passthrough, or read from it directly. Over a
	// unix socket it travels with SCM_RIGHTS; over other transports it is nil.
	// Handle stays valid and must still be released.
	File *os.File
}

// Caller is the identity on whose behalf a call is made, in host terms.
type Caller struct {
	Uid, Gid uint32
	Pid      uint32 // host pid of the process that made the syscall, 0 if unknown
}

type callerKey struct{}

// WithCaller returns a context that carries c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller a context carries, and whether it carries one.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// FileSystem is the fs, io and fsys interfaces together: what a filesystem
// server, a translator and the client stub all implement. Methods return
// errors that carry a syscall.Errno (errors.As); anything else reaches the
// client as EIO. Servers embed Unimplemented to answer ENOSYS for the calls
// they do not serve.
type FileSystem interface {
	// fsys
	Root(ctx context.Context) (Entry, error)
	GetOptions(ctx context.Context) ([]string, error)
	SetOptions(ctx context.Context, opts []string) error
	// Goaway asks the server to finish (flush, write archives back) and
	// exit. GoawayForce means exit even when busy.
	Goaway(ctx context.Context, flags uint32) error

	// fs
	Lookup(ctx context.Context, parent NodeID, name string) (Entry, error)
	Forget(ctx context.Context, node NodeID, nlookup uint64)
	GetAttr(ctx context.Context, node NodeID) (Attr, error)
	SetAttr(ctx context.Context, node NodeID, in SetAttrIn) (Attr, error)
	ReadDir(ctx context.Context, dir NodeID) ([]DirEntry, error)
	Mkdir(ctx context.Context, parent NodeID, name string, mode uint32) (Entry, error)
	Mknod(ctx context.Context, parent NodeID, name string, mode uint32, rdev uint64) (Entry, error)
	Create(ctx context.Context, parent NodeID, name string, flags, mode uint32) (Entry, OpenResult, error)
	Unlink(ctx context.Context, parent NodeID, name string) error
	Rmdir(ctx context.Context, parent NodeID, name string) error
	// Rename takes renameat2's flags (RENAME_NOREPLACE, RENAME_EXCHANGE).
	Rename(ctx context.Context, oldParent NodeID, oldName string, newParent NodeID, newName string, flags uint32) error
	Link(ctx context.Context, node NodeID, newParent NodeID, newName string) (Entry, error)
	Symlink(ctx context.Context, parent NodeID, name, target string) (Entry, error)
	Readlink(ctx context.Context, node NodeID) (string, error)
	GetXattr(ctx context.Context, node NodeID, name string) ([]byte, error)
	ListXattr(ctx context.Context, node NodeID) ([]string, error)
	SetXattr(ctx context.Context, node NodeID, name string, value []byte, flags uint32) error
	RemoveXattr(ctx context.Context, node NodeID, name string) error
	StatFS(ctx context.Context, node NodeID) (StatFS, error)

	// io
	Open(ctx context.Context, node NodeID, flags uint32) (OpenResult, error)
	Read(ctx context.Context, h HandleID, off int64, size int) ([]byte, error)
	Write(ctx context.Context, h HandleID, off int64, data []byte) (int, error)
	Fsync(ctx context.Context, h HandleID, datasync bool) error
	Fallocate(ctx context.Context, h HandleID, mode uint32, off, length int64) error
	// Lseek answers SEEK_DATA and SEEK_HOLE; other whences are the client's.
	Lseek(ctx context.Context, h HandleID, off int64, whence int) (int64, error)
	Release(ctx context.Context, h HandleID) error
}

// GoawayForce: exit even if clients still hold nodes open.
const GoawayForce uint32 = 1

// DirPlusReader is implemented by servers that can answer a listing with the
// lookups done (READDIRPLUS), saving a round trip per name.
type DirPlusReader interface {
	ReadDirPlus(ctx context.Context, dir NodeID) ([]DirEntryPlus, error)
}

// Notifier lets a server tell its clients that what they cached is stale.
// The proto server passes one to implementations that have a
// SetNotifier(Notifier) method; it broadcasts to every session.
type Notifier interface {
	// InvalNode: node's attributes, and its data from off for length bytes
	// (length 0: to the end), are stale.
	InvalNode(node NodeID, off, length int64)
	// InvalEntry: the name in parent no longer means what it did.
	InvalEntry(parent NodeID, name string)
}

// NotifierSetter is implemented by servers that want a Notifier.
type NotifierSetter interface {
	SetNotifier(n Notifier)
}

// Interface names announced in the version handshake.
const (
	InterfaceFS   = "fs"
	InterfaceIO   = "io"
	InterfaceFsys = "fsys"
	InterfaceNet  = "net"
	InterfaceAuth = "auth"
)

// Unimplemented answers ENOSYS to every call. Embed it in a server that
// serves only part of FileSystem.
type Unimplemented struct{}

var errNoSys error = syscall.ENOSYS

func (Unimplemented) Root(context.Context) (Entry, error)          { return Entry{}, errNoSys }
func (Unimplemented) GetOptions(context.Context) ([]string, error) { return nil, nil }
func (Unimplemented) SetOptions(context.Context, []string) error   { return errNoSys }
func (Unimplemented) Goaway(context.Context, uint32) error         { return nil }
func (Unimplemented) Lookup(context.Context, NodeID, string) (Entry, error) {
	return Entry{}, syscall.ENOENT
}
func (Unimplemented) Forget(context.Context, NodeID, uint64)        {}
func (Unimplemented) GetAttr(context.Context, NodeID) (Attr, error) { return Attr{}, errNoSys }
func (Unimplemented) SetAttr(context.Context, NodeID, SetAttrIn) (Attr, error) {
	return Attr{}, syscall.EROFS
}
func (Unimplemented) ReadDir(context.Context, NodeID) ([]DirEntry, error) {
	return nil, syscall.ENOTDIR
}
func (Unimplemented) Mkdir(context.Context, NodeID, string, uint32) (Entry, error) {
	return Entry{}, syscall.EROFS
}
func (Unimplemented) Mknod(context.Context, NodeID, string, uint32, uint64) (Entry, error) {
	return Entry{}, syscall.EROFS
}
func (Unimplemented) Create(context.Context, NodeID, string, uint32, uint32) (Entry, OpenResult, error) {
	return Entry{}, OpenResult{}, syscall.EROFS
}
func (Unimplemented) Unlink(context.Context, NodeID, string) error { return syscall.EROFS }
func (Unimplemented) Rmdir(context.Context, NodeID, string) error  { return syscall.EROFS }
func (Unimplemented) Rename(context.Context, NodeID, string, NodeID, string, uint32) error {
	return syscall.EROFS
}
func (Unimplemented) Link(context.Context, NodeID, NodeID, string) (Entry, error) {
	return Entry{}, syscall.EROFS
}
func (Unimplemented) Symlink(context.Context, NodeID, string, string) (Entry, error) {
	return Entry{}, syscall.EROFS
}
func (Unimplemented) Readlink(context.Context, NodeID) (string, error) { return "", syscall.EINVAL }
func (Unimplemented) GetXattr(context.Context, NodeID, string) ([]byte, error) {
	return nil, syscall.ENODATA
}
func (Unimplemented) ListXattr(context.Context, NodeID) ([]string, error) { return nil, nil }
func (Unimplemented) SetXattr(context.Context, NodeID, string, []byte, uint32) error {
	return syscall.ENOTSUP
}
func (Unimplemented) RemoveXattr(context.Context, NodeID, string) error { return syscall.ENOTSUP }
func (Unimplemented) StatFS(context.Context, NodeID) (StatFS, error) {
	return StatFS{Bsize: 4096, Frsize: 4096, NameLen: 255}, nil
}
func (Unimplemented) Open(context.Context, NodeID, uint32) (OpenResult, error) {
	return OpenResult{}, errNoSys
}
func (Unimplemented) Read(context.Context, HandleID, int64, int) ([]byte, error) {
	return nil, errNoSys
}
func (Unimplemented) Write(context.Context, HandleID, int64, []byte) (int, error) {
	return 0, syscall.EROFS
}
func (Unimplemented) Fsync(context.Context, HandleID, bool) error { return nil }
func (Unimplemented) Fallocate(context.Context, HandleID, uint32, int64, int64) error {
	return syscall.EOPNOTSUPP
}
func (Unimplemented) Lseek(context.Context, HandleID, int64, int) (int64, error) {
	return 0, syscall.ENXIO
}
func (Unimplemented) Release(context.Context, HandleID) error { return nil }
