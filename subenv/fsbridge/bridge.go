// Package fsbridge is the kernel-side adapter of herd: it serves a FUSE mount
// by turning each FUSE request into proto.FileSystem calls on the servers that
// own the nodes (the fs server, and the translators it redirects to).
//
// The kernel names inodes by number; a node on a server is named by the
// connection and the server's node number. The bridge keeps that table (see
// inodes.go), follows redirects to translators by dialing their sockets, keeps
// the kernel's caches long (an hour) because servers tell it when something
// changed, and hands descriptors that servers pass along to the kernel
// (passthrough) or reads them itself, so file data need not cross the
// protocol. Released read-only opens are kept a few seconds for reuse
// (spares.go), so reopening a file costs no protocol round trip.
//
// Translator control: the kernel sees a translator's root in place of the
// node it sits on, but the user.herd.* xattrs of that inode (passive
// record, active, goaway, options: settrans, showtrans, fsysopts) are the
// parent server's business, as the Hurd sends them to the node underneath.
// So for a root reached through a redirect the bridge keeps the lookup of
// the underlying node and sends those xattrs there; the rest go to the
// translator. After an options change the bridge drops the translator's
// cached data before it answers (its own notifications race the answer);
// reading user.herd.refresh asks for the same (fsysopts on the host).
//
// Invariants: every Entry a server returns counts one lookup there; the
// bridge gives each back exactly once (Forget when the kernel forgets the
// inode, at READDIR release for listing entries the kernel never got, or
// when the bridge stops; for a node under a translator also when the
// translator's connection dies). Kernel node ids are never reused.
//
// Locking: Bridge.mu guards the inode, handle and connection tables. It is a
// leaf: no proto call, kernel notification or other lock is taken while it is
// held (with one exception: registering a passthrough backing file, an ioctl
// that does not wait for the kernel's other requests).
package fsbridge

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"herd/proto"
)

// IDMap says how the mount's user namespace relates to the host's ids.
type IDMap struct {
	HostUid, HostGid uint32
	// Identity: host root, full range mapped (ids are the same on both
	// sides). Otherwise the namespace's root maps to HostUid/HostGid, and
	// every node whose host owner the namespace does not map shows as the
	// namespace root's: a plain user is root in their subenvironment and
	// must be able to change anything there (into the copy-on-write layer),
	// as root can. With the kernel's overflow id (65534) instead, root
	// inside could not write /etc: capabilities do not reach inodes whose
	// owner the namespace does not map. The server still runs as the user,
	// so nothing the user may not read on the host becomes readable.
	Identity bool
	// The /etc/subuid and /etc/subgid ranges a plain user maps besides
	// themself (newuidmap): namespace ids 1..UidCount are host ids
	// UidStart..UidStart+UidCount-1, likewise for gids. A count of 0: none.
	// (An addition to the contract.)
	UidStart, UidCount, GidStart, GidCount uint32
}

// overflowID is what unmapped ids show as (the kernel's overflowuid).
const overflowID = 65534

// toHost maps a namespace id to the host's, given the namespace root's
// host id and the range above it.
func (m IDMap) toHost(id, host, start, count uint32) uint32 {
	switch {
	case m.Identity:
		return id
	case id == 0:
		return host
	case id-1 < count:
		return start + id - 1
	}
	return overflowID
}

// fromHost maps a host id to the namespace's: unchanged with the full range
// mapped; ids of the range to theirs; anything else (the user, host root,
// other users) to the namespace's root (see IDMap).
func (m IDMap) fromHost(id, start, count uint32) uint32 {
	if m.Identity {
		return id
	}
	if id-start < count {
		return id - start + 1
	}
	return 0
}

func (m IDMap) uidToHost(id uint32) uint32   { return m.toHost(id, m.HostUid, m.UidStart, m.UidCount) }
func (m IDMap) gidToHost(id uint32) uint32   { return m.toHost(id, m.HostGid, m.GidStart, m.GidCount) }
func (m IDMap) uidFromHost(id uint32) uint32 { return m.fromHost(id, m.UidStart, m.UidCount) }
func (m IDMap) gidFromHost(id uint32) uint32 { return m.fromHost(id, m.GidStart, m.GidCount) }

// Options configure a bridge.
type Options struct {
	IDMap IDMap
	// Passthrough: try FUSE passthrough for files whose OpenResult.File is
	// set. It needs root in the initial user namespace; elsewhere the kernel
	// refuses and the bridge reads and writes the descriptor itself.
	Passthrough bool
	// Dial connects to a translator's socket, for redirects. Default:
	// proto.Dial with the bridge as the client's notifier.
	Dial func(socket string) (proto.FileSystem, error)
	// ServerGone is called once when the root server's connection is lost
	// (the root FileSystem has a Done() channel, as *proto.Client has).
	ServerGone func(err error)
	Debug      bool

	// Notifier, when set, is the Notifier given to the root server's client
	// (proto.ClientOptions.Notifier): the client exists before the bridge,
	// so the bridge attaches to it here. Not needed when fs is an
	// in-process server with SetNotifier (the bridge calls it).
	// (Added to the contract: an addition, not a change.)
	Notifier *Notifier

	// Translator: the root server is a translator mounted on the host
	// (settrans -a, a translator's --mount). It may not notify when its
	// contents change, so its entries and attributes are kept as briefly
	// as a redirected translator's, not for an hour. (An addition.)
	Translator bool
}

// Timeouts of the kernel's caches. Servers notify the bridge of changes, so
// the root server's entries and attributes can be kept long. Translators may
// not notify, so theirs are short.
const (
	longTimeout       = time.Hour
	translatorTimeout = time.Second
)

// Bridge is one FUSE mount served from proto servers.
type Bridge struct {
	fuse.RawFileSystem // ENOSYS for what is not implemented below

	opts  Options
	srv   *fuse.Server
	root  *conn
	dir   string // mount point (Mount); "" for Serve
	isFD  bool
	uid   uint32 // the bridge's euid, for unmounting with fusermount
	done  chan struct{}
	gone  sync.Once
	dying atomic.Bool // Unmount called: answer EIO

	noPassthrough atomic.Bool // the kernel refused it once: stop trying

	attrGen atomic.Uint64 // see attrs.go

	// How opens were served, for tests and benchmarks.
	opensPassthrough, opensFD, opensProto, opensSpare atomic.Int64
	dirOpens                                          atomic.Int64 // OPENDIRs the kernel sent (no_opendir: one)

	notes  *queue // kernel notifications, in order, off the proto reader
	forget *queue // Forget calls to servers, off the FUSE reader

	mu     sync.Mutex
	inodes map[uint64]*inode
	byNode map[nodeKey]*inode
	// dentries: the names the kernel was last told are these inodes
	// (dentries.go).
	dentries map[attachment]*inode
	nextID   uint64
	conns    map[string]*conn // translators by socket path
	nconns   uint64
	handles  map[uint64]*handle
	nextFh   uint64
	// spares: released read-only opens kept for reuse, oldest first.
	spares     *list.List
	spareTimer *time.Timer
	caps       capTable   // directory capabilities (caps.go)
	prefetch   prefetcher // listings asked for ahead of a walker (prefetch.go)
}

// Mount mounts fs on dir (host-side mounts: settrans -a, tests). As root it
// calls mount(2) itself; otherwise it uses fusermount3. A zero IDMap means
// Identity here, since a host-side mount has no namespace of its own.
func Mount(dir string, fs proto.FileSystem, opts Options) (*Bridge, error) {
	if opts.IDMap == (IDMap{}) {
		opts.IDMap.Identity = true
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fsbridge: mount point %s: %w", dir, err)
	}
	b, err := newBridge(fs, opts)
	if err != nil {
		return nil, err
	}
	b.dir = abs
	mo := b.mountOptions(fs)
	if os.Geteuid() == 0 {
		mo.DirectMountStrict = true
		mo.AllowOther = true
	} else {
		mo.AllowOther = userAllowOther()
	}
	srv, err := fuse.NewServer(b, abs, mo)
	if err != nil {
		b.stop()
		return nil, fmt.Errorf("fsbridge: mount on %s: %w", abs, err)
	}
	b.start(srv)
	if err := srv.WaitMount(); err != nil {
		b.Unmount()
		return nil, fmt.Errorf("fsbridge: mount on %s: %w", abs, err)
	}
	return b, nil
}

// Serve serves an already mounted FUSE fd (the launcher's case: init
// mounted /dev/fuse in the subenvironment's namespaces and passed the fd
// out). Serve uses a duplicate of fuseFD; the caller may close its copy.
// Mount options given to mount(2) (default_permissions, allow_other, fsname)
// are the mounter's to choose. A process that also opens files in the
// mount it serves must call PollHack first.
func Serve(fuseFD *os.File, fs proto.FileSystem, opts Options) (*Bridge, error) {
	fd, err := unix.FcntlInt(fuseFD.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("fsbridge: duplicate fuse fd: %w", err)
	}
	b, err := newBridge(fs, opts)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	b.isFD = true
	// go-fuse reads /dev/fd/N as "this fd is an already mounted FUSE
	// device" and takes ownership of it.
	srv, err := fuse.NewServer(b, fmt.Sprintf("/dev/fd/%d", fd), b.mountOptions(fs))
	if err != nil {
		unix.Close(fd)
		b.stop()
		return nil, fmt.Errorf("fsbridge: serve fuse fd: %w", err)
	}
	b.start(srv)
	return b, nil
}

// PollHack prepares a mount made with Serve for use by the serving process
// itself (tests; the launcher's bridge does not use its own mount). Go
// registers every file it opens with its netpoller; on a FUSE file that
// epoll_ctl sends the kernel's first POLL request, from inside the runtime,
// holding a scheduler slot, and a garbage collection starting then waits
// for that slot while the request waits for the bridge: a deadlock. Asking
// once with a plain poll(2) makes the bridge answer ENOSYS, after which the
// kernel never sends POLL again. (Mount does this itself.)
func PollHack(mountPoint string) error {
	// go-fuse answers this name itself, without the server.
	fd, err := unix.Open(filepath.Join(mountPoint, ".go-fuse-epoll-hack"), unix.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("fsbridge: poll hack on %s: %w", mountPoint, err)
	}
	defer unix.Close(fd)
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return nil
}

func newBridge(fs proto.FileSystem, opts Options) (*Bridge, error) {
	b := &Bridge{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		opts:          opts,
		uid:           uint32(os.Geteuid()),
		done:          make(chan struct{}),
		notes:         newQueue(),
		forget:        newQueue(),
		inodes:        map[uint64]*inode{},
		byNode:        map[nodeKey]*inode{},
		dentries:      map[attachment]*inode{},
		nextID:        fuse.FUSE_ROOT_ID + 1,
		conns:         map[string]*conn{},
		handles:       map[uint64]*handle{},
		nextFh:        1,
		spares:        list.New(),
	}
	b.root = b.newConn(fs, "")
	b.root.translator = opts.Translator
	ctx, cancel := context.WithTimeout(proto.WithCaller(context.Background(), proto.Caller{Uid: b.uid, Gid: uint32(os.Getegid())}), 30*time.Second)
	defer cancel()
	e, err := fs.Root(ctx)
	if err != nil {
		b.stop()
		return nil, fmt.Errorf("fsbridge: the server's root: %w", err)
	}
	root := &inode{id: fuse.FUSE_ROOT_ID, conn: b.root, node: e.Node, server: 1, kernel: 1, mode: e.Attr.Mode}
	b.inodes[root.id] = root
	b.byNode[nodeKey{b.root, e.Node}] = root
	if opts.Notifier != nil {
		opts.Notifier.attach(b, b.root)
	} else if ns, ok := fs.(proto.NotifierSetter); ok {
		n := &Notifier{}
		n.attach(b, b.root)
		ns.SetNotifier(n)
	}
	return b, nil
}

func (b *Bridge) mountOptions(fs proto.FileSystem) *fuse.MountOptions {
	return &fuse.MountOptions{
		FsName:               "herd",
		Name:                 subtype(fs),
		Options:              []string{"default_permissions"},
		MaxWrite:             1 << 20,
		MaxReadAhead:         1 << 20,
		MaxBackground:        64,
		EnableSymlinkCaching: true,
		EnableLocks:          false,
		Debug:                b.opts.Debug,
	}
}

// subtype names the mount after the server when it says its name.
func subtype(fs proto.FileSystem) string {
	name := ""
	switch s := fs.(type) {
	case interface{ ServerName() string }:
		name = s.ServerName()
	case interface{ Name() string }:
		name = s.Name()
	}
	name = strings.Map(func(r rune) rune {
		if r == ',' || r == ' ' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, name)
	if name == "" {
		return "herd"
	}
	return name
}

// userAllowOther reports whether fusermount3 will accept allow_other.
func userAllowOther() bool {
	data, err := os.ReadFile("/etc/fuse.conf")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) == "user_allow_other" {
			return true
		}
	}
	return false
}

func (b *Bridge) start(srv *fuse.Server) {
	b.srv = srv
	go b.notes.run()
	go b.forget.run()
	go func() {
		srv.Serve()
		b.stop()
		close(b.done)
	}()
	b.watch(b.root)
}

// stop releases what the bridge owns once the kernel is gone.
func (b *Bridge) stop() {
	b.notes.close()
	b.forget.close()
	type forget struct {
		node proto.NodeID
		n    uint64
	}
	var (
		cs       []*conn
		releases []proto.HandleID
		forgets  []forget
	)
	b.mu.Lock()
	for _, c := range b.conns {
		cs = append(cs, c)
	}
	b.conns = map[string]*conn{}
	for fh, h := range b.handles {
		h.closeFile()
		delete(b.handles, fh)
		if h.conn != b.root || h.direct {
			continue
		}
		releases = append(releases, h.h)
	}
	for _, c := range b.takeAllCapsLocked() {
		c.file.Close()
		if c.dir.conn == b.root {
			releases = append(releases, c.h)
		}
	}
	for _, sp := range b.allSparesLocked() {
		if sp.file != nil {
			sp.file.Close()
		}
		if sp.in.conn == b.root {
			releases = append(releases, sp.h)
		}
	}
	var listings []*dirSnapshot
	for id, in := range b.inodes {
		if in.listing != nil && in.conn == b.root {
			listings = append(listings, in.listing)
		}
		in.listing = nil
		if in.conn == b.root && in.server > 0 {
			forgets = append(forgets, forget{in.node, in.server})
		}
		if u := in.under; u != nil && u.conn == b.root && u.n > 0 {
			forgets = append(forgets, forget{u.node, u.n})
		}
		in.under = nil
		delete(b.inodes, id)
	}
	b.byNode = map[nodeKey]*inode{}
	b.mu.Unlock()
	for _, d := range listings {
		d.mu.Lock()
		for i := range d.plus {
			if !d.delivered[i] && d.plus[i].Entry.Node != 0 {
				d.delivered[i] = true
				forgets = append(forgets, forget{d.plus[i].Entry.Node, 1})
			}
		}
		d.mu.Unlock()
	}
	// Give the root server back what the kernel no longer holds. Over a
	// connection the end of the session would do it; an in-process server
	// (the launcher's) lives on and would keep it all.
	if b.root != nil && !b.root.dead.Load() && (len(releases) > 0 || len(forgets) > 0) {
		ctx, cancel := context.WithTimeout(b.bgCtx(), 10*time.Second)
		for _, h := range releases {
			b.root.fs.Release(ctx, h)
		}
		for _, f := range forgets {
			b.root.fs.Forget(ctx, f.node, f.n)
		}
		cancel()
	}
	for _, c := range cs {
		c.close()
	}
}

// Wait blocks until the mount is gone (unmounted, or the namespace holding
// it ended) and the bridge has stopped.
func (b *Bridge) Wait() { <-b.done }

// Unmount unmounts (for Mount) and stops. For Serve the bridge does not know
// where the fd is mounted: it answers EIO from now on and returns; the
// mounter unmounts (or its namespace ends), and Wait returns then.
func (b *Bridge) Unmount() error {
	b.dying.Store(true)
	if b.isFD {
		return nil
	}
	var err error
	if b.uid == 0 {
		err = unix.Unmount(b.dir, 0)
		if errors.Is(err, unix.EBUSY) {
			// Something still has a file open in the mount: detach it so
			// the name is free now; the kernel ends the connection when
			// the last file closes.
			err = unix.Unmount(b.dir, unix.MNT_DETACH)
		}
		if errors.Is(err, unix.EINVAL) {
			err = nil // not mounted any more
		}
	} else {
		err = b.srv.Unmount()
		if err != nil {
			err = fusermountLazy(b.dir)
		}
	}
	if err != nil {
		return fmt.Errorf("fsbridge: unmount %s: %w", b.dir, err)
	}
	if b.uid == 0 {
		// The kernel answers the readers with ENODEV; wait for them, unless
		// a lazily detached mount still has users.
		select {
		case <-b.done:
		case <-time.After(5 * time.Second):
		}
	}
	return nil
}

func fusermountLazy(dir string) error {
	for _, bin := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(bin); err == nil {
			out, err := exec.Command(p, "-u", "-z", dir).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s: %v: %s", bin, err, strings.TrimSpace(string(out)))
			}
			return nil
		}
	}
	return errors.New("no fusermount3 to unmount with")
}

// reqCtx is the context of one FUSE request: the caller's identity in host
// terms. Deadlines come from the proto client (every call has one); an
// in-process server gets a deadline here.
func (b *Bridge) ctx(c *conn, h *fuse.InHeader) (context.Context, context.CancelFunc) {
	m := b.opts.IDMap
	caller := proto.Caller{
		Uid: m.uidToHost(h.Uid),
		Gid: m.gidToHost(h.Gid),
		Pid: h.Pid,
	}
	ctx := proto.WithCaller(context.Background(), caller)
	if c.hasDeadlines {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, inProcessTimeout)
}

func noCancel() {}

// inProcessTimeout bounds calls to a server without its own deadlines.
const inProcessTimeout = 5 * time.Second

// errno turns a proto error into the status FUSE wants.
func errno(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fuse.Status(syscall.ETIMEDOUT)
	}
	if errors.Is(err, context.Canceled) {
		return fuse.EINTR
	}
	var e syscall.Errno
	if errors.As(err, &e) && e != 0 {
		return fuse.Status(e)
	}
	return fuse.EIO
}

func (b *Bridge) String() string { return "herd" }
