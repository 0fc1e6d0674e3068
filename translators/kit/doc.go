// Package kit is the library that makes a translator short, as the Hurd's
// libtrivfs (one file) and libnetfs (trees) do: the kit speaks the protocol,
// the translator fills in what its nodes do.
//
// # Nodes
//
// A translator is a tree of Nodes. Node has one method, Getattr; everything
// else a node can do is an optional one-method interface (Lookuper,
// Readdirer, Reader, Writer, Setattrer, Creater, Mkdirer, Unlinker,
// Renamer, Readlinker, Getxattrer, ...), as in go-fuse's fs package. A
// read-only file implements Getattr and Read; a directory Lookup and
// Readdir. Methods return syscall.Errno, 0 for success.
//
// NewFS turns the tree into a proto.FileSystem: it numbers nodes, counts
// lookups (a number lives while the client holds a lookup of it), keeps
// open handles, answers READDIRPLUS, and answers for the interfaces a node
// lacks. A node is one node to the client for as long as it is the same
// pointer, or has the same Key (Keyer: a host file's device and inode).
// Forgetter tells a node the client dropped it. Ready nodes:
//
//   - File / StaticFile: one file whose contents come from a function
//     (the node itself is the file, as the Hurd's hello); writable with
//     FileNode.Save.
//   - Dir: a fixed directory of nodes.
//   - MemFS: a full in-memory POSIX tree (tmpfs; archive translators fill
//     one with AddDir/AddFile/AddLazyFile/AddSymlink/AddLink, read it back
//     with Walk/Contents/Attr, and know it changed from Generation).
//   - Loopback: a host file or directory, read-write (firmlink). Its open
//     files are BackingFilers: the client gets the host file itself
//     (OpenResult.File) and the kernel reads and writes it directly
//     (FUSE passthrough) where it allows. A translator with its own view
//     of host files (unionfs) reuses Loopback's parts: HostFile and HostIO
//     for open files, AttrOf, StatFSOf, ReadDirFD, SetAttrOwner and
//     SetAttrTimes for the kernel's structures.
//
// # Programs
//
// A cmd/ main fills in a Translator and calls Main. Main parses the
// command line with the translator's pflag.FlagSet (--help explains it),
// builds the tree, and serves it: on fd 3 when started by settrans or the fs
// server (LISTEN_FDS=1; the node underneath is Underlying(), fd 4), on
// --socket PATH, or mounted on --mount DIR by FUSE on the host until it is
// unmounted or gets SIGTERM. The same FlagSet is re-parsed when fsysopts
// changes options at run time, and reported when fsysopts asks for them;
// Goaway syncs and exits. The whole of the Hurd's hello:
//
//	func Translator() kit.Translator {
//		flags := pflag.NewFlagSet("hello", pflag.ContinueOnError)
//		contents := flags.String("contents", "Hello, world!\n", "what the file says")
//		return kit.Translator{
//			Name:  "hello",
//			Doc:   "The node becomes a file that says hello.",
//			Flags: flags,
//			Root: func([]string) (kit.Node, error) {
//				return kit.File(func() []byte { return []byte(*contents) }), nil
//			},
//		}
//	}
//
//	func main() { kit.Main(hello.Translator()) }
//
// A tree is the same with a directory node:
//
//	type dir struct{ names map[string]kit.Node }
//
//	func (d *dir) Getattr(ctx context.Context, out *proto.Attr) syscall.Errno {
//		out.Mode = syscall.S_IFDIR | 0o555
//		return 0
//	}
//	func (d *dir) Lookup(ctx context.Context, name string) (kit.Node, syscall.Errno) {
//		if n := d.names[name]; n != nil {
//			return n, 0
//		}
//		return nil, syscall.ENOENT
//	}
//	func (d *dir) Readdir(ctx context.Context) ([]proto.DirEntry, syscall.Errno) { ... }
//
// Tests serve a translator in-process and mount it with package kittest
// (Mount, MountNode, MountTranslator: over proto.Pipe and the fs bridge on
// a temporary directory), run its program (RunMount, RunSocket,
// RunListening, AsUser for an unprivileged user in a user namespace), and
// reach it through a redirect as a subenvironment does (Redirector).
//
// # Mounting on the host
//
// Mount (what --mount does) calls mount(2) itself as root or as root of a
// user namespace (unshare -Urm), so a one-file translator mounts on a file,
// as the Hurd's hello sits on a file node; otherwise it leaves the mount
// to fsbridge.Mount (fusermount3). A symlink cannot be a mount's root on
// Linux: the symlink translator is reached through a redirect (settrans -p
// inside a subenvironment), not mounted on the host.
//
// # Concurrency
//
// Every node method may run concurrently with any other; nodes lock their
// own state (MemFS has one lock for its tree). The adapter's tables have
// their own lock, never held while a node runs. Run-time option changes
// hold an Instance-wide lock for writing while every call holds it for
// reading, so flag variables never change under a running call. Lock
// order: Instance.mu, then node locks, then FS.mu.
package kit
